"""Facts about one Python source, from its ``ast`` (never by running it).

``analyse(source)`` resolves imported names (``import base64 as b``, ``from os import system``,
``__import__('os')``, ``getattr(builtins, 'ex' + 'ec')``), folds constant expressions (``fold.py``)
and records *events*: calls that execute code, decode data, start processes, use the network,
write files, read host identity, and so on, each with the *origins* of its arguments (decoded,
downloaded, obfuscated, host information, environment, ...). Decoded payloads that are themselves
Python are analysed in turn (to a depth limit). The rule layer (``code.py``) turns events into
findings.
"""

from __future__ import annotations

import ast
import re
import unicodedata
import warnings
from dataclasses import dataclass, field
from typing import Any

from bastion.scanning.fold import NOTHING, TRICKS, Folder

MAX_PAYLOAD_DEPTH = 3
SCANNED_FILENAME = "<bastion-scan>"
# Compiler warnings about the scanned code (invalid escapes, ...) are the scanned code's business; a
# filter keyed on the file name is set once, instead of a per-call catch_warnings (not thread-safe).
for _category in (SyntaxWarning, DeprecationWarning):
    warnings.filterwarnings("ignore", category=_category, module=re.escape(SCANNED_FILENAME))

EXEC_FUNCS = frozenset({
    "exec", "eval", "compile", "execfile", "builtins.exec", "builtins.eval", "builtins.compile",
    "__builtin__.exec", "__builtin__.eval", "types.FunctionType", "runpy.run_path", "runpy.run_module",
})
DESERIALIZE_FUNCS = frozenset({"pickle.loads", "_pickle.loads", "dill.loads", "cloudpickle.loads", "marshal.loads"})
DECODE_FUNCS = frozenset({
    "base64.b64decode", "base64.b32decode", "base64.b16decode", "base64.b85decode", "base64.a85decode",
    "base64.urlsafe_b64decode", "base64.decodebytes", "base64.decodestring", "base64.standard_b64decode",
    "binascii.a2b_base64", "binascii.unhexlify", "binascii.a2b_hex", "bytes.fromhex", "bytearray.fromhex",
    "zlib.decompress", "bz2.decompress", "lzma.decompress", "gzip.decompress", "codecs.decode",
    "marshal.loads", "pickle.loads", "dill.loads", "cloudpickle.loads",
})
PROCESS_FUNCS = frozenset({
    "subprocess.Popen", "subprocess.call", "subprocess.run", "subprocess.check_call", "subprocess.check_output",
    "subprocess.getoutput", "subprocess.getstatusoutput", "os.system", "os.popen", "os.popen2", "os.popen3",
    "os.startfile", "os.spawnl", "os.spawnle", "os.spawnlp", "os.spawnv", "os.spawnve", "os.spawnvp",
    "os.execl", "os.execle", "os.execlp", "os.execv", "os.execve", "os.execvp", "os.execvpe", "os.posix_spawn",
    "os.posix_spawnp", "commands.getoutput", "commands.getstatusoutput", "pty.spawn", "win32api.ShellExecute",
    "win32api.WinExec", "ctypes.windll.shell32.ShellExecuteW", "ctypes.windll.shell32.ShellExecuteA",
    "asyncio.create_subprocess_shell", "asyncio.create_subprocess_exec", "platform.popen",
})
DOWNLOAD_FUNCS = frozenset({
    "urllib.request.urlopen", "urllib.request.urlretrieve", "urllib.urlopen", "urllib.urlretrieve",
    "urllib2.urlopen", "requests.get", "requests.request", "requests.Session().get", "httpx.get", "httpx.request",
    "httpx.Client().get", "wget.download", "urllib.request.Request", "urllib2.Request", "urllib3.PoolManager().request",
    "urllib3.request", "aiohttp.ClientSession().get", "git.Repo.clone_from", "git.Git().clone", "pip._internal.main",
})
SEND_FUNCS = frozenset({
    "requests.post", "requests.put", "requests.patch", "requests.Session().post", "httpx.post", "httpx.put",
    "httpx.Client().post", "aiohttp.ClientSession().post", "smtplib.SMTP().sendmail", "smtplib.SMTP_SSL().sendmail",
    "smtplib.SMTP().send_message", "socket.gethostbyname", "socket.getaddrinfo", "socket.gethostbyname_ex",
    "dns.resolver.resolve", "dns.resolver.query", "socket.socket().sendto",
})
NETWORK_PREFIXES = ("requests.", "httpx.", "urllib.request.", "urllib2.", "urllib3.", "http.client.", "httplib.",
                    "aiohttp.", "socket.create_connection", "socket.socket().connect", "ftplib.", "smtplib.",
                    "pycurl.", "websocket.", "websockets.", "telnetlib.", "paramiko.", "dns.resolver.",
                    "discord_webhook.", "dhooks.", "telebot.", "urllib.urlopen", "urllib.urlretrieve", "wget.")
