"""Browser tests: Debian's Chromium, headless, driven by Playwright, against a live ``bastion serve``.

A newcomer's whole path goes through a real browser here: registering, the verification email
(a real SMTP server, tests/mailbox.py), an authenticator app (TOTP codes computed with pyotp from
the key on the enrollment page), a security key (Chromium's virtual WebAuthn authenticator, over
the DevTools protocol), API tokens, and publishing with real twine and installing with pip.
Every page a test visits is watched for console errors, uncaught exceptions and CSP violations.

The browser: ``/usr/bin/chromium`` (Debian's ``chromium`` package; ``BASTION_TEST_CHROMIUM``
names another binary), launched by Playwright with ``executable_path``: no browser is ever
downloaded (never run ``playwright install``). Pages are opened as ``http://localhost:PORT``, not
``127.0.0.1``: WebAuthn refuses IP addresses as relying-party ids, and localhost is a secure
context. When Chromium is missing, these tests fail the run if ``CI`` is set (scripts/test
installs the package first when it can), and otherwise are left out with a loud notice in the
summary.

SQLite only: each test gets its own server on a copy of the migrated SQLite template. What the
server does with accounts, factors and tokens is tested on SQLite and PostgreSQL elsewhere
(tests/unit, tests/integration); these tests are about the pages and the browser.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest

from bastion.web.render import CONTENT_SECURITY_POLICY

from tests.conftest import _sqlite_copy
from tests.integration.conftest import BASTION, PYTHON, TWINE, _free_port, clean_env, run
from tests.mailbox import Mailbox

CHROMIUM = Path(os.environ.get("BASTION_TEST_CHROMIUM") or "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
IN_CI = bool(os.environ.get("CI"))
INSTALL_HINT = (
    f"Chromium is missing at {CHROMIUM}: install Debian's package with `apt-get install -y chromium` "
    "(scripts/test does it when it runs as root with apt-get), or set BASTION_TEST_CHROMIUM to a Chromium binary. "
    "Never `playwright install`: the tests use the system Chromium."
)
PASSWORD = "correct horse battery staple"
SERVER_START_TIMEOUT = 60
ACTION_TIMEOUT_MS = 15_000
HERE = Path(__file__).parent

_state: dict[str, int] = {"deselected": 0}


def chromium_available() -> bool:
    return CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)


# ---------------------------------------------------------------------------------------------
# Collection: the ``browser`` marker, and what happens without Chromium
# ---------------------------------------------------------------------------------------------

def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if HERE in Path(str(item.fspath)).parents]
    for item in ours:
        item.add_marker(pytest.mark.browser)
    if not ours or chromium_available() or IN_CI:
        return  # in CI, the ``chromium`` fixture fails each of them with the install hint
    _state["deselected"] = len(ours)
    config.hook.pytest_deselected(items=ours)
    dropped = set(map(id, ours))
    items[:] = [item for item in items if id(item) not in dropped]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if _state["deselected"]:
        terminalreporter.write_sep(
            "!", f"NOT RUN: {_state['deselected']} browser tests. {INSTALL_HINT} In CI this fails the run.", red=True
        )


# ---------------------------------------------------------------------------------------------
# The browser
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, launched once per session."""
    if not chromium_available():
        pytest.fail(INSTALL_HINT, pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where tests put their screenshots (under pytest's tmp dir)."""
    return tmp_path_factory.mktemp("screenshots")


# Runs in every page before its own scripts (and is not subject to the page's CSP): reports CSP
# violations as console errors, besides the message Chromium logs itself.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline") +
                " in " + e.sourceFile + ":" + e.lineNumber);
});
"""
_FAILED_LOAD = re.compile(r"^Failed to load resource: the server responded with a status of \d+")


@dataclass
class Tab:
    """A browser tab (its own context: cookies, virtual authenticators) on a live site, watching
    the console: errors, uncaught exceptions, CSP violations and failed requests are problems."""

    context: Any
    page: Any
    base: str
    shots: Path
    console: list[tuple[str, str]] = field(default_factory=list)
    """(text, source URL) of every console error and CSP report since the last check."""
    documents: set[str] = field(default_factory=set)
    """URLs loaded as the main document: their error statuses are the page's own, asserted by
    the tests, not console problems."""
    shot_numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    """Numbers the screenshots of a test (shared by its tabs), in the order they were taken."""
    last_document: Any = None
    """The response of the latest main-document load (its headers)."""

    def __post_init__(self) -> None:
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.console.append((f"uncaught exception: {exc}", self.page.url)))
        self.page.on("request", self._on_request)
        self.page.on("requestfailed", self._on_request_failed)
        self.page.on("response", self._on_response)

    def _on_console(self, message: Any) -> None:
        text = message.text
        if message.type == "error" or "Content Security Policy" in text:
            self.console.append((text, (message.location or {}).get("url", "")))

    def _on_request(self, request: Any) -> None:
        if request.is_navigation_request() and request.frame == self.page.main_frame:
            self.documents.add(request.url)

    def _on_response(self, response: Any) -> None:
        request = response.request
        if request.is_navigation_request() and request.frame == self.page.main_frame:
            self.last_document = response

    def _on_request_failed(self, request: Any) -> None:
        failure = request.failure or ""
        if "ERR_ABORTED" not in failure:  # a navigation that replaced a pending load
            self.console.append((f"request failed: {request.method} {request.url}: {failure}", request.url))

    # -- what tests call ---------------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base + path

    def goto(self, path: str, *, status: int = 200) -> Any:
        response = self.page.goto(self.url(path))
        assert response is not None, path
        assert response.status == status, f"GET {path}: {response.status}, expected {status}"
        return response

    def at(self, path: str) -> None:
        """Wait until the tab shows ``path`` (a path, with its query if any)."""
        self.page.wait_for_url(self.url(path))

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).inner_text())

    def problems(self) -> list[str]:
        found = []
        for text, url in self.console:
            if _FAILED_LOAD.match(text) and url in self.documents:
                continue  # e.g. the 403 of a refused code: the test asserts the status it expects
            found.append(f"{text} (at {url or self.page.url})")
        return found

    def assert_clean(self, what: str = "") -> None:
        problems = self.problems()
        self.console.clear()
        assert not problems, f"console problems on {what or self.page.url}:\n" + "\n".join(problems)

    def screenshot(self, name: str) -> Path:
        number = next(self.shot_numbers)
        path = self.shots / f"{number:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-')}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


class Walk:
    """Checks the page the tab shows, and remembers which pages were seen."""

    def __init__(self, tab: Tab) -> None:
        self.tab = tab
        self.seen: list[str] = []

    def goto(self, name: str, path: str, *, status: int = 200) -> None:
        self.tab.goto(path, status=status)
        self.look(name, status=status)

    def submit(self, name: str, button: Any, *, status: int = 200) -> None:
        """Click ``button`` (a locator or selector), which loads a page, and look at that page."""
        page = self.tab.page
        with page.expect_navigation():
            (page.locator(button) if isinstance(button, str) else button).click()
        self.look(name, status=status)

    def look(self, name: str, *, status: int = 200) -> None:
        from playwright.sync_api import expect

        tab, page = self.tab, self.tab.page
        page.wait_for_load_state("load")
        document = tab.last_document
        assert document is not None and document.url == page.url, (name, page.url)
        assert document.status == status, f"{name}: {document.status}, expected {status} ({page.url})"
        headers = document.headers
        assert headers.get("content-security-policy") == CONTENT_SECURITY_POLICY, (name, headers)
        assert headers.get("x-frame-options") == "DENY", name
        assert headers.get("x-content-type-options") == "nosniff", name
        assert page.title().endswith(" · Bastion"), (name, page.title())
        expect(page.locator("main h1").first).to_be_visible()
        # What the CSP blocks (it would be reported below too; these say where it is).
        assert page.locator("[style]").count() == 0, f"{name}: an inline style attribute"
        assert page.locator("script:not([src])").count() == 0, f"{name}: an inline script"
        assert page.locator("link[rel=stylesheet]").evaluate_all(
            "links => links.every(l => l.sheet && l.sheet.cssRules.length > 0)"), f"{name}: a stylesheet did not load"
        tab.screenshot(name)
        tab.assert_clean(f"{name} ({page.url})")
        self.seen.append(name)


# ---------------------------------------------------------------------------------------------
# The live site
# ---------------------------------------------------------------------------------------------

@dataclass
class Site:
    """A running ``bastion serve`` (SQLite in ``data_dir``) sending mail to ``mailbox``."""

    port: int
    data_dir: Path
    home: Path
    mailbox: Mailbox
    proc: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def database(self) -> Path:
        return self.data_dir / "bastion.db"

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def sql(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the site's SQLite database (committed); its rows."""
        with sqlite3.connect(self.database, timeout=30) as conn:
            rows = conn.execute(statement, params).fetchall()
        conn.close()
        return rows

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``bastion ARGS --data-dir DATA_DIR``, as an operator runs it next to the server."""
        return run([BASTION, *args, "--data-dir", str(self.data_dir)], env=clean_env(self.home))

    @property
    def client_env(self) -> dict[str, str]:
        return clean_env(self.home)

    def twine_upload(self, files: Sequence[Path], token: str) -> subprocess.CompletedProcess[str]:
        return run([TWINE, "--no-color", "upload", "--non-interactive", "--disable-progress-bar",
                    "--repository-url", f"{self.url}/legacy/", "-u", "__token__", "-p", token, *map(str, files)],
                   env=self.client_env)

    def pip_install(self, target: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return run([PYTHON, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check", "--no-input",
                    "--target", str(target), "--index-url", f"{self.url}/simple/", *args],
                   env=self.client_env)


def _wait_healthy(site: Site) -> None:
    import httpx

    deadline = time.monotonic() + SERVER_START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if site.proc.poll() is not None:
            raise RuntimeError(f"bastion serve exited with {site.proc.returncode}:\n{site.stderr_text()}")
        try:
            response = httpx.get(f"http://127.0.0.1:{site.port}/health", timeout=2, trust_env=False)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise RuntimeError(f"bastion serve did not answer /health in time ({last}):\n{site.stderr_text()}")


def _stop(site: Site) -> int | None:
    """Stop the server; its exit code if it had exited on its own."""
    if site.proc.poll() is not None:
        return site.proc.returncode
    site.proc.send_signal(signal.SIGTERM)
    try:
        site.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        site.proc.kill()
        site.proc.wait(timeout=15)
    return None


_RUNNING: list[Site] = []


def start_site(directory: Path, mailbox: Mailbox, tmp_path_factory: pytest.TempPathFactory,
               seed: Callable[[Path, str], None] | None = None) -> Site:
    """``bastion serve`` on a copy of the migrated SQLite template in ``directory``/data, mailing
    through ``mailbox``; ``seed(data_dir, database_url)`` runs first, with the server not started."""
    data_dir = directory / "data"
    database_url = _sqlite_copy(data_dir, tmp_path_factory)
    if seed is not None:
        seed(data_dir, database_url)
    home = directory / "home"
    for attempt in range(3):
        port = _free_port()
        stderr_path = directory / f"server-{port}.stderr.log"
        env = clean_env(home, BASTION_SMTP_HOST=mailbox.host, BASTION_SMTP_PORT=str(mailbox.port))
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen([BASTION, "serve", "--port", str(port), "--data-dir", str(data_dir)],
                                    env=env, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
        site = Site(port=port, data_dir=data_dir, home=home, mailbox=mailbox, proc=proc, stderr_path=stderr_path)
        try:
            _wait_healthy(site)
        except RuntimeError:
            _stop(site)
            if "address already in use" in site.stderr_text().lower() and attempt < 2:
                continue  # someone took the port between the probe and the bind
            raise
        _RUNNING.append(site)
        return site
    raise AssertionError("unreachable")


def shutdown_site(site: Site) -> None:
    """Stop the server; fail if it died on its own or logged an unhandled exception (a 500)."""
    if site in _RUNNING:
        _RUNNING.remove(site)
    early_exit = _stop(site)
    log = site.stderr_text()
    problems = []
    if early_exit is not None:
        problems.append(f"the server exited on its own with code {early_exit}")
    if "Traceback" in log or "Exception in ASGI application" in log:
        problems.append("the server logged an unhandled exception (an HTTP 500)")
    if problems:
        pytest.fail(f"bastion serve ({site.url}): {'; '.join(problems)}\n--- server stderr ---\n{log}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """On failure, attach the stderr of every running browser-test server to the report."""
    report = yield
    if report.failed:
        for site in _RUNNING:
            report.sections.append((f"bastion serve stderr ({site.url})", site.stderr_text()[-20000:] or "(empty)"))
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for site in list(_RUNNING):  # a safety net: no server outlives the session
        _RUNNING.remove(site)
        _stop(site)


@pytest.fixture
def make_site(tmp_path: Path, smtp_server: Mailbox,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Site]]:
    """A factory: ``make_site(seed=None)`` starts a server (stopped after the test)."""
    started: list[Site] = []

    def make(seed: Callable[[Path, str], None] | None = None) -> Site:
        site = start_site(tmp_path / f"site{len(started)}", smtp_server, tmp_path_factory, seed)
        started.append(site)
        return site

    yield make
    for site in started:
        shutdown_site(site)


@pytest.fixture
def site(make_site: Callable[..., Site]) -> Site:
    """A fresh server on an empty database, sending mail to the test's SMTP server."""
    return make_site()


