"""Real files from PyPI through the real clients: what a live server accepts and refuses.

The files are in tests/fixtures/real/ (its README says where each one comes from, its license,
sha256 and the trap it covers). Every file goes through twine 6.1.0 and ``uv publish`` to a live
server (SQLite and PostgreSQL) and must end as the table below says:

* ``pypi``: the default ``upload_strictness = pypi`` (today's PyPI rules): ``()`` means accepted
  and visible on the simple page; otherwise the server refuses it and its message contains one of
  the fragments (several when more than one of PyPI's rules applies and either may speak first).
  The file name is taken out of the message before matching, so a fragment never matches it.
* ``upload_strictness = lenient`` (a second server per backend): every file that ``pypi`` refuses
  is accepted.
* ``twine`` / ``uv``: the client refuses the file itself, before sending anything, whatever the
  server would say (twine 6.1.0 validates metadata with ``packaging``; uv skips files whose name is
  not normalized, with a warning and exit code 0). A client refusal is client behaviour: it is
  pinned here so that a client upgrade that changes it is noticed, and the server's answer to such a
  file is tested through the other client where it sends it.

Accepted wheels that this interpreter can install are installed back with pip (``--no-deps
--only-binary :all: --target``) from the server that accepted them, and a file they ship must exist.
Nothing here uses the network beyond 127.0.0.1: only the committed files.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.tags import sys_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from tests.conftest import fresh_database
from tests.integration.conftest import (
    REPO,
    UV,
    LiveServer,
    _shutdown,
    _sqlite_data_dir,
    describe,
    flat,
    run,
    start_server,
)

REAL = REPO / "tests" / "fixtures" / "real"


@dataclass(frozen=True)
class Case:
    filename: str
    trap: str
    pypi: tuple[str, ...] = ()
    """() accepted under ``upload_strictness = pypi``; else fragments of the server's refusal (any one)."""
    twine: str | None = None
    """twine 6.1.0 refuses the file before sending it: a fragment of its error."""
    uv: str | None = None
    """uv publish refuses (skips) the file before sending it: a fragment of its warning or error."""
    installs: str | None = None
    """A path pip puts into --target when the wheel is installed (None: not installed back)."""


# Fragments of today's PyPI refusals (Warehouse's wording varies between rules and years: any one).
WHEEL_NAME = ("normaliz", "start filename", "should be", "pep 427", "pep 491")
PEP_625 = ("pep 625", "normaliz", "start filename")
ZIP_SDIST = ("tar.gz", "pep 625")
METADATA_2_0 = ("metadata version", "metadata-version")
RENDER = ("render",)
DEPRECATED_CLASSIFIER = ("deprecated", "render")  # yandex_speech's README does not render either
# Client refusals.
UV_NOT_NORMALIZED = "non-normalized filename"
TWINE_CLASSIFIER_UNDER_1_0 = "classifier introduced in metadata version 1.1, not 1.0"
TWINE_LICENSE_EXPRESSION_EARLY = "license-expression introduced in metadata version 2.4"
TWINE_MALFORMED_DESCRIPTION = "malformed field 'description'"

