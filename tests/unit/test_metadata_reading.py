"""How the index reads a file's core metadata when its writer bent the format: real PKG-INFO
files from tests/fixtures/real, read with ``checks.read_core_metadata``, and uploaded with the
form uv sends for them."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from bastion.packaging import checks
from bastion.packaging.errors import UploadRejected
from bastion.services import Bastion
from tests.conftest import make_user, post_upload
from tests.distbuilder import upload_form
from tests.unit.uploads import refused

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"
PASSLIB = REAL / "passlib-1.7.4.tar.gz"


def passlib_pkg_info() -> bytes:
    with tarfile.open(PASSLIB) as archive:
        member = archive.extractfile("passlib-1.7.4/PKG-INFO")
        assert member is not None
        return member.read()


@pytest.mark.parametrize("strictness", ["pypi", "lenient"])
def test_unindented_continuation_lines_are_read_as_the_value_they_continue(strictness: str) -> None:
    data = passlib_pkg_info()
    assert b"Keywords: password secret hash security\ncrypt md5-crypt\n" in data  # the trap, as on PyPI
    core = checks.read_core_metadata(data, PASSLIB.name, strictness)
    metadata = core.metadata
    assert checks._words(metadata.keywords) == {  # noqa: SLF001
        "password", "secret", "hash", "security", "crypt", "md5-crypt", "sha256-crypt", "sha512-crypt", "pbkdf2",
        "argon2", "scrypt", "bcrypt", "apache", "htpasswd", "htdigest", "totp", "2fa"}
    # The headers after the stray lines are headers again, not a second description.
    assert "Intended Audience :: Developers" in (metadata.classifiers or [])
    assert metadata.provides_extra == ["argon2", "bcrypt", "totp", "build-docs"]
    assert metadata.description is not None and metadata.description.startswith("Passlib is a password hashing")
    assert "Classifier:" not in metadata.description
    assert {"description", "keywords", "classifiers"} <= core.misread
    assert "name" not in core.misread and "version" not in core.misread
    assert any("unindented lines" in note for note in core.notes)


def test_a_body_after_the_headers_without_a_blank_line_is_not_rejoined() -> None:
    data = (b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nSummary: s\n"
            b"# A title\nThe text: goes on\nUpload: later\n")
    assert checks.rejoin_stray_header_lines(data) is None  # no core-metadata header follows the stray lines
    ordinary = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nKeywords: a b\n\nBody\nKeywords: c\n"
    assert checks.rejoin_stray_header_lines(ordinary) is None  # after the blank line: the body


def test_stray_lines_before_a_header_are_rejoined_however_few() -> None:
    data = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nKeywords: a\nb c\nClassifier: Framework :: Flask\n"
    rejoined = checks.rejoin_stray_header_lines(data)
    assert rejoined is not None and rejoined.data == data.replace(b"\nb c\n", b"\n b c\n") and rejoined.first == "b c"
    core = checks.read_core_metadata(data, "demo-1.0.tar.gz")
    assert core.metadata.classifiers == ["Framework :: Flask"] and core.misread == {"keywords", "classifiers", "description"}


def test_lines_the_email_parser_takes_for_headers_are_never_rejoined() -> None:
    """pip and uv read METADATA with the email parser: a line it takes for a header (any name of
    printable ASCII, ``X_Y:`` included) keeps the Requires-Dist before it whole."""
    data = (b"Metadata-Version: 2.1\nName: hidedep\nVersion: 1.0\nSummary: s\nRequires-Dist: evil-helper\n"
            b"X_Y: z\nClassifier: Framework :: Flask\n\nbody\n")
    assert checks.rejoin_stray_header_lines(data) is None
    for strictness in ("pypi", "lenient"):
        core = checks.read_core_metadata(data, "hidedep-1.0-py3-none-any.whl", strictness)
        assert [str(r) for r in core.metadata.requires_dist or []] == ["evil-helper"]
        assert core.metadata.classifiers == ["Framework :: Flask"]


@pytest.mark.parametrize("strictness", ["pypi", "lenient"])
@pytest.mark.parametrize(("head", "hidden"), [
    # pip reads no Requires-Dist here (its headers end at "b"): the index must not list six.
    (b"Keywords: a\nb\nRequires-Dist: six\n", "requires_dist"),
    # pip reads Requires-Python '>=3.8' (its headers end at ',<3'), not '>=3.8 ,<3'.
    (b"Requires-Python: >=3.8\n,<3\nClassifier: Framework :: Flask\n", "requires_python"),
    # The version would be read from after the stray line, where pip reads none.
    (b"Keywords: a\nb\nVersion: 1.0\n", "version"),
])
def test_a_stray_line_that_would_change_what_installers_read_is_refused(head: bytes, hidden: str,
                                                                         strictness: str) -> None:
    data = b"Metadata-Version: 2.1\nName: demo\n" + (b"" if b"Version:" in head else b"Version: 1.0\n") + head
    with pytest.raises(UploadRejected) as refusal:
        checks.read_core_metadata(data + b"\nbody\n", "demo-1.0-py3-none-any.whl", strictness)
    message = str(refusal.value)
    assert "inside the header block is not a header" in message and hidden in message, message
    assert "indent continuation lines" in message


def test_the_headers_end_at_a_blank_line_whatever_the_line_endings() -> None:
    """A bare-CR blank line ends the headers for the email parser, so it does here: nothing
    after it is read as a header (pip sees no Requires-Dist in this file)."""
    data = (b"Metadata-Version: 2.1\rName: demo\rVersion: 1.0\rKeywords: a\r\r"
            b"stray\rRequires-Dist: evil\rRequires-Python: >=3.99\r")
    assert checks.rejoin_stray_header_lines(data) is None
    core = checks.read_core_metadata(data, "demo-1.0-py3-none-any.whl", "lenient")
    assert core.metadata.requires_dist is None and core.metadata.requires_python is None


def test_uv_s_reading_of_passlib_is_accepted_and_the_index_serves_its_own(client, bastion: Bastion) -> None:  # type: ignore[no-untyped-def]
    """uv sends the email parser's reading (the rest of the header block as the description, the
    first keywords line only): the index stores the rejoined reading, and still compares the rest."""
    token = make_user(bastion, "alice")
    data = passlib_pkg_info()
    body = data.split(b"Keywords: password secret hash security\n", 1)[1].decode()
    uv_form = upload_form(PASSLIB, "passlib", "1.7.4", summary=(
        "comprehensive password hashing framework supporting over 30 schemes"), description=body,
        keywords="password secret hash security")
    refused(client, bastion, token, PASSLIB, {**uv_form, "version": "1.7.5"}, 400, "1.7.5")
    refused(client, bastion, token, PASSLIB, {**uv_form, "summary": "something else"}, 400,
            "summary 'something else' does not match")  # read alike both ways: still compared
    response = post_upload(client, token, PASSLIB, uv_form)
    assert response.status_code == 200, response.text
    page = client.get("/pypi/passlib/1.7.4/json")
    assert page.status_code == 200, page.text
    info = json.loads(page.content)["info"]
    assert "Intended Audience :: Developers" in info["classifiers"]
    assert info["provides_extra"] == ["argon2", "bcrypt", "totp", "build_docs"]
    assert info["description"].startswith("Passlib is a password hashing") and "Classifier:" not in info["description"]


@pytest.mark.parametrize("variant", ["GFM", "CommonMark"])
@pytest.mark.parametrize("text", ["[foo]: /url", "# A title", "<!-- only a comment -->", "```python\nprint(1)\n```",
                                  "plain words", "[link only]: https://example.org\n[other]: /x"])
def test_the_markdown_check_refuses_exactly_what_readme_renderer_cannot_render(text: str, variant: str) -> None:
    import readme_renderer.markdown
    from packaging.metadata import Metadata

    metadata = Metadata.from_raw({"metadata_version": "2.1", "name": "demo", "version": "1.0", "description": text,
                                  "description_content_type": f"text/markdown; variant={variant}"})
    renders = readme_renderer.markdown.render(text, variant=variant) is not None
    if renders:
        checks.check_readme(metadata, "pypi")
    else:
        with pytest.raises(checks.UploadRejected, match="failed to render as Markdown"):
            checks.check_readme(metadata, "pypi")
    assert renders == (text.startswith("#") or "print" in text or "plain" in text or "<!--" in text)