HOSTINFO_FUNCS = frozenset({
    "socket.gethostname", "socket.getfqdn", "getpass.getuser", "os.getlogin", "platform.node", "platform.uname",
    "os.uname", "uuid.getnode", "pwd.getpwuid",
})
HOST_ENV_NAMES = frozenset({"USER", "USERNAME", "LOGNAME", "COMPUTERNAME", "HOSTNAME", "USERDOMAIN", "HOME",
                            "USERPROFILE", "PWD"})
CLIPBOARD_FUNCS = ("pyperclip.", "win32clipboard.", "clipboard.", "pyclip.")
NATIVE_EXEC = ("VirtualAlloc", "VirtualProtect", "CreateThread", "RtlMoveMemory", "WriteProcessMemory",
               "CreateRemoteThread", "NtAllocateVirtualMemory", "mmap.PROT_EXEC")
REGISTRY_WRITE = ("winreg.SetValueEx", "_winreg.SetValueEx", "winreg.SetValue", "_winreg.SetValue",
                  "win32api.RegSetValueEx")
DANGEROUS_BUILTINS = frozenset({"exec", "eval", "compile", "__import__", "execfile", "open", "getattr"})
WRITE_METHODS = frozenset({"write", "write_bytes", "write_text", "writelines"})


@dataclass(frozen=True)
class Event:
    kind: str
    """exec, decode, process, download, send, network, write, hostinfo, envdump, clipboard, dup2, socket,
    chmod-exec, registry-write, native-exec, getattr-builtins, dynamic-import, payload."""
    line: int
    name: str
    """The resolved call (``base64.b64decode``) or what the event is about."""
    excerpt: str
    scope: int
    origins: frozenset[str] = frozenset()
    """Where the call's arguments come from: decoded, network, obfuscated, hostinfo, env, file, param, const."""
    text: str = ""
    """A folded argument (command line, URL, code), when it folds."""


@dataclass
class Facts:
    events: list[Event] = field(default_factory=list)
    strings: list[tuple[int, str]] = field(default_factory=list)
    """Strings recovered by folding (built at runtime or decoded), with their line."""
    payloads: list[tuple[int, str]] = field(default_factory=list)
    """Decoded Python payloads, with the line of the decoding expression."""
    homoglyphs: list[tuple[int, str]] = field(default_factory=list)
    syntax_error: str | None = None
    scopes: dict[int, str] = field(default_factory=dict)
    """Scope id -> name (``<module>``, function or class name)."""
    install_scopes: set[int] = field(default_factory=set)
    """Scopes that setuptools runs (``run`` of a command class, functions the module calls)."""


_NETWORK_COMMAND = re.compile(r"\s*(?:\S*[\\/])?(?:curl|wget|git\s+clone|Invoke-WebRequest|iwr|bitsadmin|certutil)\b",
                              re.IGNORECASE)
_SEND_COMMAND = re.compile(r"\s(?:-d|--data\S*|-F|--form|-T|--upload-file|--post-\w+)\b|\?\w+=\{?", re.IGNORECASE)
_PYTHON_C = re.compile(r"""python[0-9.]*(?:\.exe)?\s+-c\s+(['"]?)(.+)\1""", re.S)
_CODE_HINT = re.compile(r"(?m)^\s*(import |from \S+ import |def |class )|exec\(|eval\(|__import__\(|os\.system|subprocess")


def looks_like_python(text: str) -> bool:
    return len(text) >= 12 and _CODE_HINT.search(text[:20000]) is not None


def parse(source: str) -> tuple[ast.Module | None, str | None]:
    """Parse; retry with tabs expanded (Python 3 refuses mixed tabs that Python 2 took)."""
    try:
        return ast.parse(source, filename=SCANNED_FILENAME), None
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        first = f"{type(exc).__name__}: {exc}"
    if "\t" in source:
        try:
            return ast.parse(source.expandtabs(8), filename=SCANNED_FILENAME), None
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass
    return None, first[:200]


