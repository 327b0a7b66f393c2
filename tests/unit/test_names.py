"""Project names: the pure rules of bastion.packaging.names, and the first upload of a name that
nobody may register (refused with 400 and a message naming the clash, leaving nothing behind)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bastion.packaging import names
from bastion.services import Bastion
from tests.conftest import make_user
from tests.distbuilder import make_sdist, make_wheel, upload_form
from tests.unit.uploads import accepted, refused, simple_json

# -- pure rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Hello-World", "hello-world"), ("hello_world", "hello-world"), ("HELLO.WORLD", "hello-world"),
     ("hello__--..world", "hello-world"), ("a", "a"), ("Django", "django")],
)
def test_normalize_is_pep503(name, expected) -> None:
    assert names.normalize(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [("hello-world", "he110w0r1d"), ("he11o_world", "he110w0r1d"), ("HELLO.WORLD", "he110w0r1d"),
     ("hell0world", "he110w0r1d"), ("HeIlO-WorLd", "he110w0r1d"), ("requests", "requests"),
     ("i.l.o", "110"), ("a-b_c.d", "abcd")],
)
def test_ultranormalize_folds_separators_and_confusables(name, expected) -> None:
    assert names.ultranormalize(name) == expected


def test_ultranormalize_keeps_distinct_names_distinct() -> None:
    assert names.ultranormalize("hello-world") != names.ultranormalize("hello-worlds")
    assert names.ultranormalize("requests") != names.ultranormalize("request")


@pytest.mark.parametrize("name", ["a", "A1", "hello-world", "Hello_World.2", "x" * 200, "9lives"])
def test_valid_names(name) -> None:
    assert names.is_valid_name(name)
    assert names.name_refusal(name) is None


@pytest.mark.parametrize("name", ["", "-hello", "hello-", ".hello", "hello_", "hel lo", "héllo", "hello/world",
                                  "x" * 201, "hello!"])
def test_invalid_names_are_refused(name) -> None:
    assert not names.is_valid_name(name)
    refusal = names.name_refusal(name)
    assert refusal is not None
    assert refusal.startswith(f"Invalid project name '{name}'")
    assert "See PEP 508" in refusal


@pytest.mark.parametrize("name", ["os", "OS", "asyncore", "distutils", "json", "Tkinter", "os.path", "xml.etree",
                                  "sys", "Email.Utils"])
def test_stdlib_names_are_refused(name) -> None:
    assert names.name_refusal(name) == (
        f"The name '{name}' isn't allowed: it is the name of a Python standard library module. "
        "Choose a different project name."
    )


def test_dotted_name_is_judged_by_its_first_part() -> None:
    assert names.name_refusal("os.path") is not None
    assert names.name_refusal("importlib_metadata") is None  # a real PyPI project, not stdlib
    assert names.name_refusal("mypackage.os") is None


def test_removed_stdlib_modules_are_in_the_stdlib_set() -> None:
    for module in ("asyncore", "asynchat", "imp", "distutils", "smtpd"):
        assert module in names.STDLIB_NAMES
    assert "_thread" not in names.STDLIB_NAMES  # private modules are not names users pick


@pytest.mark.parametrize("name", ["simple", "Simple", "legacy", "packages", "pypi", "ADMIN", "bastion"])
def test_reserved_names_are_refused(name) -> None:
    assert names.name_refusal(name) == (
        f"The name '{name}' isn't allowed: it is reserved by the index. Choose a different name."
    )


@pytest.mark.parametrize(
    ("prohibited", "name"),
    [(("evil-corp",), "evil-corp"), (("evil-corp",), "Evil_Corp"), (("Evil_Corp",), "evil.corp"),
     (("EVIL.CORP", "other"), "evil-corp")],
)
def test_prohibited_names_are_refused_in_any_spelling(prohibited, name) -> None:
    refusal = names.name_refusal(name, frozenset(prohibited))
    assert refusal is not None
    assert refusal.startswith(f"The name '{name}' isn't allowed: an index admin has prohibited it.")


def test_prohibited_names_do_not_refuse_others() -> None:
    assert names.name_refusal("evil-corporation", frozenset({"evil-corp"})) is None


# -- first upload of a refused name, over HTTP -----------------------------------------------------


def _dist_name(name: str) -> str:
    """How a build backend spells ``name`` in a filename (PEP 427 / PEP 625)."""
    return names.normalize(name).replace("-", "_")


def _wheel(tmp_path: Path, name: str, version: str = "1.0") -> Path:
    return make_wheel(tmp_path, name, version, filename=f"{_dist_name(name)}-{version}-py3-none-any.whl")


@pytest.mark.parametrize("name", ["os", "asyncore", "os.path", "Tkinter", "json"])
def test_stdlib_name_is_refused_at_first_upload(client, bastion, tmp_path, name) -> None:
    token = make_user(bastion, "alice")
    path = _wheel(tmp_path, name)
    refused(client, bastion, token, path, upload_form(path, name, "1.0"), 400,
            f"The name '{name}' isn't allowed: it is the name of a Python standard library module.",
            "Choose a different project name.")


def test_stdlib_name_is_refused_for_an_sdist_too(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    path = make_sdist(tmp_path, "asyncore", "1.0")
    refused(client, bastion, token, path, upload_form(path, "asyncore", "1.0"), 400,
            "The name 'asyncore' isn't allowed: it is the name of a Python standard library module.")


@pytest.mark.parametrize("name", ["simple", "Legacy", "packages"])
def test_reserved_name_is_refused_at_first_upload(client, bastion, tmp_path, name) -> None:
    token = make_user(bastion, "alice")
    path = _wheel(tmp_path, name)
    refused(client, bastion, token, path, upload_form(path, name, "1.0"), 400,
            f"The name '{name}' isn't allowed: it is reserved by the index. Choose a different name.")


def test_admin_still_cannot_register_a_reserved_name(client, bastion, tmp_path) -> None:
    from bastion.accounts import service
    from bastion.authz import OPERATOR

    token = make_user(bastion, "root")
    with bastion.db.write() as session:
        service.set_admin(session, "root", principal=OPERATOR)
    path = _wheel(tmp_path, "simple")
    refused(client, bastion, token, path, upload_form(path, "simple", "1.0"), 400, "reserved by the index")


@pytest.fixture
def prohibiting(bastion_with: Callable[..., tuple[Bastion, TestClient]]) -> tuple[Bastion, TestClient]:
    """An index whose admin prohibited two names, spelled as an admin might type them."""
    return bastion_with(prohibited_names="evil-corp, Typo_Squat")


@pytest.mark.parametrize("name", ["evil-corp", "Evil_Corp", "EVIL.CORP", "typo-squat", "typo_squat"])
def test_admin_prohibited_name_is_refused_at_first_upload(prohibiting, tmp_path, name) -> None:
    bastion, client = prohibiting
    assert bastion.settings.prohibited_names == ("evil-corp", "Typo_Squat")
    token = make_user(bastion, "alice")
    path = _wheel(tmp_path, name)
    refused(client, bastion, token, path, upload_form(path, name, "1.0"), 400,
            f"The name '{name}' isn't allowed: an index admin has prohibited it.",
            "ask an admin if you believe this is wrong")


def test_names_close_to_prohibited_ones_are_accepted(prohibiting, tmp_path) -> None:
    bastion, client = prohibiting
    token = make_user(bastion, "alice")
    path = _wheel(tmp_path, "evil-corp-tools")
    accepted(client, token, path, "evil-corp-tools", "1.0")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("-hello", "'-hello' is invalid for 'name'"),
        ("hello-", "'hello-' is invalid for 'name'"),
        ("hel lo", "'hel lo' is invalid for 'name'"),
        ("x" * 201, f"Invalid project name '{'x' * 201}'"),
    ],
    ids=["leading-dash", "trailing-dash", "space", "too-long"],
)
def test_invalid_name_is_refused_at_first_upload(client, bastion, tmp_path, name, message) -> None:
    token = make_user(bastion, "alice")
    path = _wheel(tmp_path, name)
    refused(client, bastion, token, path, upload_form(path, name, "1.0"), 400, message)


@pytest.fixture
def hello_world(client, bastion, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """alice owns hello-world; returns bob's token (bob has no project)."""
    alice = make_user(bastion, "alice")
    accepted(client, alice, make_wheel(tmp_path, "hello-world", "1.0"), "hello-world", "1.0")
    return make_user(bastion, "bob")