@pytest.fixture
def new_tab(chromium: Any, screenshots: Path,
            request: pytest.FixtureRequest) -> Iterator[Callable[[Site], Tab]]:
    """A factory of tabs, each in a fresh browser context (no cookies); every tab must end the
    test without console problems."""
    tabs: list[Tab] = []
    numbers = itertools.count(1)
    shots = screenshots / re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    shots.mkdir(parents=True, exist_ok=True)

    def make(site: Site) -> Tab:
        context = chromium.new_context(viewport={"width": 1200, "height": 900})
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.add_init_script(CSP_LISTENER)
        tab = Tab(context=context, page=context.new_page(), base=site.url, shots=shots, shot_numbers=numbers)
        tabs.append(tab)
        return tab

    yield make
    try:
        for tab in tabs:
            tab.assert_clean("the last page of the test")
    finally:
        for tab in tabs:
            tab.context.close()


@pytest.fixture
def tab(new_tab: Callable[[Site], Tab], site: Site) -> Tab:
    """A fresh tab on ``site``."""
    return new_tab(site)


# ---------------------------------------------------------------------------------------------
# What a person does in the browser
# ---------------------------------------------------------------------------------------------

class TotpApp:
    """An authenticator app: the current code, but never one of a 30 s step already used (the
    server refuses replays), so consecutive sign-ins in one step do not flake. The server accepts
    one step either side of its clock: a code is at most one step ahead of ours."""

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        self.last_step: int | None = None

    def code(self) -> str:
        while True:
            now = time.time()
            current = self.totp.timecode(now)
            step = current if self.last_step is None else max(current, self.last_step + 1)
            if step <= current + 1:
                self.last_step = step
                return str(self.totp.generate_otp(step))
            time.sleep(30 - now % 30 + 0.05)  # until the next step starts

    def wrong_code(self) -> str:
        """A code no step near now has."""
        current = self.totp.timecode(time.time())
        near = {self.totp.generate_otp(s) for s in range(current - 3, current + 4)}
        return next(c for c in (f"{n:06d}" for n in range(123456, 1000000, 111111)) if c not in near)