class _Module:
    def __init__(self, tree: ast.Module, source: str, facts: Facts, depth: int, base_line: int | None) -> None:
        self.tree = tree
        self.lines = source.splitlines()
        self.facts = facts
        self.depth = depth
        self.base_line = base_line
        self.aliases: dict[str, str] = {}
        self.bindings: dict[tuple[int, str], list[tuple[str, ast.expr]]] = {}
        self.params: dict[int, set[str]] = {}
        self.scope_of: dict[int, int] = {}
        self.parent_scope: dict[int, int] = {0: 0}
        self.calls: list[tuple[ast.Call, int]] = []
        self.functions: dict[str, int] = {}
        self.function_nodes: dict[str, list[ast.expr]] = {}
        """Return expressions of each module function (for origins through simple helpers)."""
        self.function_defs: dict[str, ast.FunctionDef] = {}
        self.class_bases: dict[int, list[str]] = {}
        self.folder = Folder(self._lookup, self.resolve, self.function_defs.get)
        self._origin_cache: dict[int, frozenset[str]] = {}
        self.partial_environ: set[int] = set()
        """ids of ``os.environ`` nodes that are subscripted or have an attribute taken (one variable read)."""
        self.place_install = False
        self.seen_payloads: set[int] = set()
        self.nonascii_lines: set[int] = set() if source.isascii() else {
            number for number, text in enumerate(self.lines, 1) if not text.isascii()}

    # -- collection ---------------------------------------------------------------------------------

    def collect(self) -> None:  # noqa: C901 - one pass over the tree, dispatched on node type
        self.facts.scopes[0] = "<module>"
        stack: list[tuple[ast.AST, int]] = [(self.tree, 0)]
        next_scope = 1
        scope_of = self.scope_of
        nonascii = self.nonascii_lines
        name_type, call_type, attribute_type, subscript_type = ast.Name, ast.Call, ast.Attribute, ast.Subscript
        scope_types = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
        ast_type, list_type = ast.AST, list
        while stack:
            node, scope = stack.pop()
            for field_name in node._fields:
                if field_name == "ctx":
                    continue
                value = getattr(node, field_name, None)
                children: list[Any]
                if type(value) is list_type:
                    children = value
                elif isinstance(value, ast_type):
                    children = [value]
                else:
                    continue
                for item in children:
                    if not isinstance(item, ast_type):
                        continue
                    child: Any = item
                    kind = type(child)
                    child_scope = scope
                    if kind is name_type:
                        scope_of[id(child)] = scope
                        if nonascii and child.lineno in nonascii:
                            self._check_identifier(child)
                        continue
                    if kind is ast.Constant:
                        continue
                    if kind is call_type:
                        scope_of[id(child)] = scope
                        self.calls.append((child, scope))
                    elif kind is attribute_type or kind is subscript_type:
                        inner = child.value
                        if type(inner) is attribute_type and inner.attr in ("environ", "environb"):
                            self.partial_environ.add(id(inner))
                    elif kind in scope_types:
                        child_scope = self._enter_scope(child, scope, next_scope)
                        next_scope += 1
                    elif kind is ast.Import:
                        for alias in child.names:
                            if alias.asname:
                                self.aliases[alias.asname] = alias.name
                            else:
                                top = alias.name.split(".")[0]
                                self.aliases.setdefault(top, top)
                    elif kind is ast.ImportFrom:
                        module = child.module or ""
                        for alias in child.names:
                            self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}" if module else alias.name
                    elif kind is ast.Assign:
                        for target in child.targets:
                            self._bind(target, child.value, scope, "=")
                    elif kind is ast.AnnAssign and child.value is not None:
                        self._bind(child.target, child.value, scope, "=")
                    elif kind is ast.AugAssign and type(child.target) is name_type:
                        if isinstance(child.op, ast.Add):
                            self.bindings.setdefault((scope, child.target.id), []).append(("+=", child.value))
                    elif kind is ast.NamedExpr:
                        self._bind(child.target, child.value, scope, "=")
                    elif kind is ast.With or kind is ast.AsyncWith:
                        for item in child.items:
                            if item.optional_vars is not None:
                                self._bind(item.optional_vars, item.context_expr, scope, "=")
                    stack.append((child, child_scope))

    def _enter_scope(self, child: ast.AST, scope: int, child_scope: int) -> int:
        self.parent_scope[child_scope] = scope
        name = getattr(child, "name", "<lambda>")
        self.facts.scopes[child_scope] = name
        if isinstance(child, ast.ClassDef):
            self.class_bases[child_scope] = [self.resolve(b) for b in child.bases]
            return child_scope
        assert isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if not isinstance(child, ast.Lambda):
            self.functions.setdefault(name, child_scope)
            if isinstance(child, ast.FunctionDef):
                self.function_defs.setdefault(name, child)
            if self.nonascii_lines and child.lineno in self.nonascii_lines:
                self._check_raw(child.lineno, name)
        args = child.args
        params = {a.arg for a in args.args + args.kwonlyargs + args.posonlyargs}
        if args.vararg:
            params.add(args.vararg.arg)
        if args.kwarg:
            params.add(args.kwarg.arg)
        self.params[child_scope] = params
        return child_scope

    def _check_identifier(self, node: ast.Name) -> None:
        """The source spelling of a name: NFKC turns look-alikes (``ｅｘｅｃ``) into another name."""
        line = self.lines[node.lineno - 1] if 0 < node.lineno <= len(self.lines) else ""
        raw_bytes = line.encode("utf-8")[node.col_offset: node.end_col_offset or node.col_offset]
        raw = raw_bytes.decode("utf-8", "replace")
        self._check_raw(node.lineno, raw, node.id)

    def _check_raw(self, lineno: int, raw: str, normalized: str | None = None) -> None:
        if raw.isascii() or len(self.facts.homoglyphs) > 20:
            return
        if normalized is not None and raw != normalized and normalized.isascii():
            self.facts.homoglyphs.append((lineno, raw))
            return
        scripts = {unicodedata.name(ch, "?").split(" ")[0] for ch in raw if ch.isalpha() and not ch.isascii()}
        if any(ch.isascii() and ch.isalpha() for ch in raw) and scripts & {"CYRILLIC", "GREEK"}:
            self.facts.homoglyphs.append((lineno, raw))

    def _bind(self, target: ast.expr, value: ast.expr, scope: int, kind: str) -> None:
        if isinstance(target, ast.Name):
            self.bindings.setdefault((scope, target.id), []).append((kind, value))
        elif isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)):
            if len(target.elts) == len(value.elts):
                for t, v in zip(target.elts, value.elts):
                    self._bind(t, v, scope, kind)

    def _lookup(self, name: str, node: ast.AST) -> ast.expr | None:
        scope = self.scope_of.get(id(node), 0)
        while True:
            bound = self.bindings.get((scope, name))
            if bound:
                last = max(i for i, (kind, _) in enumerate(bound) if kind == "=") if any(
                    k == "=" for k, _ in bound) else None
                if last is None:
                    return None
                expr = bound[last][1]
                for kind, extra in bound[last + 1:]:
                    expr = ast.BinOp(left=expr, op=ast.Add(), right=extra)
                    ast.copy_location(expr, extra)
                    self.scope_of[id(expr)] = scope
                return expr
            if scope == 0 or scope in self.params and name in self.params[scope]:
                return None
            scope = self.parent_scope.get(scope, 0)

    # -- names --------------------------------------------------------------------------------------

    def resolve(self, node: ast.expr, depth: int = 0) -> str:
        """A dotted name for a callee: imports resolved, ``__import__``/``getattr`` of constants seen through."""
        if depth > 8:
            return "?"
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            bound = self._lookup(node.id, node)
            if bound is not None and depth < 4:
                if isinstance(bound, ast.Call):
                    return self.resolve(bound, depth + 1)
                if isinstance(bound, (ast.Name, ast.Attribute)):
                    return self.resolve(bound, depth + 1)
            return node.id
        if isinstance(node, ast.Attribute):
            return f"{self.resolve(node.value, depth + 1)}.{node.attr}"
        if isinstance(node, ast.Call):
            inner = self.resolve(node.func, depth + 1)
            if inner in ("__import__", "importlib.import_module", "builtins.__import__") and node.args:
                module = self.folder.fold_str(node.args[0])
                if module:
                    return module
            if inner == "getattr" and len(node.args) >= 2:
                attr = self.folder.fold_str(node.args[1])
                if attr:
                    base = self.resolve(node.args[0], depth + 1)
                    if base in ("__builtins__", "builtins", "__builtin__"):
                        return attr
                    return f"{base}.{attr}"
            return inner + "()"
        if isinstance(node, ast.Subscript):
            key = self.folder.fold_str(node.slice)
            base = self.resolve(node.value, depth + 1)
            if key and ("__builtins__" in base or base.endswith("globals()") or base.endswith("vars()")
                        or base.endswith("__dict__") or base.endswith("locals()")):
                return key
            return base + "[]"
        return "?"

    # -- origins ------------------------------------------------------------------------------------

    def origins(self, node: ast.AST, depth: int = 0) -> frozenset[str]:
        key = id(node)
        if key in self._origin_cache:
            return self._origin_cache[key]
        self._origin_cache[key] = frozenset()  # cycles
        found: set[str] = set()
        if depth > 6:
            return frozenset()
        value = NOTHING
        if isinstance(node, ast.expr):
            saved = self.folder.tricks
            self.folder.tricks = set()
            value = self.folder.fold(node)
            tricks = self.folder.tricks
            self.folder.tricks = saved | tricks
            if value is not NOTHING:
                found.add("const")
                if tricks & TRICKS:
                    found.add("obfuscated")
                if any(t in tricks for t in ("base64", "zlib", "hex", "marshal")):
                    found.add("decoded")
        if value is NOTHING:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call):
                    name = self.resolve(sub.func)
                    found |= _call_origin(name)
                    if name in ("chr",):
                        found.add("obfuscated")
                    if isinstance(sub.func, ast.Name) and sub.func.id in self.function_defs:
                        for ret in self._returns(sub.func.id):
                            found |= self.origins(ret, depth + 1)
                elif isinstance(sub, ast.Name) and sub is not node or isinstance(node, ast.Name) and sub is node:
                    assert isinstance(sub, ast.Name)
                    if sub.id in ("chr", "ord") and sub.id not in self.aliases:
                        found.add("obfuscated")
                        continue
                    scope = self.scope_of.get(id(sub), 0)
                    if scope in self.params and sub.id in self.params[scope] and \
                            self.bindings.get((scope, sub.id)) is None:
                        found.add("param")
                        continue
                    bound = self._lookup(sub.id, sub)
                    if bound is not None:
                        found |= self.origins(bound, depth + 1)
                elif isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.BitXor):
                    found.add("obfuscated")
                elif isinstance(sub, ast.Attribute):
                    dotted = self.resolve(sub)
                    if dotted in ("os.environ", "os.environb") and id(sub) not in self.partial_environ:
                        found.add("env")
                elif isinstance(sub, ast.Subscript):
                    dotted = self.resolve(sub.value)
                    if dotted in ("os.environ",):
                        key_name = self.folder.fold_str(sub.slice)
                        if key_name and key_name.upper() in HOST_ENV_NAMES:
                            found.add("hostinfo")
        result = frozenset(found)
        self._origin_cache[key] = result
        return result

    def _returns(self, name: str) -> list[ast.expr]:
        if name not in self.function_nodes:
            definition = self.function_defs[name]
            self.function_nodes[name] = [n.value for n in ast.walk(definition)
                                         if isinstance(n, ast.Return) and n.value is not None]
        return self.function_nodes[name]

    # -- events -------------------------------------------------------------------------------------

    def excerpt(self, node: ast.AST) -> str:
        line = getattr(node, "lineno", 0)
        if self.base_line is not None:
            text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
            return "payload: " + text.strip()[:180]
        if 0 < line <= len(self.lines):
            return self.lines[line - 1].strip()[:200]
        return ""

    def line(self, node: ast.AST) -> int:
        return self.base_line if self.base_line is not None else getattr(node, "lineno", 0)

    def add(self, kind: str, node: ast.AST, name: str, scope: int, origins: frozenset[str] = frozenset(),
            text: str = "") -> None:
        self.facts.events.append(Event(kind, self.line(node), name, self.excerpt(node), scope, origins, text[:2000]))

    def run(self) -> None:
        self.collect()
        for call, scope in self.calls:
            self._call(call, scope)
        self._install_scopes()

    def _arg_text(self, call: ast.Call) -> str:
        parts = []
        for arg in call.args[:3]:
            if isinstance(arg, (ast.List, ast.Tuple)):
                items = [self.folder.fold_str(e) for e in arg.elts[:20]]
                parts.append(" ".join(item if item is not None else "?" for item in items))
                continue
            value = self.folder.fold(arg)
            if isinstance(value, list):
                value = " ".join(str(v) for v in value if isinstance(v, (str, int)))
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, str):
                parts.append(value)
        return " ".join(parts)

    def _call(self, call: ast.Call, scope: int) -> None:
        name = self.resolve(call.func)
        func = call.func
        bare = name[:-2] if name.endswith("()") else name
        # getattr(__builtins__, <computed>) and friends
        if name in DANGEROUS_BUILTINS:
            target: ast.expr = func
            if isinstance(func, ast.Name):
                bound = self._lookup(func.id, func)
                if isinstance(bound, (ast.Call, ast.Subscript)):
                    target = bound
            if isinstance(target, ast.Call) and self.resolve(target.func) == "getattr" and len(target.args) >= 2:
                base = self.resolve(target.args[0])
                if (base in ("__builtins__", "builtins", "__builtin__") or base.endswith("__dict__")) and \
                        not isinstance(target.args[1], ast.Constant):
                    self.add("getattr-builtins", call, name, scope, self.origins(target.args[1]))
            elif isinstance(target, ast.Subscript) and not isinstance(target.slice, ast.Constant):
                self.add("getattr-builtins", call, name, scope)
        if name in DESERIALIZE_FUNCS and call.args:
            origins = self.origins(call.args[0])
            if "const" in origins and origins & {"decoded", "obfuscated"}:
                # unpickling an embedded, encoded blob runs whatever the blob says
                self.add("exec", call, name, scope, origins)
                return
        if name in EXEC_FUNCS or bare in EXEC_FUNCS:
            arg = call.args[0] if call.args else (call.keywords[0].value if call.keywords else None)
            origins = self.origins(arg) if arg is not None else frozenset()
            if arg is not None and install_like(self) and len(ast.dump(arg)) > 4000 and "const" not in origins:
                origins |= {"obfuscated"}
            text = self.folder.fold_str(arg) if arg is not None else None
            self.add("exec", call, name, scope, origins, text or "")
            if text and (origins & {"obfuscated", "decoded"} or len(text) > 40):
                self._payload(text, call)
            return
        if name in ("__import__", "importlib.import_module", "builtins.__import__") and call.args:
            if self.folder.fold_str(call.args[0]) is None or "obfuscated" in self.origins(call.args[0]):
                self.add("dynamic-import", call, name, scope, self.origins(call.args[0]))
            return
        if name in DECODE_FUNCS or bare.endswith((".decrypt", "Fernet().decrypt")) or (
                name.endswith(".decode") and call.args and self._codec_arg(call)):
            origins = self.origins(call.args[0]) if call.args else frozenset()
            self.add("decode", call, name, scope, origins)
            value = self.folder.fold(call)
            if isinstance(value, (bytes, str)):
                text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
                self.facts.strings.append((self.line(call), text[:20000]))
                if looks_like_python(text):
                    self._payload(text, call)
            return
        if name in PROCESS_FUNCS or bare in PROCESS_FUNCS:
            origins = frozenset().union(*(self.origins(a) for a in call.args[:2])) if call.args else frozenset()
            text = self._arg_text(call)
            if name.startswith("pty.") or self._uses_fileno(call):
                self.add("dup2", call, name, scope)
            self.add("process", call, name, scope, origins, text)
            if _NETWORK_COMMAND.match(text):
                every = frozenset().union(*(self.origins(a) for a in [*call.args, *(k.value for k in call.keywords)]))
                self.add("send" if _SEND_COMMAND.search(text) or every & {"env", "hostinfo", "cmdout"} else "download",
                         call, name, scope, every, text)
            inline = _PYTHON_C.search(text)
            if inline:
                self._payload(inline.group(2), call)
            return
        if bare in ("os.dup2",) or name.endswith(".dup2"):
            self.add("dup2", call, name, scope)
            return
        if bare in ("socket.socket", "socket.create_connection") or bare.endswith("socket.socket().connect"):
            self.add("socket", call, name, scope, text=self._arg_text(call))
            if bare.endswith("connect") or bare == "socket.create_connection":
                self.add("connect", call, name, scope, text=self._arg_text(call))
        if name.startswith(CLIPBOARD_FUNCS) or name.endswith(("clipboard_get", "clipboard_append", "OpenClipboard",
                                                              "SetClipboardData", "GetClipboardData")):
            self.add("clipboard", call, name, scope)
            return
        if any(marker in name for marker in NATIVE_EXEC):
            self.add("native-exec", call, name, scope)
            return
        if name in REGISTRY_WRITE:
            self.add("registry-write", call, name, scope, text=" ".join(
                s for s in (self.folder.fold_str(a) for a in call.args[:4]) if s))
            return
        if bare in ("os.chmod", "os.fchmod") and len(call.args) >= 2:
            mode = self.folder.fold(call.args[1])
            if (isinstance(mode, int) and mode & 0o111) or "S_IEXEC" in ast.dump(call.args[1]) or \
                    "S_IX" in ast.dump(call.args[1]):
                self.add("chmod-exec", call, name, scope)
            return
        all_args = [*call.args, *(k.value for k in call.keywords)]

        def all_origins() -> frozenset[str]:
            return frozenset().union(*(self.origins(a) for a in all_args)) if all_args else frozenset()

        if name in HOSTINFO_FUNCS or bare in HOSTINFO_FUNCS:
            self.add("hostinfo", call, name, scope)
        elif bare in ("os.getenv", "os.environ.get") and call.args and \
                (self.folder.fold_str(call.args[0]) or "").upper() in HOST_ENV_NAMES:
            self.add("hostinfo", call, name, scope)
        if bare in ("dict", "json.dumps", "str", "repr") and call.args and \
                self.resolve(call.args[0]) in ("os.environ",):
            self.add("envdump", call, name, scope)
        elif bare in ("os.environ.copy", "os.environ.items") :
            self.add("envdump", call, name, scope)
        is_send = name in SEND_FUNCS or bare in SEND_FUNCS or name.endswith((".sendall", ".send", ".sendto")) and \
            "socket" in name or (bare in ("urllib.request.urlopen", "urllib.request.Request", "urllib2.urlopen")
                                 and (len(call.args) > 1 or any(k.arg == "data" for k in call.keywords)))
        is_download = name in DOWNLOAD_FUNCS or bare in DOWNLOAD_FUNCS
        if is_send or is_download or bare.startswith(NETWORK_PREFIXES):
            text = self._arg_text(call)
            kind = "send" if is_send else "download" if is_download else "network"
            arg_origins = all_origins()
            dest = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg in ("url", "host")),
                                                        None)
            if dest is not None:
                arg_origins |= {f"dest-{o}" for o in self.origins(dest) & {"decoded", "obfuscated"}}
            self.add(kind, call, name, scope, arg_origins, text)
            if bare.endswith(("urlretrieve", "wget.download")) and len(call.args) >= 2:
                self.add("write", call, name, scope, frozenset({"network"}), self._path_text(call.args[1]))
            return
        if isinstance(func, ast.Attribute) and func.attr in WRITE_METHODS:
            text = self.folder.fold_str(call.args[0]) if call.args else None
            path = ""
            receiver = func.value
            if isinstance(receiver, ast.Name):
                bound = self._lookup(receiver.id, receiver)
                if isinstance(bound, ast.Call) and self.resolve(bound.func) in ("open", "io.open") and bound.args:
                    path = self._path_text(bound.args[0])
            elif isinstance(receiver, ast.Call) and self.resolve(receiver.func) in ("open", "io.open") and receiver.args:
                path = self._path_text(receiver.args[0])
            self.add("write", call, name, scope, all_origins(), path + ("\n" + text[:1000] if text else ""))
            if text and looks_like_python(text):
                self._payload(text, call)
            return
        if bare == "open" and len(call.args) >= 2:
            mode = self.folder.fold_str(call.args[1]) or ""
            if any(c in mode for c in "wa"):
                self.add("write", call, name, scope, text=self._path_text(call.args[0]))
        elif bare in ("shutil.copy", "shutil.copyfile", "shutil.copy2", "shutil.move"):
            self.add("write", call, name, scope, text=self._arg_text(call))

    def _path_text(self, node: ast.expr) -> str:
        """A written file's path: folded when constant, else its source text (``exe_path``, ``tmp + '.exe'``)."""
        folded = self.folder.fold_str(node)
        if folded is not None:
            return folded[:300]
        try:
            text = ast.unparse(node)
            if isinstance(node, ast.Name):
                bound = self._lookup(node.id, node)
                if bound is not None:
                    text += " " + ast.unparse(bound)
            return text[:300]
        except (ValueError, RecursionError):
            return ""

    def _codec_arg(self, call: ast.Call) -> bool:
        codec = self.folder.fold_str(call.args[0]) if call.args else None
        return codec is not None and codec.replace("-", "_").lower() in ("rot13", "rot_13", "hex", "base64", "zlib")

    def _uses_fileno(self, call: ast.Call) -> bool:
        for kw in call.keywords:
            if kw.arg in ("stdin", "stdout", "stderr") and isinstance(kw.value, ast.Call) and \
                    isinstance(kw.value.func, ast.Attribute) and kw.value.func.attr == "fileno":
                return True
        return False

    def _payload(self, text: str, node: ast.AST) -> None:
        key = hash(text)
        if key in self.seen_payloads:
            return
        self.seen_payloads.add(key)
        line = self.line(node)
        self.facts.payloads.append((line, text[:2000]))
        self.facts.strings.append((line, text[:20000]))
        if self.depth >= MAX_PAYLOAD_DEPTH or not looks_like_python(text):
            return
        tree, _error = parse(text)
        if tree is None:
            return
        inner = Facts()
        _Module(tree, text, inner, self.depth + 1, line).run()
        scope = self.scope_of.get(id(node), 0)
        for event in inner.events:
            self.facts.events.append(Event(event.kind, line, event.name, event.excerpt, scope,
                                           event.origins | {"payload"}, event.text))
        self.facts.strings.extend(inner.strings)
        self.facts.payloads.extend(inner.payloads)

    def _install_scopes(self) -> None:
        """Command classes (bases named like setuptools commands) and functions the module body calls."""
        commands = ("install", "develop", "egg_info", "build_py", "build_ext", "sdist", "bdist_wheel",
                    "build", "Command", "easy_install", "bdist_egg")
        class_scopes = {s for s, bases in self.class_bases.items()
                        if any(b.split(".")[-1] in commands or "setuptools.command" in b for b in bases)}
        method_scopes = {s for s, parent in self.parent_scope.items() if parent in class_scopes}
        self.facts.install_scopes |= class_scopes | method_scopes
        for call, scope in self.calls:
            if not self.place_install:
                break
            if scope == 0 and isinstance(call.func, ast.Name) and call.func.id in self.functions:
                self.facts.install_scopes.add(self.functions[call.func.id])


