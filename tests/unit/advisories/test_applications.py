"""Registered applications: reading requirements files, pylock.toml and CycloneDX SBOMs (with the
place and the fix of every error), resolving specifiers and Requires-Dist against the index,
storing the list atomically (a bad list changes nothing), usage counts, and the webhook secret
encrypted at rest (SQLite and PostgreSQL for everything that touches the database)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from bastion.accounts.models import User
from bastion.advisories import applications as apps
from bastion.advisories.applications import DependencyListError, parse_list
from bastion.advisories.models import Application, ApplicationPackage
from bastion.authz import OPERATOR, Principal
from bastion.errors import ServiceError
from bastion.events import Event
from bastion.packaging.models import Project, Release
from bastion.services import Bastion
from tests.conftest import make_user
from tests.unit.world import db_rows


def deps(text: str, fmt: str | None = None, filename: str = "requirements.txt") -> dict[str, tuple]:
    parsed = parse_list(text, fmt=fmt, filename=filename)
    return {d.name: (d.version, d.specifier, d.direct) for d in parsed.dependencies}


def refused(text: str, fmt: str | None = None, filename: str = "requirements.txt") -> str:
    with pytest.raises(DependencyListError) as caught:
        parse_list(text, fmt=fmt, filename=filename)
    return caught.value.message


# -- requirements files ---------------------------------------------------------------------------

def test_requirements_pins_specifiers_extras_markers_and_urls() -> None:
    text = (
        "# the web app\n"
        "Requests==2.31.0 --hash=sha256:" + "a" * 64 + "\n"
        "flask>=2.0,<3\n"
        "Django[bcrypt]~=4.2\n"
        "numpy===1.26.0\n"
        "pywin32==306 ; sys_platform == 'win32'\n"
        "uvloop ; sys_platform == 'linux'\n"
        "attrs==23.*\n"
        "pkg @ https://example.org/pkg-1.0.tar.gz\n"
        "--index-url https://user:secret@example.org/simple/\n"
    )
    parsed = parse_list(text, filename="requirements.txt")
    assert parsed.format == "requirements" and not parsed.complete
    got = {d.name: (d.version, d.specifier, d.extras, d.from_index) for d in parsed.dependencies}
    assert got == {
        "requests": ("2.31.0", "==2.31.0", (), True),
        "flask": (None, "<3,>=2.0", (), True),
        "django": (None, "~=4.2", ("bcrypt",), True),
        "numpy": ("1.26.0", "===1.26.0", (), True),
        "uvloop": (None, "", (), True),
        "attrs": (None, "==23.*", (), True),  # a wildcard is no pin: resolved in the index
        "pkg": (None, "", (), False),  # from a URL: never looked up in the index
    }
    assert parsed.notes == ["requirements.txt:6: pywin32 left out: its marker 'sys_platform == \"win32\"' is "
                            "false in the default environment (CPython 3.12 on Linux x86-64)"]
    assert all(d.direct for d in parsed.dependencies)


@pytest.mark.parametrize(("text", "expected"), [
    ("flask\nrequests==2\nthis is not valid !!!\n",
     "requirements.txt:3: 'this is not valid !!!' is not a valid requirement"),
    ("flask\n-r base.txt\n", "requirements.txt:2: '-r base.txt' includes another file"),
    ("-c constraints.txt\nflask\n", "requirements.txt:1: '-c constraints.txt' includes another file"),
    ("flask\n./vendor/thing\n", "requirements.txt:2: './vendor/thing' is a path or URL without a project name"),
    ("Flask==2.0\nrequests\nflask>=1\n", "requirements.txt:3: flask is listed again (first at requirements.txt:1)"),
    ("# nothing but a comment\n", "requirements.txt: no dependency found in this requirements list"),
    ("flask==1.0\n" + "x" * (apps.MAX_LIST_BYTES + 1), "larger than 5242880 bytes: register a smaller list"),
])
def test_requirements_errors_name_the_line_and_the_fix(text: str, expected: str) -> None:
    message = refused(text)
    assert expected in message, message
    assert ":" in message and ("write" in message or "register" in message or "remove" in message
                               or "list each" in message or "check" in message)


def test_a_list_that_is_not_utf8_is_refused_with_the_byte() -> None:
    with pytest.raises(DependencyListError, match="not UTF-8 text \\(byte 6\\): save the file as UTF-8"):
        parse_list(b"flask\n\xff\xfe==1\n", filename="requirements.txt")


# -- pylock.toml ----------------------------------------------------------------------------------

PYLOCK = """\
lock-version = "1.0"
created-by = "uv"
requires-python = ">=3.11"