CASES = [
    Case("requests-2.32.3-py3-none-any.whl", "License-File under Metadata-Version 2.1 (setuptools < 77); markdown README",
         installs="requests/__init__.py"),
    Case("six-1.16.0-py2.py3-none-any.whl", "Requires-Python '>=2.7, !=3.0.*, !=3.1.*, !=3.2.*' with spaces (form vs file)",
         installs="six.py"),
    Case("six-1.16.0.tar.gz", "Requires-Python with spaces; Metadata-Version 1.2 with the README folded into the "
         "Description header (8-space continuation lines: it renders only once unfolded, as twine and PyPI do)"),
    Case("six-1.10.0-py2.py3-none-any.whl", "Metadata-Version 2.0 (bdist_wheel 0.26, 2015)", pypi=METADATA_2_0,
         installs="six.py"),
    Case("MarkupSafe-3.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
         "wheel name not normalized (MarkupSafe-); License-File under 2.1; manylinux_2_17 + manylinux2014",
         pypi=WHEEL_NAME, uv=UV_NOT_NORMALIZED, installs="markupsafe/__init__.py"),
    Case("MarkupSafe-3.0.2-cp311-cp311-musllinux_1_2_x86_64.whl", "musllinux tag; wheel name not normalized",
         pypi=WHEEL_NAME, uv=UV_NOT_NORMALIZED),
    Case("MarkupSafe-3.0.2-cp311-cp311-win_amd64.whl", "win_amd64 tag; wheel name not normalized",
         pypi=WHEEL_NAME, uv=UV_NOT_NORMALIZED),
    Case("markupsafe-3.0.2.tar.gz", "normalized sdist of a project spelled MarkupSafe; License-File under 2.1"),
    Case("zope.interface-7.1.1.tar.gz", "dotted name, sdist name before PEP 625 (zope_interface-...)",
         pypi=PEP_625, uv=UV_NOT_NORMALIZED),
    Case("zope.interface-7.1.1-cp311-cp311-manylinux_2_5_x86_64.manylinux1_x86_64.manylinux_2_17_x86_64"
         ".manylinux2014_x86_64.whl",
         "dotted wheel name; four platform tags (manylinux1 .. 2014); a -nspkg.pth file (namespace package)",
         pypi=WHEEL_NAME, uv=UV_NOT_NORMALIZED, installs="zope/interface/__init__.py"),
    Case("bpython-0.7.1.tar.gz", "Metadata-Version 1.0 (2008), no classifiers"),
    Case("pip-0.2.tar.gz", "Metadata-Version 1.0 with Classifier (a 1.1 field); rst README that does not render",
         pypi=RENDER, twine=TWINE_CLASSIFIER_UNDER_1_0),
    Case("retry-0.9.2.tar.gz", "Metadata-Version 1.1; folded Description header"),
    Case("retry-0.9.2-py2.py3-none-any.whl", "Metadata-Version 2.0", pypi=METADATA_2_0, installs="retry/__init__.py"),
    Case("inflection-0.5.1.tar.gz", "Metadata-Version 1.2; folded Description header"),
    Case("azure-common-1.1.28.zip", ".zip sdist (2022), name not normalized", pypi=ZIP_SDIST, uv=UV_NOT_NORMALIZED),
    Case("oauth2client-1.0c1.zip", ".zip sdist; pre-release spelled 1.0c1 (= 1.0rc1); Metadata-Version 1.0 with "
         "Classifier", pypi=ZIP_SDIST, twine=TWINE_CLASSIFIER_UNDER_1_0, uv=UV_NOT_NORMALIZED),
    Case("sphinx_toggleprompt-0.6.0.tar.gz", "Metadata-Version 2.2 with Dynamic; License-File under 2.2"),
    Case("typing_extensions-4.16.0-py3-none-any.whl", "Metadata-Version 2.4, License-Expression and License-File; "
         "flit; underscore in the name", installs="typing_extensions.py"),
    Case("userpath-1.9.2-py3-none-any.whl", "hatchling; License-Expression and License-File under 2.1",
         twine=TWINE_LICENSE_EXPRESSION_EARLY, installs="userpath/__init__.py"),
    Case("opt_einsum-3.4.0-py3-none-any.whl", "hatchling; License-Expression and License-File under 2.3",
         twine=TWINE_LICENSE_EXPRESSION_EARLY, installs="opt_einsum/__init__.py"),
    Case("backoff-2.2.1-py3-none-any.whl", "poetry-core; Requires-Python '>=3.7,<4.0' (the form and the file "
         "order the clauses differently); long rst README", installs="backoff/__init__.py"),
    Case("jsonref-1.1.0-py3-none-any.whl", "pdm-backend", installs="jsonref.py"),
    Case("uuid_utils-1.2.0-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "maturin; abi3",
         installs="uuid_utils/__init__.py"),
    Case("argon2_cffi_bindings-26.2.0-cp310-abi3-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl",
         "scikit-build-core; abi3; manylinux_2_26 + manylinux_2_28", installs="_argon2_cffi_bindings/__init__.py"),
    Case("yandex_speech-0.4.tar.gz", "deprecated classifier 'Natural Language :: Ukranian' (and an rst README that "
         "does not render)", pypi=DEPRECATED_CLASSIFIER),
    Case("yarl-1.25.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl",
         "110 KB rst README; Dynamic: license-file under 2.4; two License-File", installs="yarl/__init__.py"),
    Case("python-qpid-proton-0.7-0.tar.gz", "post-release spelled 0.7-0 in the file name (the name holds dashes "
         "too); Metadata-Version 1.1", pypi=PEP_625, uv=UV_NOT_NORMALIZED),
    Case("passlib-1.7.4.tar.gz", "a Keywords value over unindented lines (setuptools, 2020): an email parser ends "
         "the headers there and reads the rest, classifiers included, as a second description",
         twine=TWINE_MALFORMED_DESCRIPTION),
    Case("pyasn1-modules-0.0.1a.tar.gz", "pre-release spelled 0.0.1a (= 0.0.1a0); Metadata-Version 1.0; sdist name "
         "before PEP 625", pypi=PEP_625, uv=UV_NOT_NORMALIZED),
    Case("outcome-1.3.0.post0-py2.py3-none-any.whl", "post-release .post0; three License-File under 2.1",
         installs="outcome/__init__.py"),
    Case("jaraco.classes-3.4.0-py3-none-any.whl", "dotted wheel name not normalized; namespace package",
         pypi=WHEEL_NAME, uv=UV_NOT_NORMALIZED, installs="jaraco/classes/__init__.py"),
]
BY_NAME = {case.filename: case for case in CASES}
REFUSED_BY_PYPI = [case for case in CASES if case.pypi]