_ORIGIN_BY_PREFIX = (
    (DECODE_FUNCS, "decoded"),
    (DOWNLOAD_FUNCS, "network"),
    (HOSTINFO_FUNCS, "hostinfo"),
)


def _call_origin(name: str) -> set[str]:
    bare = name[:-2] if name.endswith("()") else name
    found = set()
    for table, origin in _ORIGIN_BY_PREFIX:
        if name in table or bare in table:
            found.add(origin)
    if bare.endswith(".decrypt") or bare.endswith((".b64decode", ".decompress", "fromhex", ".unhexlify")):
        found.add("decoded")
    if bare.startswith(("requests.get", "urllib.request.urlopen", "urllib2.urlopen", "httpx.get")) or \
            bare.endswith((".recv", ".urlopen")):
        found.add("network")
    if bare in ("open", "io.open", "codecs.open") or bare.endswith((".read_text", ".read_bytes")):
        found.add("file")
    if bare in ("os.environ.copy", "os.environ.items", "os.environ.keys", "os.environ.values"):
        found.add("env")
    if bare in ("os.getenv", "os.environ.get"):
        found.add("env-var")
    if bare in ("subprocess.check_output", "subprocess.getoutput", "subprocess.getstatusoutput", "os.popen",
                "commands.getoutput", "os.popen().read", "subprocess.run().stdout"):
        found.add("cmdout")
    return found