[[packages]]
name = "jinja2"
version = "3.1.4"
index = "https://pypi.org/simple"
wheels = [{ url = "https://files.example.org/jinja2-3.1.4-py3-none-any.whl", hashes = { sha256 = "abababababababababababababababababababababababababababababababab" } }]

[[packages]]
name = "markupsafe"
version = "2.1.5"
marker = "sys_platform == 'linux'"
wheels = [{ url = "https://files.example.org/markupsafe-2.1.5-py3-none-any.whl", hashes = { sha256 = "abababababababababababababababababababababababababababababababab" } }]

[[packages]]
name = "markupsafe"
version = "2.0.0"
marker = "sys_platform == 'win32'"
wheels = [{ url = "https://files.example.org/markupsafe-2.0.0-py3-none-any.whl", hashes = { sha256 = "abababababababababababababababababababababababababababababababab" } }]

[[packages]]
name = "local-thing"
directory = { path = "./local" }
"""


def test_pylock_is_stored_as_given_all_direct_one_entry_per_name() -> None:
    parsed = parse_list(PYLOCK, filename="pylock.toml")
    assert parsed.format == "pylock" and parsed.complete
    assert {d.name: (d.version, d.direct) for d in parsed.dependencies} == {
        "jinja2": ("3.1.4", True), "markupsafe": ("2.1.5", True), "local-thing": (None, True)}
    assert any("markupsafe" in note and "left out" in note for note in parsed.notes)


@pytest.mark.parametrize(("text", "expected"), [
    ('lock-version = "1.0"\n[[packages]\n', "pylock.toml: not valid TOML"),
    ('lock-version = "1.0"\n[[packages]]\nname = "x"\nversion = "1"\n',
     "pylock.toml: not a valid pylock file: Missing required value in 'created-by'"),
    ('lock-version = "1.0"\ncreated-by = "x"\n[[packages]]\nname = "a"\nversion = "1.0"\ndirectory = { path = "a1" }\n'
     '[[packages]]\nname = "a"\nversion = "2.0"\ndirectory = { path = "a2" }\n',
     "pylock.toml: packages 'a' lists the versions 1.0, 2.0 for the same environment"),
])
def test_pylock_errors(text: str, expected: str) -> None:
    message = refused(text, filename="pylock.toml")
    assert expected in message, message


# -- CycloneDX ------------------------------------------------------------------------------------

def sbom(components: list[dict[str, Any]], dependencies: list[dict[str, Any]] | None = None,
         spec: str = "1.5") -> str:
    document: dict[str, Any] = {"bomFormat": "CycloneDX", "specVersion": spec, "version": 1,
                                "metadata": {"component": {"type": "application", "name": "shop",
                                                           "bom-ref": "root"}},
                                "components": components}
    if dependencies is not None:
        document["dependencies"] = dependencies
    return json.dumps(document, indent=2)


COMPONENTS = [
    {"type": "library", "name": "Flask", "version": "2.0.1", "purl": "pkg:pypi/flask@2.0.1", "bom-ref": "f"},
    {"type": "library", "name": "Werkzeug", "version": "2.0.2", "purl": "pkg:pypi/Werkzeug@2.0.2", "bom-ref": "w",
     "components": [{"type": "library", "name": "markupsafe", "purl": "pkg:pypi/markupsafe@2.1.1"}]},
    {"type": "library", "name": "left-pad", "purl": "pkg:npm/left-pad@1.3.0", "bom-ref": "n"},
    {"type": "library", "name": "no-purl", "version": "1"},
]


def test_cyclonedx_graph_tells_direct_from_transitive() -> None:
    graph = [{"ref": "root", "dependsOn": ["f"]}, {"ref": "f", "dependsOn": ["w"]}]
    for spec in ("1.4", "1.5", "1.6"):
        parsed = parse_list(sbom(COMPONENTS, graph, spec), filename="bom.json")
        assert parsed.format == "cyclonedx" and parsed.complete
        assert {d.name: (d.version, d.direct) for d in parsed.dependencies} == {
            "flask": ("2.0.1", True), "werkzeug": ("2.0.2", False), "markupsafe": ("2.1.1", False)}
        assert parsed.notes == ["bom.json: 2 component(s) without a pkg:pypi purl left out"]
    # Without a graph every component is direct.
    assert all(d[2] for d in deps(sbom(COMPONENTS), filename="bom.json").values())


@pytest.mark.parametrize(("text", "expected"), [
    ('{"bomFormat": "CycloneDX",\n "specVersion": "1.5",\n "components": [,]}',
     "bom.json:3: not valid JSON (Expecting value, column 17)"),
    ('{"bomFormat": "SPDX"}', 'bom.json: $.bomFormat must be "CycloneDX"'),
    (sbom(COMPONENTS, spec="1.2"), 'bom.json: $.specVersion is "1.2"; CycloneDX 1.4, 1.5, 1.6 are read'),
    (sbom([{"name": "a", "purl": "pkg:pypi/a@1"}, {"name": "b", "purl": "pkg:pypi/b"}]),
     "bom.json: $.components[1].purl 'pkg:pypi/b' has no version: write pkg:pypi/NAME@VERSION"),
    (sbom([{"name": "a", "purl": "not a purl"}]), "bom.json: $.components[0].purl 'not a purl' is not a package URL"),
    (sbom([{"name": "a", "purl": "pkg:pypi/a@1", "components": [{"name": "a", "purl": "pkg:pypi/A@2"}]}]),
     "bom.json: $.components[0].purl names a 1, and $.components[0].components[0].purl names a 2"),
    (sbom([{"name": "a", "purl": 7}]), "bom.json: $.components[0].purl must be a string"),
    (sbom(COMPONENTS, [{"ref": "root", "dependsOn": "f"}]), "bom.json: $.dependencies[0].dependsOn must be a list"),
])
def test_cyclonedx_errors_name_the_json_path(text: str, expected: str) -> None:
    message = refused(text, filename="bom.json")
    assert expected in message, message


def test_format_detection_by_name_then_content() -> None:
    assert apps.detect_format("pylock.toml", "") == "pylock"
    assert apps.detect_format("pylock.dev.toml", "") == "pylock"
    assert apps.detect_format("sbom.cdx.json", "") == "cyclonedx"
    assert apps.detect_format("requirements-dev.in", "") == "requirements"
    assert apps.detect_format("body", '  {"bomFormat": "CycloneDX"}') == "cyclonedx"
    assert apps.detect_format("body", 'lock-version = "1.0"\n') == "pylock"
    assert apps.detect_format("body", "flask\n") == "requirements"
    assert "unknown format 'spdx': use one of requirements, pylock, cyclonedx" in refused("flask", fmt="spdx")


def test_webhook_url_email_and_name_checks() -> None:
    assert apps.check_webhook_url("https://hooks.example.org/bastion") == "https://hooks.example.org/bastion"
    assert apps.check_webhook_url("http://127.0.0.1:8080/hook")
    assert apps.check_webhook_url("http://localhost/hook")
    for url, fragment in [("http://hooks.example.org/x", "must use https (http is allowed only to localhost"),
                          ("ftp://example.org/x", "give an https:// URL"),
                          ("https://user:pw@example.org/x", "must not carry a user name or password"),
                          ("https://example.org:99999/x", "invalid webhook URL")]:
        with pytest.raises(ServiceError, match=fragment.replace("(", "\\(")):
            apps.check_webhook_url(url)
    with pytest.raises(ServiceError, match="invalid contact email"):
        apps.check_email("not an address")
    with pytest.raises(ServiceError, match="invalid application name"):
        apps.check_name("../etc")


# -- resolution and storage (both databases) ------------------------------------------------------

def add_release(session: Any, name: str, version: str, requires: list[str] | None = None, *,
                yanked: bool = False) -> None:
    from packaging.utils import canonicalize_version

    project = session.execute(select(Project).where(Project.normalized_name == name)).scalar_one_or_none()
    if project is None:
        project = Project(name=name, normalized_name=name, ultranormalized_name=name.replace("-", ""))
        session.add(project)
        session.flush()
    session.add(Release(project_id=project.id, version=version, canonical_version=canonicalize_version(version),
                        yanked=yanked, core_metadata={"name": name, "version": version,
                                                      "requires_dist": requires or []}))
    session.flush()


INDEX = [
    ("web", "1.0", []),
    ("web", "2.0", ["jinja>=3", "colorama; sys_platform == 'win32'", "uvloop; sys_platform == 'linux'",
                    "fastjson; extra == 'fast'", "not a requirement ;;"]),
    ("web", "2.1", []),  # yanked below
    ("web", "3.0rc1", []),  # a pre-release: not chosen for >=1.0
    ("jinja", "3.0", []),
    ("jinja", "3.1", ["markup>=2"]),
    ("markup", "2.0", ["web"]),  # a cycle back to web
    ("requests", "2.0.0", ["idna"]),
]


def user_principal(bastion: Bastion, name: str) -> Principal:
    with bastion.db.read() as session:
        user = session.execute(select(User).where(User.username == name)).scalar_one()
        return Principal(user_id=user.id, username=user.username, is_admin=user.is_admin)


def stored(bastion: Bastion, name: str) -> dict[str, tuple]:
    with bastion.db.read() as session:
        app = session.execute(select(Application).where(Application.name == name)).scalar_one()
        return {p.normalized_name: (p.version, p.specifier, p.direct) for p in session.execute(
            select(ApplicationPackage).where(ApplicationPackage.application_id == app.id)).scalars()}


def test_resolution_storage_replacement_and_usage(bastion: Bastion) -> None:
    make_user(bastion, "carol")
    make_user(bastion, "dave")
    with bastion.db.write() as session:
        for name, version, requires in INDEX:
            add_release(session, name, version, requires, yanked=(name, version) == ("web", "2.1"))
    carol = user_principal(bastion, "carol")
    text = "web[fast]>=1.0\nrequests==2.0.0\nnot-here>=1\njinja<3.1\n"
    with bastion.db.write() as session:
        detail = apps.register(session, bastion, "shop", text, principal=carol, filename="requirements.txt",
                               webhook_url="http://127.0.0.1:9/hook")
    assert detail.created and detail.webhook_secret is not None and len(detail.webhook_secret) == 64
    assert stored(bastion, "shop") == {
        "web": ("2.0", ">=1.0", True),  # 2.1 is yanked, 3.0rc1 a pre-release
        "requests": ("2.0.0", "==2.0.0", True),
        "not-here": (None, ">=1", True),  # not in this index
        "jinja": ("3.0", "<3.1", True),  # listed: the list's specifier wins over web's >=3
        "idna": (None, "", False),  # needed by requests, not in this index
        "uvloop": (None, "", False),  # marker true on Linux
        "fastjson": (None, "", False),  # web[fast]
    }  # no colorama (win32 only); markup not reached: jinja 3.0 needs nothing
    assert (detail.summary.direct, detail.summary.transitive) == (4, 3)

    # A list that follows the chain jinja 3.1 -> markup -> web (a cycle) ends.
    with bastion.db.write() as session:
        apps.register(session, bastion, "kiosk", "jinja\n", principal=carol)
    assert stored(bastion, "kiosk") == {"jinja": ("3.1", "", True), "markup": ("2.0", ">=2", False),
                                        "web": ("2.0", "", False), "uvloop": (None, "", False)}
    with bastion.db.read() as session:
        assert apps.usage_counts(session, "web") == (1, 1)
        assert apps.usage_counts(session, "Jinja") == (2, 0)
        assert apps.usage_counts(session, "markup") == (0, 1)
        assert apps.usage_counts(session, "nothing") == (0, 0)

    # The webhook secret is stored encrypted (Fernet), and decrypts to the one shown once.
    with bastion.db.read() as session:
        app = session.execute(select(Application).where(Application.name == "shop")).scalar_one()
        assert app.webhook_secret is not None and detail.webhook_secret not in app.webhook_secret
        assert apps.webhook_secret(bastion, app) == detail.webhook_secret
        assert app.owner_id == carol.user_id and app.source_format == "requirements"

    # A bad list, an unreachable webhook scheme, someone else's application: refused, nothing changed.
    before = db_rows(bastion)
    dave = user_principal(bastion, "dave")
    attempts: list[tuple[str, dict[str, Any], str]] = [
        ("web==1.0\nbroken line here\n", {"principal": carol}, "requirements.txt:2:"),
        ("web==1.0\n", {"principal": carol, "webhook_url": "http://example.org/x"}, "must use https"),
        ("web==1.0\n", {"principal": dave}, "only the application's owner or an index admin may do this"),
        ("broken line\n", {"principal": dave}, "only the application's owner"),  # refused before it is read
        ("web==1.0\n", {"principal": carol, "owner": "dave"}, "only an index admin may register an application "
                                                             "for another user"),
        ("web==1.0\n", {"principal": Principal(user_id=carol.user_id, username="carol", is_admin=False,
                                               token_projects=frozenset({"web"}))}, "project-scoped API token"),
    ]
    for content, kwargs, message in attempts:
        with pytest.raises(ServiceError, match=message.replace("(", "\\(")), bastion.db.write() as session:
            apps.register(session, bastion, "shop", content, filename="requirements.txt", **kwargs)
    assert db_rows(bastion) == before

    # Replaced atomically: the new list only; the secret kept (shown only when new).
    with bastion.db.write() as session:
        again = apps.register(session, bastion, "shop", "web==1.0\n", principal=carol)
    assert not again.created and again.webhook_secret is None
    assert stored(bastion, "shop") == {"web": ("1.0", "==1.0", True)}
    with bastion.db.write() as session:
        rotated = apps.register(session, bastion, "shop", "web==1.0\n", principal=carol, rotate_secret=True,
                                contact_email="ops@example.org")
        assert rotated.webhook_secret not in (None, detail.webhook_secret)
        cleared = apps.register(session, bastion, "shop", "web==1.0\n", principal=carol, webhook_url="")
        assert cleared.summary.webhook_url is None and cleared.summary.contact_email == "ops@example.org"
    with bastion.db.read() as session:
        assert session.execute(select(Application.webhook_secret).where(Application.name == "shop")).scalar() is None
        events = [(e.action, e.actor, e.subject, e.details) for e in session.execute(
            select(Event).where(Event.action.like("application.%")).order_by(Event.id)).scalars()]
    assert [e[0] for e in events] == ["application.registered", "application.registered", "application.updated",
                                      "application.updated", "application.updated"]
    assert events[0][1:3] == ("carol", "application:shop")
    assert events[0][3]["webhook_secret_issued"] is True and events[2][3]["webhook_secret_issued"] is False
    assert not any(detail.webhook_secret in json.dumps(e[3]) for e in events)

    # Listing: carol sees hers, dave none, the operator all; removal takes the rows with it.
    with bastion.db.read() as session:
        assert [a.name for a in apps.list_applications(session, principal=carol)] == ["kiosk", "shop"]
        assert apps.list_applications(session, principal=dave) == []
        assert [a.name for a in apps.list_applications(session, principal=OPERATOR)] == ["kiosk", "shop"]
    with pytest.raises(ServiceError, match="only the application's owner"), bastion.db.write() as session:
        apps.remove(session, bastion, "kiosk", principal=dave)
    with bastion.db.write() as session:
        apps.remove(session, bastion, "kiosk", principal=carol)
    with bastion.db.read() as session:
        assert apps.usage_counts(session, "markup") == (0, 0)
        with pytest.raises(ServiceError, match="no application named 'kiosk': register it first"):
            apps.show(session, "kiosk", principal=carol)
        assert session.execute(select(Event.details).where(Event.action == "application.removed")).scalar_one() \
            == {"owner": "carol"}


def test_the_operator_must_name_an_owner_and_an_orphan_is_admin_only(bastion: Bastion) -> None:
    make_user(bastion, "carol")
    make_user(bastion, "erin")
    with pytest.raises(ServiceError, match="needs an owner to receive its alerts: give --owner USER"), \
            bastion.db.write() as session:
        apps.register(session, bastion, "ops", "web==1\n", principal=OPERATOR)
    with pytest.raises(ServiceError, match="no user named 'nobody' to own the application"), \
            bastion.db.write() as session:
        apps.register(session, bastion, "ops", "web==1\n", principal=OPERATOR, owner="nobody")
    with bastion.db.write() as session:
        apps.register(session, bastion, "ops", "web==1\n", principal=OPERATOR, owner="carol")
        session.execute(select(Application)).scalar_one().owner_id = None  # as if carol's account was deleted
    erin = user_principal(bastion, "erin")
    with pytest.raises(ServiceError, match="only the application's owner or an index admin"), \
            bastion.db.write() as session:
        apps.register(session, bastion, "ops", "web==2\n", principal=erin)
    assert stored(bastion, "ops") == {"web": ("1", "==1", True)}


def test_two_first_registrations_of_one_name_at_once(bastion: Bastion) -> None:
    """One wins and owns it; the other is refused as for any application of someone else (not a
    unique-constraint error)."""
    import threading

    make_user(bastion, "carol")
    make_user(bastion, "dave")
    people = [user_principal(bastion, "carol"), user_principal(bastion, "dave")]
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def register(principal: Principal) -> None:
        start.wait()
        try:
            with bastion.db.write() as session:
                apps.register(session, bastion, "race", "web==1.0\n", principal=principal)
            outcomes.append("created")
        except ServiceError as exc:
            outcomes.append(exc.message)

    threads = [threading.Thread(target=register, args=(p,)) for p in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["created", "only the application's owner or an index admin may do this"]