@dataclass(frozen=True)
class Outcome:
    result: str
    """accepted | held | server | client | error"""
    message: str = ""


def _ids(cases: Sequence[Case]) -> list[str]:
    return [case.filename for case in cases]


def _project_of(filename: str) -> str:
    if filename.endswith(".whl"):
        return str(parse_wheel_filename(filename)[0])
    stem = re.sub(r"\.(tar\.gz|zip)$", "", filename)
    # the name ends before the first dash followed by a digit (python-qpid-proton-0.7-0)
    return str(canonicalize_name(re.split(r"-(?=\d)", stem, maxsplit=1)[0]))


def _installable(filename: str) -> bool:
    if not filename.endswith(".whl"):
        return False
    supported = set(sys_tags())
    return any(tag in supported for tag in parse_wheel_filename(filename)[3])


# -- clients -------------------------------------------------------------------------------------

def _twine(server: LiveServer, names: Sequence[str]) -> dict[str, Outcome]:
    """One twine invocation for all of ``names`` when it succeeds; one per file otherwise (twine stops
    at the first error, and refuses a whole batch for one file's metadata)."""
    if not names:
        return {}
    result = server.twine_upload([REAL / name for name in names])
    if result.returncode == 0:
        return {name: Outcome("accepted") for name in names}
    if len(names) > 1:
        outcomes: dict[str, Outcome] = {}
        for name in names:
            outcomes.update(_twine(server, [name]))
        return outcomes
    text = flat(result.stdout + "\n" + result.stderr)
    http = re.search(r"HTTPError: (\d{3}) .*? from \S+ (.*)", text)
    if http:
        return {names[0]: Outcome("server", f"{http.group(1)} {http.group(2)}")}
    if "Uploading " + names[0] in text:
        return {names[0]: Outcome("error", text[-1500:])}
    return {names[0]: Outcome("client", text[-1500:])}