@pytest.mark.parametrize("name", ["he11o_world", "hell0world", "HE1LO-W0RLD", "heiio.world", "helloworld"])
def test_confusable_name_is_refused_at_first_upload(client, bastion, tmp_path, hello_world, name) -> None:
    path = _wheel(tmp_path, name)
    refused(client, bastion, hello_world, path, upload_form(path, name, "1.0"), 400,
            f"The name '{name}' is too similar to an existing project 'hello-world'",
            "names that differ only in separators, l/i/1 or o/0 are refused", "Choose a different name.")


def test_confusable_name_is_refused_even_for_the_owner(client, bastion, tmp_path) -> None:
    alice = make_user(bastion, "alice")
    accepted(client, alice, make_wheel(tmp_path, "hello-world", "1.0"), "hello-world", "1.0")
    path = _wheel(tmp_path, "he11o_world")
    refused(client, bastion, alice, path, upload_form(path, "he11o_world", "1.0"), 400,
            "too similar to an existing project 'hello-world'")


@pytest.mark.parametrize("name", ["HELLO.WORLD", "Hello_World"])
def test_other_spelling_of_an_existing_name_is_that_project(client, bastion, tmp_path, hello_world, name) -> None:
    """PEP 503 makes HELLO.WORLD the same project as hello-world: not a new name to refuse, but
    someone else's project, so bob gets 403 naming it."""
    path = _wheel(tmp_path, name, "1.1")
    refused(client, bastion, hello_world, path, upload_form(path, name, "1.1"), 403,
            "user 'bob' is not allowed to upload to project 'hello-world'")


