"""Files made by other tools and other years: what ``upload_strictness = pypi`` (today's PyPI rules,
the default) and ``lenient`` (what PyPI accepted before) take and refuse, and the form compared with
the file by meaning. Every refusal names what is wrong and leaves nothing behind (``refused``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from bastion.packaging.models import Release
from tests.conftest import make_user, post_upload
from tests.distbuilder import make_sdist, make_wheel, make_zip_sdist, metadata_text, upload_form
from tests.unit.uploads import accepted, refused, simple_json

LICENSE_FILE_21 = metadata_text("hello-world", "1.0", extra="License-File: LICENSE\nLicense-File: NOTICE\n")
DYNAMIC_21 = metadata_text("hello-world", "1.0", extra="Dynamic: Requires-Dist\nRequires-Dist: attrs>=20\n")


@pytest.fixture
def lenient(bastion_with):  # type: ignore[no-untyped-def]
    """A Bastion (and client) with upload_strictness = lenient, on the test's database."""
    return bastion_with(upload_strictness="lenient")


def stored_metadata(bastion, name: str = "hello-world") -> dict:  # type: ignore[no-untyped-def]
    with bastion.db.read() as session:
        return dict(session.execute(select(Release.core_metadata)).scalars().one())


@pytest.mark.parametrize("metadata", [LICENSE_FILE_21, DYNAMIC_21], ids=["license-file-2.1", "dynamic-2.1"])
@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_fields_used_before_their_metadata_version_are_accepted_and_stored(client, bastion, tmp_path, kind,
                                                                           metadata) -> None:
    token = make_user(bastion, "alice")
    make = make_wheel if kind == "wheel" else make_sdist
    path = make(tmp_path, "hello-world", "1.0", metadata=metadata)
    accepted(client, token, path, "hello-world", "1.0")
    stored = stored_metadata(bastion)
    assert stored["metadata_version"] == "2.1"  # as declared, not the version it was validated by
    if "License-File" in metadata:
        assert stored["license_files"] == ["LICENSE", "NOTICE"]
    else:
        assert stored["dynamic"] == ["Requires-Dist"]
    if kind == "wheel":  # PEP 658: the file's own METADATA, byte for byte
        entry = simple_json(client, "hello-world")["files"][0]
        served = client.get(f"{entry['url']}.metadata")
        assert served.status_code == 200 and served.content == metadata.encode()


@pytest.mark.parametrize(
    ("extra", "field"),
    [("License-Expression: MIT OR (\n", "license-expression"),
     ("License-File: /etc/passwd\n", "license-file"),
     ("Dynamic: Name\n", "dynamic")],
    ids=["license-expression", "absolute-license-file", "dynamic-name"],
)
def test_a_malformed_field_used_early_is_still_refused_with_its_name(client, bastion, tmp_path, extra,
                                                                     field) -> None:
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0", metadata=metadata_text("hello-world", "1.0", extra=extra))
    response = refused(client, bastion, token, path, upload_form(path, "hello-world", "1.0"), 400,
                       f"Invalid metadata in '{path.name}':")
    assert field in response.text.lower()


def test_lenient_leaves_a_malformed_optional_field_out_and_keeps_the_file(lenient, tmp_path) -> None:
    bastion, client = lenient
    token = make_user(bastion, "alice")
    metadata = metadata_text("hello-world", "1.0", extra="Requires-Python: three\nLicense-Expression: MIT OR (\n")
    path = make_wheel(tmp_path, "hello-world", "1.0", metadata=metadata)
    accepted(client, token, path, "hello-world", "1.0")
    entry = simple_json(client, "hello-world")["files"][0]
    assert entry["requires-python"] is None  # not served: pip would choke on it
    assert client.get(f"{entry['url']}.metadata").content == metadata.encode()


