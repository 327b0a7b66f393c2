"""Code rules: turn the facts ``pyast.analyse`` found in one file into findings a reviewer can check.

Weights follow how a reviewer reads a package: a custom install command, a ``subprocess`` call
that builds an extension or a library reading ``os.environ`` for its settings are normal; what
makes code malicious is a *combination* in the same place - decoding then executing, downloading
then running, reading secrets or host identity then sending them out - and it weighs more when it
runs at install time (``setup.py``, ``.pth`` files, in-tree build backends).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from bastion.scanning.pyast import Event, Facts, analyse
from bastion.scanning.result import Finding

# -- indicators in text (source, folded strings, decoded payloads) -----------------------------------

_I = re.IGNORECASE
STEALER = {
    "browser": re.compile(r"(?:Login Data|Local State|Web Data|Network[\\/]+Cookies|key4\.db|logins\.json"
                          r"|browser_cookie3|browsercookie)", _I),
    "discord": re.compile(r"discord(?:canary|ptb|app)?[\\/]+Local Storage|Local Storage[\\/]+leveldb"
                          r"|\[\\w-\]\{24\}|dQw4w9WgXcQ|discordapp\.com/api/v\d+/users/@me"
                          r"|discord\.com/api/v\d+/users/@me", _I),
    "wallet": re.compile(r"wallet\.dat|Exodus[\\/]+exodus\.wallet|Electrum[\\/]+wallets|atomic[\\/]+Local Storage"
                         r"|nkbihfbeogaeaoehlefnkodbefgpgknn|Ethereum[\\/]+keystore|Coinomi|Guarda[\\/]", _I),
    "telegram": re.compile(r"Telegram Desktop[\\/]+tdata|Telegram[^\n]{0,80}[\\/]tdata\b", _I),
    "keys": re.compile(r"\.ssh[\\/]+id_(?:rsa|dsa|ecdsa|ed25519)\b|['\"]\.ssh['\"]\s*,\s*['\"]id_(?:rsa|dsa|ecdsa|ed25519)|\.aws[\\/]+credentials|\.git-credentials"
                       r"|\.pypirc|\.npmrc|/etc/shadow|\.docker[\\/]+config\.json|\.kube[\\/]+config"
                       r"|FileZilla[\\/]+recentservers|Steam[\\/]+config|\.config[\\/]+gcloud", _I),
}
EXFIL_HOST = re.compile(
    r"discord(?:app)?\.com/api/webhooks/|api\.telegram\.org/bot|hooks\.slack\.com/services|webhook\.site"
    r"|pipedream\.net|requestbin|ngrok(?:-free)?\.(?:io|app)|burpcollaborator\.net|oast(?:ify)?\.(?:fun|live|me|pro|site|online)"
    r"|interact\.sh|interactsh|dnslog\.cn|ceye\.io|canarytokens|pastebin\.com/raw|paste\.ee/r|transfer\.sh"
    r"|anonfiles|gofile\.io|file\.io\b|bit\.ly/|discord\.gg/|cdn\.discordapp\.com/attachments|glitch\.me"
    r"|repl\.co\b|herokuapp\.com|trycloudflare\.com|workers\.dev|000webhostapp|free\.beeceptor|\.oast\."
    r"|iplogger\.(?:com|org|ru|co|info)|grabify\.link|2no\.co\b|yip\.su\b|blasze\.|ipgrabber",
    _I)
IP_LOOKUP = re.compile(r"api\.ipify\.org|ipinfo\.io|ifconfig\.me|icanhazip|checkip\.amazonaws|ip-api\.com"
                       r"|myexternalip|wtfismyip|geolocation-db", _I)
RAW_IP_URL = re.compile(r"(?:https?|ftp|tcp)://(?!127\.|0\.0\.0\.0|10\.|192\.168\.|localhost)\d{1,3}(?:\.\d{1,3}){3}", _I)
PERSISTENCE = re.compile(
    r"Start Menu[\\/]+Programs[\\/]+Startup|CurrentVersion[\\/]+Run(?:Once)?\b|CurrentVersion\\\\Run\b|crontab\s+-"
    r"|/etc/cron\.d/|/etc/systemd/system/[^\s'\"]*\.service|\.config/systemd/user/|Library/LaunchAgents"
    r"|Library/LaunchDaemons|schtasks(?:\.exe)?\s+/create|\breg(?:\.exe)?\s+add\b[^\n]*\\Run|/etc/rc\.local"
    r"|Windows[\\/]+Start Menu|Start Menu['\"]\s*,\s*['\"]Programs['\"]\s*,\s*['\"]Startup", _I)
AUTOSTART_PATH = re.compile(r"startup|autostart|launchagents|launchdaemons|\\run\b|cron|systemd", _I)
SHELL_RC = re.compile(r"\.bashrc|\.bash_profile|\.zshrc|\.profile\b", _I)
SHELL_DOWNLOAD = re.compile(
    r"(?:curl|wget)\b[^\n|;]*https?://[^\n]*(?:\|\s*(?:ba|z)?sh\b|;\s*chmod|&&\s*chmod)|base64\s+(?:-d|--decode)[\s|]+(?:ba|z)?sh"
    r"|/dev/tcp/|\bbash\s+-i\b|\bnc(?:at)?\s+(?:-\w+\s+)*-e\s|\bcertutil(?:\.exe)?\s+-urlcache|bitsadmin\s+/transfer"
    r"|\bmshta(?:\.exe)?\s+https?:|Invoke-WebRequest|DownloadString\(|DownloadFile\(|Invoke-Expression|\bIEX\s*\("
    r"|Start-Process\b.*-WindowStyle\s+Hidden|Add-MpPreference|-ExclusionPath|python[23]?\s+-c\s.*(?:urlopen|b64decode|socket)",
    _I)
FETCH = re.compile(r"(?:curl|wget)\s+[^\n]*https?://", _I)
POWERSHELL_ENC = re.compile(r"powershell(?:\.exe)?\b[^\n]{0,120}?\s[-/](?:e|ec|enc|encodedcommand)\s+[A-Za-z0-9+/=]{16,}",
                            _I)
POWERSHELL_HIDDEN = re.compile(r"powershell(?:\.exe)?\b[^\n]{0,80}-w(?:indowstyle)?\s+hid", _I)
MINER = re.compile(r"stratum\+(?:tcp|ssl|tls)://|\bxmrig\b|--donate-level|cryptonight|minexmr|nanopool\.org"
                   r"|supportxmr|moneroocean|nicehash\.com", _I)
CRYPTO_ADDRESS = re.compile(r"\^?\(?(?:bc1|\[13\]|1|3)[^\n]{0,6}\[a-km-zA-HJ-NP-Z1-9\]|0x\[a-fA-F0-9\]\{40\}"
                            r"|\^0x\[a-fA-F0-9\]|\b(?:bc1q[a-z0-9]{38,58}|0x[a-fA-F0-9]{40})\b"
                            r"|\[LM3\]\[a-km-zA-HJ-NP-Z1-9\]|\^4\[0-9AB\]", _I)
ANTI_VM = re.compile(r"WDAGUtilityAccount|vboxservice|vboxtray|vmtoolsd|vmwaretray|VMware|VirtualBox|sandboxie"
                     r"|wireshark|processhacker|ollydbg|x64dbg|fiddler|httpdebuggerui", _I)
BROWSER_KEY = re.compile(r"encrypted_key|CryptUnprotectData|win32crypt|User Data[\\/]+Default|browser_cookie3"
                         r"|browsercookie", _I)

# Literal words (lower case) one of which must be in a text before a pattern is tried on it: a substring
# test is much cheaper than a regular expression with alternatives.
GATES: dict[re.Pattern[str], tuple[str, ...]] = {
    STEALER["browser"]: ("login data", "local state", "web data", "network\\", "network/cookies", "key4.db",
                         "logins.json", "browser_cookie", "browsercookie"),
    STEALER["discord"]: ("discord", "leveldb", "dqw4w9wgxcq", "[\\w-]{24}"),
    STEALER["wallet"]: ("wallet", "exodus", "electrum", "nkbih", "coinomi", "guarda"),
    STEALER["telegram"]: ("tdata",),
    STEALER["keys"]: (".ssh", ".aws", "git-credentials", ".pypirc", ".npmrc", "/etc/shadow", ".docker", ".kube",
                      "filezilla", "steam\\", "steam/", "gcloud"),
    BROWSER_KEY: ("encrypted_key", "cryptunprotectdata", "win32crypt", "user data", "browser_cookie", "browsercookie"),
    EXFIL_HOST: ("discord", "telegram", "hooks.slack", "webhook", "pipedream", "requestbin", "ngrok", "burpcollab",
                 ".oast", "oastify", "interact.sh", "interactsh", "dnslog", "ceye", "canarytokens", "pastebin",
                 "paste.ee", "transfer.sh", "anonfiles", "gofile",
                 "file.io", "bit.ly", "glitch.me", "repl.co", "herokuapp", "trycloudflare", "workers.dev",
                 "000webhost", "beeceptor", "iplogger", "grabify", "2no.co", "yip.su", "blasze", "ipgrabber"),
    IP_LOOKUP: ("ipify", "ipinfo", "ifconfig.me", "icanhazip", "checkip", "ip-api", "myexternalip", "wtfismyip",
                "geolocation-db"),
    RAW_IP_URL: ("://",),
    PERSISTENCE: ("start menu", "currentversion\\run", "currentversion\\\\run", "currentversion/run", "crontab -",
                  "/etc/cron", "systemd/", "launchagents", "launchdaemons", "schtasks", "reg add", "reg.exe",
                  "rc.local"),
    SHELL_RC: (".bashrc", ".bash_profile", ".zshrc", ".profile"),
    MINER: ("stratum", "xmrig", "donate-level", "cryptonight", "minexmr", "nanopool", "supportxmr", "moneroocean",
            "nicehash"),
}


@dataclass(frozen=True)
class Place:
    """Where a file runs: install (setup.py, .pth, in-tree backend), import (package __init__), runtime."""

    install: bool = False
    pth: bool = False
    init: bool = False


def _f(rule: str, file: str, line: int | None, excerpt: str, why: str, severity: float, category: str) -> Finding:
    excerpt = " ".join(excerpt.split())
    excerpt = "".join(ch if ch.isprintable() else "?" for ch in excerpt)[:200]
    return Finding(rule=rule, file=file, line=line, excerpt=excerpt, why=why, severity=round(severity, 1),
                   category=category)


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _line_text(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start: end if end >= 0 else len(text)].strip()[:200]


def entropy(data: str) -> float:
    if not data:
        return 0.0
    counts = Counter(data)
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


_SHELLCODE = re.compile(r"""b(['"])(?:\\x[0-9a-fA-F]{2}){64}""")
_BLOB = re.compile(r"""(['"])([A-Za-z0-9+/=_\-\\x]{1500,})\1""")


def _find_blob(source: str) -> re.Match[str] | None:
    """The first long literal that looks random (random hex has 4 bits a character, base64 6)."""
    if len(source) > 8_000_000:
        return None
    for count, match in enumerate(_BLOB.finditer(source)):
        if entropy(match.group(2)[:20000]) > 3.2:
            return match
        if count >= 5:
            break
    return None


class _Texts:
    """The text indicators look at: the file and everything folded or decoded from it."""

    def __init__(self, source: str, facts: Facts) -> None:
        self.items: list[tuple[int | None, str, bool]] = [(None, source, False)]
        for line, text in facts.strings:
            self.items.append((line, text, True))
        self.lower = [text.lower() for _, text, _ in self.items]

    def search(self, pattern: re.Pattern[str]) -> tuple[int | None, str, bool] | None:
        gate = GATES.get(pattern)
        for index, (line, text, derived) in enumerate(self.items):
            if gate is not None and not any(word in self.lower[index] for word in gate):
                continue
            match = pattern.search(text)
            if match:
                if line is None:
                    return _line_of(text, match.start()), _line_text(text, match.start()), derived
                return line, match.group(0), derived
        return None

    def count_categories(self, patterns: dict[str, re.Pattern[str]]) -> dict[str, tuple[int | None, str]]:
        found = {}
        for name, pattern in patterns.items():
            hit = self.search(pattern)
            if hit:
                found[name] = (hit[0], hit[1])
        return found


def analyse_python(source: str, member: str, place: Place) -> list[Finding]:
    facts = analyse(source, install=place.install or place.init)
    findings: list[Finding] = []
    if facts.syntax_error is not None:
        facts = _fallback_facts(source)
        if place.install:
            findings.append(_f("code.unparsable-install", member, None, facts.syntax_error or "",
                               "An install-time script that Python cannot parse: it is read with patterns only.",
                               0.5, "install-hook"))
    findings.extend(rules_for(source, member, place, facts))
    return findings


_FALLBACK_CALLS = re.compile(
    r"\b(exec|eval|os\.system|os\.popen|subprocess\.\w+|urlopen|urlretrieve|requests\.(?:get|post)|b64decode"
    r"|socket\.gethostname|getpass\.getuser|os\.getlogin|platform\.node|os\.startfile|os\.dup2|pty\.spawn"
    r"|zlib\.decompress|marshal\.loads|socket\.socket)\s*\(")


def _fallback_facts(source: str) -> Facts:
    """For sources Python cannot parse (mixed tabs, Python 2): calls found by pattern, all in one scope."""
    facts = Facts(scopes={0: "<module>"})
    kinds = {"exec": "exec", "eval": "exec", "os.system": "process", "os.popen": "process", "urlopen": "download",
             "urlretrieve": "download", "requests.get": "download", "requests.post": "send", "b64decode": "decode",
             "socket.gethostname": "hostinfo", "getpass.getuser": "hostinfo", "os.getlogin": "hostinfo",
             "platform.node": "hostinfo", "os.startfile": "process", "os.dup2": "dup2", "pty.spawn": "dup2",
             "zlib.decompress": "decode", "marshal.loads": "decode", "socket.socket": "socket"}
    for match in _FALLBACK_CALLS.finditer(source):
        name = match.group(1)
        kind = kinds.get(name) or ("process" if name.startswith("subprocess.") else "")
        if not kind:
            continue
        line = _line_of(source, match.start())
        text = _line_text(source, match.start())
        origins = frozenset({"decoded"} if kind == "exec" and re.search(r"b64decode|decompress|fromhex|chr\(", text)
                            else set())
        facts.events.append(Event(kind, line, name, text, 0, origins, text))
    return facts


_EXECUTABLE_NAME = re.compile(r"\.(?:exe|scr|bat|cmd|vbs|ps1|msi|pyw?|sh|dll|so|elf|bin)\b|\bexe\b", re.IGNORECASE)
_EXECUTABLE_SUFFIXES = (".exe", ".scr", ".bat", ".cmd", ".ps1", ".vbs", ".dll", ".sh", ".py", ".pyw", ".msi", ".jar")


_RC_PAYLOAD = re.compile(r"\b(?:curl|wget|chmod|nohup|base64|mkfifo|nc|ncat|python[0-9.]*\s+-c)\b|/dev/tcp|\.local/\.|"
                         r"\bbash\s+-c\b", re.IGNORECASE)
_INTERPRETER = re.compile(r"^\s*(?:\S*[\\/])?(?:python[0-9.]*w?|py|sh|bash|cmd|powershell|pwsh|node|perl|ruby|start)"
                          r"(?:\.exe)?(?:\s|$)|\.(?:py|exe|sh|bat|ps1|vbs)\b", re.IGNORECASE)
_PIP_INSTALL = re.compile(r"\bpip[0-9.]*(?:\.exe)?\s+install\b|-m\s+pip\s+install\b", re.IGNORECASE)


def looks_like_code(write: Event) -> bool:
    return write.text.lower().rstrip("'\" )").endswith((".py", ".pyw", ".exe", ".bat", ".vbs", ".ps1", ".sh", ".lnk"))


def _mentions(run: Event, path: str) -> bool:
    """The run's command mentions the written file (its variable name or path)."""
    if not path or len(path) < 2:
        return False
    return re.search(r"(?<![\w.])" + re.escape(path) + r"(?![\w])", run.excerpt + " " + run.text) is not None


def _first(events: list[Event]) -> Event:
    return min(events, key=lambda e: e.line)


def rules_for(source: str, member: str, place: Place, facts: Facts) -> list[Finding]:  # noqa: C901
    findings: list[Finding] = []
    events = facts.events
    texts = _Texts(source, facts)
    install = place.install
    where = "at install time" if install else "when imported" if place.init else "when run"

    def add(rule: str, event_or_line: Event | int | None, excerpt: str, why: str, severity: float,
            category: str) -> None:
        line = event_or_line.line if isinstance(event_or_line, Event) else event_or_line
        findings.append(_f(rule, member, line, excerpt, why, severity, category))

    def in_install(e: Event) -> bool:
        """Runs at install time, or on import at the top of a package's __init__."""
        return install or e.scope in facts.install_scopes or (place.init and e.scope == 0)

    by_kind: dict[str, list[Event]] = {}
    for e in events:
        by_kind.setdefault(e.kind, []).append(e)

    def scopes_with(*kinds: str) -> set[int]:
        return {e.scope for k in kinds for e in by_kind.get(k, [])}

    # 1. executing decoded, downloaded or obfuscated data
    # Decoding data handed in at runtime (a pipe, a parameter) and running it is how RPC helpers work
    # (PyInstaller's isolated child, multiprocessing); a hidden payload is a constant or a download.
    blob = _find_blob(source) if by_kind.get("exec") else None
    bad_exec = [e for e in by_kind.get("exec", []) if "network" in e.origins or "obfuscated" in e.origins or (
        "decoded" in e.origins and ("const" in e.origins or "param" not in e.origins or blob is not None))]
    if bad_exec:
        e = _first(bad_exec)
        what = "downloaded" if "network" in e.origins else "decoded or obfuscated"
        add("code.exec-decoded", e, e.excerpt, f"Executes {what} data with {e.name}() {where}: a hidden payload.",
            9.0 if install or "network" in e.origins else 8.5, "execution")
    # 2. download and run; drop a payload and run it
    runs = by_kind.get("process", []) + by_kind.get("exec", []) + by_kind.get("chmod-exec", [])
    dl = [e for e in by_kind.get("process", []) + by_kind.get("exec", []) if "network" in e.origins]
    if dl:
        e = _first(dl)
        add("code.download-exec", e, e.excerpt,
            f"Downloads data and runs it ({e.name}) {where}.", 9.0 if in_install(e) else 8.0, "payload")
    else:
        dropped = [w for w in by_kind.get("write", []) if "network" in w.origins]
        executable = [w for w in dropped if _EXECUTABLE_NAME.search(w.text)]
        same_scope = [w for w in dropped if any(r.scope == w.scope and (
            r.kind != "process" or "startfile" in r.name or _mentions(r, w.text.split(" ")[0])) for r in runs)]
        if executable and runs or same_scope:
            e = _first(executable or same_scope or dropped)
            add("code.download-exec", e, e.excerpt,
                f"Writes downloaded data to a file and runs it {where}.", 9.0 if in_install(e) else 8.0, "payload")
        elif dropped and any(r.scope == w.scope for r in runs for w in dropped):
            e = _first(dropped)
            add("code.download-run", e, e.excerpt,
                f"Downloads a file and starts a program in the same function {where} (a build step or a dropper).",
                5.0 if in_install(e) else 3.0, "payload")
        elif executable:
            e = _first(executable)
            add("code.download-executable", e, e.excerpt, "Downloads an executable file.",
                7.0 if in_install(e) else 4.0, "payload")
    decoded_drops = [w for w in by_kind.get("write", []) if w.origins & {"decoded", "obfuscated"}
                     and any(r.scope == w.scope or install for r in runs)]
    if decoded_drops and not dl:
        e = _first(decoded_drops)
        add("code.drop-decoded", e, e.excerpt,
            f"Writes decoded data to a file and runs a program or code {where}.",
            8.5 if in_install(e) else 6.0, "payload")
    # 3. commands that fetch and run, shells, PowerShell
    for e in by_kind.get("process", []) + by_kind.get("exec", []):
        text = e.text or e.excerpt
        if POWERSHELL_ENC.search(text):
            add("code.powershell-encoded", e, e.excerpt,
                "Starts PowerShell with an encoded command: a hidden script.", 8.5, "execution")
            break
        if SHELL_DOWNLOAD.search(text) or POWERSHELL_HIDDEN.search(text):
            add("code.shell-download", e, e.excerpt,
                f"Runs a command that downloads and runs code, or opens a shell ({e.name}) {where}.",
                8.5 if in_install(e) else 7.0, "payload")
            break
        if FETCH.search(text):
            add("code.shell-fetch", e, e.excerpt, f"Runs curl or wget on a URL {where}.",
                5.0 if in_install(e) else 1.0, "network")
            break
    hidden_commands = [e for e in by_kind.get("process", []) if "decoded" in e.origins or (
        "obfuscated" in e.origins and "const" in e.origins)]
    if hidden_commands:
        e = _first(hidden_commands)
        add("code.hidden-command", e, e.excerpt,
            f"Runs a command line that the code decodes or assembles to hide it ({e.name}) {where}.",
            9.0 if in_install(e) else 7.5, "execution")
    # 4. exfiltration: host identity, environment or secrets sent out
    sinks = by_kind.get("send", []) + by_kind.get("download", []) + by_kind.get("network", [])
    tainted = [e for e in sinks if e.origins & {"hostinfo", "env"} or (
        install and e.kind == "send" and e.origins & {"cmdout", "file"})]
    info_scopes = scopes_with("hostinfo", "envdump")
    if not tainted and (install or facts.install_scopes):
        tainted = [e for e in sinks if in_install(e) and (
            (install and by_kind.get("hostinfo")) or e.scope in info_scopes)]
    stealer = texts.count_categories(STEALER)
    if "browser" in stealer and texts.search(BROWSER_KEY) is None:
        del stealer["browser"]
    hidden = [e for e in sinks if e.origins & {"dest-decoded", "dest-obfuscated"}]
    if hidden:
        e = _first(hidden)
        add("code.hidden-endpoint", e, e.excerpt,
            f"Contacts an address that the code decodes or assembles at runtime, hiding it from review ({where}).",
            8.0 if in_install(e) else 6.0, "network")
    connects = [e for e in by_kind.get("connect", []) if in_install(e)]
    if connects and install:
        e = connects[0]
        add("install.raw-socket", e, e.excerpt, "Opens a raw network connection at install time.", 5.0, "network")
    if tainted:
        e = _first(tainted)
        heavy = in_install(e) or "env" in e.origins
        add("code.exfiltrate-host-info", e, e.excerpt,
            f"Sends host identity or environment variables to a remote host {where}.",
            8.5 if in_install(e) else 6.0 if heavy else 2.0, "exfiltration")
    exfil_host = texts.search(EXFIL_HOST)
    if stealer:
        cats = sorted(stealer)
        line, excerpt = stealer[cats[0]]
        strong = [c for c in cats if c != "keys"]
        if strong and (sinks or exfil_host):
            add("code.steal-credentials", line, excerpt,
                f"Reads stored credentials ({', '.join(cats)}) and has a network sink: a stealer.", 9.0,
                "exfiltration")
        elif len(strong) >= 2:
            add("code.credential-stores", line, excerpt,
                f"Reads several credential stores ({', '.join(cats)}).", 6.0, "exfiltration")
        elif strong:
            add("code.credential-store", line, excerpt, f"Reads a credential store ({cats[0]}).",
                3.0 if install else 1.5, "exfiltration")
        elif install and sinks:
            add("code.credential-files-install", line, excerpt,
                "Reads credential files at install time and uses the network.", 7.0, "exfiltration")
        else:
            add("code.credential-files", line, excerpt, "Mentions credential files (ssh, cloud, package indexes).",
                0.5, "exfiltration")
    if exfil_host:
        line, excerpt, derived = exfil_host
        severity = 6.0 if install else 4.0 if (sinks or derived) else 1.5
        add("code.exfil-endpoint", line, excerpt,
            "Contacts a paste, webhook, tunnel or out-of-band interaction service, typical for exfiltration.",
            severity, "network")
    ip_lookup = texts.search(IP_LOOKUP)
    if ip_lookup and (install or sinks):
        add("code.ip-lookup", ip_lookup[0], ip_lookup[1], "Looks up the machine's public IP address.",
            3.0 if install else 1.0, "exfiltration")
    raw_ip = texts.search(RAW_IP_URL)
    if raw_ip and sinks:
        add("code.raw-ip-url", raw_ip[0], raw_ip[1], "Uses a URL with a bare IP address.",
            5.0 if install else 2.0, "network")
    # 5. reverse shell
    sock_scopes = scopes_with("socket")
    shell = [e for e in by_kind.get("dup2", []) if e.scope in sock_scopes or "pty" in e.name]
    if shell and sock_scopes:
        e = _first(shell)
        add("code.reverse-shell", e, e.excerpt, "Connects a socket to a shell's standard streams: a reverse shell.",
            9.0, "execution")
    # 6. persistence
    persist = texts.search(PERSISTENCE)
    writes = by_kind.get("write", []) + by_kind.get("process", []) + by_kind.get("registry-write", [])
    if persist and writes:
        severity = 8.0 if install else 6.5 if by_kind.get("registry-write") else 3.0
        add("code.persistence", persist[0], persist[1],
            "Touches an autostart location (startup folder, Run key, cron, systemd, LaunchAgents).",
            severity, "persistence")
    autostart_writes = [w for w in by_kind.get("write", []) if AUTOSTART_PATH.search(w.text)
                        and (persist or w.origins & {"decoded", "obfuscated", "network"} or looks_like_code(w))]
    if autostart_writes:
        e = autostart_writes[0]
        add("code.autostart-write", e, e.excerpt, f"Writes a file into an autostart location {where}.",
            8.0 if in_install(e) else 7.0, "persistence")
    rc_payloads = [w for w in by_kind.get("write", []) if "\n" in w.text and SHELL_RC.search(w.text.split("\n")[0])
                   and _RC_PAYLOAD.search(w.text)]
    if not rc_payloads:
        rc_writes = [w for w in by_kind.get("write", []) if "\n" in w.text and _RC_PAYLOAD.search(w.text)]
        if rc_writes and texts.search(SHELL_RC):
            rc_payloads = rc_writes
    if rc_payloads:
        e = rc_payloads[0]
        add("code.shell-rc-payload", e, e.excerpt,
            f"Appends commands that fetch, decode or start programs to a shell start-up file {where}.",
            8.0 if in_install(e) else 7.0, "persistence")
    shell_rc = texts.search(SHELL_RC) if install else None
    if shell_rc and writes:
        add("install.shell-rc", shell_rc[0], shell_rc[1], "Changes a shell start-up file at install time.", 6.0,
            "persistence")
    # 7. clipboard hijack
    if by_kind.get("clipboard"):
        address = texts.search(CRYPTO_ADDRESS)
        e = by_kind["clipboard"][0]
        if address:
            add("code.clipboard-hijack", e, e.excerpt,
                "Reads or replaces the clipboard and matches cryptocurrency addresses.", 8.0, "payload")
        else:
            add("code.clipboard", e, e.excerpt, "Uses the clipboard.", 0.3, "payload")
    # 8. miners
    miner = texts.search(MINER)
    if miner:
        add("code.miner", miner[0], miner[1], "Cryptocurrency miner configuration.", 8.0, "payload")
    # 9. native code execution from Python
    native_scopes: dict[int, set[str]] = {}
    for e in by_kind.get("native-exec", []):
        native_scopes.setdefault(e.scope, set()).add(e.name.split(".")[-1])
    for scope_id, names in native_scopes.items():
        alloc = any(n.startswith(("VirtualAlloc", "NtAllocate")) for n in names)
        run = any(n.startswith(("CreateThread", "RtlMoveMemory", "CreateRemoteThread", "WriteProcessMemory"))
                  for n in names)
        if alloc and run:
            e = [x for x in by_kind["native-exec"] if x.scope == scope_id][0]
            shellcode = bool(by_kind.get("decode")) or _SHELLCODE.search(source) is not None
            add("code.shellcode-loader", e, e.excerpt,
                "Allocates executable memory and runs code in it: a shellcode loader.",
                8.5 if shellcode or install else 2.0, "execution")
            break
    # 10. obfuscation
    if by_kind.get("getattr-builtins"):
        e = by_kind["getattr-builtins"][0]
        add("code.builtins-lookup", e, e.excerpt,
            "Fetches a builtin such as exec by a computed name: hides what is called.", 6.0, "obfuscation")
    dyn = [e for e in by_kind.get("dynamic-import", []) if "obfuscated" in e.origins]
    if dyn:
        add("code.obfuscated-import", dyn[0], dyn[0].excerpt, "Imports a module whose name is hidden.", 5.0,
            "obfuscation")
    if facts.homoglyphs:
        line, word = facts.homoglyphs[0]
        add("code.homoglyph", line, word,
            "An identifier with look-alike (confusable) Unicode letters: it reads as one name and is another.",
            6.0, "obfuscation")
    if blob is None and by_kind.get("decode"):
        blob = _find_blob(source)
    if blob and (by_kind.get("decode") or by_kind.get("exec")):
        line = _line_of(source, blob.start())
        severity = 3.0 if install else 1.0
        if by_kind.get("exec"):
            severity += 2.0
        add("code.encoded-blob", line, blob.group(2)[:60] + "...",
            "A long high-entropy string that the code decodes.", severity, "obfuscation")
    low = texts.lower[0]
    anti = {m.group(0).lower() for m in ANTI_VM.finditer(source[:2_000_000])} if any(
        w in low for w in ("vmware", "virtualbox", "vbox", "sandboxie", "wireshark", "wdagutility")) else set()
    if len(anti) >= 3:
        add("code.anti-analysis", None, ", ".join(sorted(anti))[:200],
            "Checks for virtual machines, sandboxes or debugging tools.", 4.0, "obfuscation")
    # 11. weak install-time signals
    if install:
        procs = [e for e in by_kind.get("process", []) if in_install(e)]
        if procs:
            e = procs[0]
            add("install.process", e, e.excerpt, "Starts a process at install time (often a normal build step).",
                1.0, "install-hook")
        nets = [e for e in sinks if in_install(e)]
        if nets:
            e = nets[0]
            add("install.network", e, e.excerpt, "Uses the network at install time.", 3.0, "network")
        if by_kind.get("exec") and not bad_exec:
            e = by_kind["exec"][0]
            if not e.origins <= {"file", "const"}:
                add("install.exec", e, e.excerpt, "Executes dynamic code at install time.", 1.0, "execution")
        fetches = [e for e in sinks if in_install(e)]
        interpreters = [e for e in procs if _INTERPRETER.search(e.text or e.excerpt)]
        paired = [r for r in interpreters if any(f.scope == r.scope for f in fetches)]
        if paired:
            add("install.fetch-and-run", paired[0], paired[0].excerpt,
                "Fetches something and starts an interpreter or program in the same install-time function.", 6.0,
                "payload")
        pips = [e for e in procs if _PIP_INSTALL.search(e.text or e.excerpt)]
        if pips:
            add("install.pip-install", pips[0], pips[0].excerpt,
                "Installs other packages with pip from inside the install, behind the resolver's back.", 2.0,
                "install-hook")
        if facts.install_scopes:
            add("install.hook", None, "custom setuptools command class",
                "A custom install/build command runs code at install time (normal on its own).", 0.5,
                "install-hook")
    if place.pth:
        add("install.pth-exec", None, source.strip().splitlines()[0][:200] if source.strip() else "",
            "A .pth file with an import line runs code at every Python start-up.", 2.0, "install-hook")
    return findings


def analyse_pth(data: str, member: str) -> list[Finding]:
    """A .pth file: lines starting with ``import`` are executed by site.py at every start-up."""
    code_lines = [line for line in data.splitlines() if line.startswith(("import ", "import\t"))]
    if not code_lines:
        return []
    source = "\n".join(code_lines)
    return analyse_python(source, member, Place(install=True, pth=True))