def test_owner_uploading_under_another_spelling_adds_to_the_project(client, bastion, tmp_path) -> None:
    alice = make_user(bastion, "alice")
    accepted(client, alice, make_wheel(tmp_path, "hello-world", "1.0"), "hello-world", "1.0")
    path = _wheel(tmp_path, "HELLO.WORLD", "1.1")
    accepted(client, alice, path, "HELLO.WORLD", "1.1")
    assert simple_json(client, "hello-world")["versions"] == ["1.0", "1.1"]


def test_a_project_created_concurrently_is_not_too_similar_to_itself(bastion: Bastion) -> None:
    """Two first uploads of one new name: the first commits while the second's transaction is
    open. The second must not be refused as "too similar to an existing project" (itself); it
    goes on to the insert, whose unique constraint makes the upload retry and find the project.
    A different name that folds to the same one is still refused."""
    from bastion.events import CLI_CONTEXT
    from bastion.packaging.service import create_project, find_project, new_project_refusal

    with bastion.db.read() as late:
        assert find_project(late, "race-pkg") is None  # the late upload looked first
        with bastion.db.write() as early:
            create_project(early, "race-pkg", None, prohibited=frozenset(), context=CLI_CONTEXT,
                           secret=bastion.secret)
        assert new_project_refusal(late, "Race_Pkg", frozenset()) is None
    with bastion.db.read() as session:
        refusal = new_project_refusal(session, "racepkg", frozenset())
    assert refusal is not None and "too similar to an existing project 'race-pkg'" in refusal