def register(tab: Tab, username: str, email: str, password: str = PASSWORD) -> None:
    """Create an account through /account/register (which signs the new account in)."""
    tab.goto("/account/register")
    form = tab.page.locator("form[action='/account/register']")
    form.get_by_label("Username").fill(username)
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password", exact=True).fill(password)
    form.get_by_label("Password again").fill(password)
    tab.page.click("#register")
    tab.at("/account/")


def verification_link(site: Site, email: str) -> str:
    """The link of the verification email the SMTP server received for ``email``."""
    message = site.mailbox.wait_for(to=email, subject_contains="Verify your email", timeout=15)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None, message
    match = re.search(r"(\S+/account/verify-email\?token=\S+)", body.get_content())
    assert match, body.get_content()
    return match.group(1)


def sign_out(tab: Tab) -> None:
    tab.page.get_by_role("button", name="Sign out").click()
    tab.at("/")
    assert "You are signed out." in tab.text("p.flash")


def sign_in_password(tab: Tab, username: str, password: str = PASSWORD) -> None:
    """The first step of signing in; ends on the second-factor page for accounts with 2FA."""
    tab.goto("/account/login")
    tab.page.get_by_label("Username").fill(username)
    tab.page.get_by_label("Password").fill(password)
    with tab.page.expect_navigation():
        tab.page.click("#sign-in")


def enroll_totp(tab: Tab) -> tuple[TotpApp, list[str]]:
    """Add an authenticator app from /account/2fa (the QR page); the app and the recovery codes shown."""
    tab.goto("/account/2fa")
    tab.page.click("#totp-add")
    tab.at("/account/2fa/totp/begin")
    qr = tab.page.locator(".qr svg")
    assert qr.is_visible()
    box = qr.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100, box  # big enough to scan
    app = TotpApp(tab.text("#totp-secret").strip())
    tab.page.get_by_label("Code").fill(app.code())
    tab.page.click("#totp-confirm")
    tab.at("/account/2fa/totp/confirm")
    codes = tab.text("#recovery-codes").split()
    assert len(codes) >= 8, codes
    return app, codes