def _uv_run(server: LiveServer, names: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return run([UV, "publish", "--no-config", "--publish-url", server.upload_url, "--token", server.token,
                *(str(REAL / name) for name in names)], env=server.client_env)


def _uv(server: LiveServer, names: Sequence[str]) -> dict[str, Outcome]:
    """One ``uv publish`` for all of ``names`` when it succeeds (it skips files with a non-normalized
    name with a warning, exit code 0); one per file otherwise (it stops at the first error)."""
    if not names:
        return {}
    result = _uv_run(server, names)
    text = result.stdout + "\n" + result.stderr
    skipped = {Path(path).name: f"{path} {why}" for path, why in re.findall(r"warning: `([^`]+)` (.*?), skipping", text)}
    if result.returncode == 0:
        return {name: Outcome("client", flat(skipped[name])) if name in skipped else Outcome("accepted")
                for name in names}
    if len(names) > 1:
        outcomes: dict[str, Outcome] = {}
        for name in names:
            outcomes.update(_uv(server, [name]))
        return outcomes
    said = re.search(r"status code (\d{3}).*?Server says: (.*)", flat(text))
    if said:
        return {names[0]: Outcome("server", f"{said.group(1)} {said.group(2)}")}
    if re.search(r"status code \d{3}", text):
        return {names[0]: Outcome("server", flat(text)[-1500:])}
    return {names[0]: Outcome("client", flat(text)[-1500:])}


def _mark_held(server: LiveServer, outcomes: dict[str, Outcome]) -> dict[str, Outcome]:
    """A 200 for a file that is not on the simple page afterwards: held for review (scanner or name)."""
    listed: dict[str, set[str]] = {}
    for name, outcome in outcomes.items():
        if outcome.result == "accepted":
            project = _project_of(name)
            if project not in listed:
                listed[project] = server.filenames(project)
            if name not in listed[project]:
                outcomes[name] = Outcome("held", f"answered 200 but not on /simple/{project}/")
    return outcomes


def _upload_all(server: LiveServer, cases: Sequence[Case], expect_accepted: Sequence[Case]) -> dict[str, dict[str, Outcome]]:
    """{client: {filename: outcome}}: the files expected to go through in one batch per client, the
    others one by one. twine first, then uv (an identical re-upload passes every check again)."""
    wanted = {case.filename for case in expect_accepted}
    outcomes: dict[str, dict[str, Outcome]] = {}
    for client, upload, refuses in (("twine", _twine, lambda c: c.twine), ("uv", _uv, lambda c: c.uv)):
        batch = [c.filename for c in cases if c.filename in wanted and not refuses(c)]
        rest = [c.filename for c in cases if c.filename not in batch]
        done = upload(server, batch)
        if client == "uv":  # uv skips the non-normalized names of a batch and goes on: one call for them
            done.update(upload(server, [name for name in rest if BY_NAME[name].uv]))
            rest = [name for name in rest if not BY_NAME[name].uv]
        for name in rest:
            done.update(upload(server, [name]))
        outcomes[client] = _mark_held(server, done)
    return outcomes


def _install(server: LiveServer, target: Path, cases: Sequence[Case]) -> dict[str, str]:
    """pip-installs the wheels of ``cases`` (one call; per wheel again if it fails). {filename: error or ''}."""
    specs: dict[str, str] = {}
    for case in cases:
        project, version, _, _ = parse_wheel_filename(case.filename)
        specs[case.filename] = f"{project}=={version}"
    if not specs:
        return {}
    result = server.pip_install(target, "--no-deps", "--only-binary", ":all:", *specs.values())
    if result.returncode == 0:
        return {name: "" for name in specs}
    errors: dict[str, str] = {}
    for name, spec in specs.items():
        single = server.pip_install(target / canonicalize_name(spec.split("==")[0]), "--no-deps", "--only-binary",
                                    ":all:", spec)
        errors[name] = "" if single.returncode == 0 else describe(single)[-2000:]
    return errors


def _installed_path(target: Path, case: Case) -> bool:
    assert case.installs is not None
    project = str(canonicalize_name(parse_wheel_filename(case.filename)[0]))
    return (target / case.installs).is_file() or (target / project / case.installs).is_file()


# -- servers and the work done once per module and backend ----------------------------------------

@pytest.fixture(scope="module")
def lenient_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A second server per backend with ``upload_strictness = lenient``, set in the data dir's
    bastion.toml (start_server gives the server a clean environment, without BASTION_* variables;
    the file is the same setting as BASTION_UPLOAD_STRICTNESS=lenient)."""
    home = tmp_path_factory.mktemp("lenient-home")
    with fresh_database(backend, tmp_path_factory.mktemp("lenient-data"), tmp_path_factory) as url:
        if backend == "sqlite":
            data_dir, database_url = _sqlite_data_dir(url), None
        else:
            data_dir, database_url = tmp_path_factory.mktemp("lenient-pgdata") / "data", url
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "bastion.toml").write_text('upload_strictness = "lenient"\n')
        server = start_server(backend, data_dir, database_url, home)
        yield server
        _shutdown(server)


@pytest.fixture(scope="module")
def pypi_outcomes(module_server: LiveServer) -> dict[str, dict[str, Outcome]]:
    return _upload_all(module_server, CASES, [case for case in CASES if not case.pypi])


@pytest.fixture(scope="module")
def lenient_outcomes(lenient_server: LiveServer) -> dict[str, dict[str, Outcome]]:
    return _upload_all(lenient_server, REFUSED_BY_PYPI, REFUSED_BY_PYPI)


INSTALLED_FROM_PYPI = [c for c in CASES if not c.pypi and c.installs and _installable(c.filename)]
INSTALLED_FROM_LENIENT = [c for c in REFUSED_BY_PYPI if c.installs and _installable(c.filename)]


def _install_accepted(server: LiveServer, outcomes: dict[str, dict[str, Outcome]], cases: list[Case],
                      target: Path) -> tuple[Path, dict[str, str]]:
    """Install, from ``server``, the cases some client got accepted there."""
    accepted = [c for c in cases
                if any(by_file.get(c.filename, Outcome("")).result == "accepted" for by_file in outcomes.values())]
    return target, _install(server, target, accepted)


@pytest.fixture(scope="module")
def pypi_installs(module_server: LiveServer, pypi_outcomes: dict[str, dict[str, Outcome]],
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return _install_accepted(module_server, pypi_outcomes, INSTALLED_FROM_PYPI, tmp_path_factory.mktemp("pypi-installed"))


@pytest.fixture(scope="module")
def lenient_installs(lenient_server: LiveServer, lenient_outcomes: dict[str, dict[str, Outcome]],
                     tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return _install_accepted(lenient_server, lenient_outcomes, INSTALLED_FROM_LENIENT,
                             tmp_path_factory.mktemp("lenient-installed"))


# -- assertions -----------------------------------------------------------------------------------

def _check(case: Case, client: str, outcome: Outcome, refused_with: tuple[str, ...]) -> None:
    client_refusal = case.twine if client == "twine" else case.uv
    where = f"{client}, {case.filename} ({case.trap})"
    if client_refusal:
        assert outcome.result == "client", f"{where}: {client} was expected to refuse it itself: {outcome}"
        assert client_refusal.lower() in outcome.message.lower(), f"{where}: {outcome.message}"
        return
    if not refused_with:
        assert outcome.result == "accepted", f"{where}: expected accepted, got {outcome.result}: {outcome.message}"
        return
    assert outcome.result == "server", f"{where}: expected a refusal by the server, got {outcome.result}: {outcome.message}"
    assert outcome.message.startswith("400 "), f"{where}: {outcome.message}"
    message = outcome.message.replace(case.filename, "<file>").lower()
    assert any(fragment in message for fragment in refused_with), (
        f"{where}: the refusal names none of {refused_with}: {outcome.message}")


def test_every_fixture_file_has_a_case() -> None:
    on_disk = {p.name for p in REAL.iterdir() if p.name != "README.md"}
    assert on_disk == set(BY_NAME), (on_disk - set(BY_NAME), set(BY_NAME) - on_disk)
    readme = (REAL / "README.md").read_text()
    for name in on_disk:
        assert f"`{name}`" in readme, f"{name} is not described in tests/fixtures/real/README.md"


@pytest.mark.parametrize("client", ["twine", "uv"])
@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_pypi_strictness(case: Case, client: str, pypi_outcomes: dict[str, dict[str, Outcome]]) -> None:
    _check(case, client, pypi_outcomes[client][case.filename], case.pypi)


@pytest.mark.parametrize("client", ["twine", "uv"])
@pytest.mark.parametrize("case", REFUSED_BY_PYPI, ids=_ids(REFUSED_BY_PYPI))
def test_lenient_accepts_what_pypi_refuses(case: Case, client: str,
                                          lenient_outcomes: dict[str, dict[str, Outcome]]) -> None:
    _check(case, client, lenient_outcomes[client][case.filename], ())


@pytest.mark.parametrize("case", INSTALLED_FROM_PYPI, ids=_ids(INSTALLED_FROM_PYPI))
def test_accepted_wheels_install_back(case: Case, pypi_installs: tuple[Path, dict[str, str]]) -> None:
    target, errors = pypi_installs
    assert case.filename in errors, f"{case.filename} was not accepted, so it could not be installed"
    assert errors[case.filename] == "", errors[case.filename]
    assert _installed_path(target, case), f"pip did not install {case.installs} from {case.filename}"


@pytest.mark.parametrize("case", INSTALLED_FROM_LENIENT, ids=_ids(INSTALLED_FROM_LENIENT))
def test_lenient_wheels_install_back(case: Case, lenient_installs: tuple[Path, dict[str, str]]) -> None:
    target, errors = lenient_installs
    assert case.filename in errors, f"{case.filename} was not accepted by the lenient server"
    assert errors[case.filename] == "", errors[case.filename]
    assert _installed_path(target, case), f"pip did not install {case.installs} from {case.filename}"