def test_lenient_still_refuses_a_file_without_a_usable_name_or_version(lenient, tmp_path) -> None:
    bastion, client = lenient
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0",
                      metadata="Metadata-Version: 2.1\nName: hello-world\nVersion: not a version\n")
    refused(client, bastion, token, path, upload_form(path, "hello-world", "1.0"), 400,
            "'not a version' is invalid for 'version'")


# -- the form compared with the file by meaning ---------------------------------------------------

SEMANTIC = metadata_text(
    "hello-world", "1.0", summary="A  test project",
    extra=("Requires-Python: !=3.0.*,!=3.1.*,>=2.7\nKeywords: alpha,beta,gamma\n"
           "Classifier: Programming Language :: Python :: 3\nClassifier: License :: OSI Approved :: MIT License\n"
           "Requires-Dist: Attrs>=20.0\nRequires-Dist: idna; python_version < \"3.12\"\n"),
    description="Title\n=====\n\nSome text.\n",
)


def test_the_form_may_spell_the_file_s_metadata_differently(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0", metadata=SEMANTIC)
    form: dict[str, object] = {
        **upload_form(path, "Hello.World", "1.0.0"),
        "summary": "A test project ",
        "requires_python": ">=2.7, !=3.0.*, !=3.1.*",
        "keywords": ["gamma", "alpha", "beta"],  # one field per keyword, as twine sends them
        "classifiers": ["License :: OSI Approved :: MIT License", "Programming Language :: Python :: 3"],
        "requires_dist": ["idna ; python_version<'3.12'", "attrs >= 20.0"],
        "description": "Title\r\n=====  \r\n\r\nSome text.\r\n\r\n",
    }
    response = post_upload(client, token, path, form)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert simple_json(client, "hello-world")["files"][0]["requires-python"] == "!=3.0.*,!=3.1.*,>=2.7"


@pytest.mark.parametrize(
    ("field", "value", "needles"),
    [
        ("requires_python", ">=3.8", ("The form's requires_python '>=3.8' does not match the file's metadata",
                                      "!=3.0.*,!=3.1.*,>=2.7")),
        ("keywords", "alpha,beta", ("The form's keywords 'alpha, beta'", "'alpha, beta, gamma'")),
        ("classifiers", ["Programming Language :: Python :: 3"],
         ("The form's classifiers", "differing: License :: OSI Approved :: MIT License")),
        ("requires_dist", ["attrs>=21"], ("The form's requires_dist 'attrs>=21'", "Attrs>=20.0")),
        ("description", "Another text", ("The form's description 'Another text'", "Some text.")),
        ("requires_python", ">=three", ("Invalid value for requires_python '>=three'",)),
        ("requires_dist", ["attrs >=< 1"], ("Invalid value for requires_dist",)),
    ],
    ids=["requires-python", "keywords", "classifiers", "requires-dist", "description", "bad-specifier",
         "bad-requirement"],
)
def test_a_form_that_really_disagrees_names_the_field_and_both_values(client, bastion, tmp_path, field, value,
                                                                      needles) -> None:
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0", metadata=SEMANTIC)
    form = {**upload_form(path, "hello-world", "1.0"), field: value}
    refused(client, bastion, token, path, form, 400, *needles)  # type: ignore[arg-type]


# -- rules only today's PyPI applies -------------------------------------------------------------

def _rule_cases(tmp_path: Path) -> dict[str, tuple[Path, str, str, tuple[str, ...]]]:
    """name -> (file, project name, version, what the pypi refusal says)."""
    return {
        "metadata-2.0": (
            make_wheel(tmp_path, "hello-world", "1.0", metadata=metadata_text("hello-world", "1.0", metadata_version="2.0")),
            "hello-world", "1.0", ("Metadata-Version '2.0' is not a valid metadata version", "upload_strictness")),
        "deprecated-classifier": (
            make_wheel(tmp_path, "hello-world", "1.1", metadata=metadata_text(
                "hello-world", "1.1", extra="Classifier: Natural Language :: Ukranian\n")),
            "hello-world", "1.1", ("Classifier 'Natural Language :: Ukranian' has been deprecated",)),
        "readme-no-longer-renders": (
            make_sdist(tmp_path, "hello-world", "1.2", metadata=metadata_text(
                "hello-world", "1.2", description="Title\n=====\n\n`unclosed\n")),
            "hello-world", "1.2", ("The description failed to render as reStructuredText",)),
        "pre-pep625-sdist-name": (
            make_sdist(tmp_path, "hello.world", "1.3", filename="hello.world-1.3.tar.gz", top="hello.world-1.3"),
            "hello.world", "1.3", ("PEP 625 requires 'hello_world-1.3.tar.gz'",)),
        "zip-sdist": (
            make_zip_sdist(tmp_path, "hello-world", "1.4"),
            "hello-world", "1.4", ("Invalid file extension for 'hello_world-1.4.zip'", ".tar.gz")),
        "wheel-name-not-normalized": (
            make_wheel(tmp_path, "Hello-World", "1.5", filename="Hello_World-1.5-py3-none-any.whl"),
            "Hello-World", "1.5", ("should contain the normalized project name 'hello_world', not 'Hello_World'",
                                   "hello_world-1.5-py3-none-any.whl")),
        "linux-platform-tag": (
            make_wheel(tmp_path, "hello-world", "1.6", tag="cp311-cp311-linux_x86_64"),
            "hello-world", "1.6", ("unsupported platform tag 'linux_x86_64'",)),
        "local-version": (
            make_wheel(tmp_path, "hello-world", "1.7+acme.1"),
            "hello-world", "1.7+acme.1", ("The use of local versions in '1.7+acme.1' is not allowed",)),
        "sdist-version-with-a-hyphen": (
            make_sdist(tmp_path, "hello-world", "1.8.post1", filename="hello-world-1.8-1.tar.gz",
                       top="hello-world-1.8-1"),
            "hello-world", "1.8.post1", ("PEP 625 requires 'hello_world-1.8.post1.tar.gz'",)),
    }


RULES = ["metadata-2.0", "deprecated-classifier", "readme-no-longer-renders", "pre-pep625-sdist-name", "zip-sdist",
         "wheel-name-not-normalized", "linux-platform-tag", "local-version", "sdist-version-with-a-hyphen"]


@pytest.mark.parametrize("rule", RULES)
def test_pypi_strictness_refuses_what_pypi_refuses_today(client, bastion, tmp_path, rule) -> None:
    token = make_user(bastion, "alice")
    path, name, version, needles = _rule_cases(tmp_path)[rule]
    refused(client, bastion, token, path, upload_form(path, name, version), 400, *needles)


@pytest.mark.parametrize("rule", RULES)
def test_lenient_strictness_accepts_what_pypi_accepted_before(lenient, tmp_path, rule) -> None:
    bastion, client = lenient
    token = make_user(bastion, "alice")
    path, name, version, _ = _rule_cases(tmp_path)[rule]
    accepted(client, token, path, name, version)
    files = simple_json(client, name)["files"]
    assert [f["filename"] for f in files] == [path.name]
    assert files[0]["hashes"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert client.get(files[0]["url"]).content == path.read_bytes()


def test_lenient_readme_that_no_longer_renders_is_shown_as_text(lenient, tmp_path) -> None:
    bastion, client = lenient
    token = make_user(bastion, "alice")
    path = make_sdist(tmp_path, "hello-world", "1.0", metadata=metadata_text(
        "hello-world", "1.0", description="Title\n=====\n\n`unclosed <script>x</script>\n"))
    accepted(client, token, path, "hello-world", "1.0")
    page = client.get("/projects/hello-world/")
    assert page.status_code == 200
    assert "`unclosed &lt;script&gt;" in page.text and "<script>x" not in page.text


def test_a_description_folded_into_the_header_renders(client, bastion, tmp_path) -> None:
    """Metadata-Version 1.x put the description in a header, every line after the first indented by
    8 spaces (six 1.16.0's sdist): read without that indent, it renders, as PyPI shows it."""
    token = make_user(bastion, "alice")
    folded = ("Metadata-Version: 1.2\nName: hello-world\nVersion: 1.0\nSummary: A test project\n"
              "Description: .. image:: https://example.org/badge.svg\n"
              "           :target: https://example.org/\n        \n"
              "        Some text about *the* project.\n        \n"
              "Platform: UNKNOWN\n")
    path = make_sdist(tmp_path, "hello-world", "1.0", metadata=folded)
    accepted(client, token, path, "hello-world", "1.0")
    page = client.get("/projects/hello-world/")
    assert "<em>the</em>" in page.text


def test_the_json_api_lists_a_lenient_zip_sdist_as_pypi_would(lenient, tmp_path) -> None:
    bastion, client = lenient
    token = make_user(bastion, "alice")
    path = make_zip_sdist(tmp_path, "hello-world", "1.0")
    accepted(client, token, path, "hello-world", "1.0")
    data = json.loads(client.get("/pypi/hello-world/json").content)
    assert [(u["filename"], u["packagetype"]) for u in data["urls"]] == [("hello_world-1.0.zip", "sdist")]


def test_an_sdist_without_pkg_info_is_named_by_its_filename_only_when_an_import_asks(bastion, tmp_path) -> None:
    """Source tarballs made by hand or by a code host (PyPDF2-1.23.tar.gz on pypi.org) have no
    PKG-INFO: refused, unless an import reads the project from the filename (lenient only)."""
    import io as _io

    from bastion.packaging import checks
    from bastion.packaging.errors import UploadRejected
    from bastion.packaging.upload import IncomingFile, check_file
    from tests.distbuilder import digests, tar_gz_bytes

    path = tmp_path / "PyPDF2-1.23.tar.gz"
    path.write_bytes(tar_gz_bytes({"PyPDF2-1.23/setup.py": b"from distutils.core import setup\n"}))
    form = {"name": "PyPDF2", "version": "1.23", **digests(path)}

    def check(**kwargs):  # type: ignore[no-untyped-def]
        return check_file(bastion, form, IncomingFile(path.name, None, _io.BytesIO()), path, path.stat().st_size,
                          digests(path), "sdist", **kwargs)

    for kwargs in ({}, {"strictness": checks.LENIENT}, {"strictness": checks.PYPI, "name_from_filename": True}):
        with pytest.raises(UploadRejected, match="PyPDF2-1.23/PKG-INFO is missing"):
            check(**kwargs)
    checked = check(strictness=checks.LENIENT, name_from_filename=True)
    assert (checked.metadata.name, str(checked.metadata.version)) == ("PyPDF2", "1.23")
    assert checked.metadata_raw["metadata_version"] == "1.0"


@pytest.mark.parametrize(
    ("extra", "form_field", "sent"),
    [("Requires-Python: <4,>=3.6.*\n", "requires_python", "<4,>=3.6.*"),
     ("Summary: first line\n", "summary", "A test project")],  # two Summary headers: malformed
    ids=["invalid-requires-python", "summary-given-twice"],
)
def test_lenient_does_not_compare_the_form_on_a_field_it_left_out(lenient, tmp_path, extra, form_field,
                                                                  sent) -> None:
    """uv publish sends what the file says; a field lenient left out as malformed is not compared
    (seen on real files: multi-line summaries, ``<4,>=3.6.*``)."""
    bastion, client = lenient
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0", metadata=metadata_text("hello-world", "1.0", extra=extra))
    accepted(client, token, path, "hello-world", "1.0", **{form_field: sent})
    assert form_field not in stored_metadata(bastion)


def test_pyemscripten_wheels_are_accepted_as_on_pypi(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0", tag="cp314-cp314-pyemscripten_2026_0_wasm32")
    accepted(client, token, path, "hello-world", "1.0")
