"""How the index reads a file's core metadata when its writer bent the format: real PKG-INFO
files from tests/fixtures/real, read with ``checks.read_core_metadata``, and uploaded with the
form uv sends for them."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from bastion.packaging import checks
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
    assert rejoined == data.replace(b"\nb c\n", b"\n        b c\n")
    core = checks.read_core_metadata(data, "demo-1.0.tar.gz")
    assert core.metadata.classifiers == ["Framework :: Flask"] and core.misread == {"keywords", "classifiers", "description"}


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