_NON_ASCII_WORD = re.compile(r"\w*[^\W\x00-\x7f]\w*")


def homoglyphs(source: str) -> list[tuple[int, str]]:
    """Identifiers with look-alike characters: NFKC folds them to ASCII (``ｅｘｅｃ`` is ``exec``) or they
    mix Latin with Cyrillic/Greek letters."""
    import io
    import tokenize
    found: list[tuple[int, str]] = []
    suspects = False
    for match in _NON_ASCII_WORD.finditer(source):
        word = match.group(0)
        if unicodedata.normalize("NFKC", word).isascii() or (
                re.search(r"[A-Za-z]", word) and re.search(r"[\u0370-\u03ff\u0400-\u04ff]", word)):
            suspects = True
            break
    if not suspects:
        return found
    try:
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        for token in tokens:
            if token.type != tokenize.NAME or token.string.isascii():
                continue
            word = token.string
            folded = unicodedata.normalize("NFKC", word)
            scripts = set()
            for ch in word:
                if ch.isascii():
                    if ch.isalpha():
                        scripts.add("LATIN")
                    continue
                cname = unicodedata.name(ch, "")
                scripts.add(cname.split(" ")[0])
            if folded.isascii() or ("LATIN" in scripts and scripts & {"CYRILLIC", "GREEK"}):
                found.append((token.start[0], word))
            if len(found) > 20:
                break
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return found


def install_like(module: _Module) -> bool:
    return module.place_install


def analyse(source: str, *, depth: int = 0, install: bool = False) -> Facts:
    facts = Facts()
    tree, error = parse(source)
    if tree is None:
        facts.syntax_error = error
        return facts
    module = _Module(tree, source, facts, depth, None)
    module.place_install = install
    module.run()
    return facts
