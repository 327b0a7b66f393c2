"""POST /legacy/ refuses bad input with the right status and a message that says what to fix,
and a refused (or failed) upload leaves nothing behind: no row, no blob, no page, no temp file.

Archive-level refusals are in test_archives.py, project-name refusals in test_names.py; the
helpers all three use are in uploads.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path
from urllib.parse import urljoin

import pytest
from starlette.testclient import TestClient

from bastion.accounts import service as accounts
from bastion.accounts.tokens import issue_token, parse_token_id
from bastion.app import create_app
from bastion.authz import OPERATOR
from bastion.packaging.models import DeletedFilename
from bastion.services import Bastion
from tests.conftest import basic_auth, make_token, make_user, post_upload, snapshot_state
from tests.distbuilder import digests, make_sdist, make_wheel, metadata_text, upload_form
from tests.unit.uploads import accepted, check_refusal, refused, simple_json

# -- helpers of this module (uploads.py has the shared ones) ---------------------------------------


def form_for(path: Path, name: str, version: str, overrides: dict[str, str | None]) -> dict[str, str]:
    """upload_form with any field (name and version too) replaced, or dropped when None."""
    form = {**upload_form(path, name, version), **overrides}
    return {k: v for k, v in form.items() if v is not None}


def post_raw(client, token: str, filename: str, data: bytes, form: dict[str, str],  # type: ignore[no-untyped-def]
             content_type: str = "application/octet-stream"):
    """A multipart body written by hand: httpx percent-escapes control characters in filenames,
    a hostile client does not."""
    boundary = f"bastion-{uuid.uuid4().hex}"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in form.items()
    )
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="'.encode()
        + filename.encode()
        + f'"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {**basic_auth(token), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    return client.post("/legacy/", content=body, headers=headers)


# -- authentication --------------------------------------------------------------------------------


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    return make_wheel(tmp_path, "hello-world", "1.0")


def test_no_credentials_is_401(client, bastion, wheel) -> None:
    make_user(bastion, "alice")
    response = refused(client, bastion, None, wheel, upload_form(wheel, "hello-world", "1.0"), 401,
                       "Invalid or non-existent authentication information", "__token__", "API token")
    assert response.headers["www-authenticate"].startswith("Basic")


def test_password_instead_of_token_is_403(client, bastion, wheel) -> None:
    make_user(bastion, "alice")  # the real account: its password would be right
    before = snapshot_state(bastion)
    with open(wheel, "rb") as handle:
        response = client.post("/legacy/", data=upload_form(wheel, "hello-world", "1.0"),
                               files={"content": (wheel.name, handle, "application/octet-stream")},
                               headers=basic_auth("a-long-password", username="alice"))
    check_refusal(response, 403, "Username/Password authentication is not supported",
                  "Create an API token", "username __token__")
    assert snapshot_state(bastion) == before


def _forged(bastion: Bastion, token: str) -> str:
    token_id, macaroon = parse_token_id(token)
    caveats = [json.loads(c.caveat_id) for c in macaroon.first_party_caveats()]
    return issue_token(b"not-the-server-secret", token_id, caveats)


def _revoked(bastion: Bastion, token: str) -> str:
    token_id, _ = parse_token_id(token)
    with bastion.db.write() as session:
        accounts.revoke_token(session, token_id, principal=OPERATOR)
    return token


def _expired(bastion: Bastion, token: str) -> str:
    with bastion.db.write() as session:
        new = accounts.create_token(session, bastion.secret, "alice", projects=None,
                                    expires_in=timedelta(seconds=-60), principal=OPERATOR)
    return new.token


def _attenuated_expired(bastion: Bastion, token: str) -> str:
    """A holder narrowed a valid token with an expiry in the past."""
    from pymacaroons import Macaroon

    _, macaroon = parse_token_id(token)
    copy = Macaroon.deserialize(macaroon.serialize())
    copy.add_first_party_caveat(json.dumps([0, 1, 0]))
    return "bastion-" + copy.serialize()


@pytest.mark.parametrize(
    ("make_bad", "message"),
    [
        (lambda b, t: "pypi-AgEIcHlwaS5vcmc", "not a Bastion API token (tokens start with 'bastion-')"),
        (lambda b, t: "bastion-!!!not-a-macaroon", "malformed API token: copy the whole token"),
        (lambda b, t: t[:-12], "Invalid API token"),
        (_forged, "invalid API token signature"),
        (_revoked, "this API token has been revoked: create a new one"),
        (_expired, "the API token has expired: create a new one"),
        (_attenuated_expired, "the API token has expired: create a new one"),
    ],
    ids=["other-index", "malformed", "truncated", "forged", "revoked", "expired", "attenuated-expired"],
)
def test_bad_token_is_403(client, bastion, wheel, make_bad, message) -> None:
    token = make_user(bastion, "alice")
    bad = make_bad(bastion, token)
    refused(client, bastion, bad, wheel, upload_form(wheel, "hello-world", "1.0"), 403, "Invalid API token", message)


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("Basic !!!not-base64!!!", "Malformed Basic authorization header."),
        ("Basic " + base64.b64encode(b"no-colon-here").decode(), "Malformed Basic authorization header."),
        ("Digest username=alice", "Unsupported authorization scheme 'Digest'. Create an API token"),
    ],
    ids=["not-base64", "no-colon", "digest"],
)
def test_malformed_authorization_header_is_401(client, bastion, wheel, authorization, message) -> None:
    make_user(bastion, "alice")
    before = snapshot_state(bastion)
    with open(wheel, "rb") as handle:
        response = client.post("/legacy/", data=upload_form(wheel, "hello-world", "1.0"),
                               files={"content": (wheel.name, handle)}, headers={"Authorization": authorization})
    check_refusal(response, 401, message)
    assert snapshot_state(bastion) == before


def test_token_with_nul_in_its_id_is_403(client, bastion, wheel) -> None:
    """Looked up before its signature is checked: PostgreSQL must not see the NUL (it would 500)."""
    from pymacaroons import Macaroon

    make_user(bastion, "alice")
    forged = "bastion-" + Macaroon(location="bastion", identifier="abc\x00def", key="guess").serialize()
    refused(client, bastion, forged, wheel, upload_form(wheel, "hello-world", "1.0"), 403,
            "Invalid API token: malformed API token")


def test_token_scoped_to_another_project_cannot_create_a_project(client, bastion, wheel) -> None:
    token = make_user(bastion, "alice", projects=["other-project"])
    refused(client, bastion, token, wheel, upload_form(wheel, "hello-world", "1.0"), 403,
            "this API token is limited to other-project and cannot act on 'hello-world'",
            "bastion token create --project hello-world")


def test_token_scoped_to_another_project_cannot_upload_to_an_existing_one(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    accepted(client, token, make_wheel(tmp_path, "hello-world", "1.0"), "hello-world", "1.0")
    scoped = make_token(bastion, "alice", projects=["other-project"])
    newer = make_wheel(tmp_path, "hello-world", "1.1")
    refused(client, bastion, scoped, newer, upload_form(newer, "hello-world", "1.1"), 403,
            "limited to other-project and cannot act on 'hello-world'")


def test_user_without_a_role_cannot_upload_to_someone_elses_project(client, bastion, tmp_path) -> None:
    alice = make_user(bastion, "alice")
    accepted(client, alice, make_wheel(tmp_path, "hello-world", "1.0"), "hello-world", "1.0")
    bob = make_user(bastion, "bob")
    newer = make_wheel(tmp_path, "hello-world", "1.1")
    refused(client, bastion, bob, newer, upload_form(newer, "hello-world", "1.1"), 403,
            "user 'bob' is not allowed to upload to project 'hello-world'", "ask an owner to add you as a maintainer")


# -- the form --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"protocol_version": "2"}, "Unknown protocol version: Bastion speaks upload protocol_version 1"),
        ({":action": "submit"}, "Unsupported ':action' 'submit': only 'file_upload' is supported."),
        ({":action": "doc_upload"}, "Unsupported ':action' 'doc_upload'"),
        ({"filetype": "bdist_egg"},
         "Invalid value for filetype. Error: Use a known file type ('sdist' or 'bdist_wheel'), not 'bdist_egg'."),
        ({"filetype": None}, "Use a known file type ('sdist' or 'bdist_wheel'), not ''"),
        ({"name": None}, "'name' is a required field. Upload with twine, which sends it."),
        ({"name": "   "}, "'name' is a required field."),
        ({"version": None}, "'version' is a required field."),
        ({"name": "hello\x00world"}, "Invalid value for name: it must not contain control characters."),
        ({"version": "1.0\x00"}, "Invalid value for version: it must not contain control characters."),
        ({"md5_digest": None, "sha256_digest": None, "blake2_256_digest": None},
         "Include at least one message digest (sha256_digest, blake2_256_digest or md5_digest)."),
        ({"sha256_digest": "z" * 64}, "Invalid value for sha256_digest: it must be a hexadecimal digest."),
        ({"md5_digest": "not hex at all"}, "Invalid value for md5_digest: it must be a hexadecimal digest."),
        ({"sha256_digest": "0" * 64}, ("The digest supplied does not match", "(sha256_digest)",
                                       "the file may have been corrupted in transit")),
        ({"md5_digest": "0" * 32}, ("The digest supplied does not match", "(md5_digest)")),
        ({"blake2_256_digest": "0" * 64}, ("The digest supplied does not match", "(blake2_256_digest)")),
        ({"sha256_digest": "abc"}, "(sha256_digest)"),
    ],
    ids=["protocol", "action", "doc-upload", "filetype", "no-filetype", "no-name", "blank-name", "no-version",
         "nul-in-name", "nul-in-version",
         "no-digests", "non-hex-sha256", "non-hex-md5", "wrong-sha256", "wrong-md5", "wrong-blake2",
         "short-sha256"],
)
def test_bad_form_is_400(client, bastion, wheel, overrides, message) -> None:
    token = make_user(bastion, "alice")
    messages = message if isinstance(message, tuple) else (message,)
    refused(client, bastion, token, wheel, form_for(wheel, "hello-world", "1.0", overrides), 400, *messages)


def test_only_one_right_digest_is_enough(client, bastion, wheel) -> None:
    token = make_user(bastion, "alice")
    form = upload_form(wheel, "hello-world", "1.0", md5_digest=None, blake2_256_digest=None)
    form["sha256_digest"] = form["sha256_digest"].upper()  # case does not matter
    response = post_upload(client, token, wheel, form)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("how", ["no-file-part", "other-part-name", "content-as-text", "urlencoded"])
def test_missing_content_file_part_is_400(client, bastion, wheel, how) -> None:
    token = make_user(bastion, "alice")
    form = upload_form(wheel, "hello-world", "1.0")
    before = snapshot_state(bastion)
    headers = basic_auth(token)
    data = wheel.read_bytes()
    if how == "no-file-part":
        response = client.post("/legacy/", data=form, files={}, headers=headers)
    elif how == "other-part-name":
        response = client.post("/legacy/", data=form, files={"file": (wheel.name, data)}, headers=headers)
    elif how == "content-as-text":
        response = client.post("/legacy/", data={**form, "content": "not a file"},
                               files={"x": ("x", b"")}, headers=headers)
    else:
        response = client.post("/legacy/", data=form, headers=headers)
    check_refusal(response, 400, "Upload payload does not have a file: include the 'content' file part.")
    assert snapshot_state(bastion) == before


def test_a_form_with_thousands_of_repeated_fields_is_accepted(client, bastion, tmp_path) -> None:
    """boto3-stubs (on PyPI) declares hundreds of extras: twine and uv send a field per
    Requires-Dist and per Provides-Extra, more than starlette's default cap of 1,000 fields."""
    token = make_user(bastion, "alice")
    extras = [f"service-{i}" for i in range(800)]
    requires = [f"dep-{i}>=1.0; extra == 'service-{i}'" for i in range(800)]
    metadata = metadata_text("many-extras", "1.0", extra="".join(
        f"Provides-Extra: {e}\nRequires-Dist: {r}\n" for e, r in zip(extras, requires)))
    wheel = make_wheel(tmp_path, "many-extras", "1.0", metadata=metadata)
    form = {**upload_form(wheel, "many-extras", "1.0"), "provides_extra": extras, "requires_dist": requires}
    response = post_upload(client, token, wheel, form)
    assert response.status_code == 200, response.text
    assert len(simple_json(client, "many-extras")["files"]) == 1


def test_form_that_is_not_a_form_is_400(client, bastion) -> None:
    token = make_user(bastion, "alice")
    before = snapshot_state(bastion)
    response = client.post("/legacy/", content=b"--x\r\nnot multipart", headers={
        **basic_auth(token), "Content-Type": "multipart/form-data; boundary=x"})
    check_refusal(response, 400, "Invalid upload form:", "Upload with twine.")
    assert snapshot_state(bastion) == before


# -- the filename ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["\x01", "\t", "\x1b", "\x7f", "\x00"], ids=["soh", "tab", "esc", "del", "nul"])
def test_filename_with_control_character_is_400(client, bastion, tmp_path, bad) -> None:
    token = make_user(bastion, "alice")
    sdist = make_sdist(tmp_path, "hello-world", "1.0")
    before = snapshot_state(bastion)
    response = post_raw(client, token, f"hello_world{bad}-1.0.tar.gz", sdist.read_bytes(),
                        upload_form(sdist, "hello-world", "1.0"))
    check_refusal(response, 400, "Cannot upload a file named",
                  "filenames must not contain control characters, '/' or '\\'.")
    assert snapshot_state(bastion) == before


@pytest.mark.parametrize("filename", ["dist/hello_world-1.0.tar.gz", "../hello_world-1.0.tar.gz",
                                      "dist\\hello_world-1.0.tar.gz"])
def test_filename_with_path_separator_is_400(client, bastion, tmp_path, filename) -> None:
    token = make_user(bastion, "alice")
    sdist = make_sdist(tmp_path, "hello-world", "1.0")
    before = snapshot_state(bastion)
    response = post_raw(client, token, filename, sdist.read_bytes(), upload_form(sdist, "hello-world", "1.0"))
    check_refusal(response, 400, f"Cannot upload a file named {filename!r}", "must not contain")
    assert snapshot_state(bastion) == before


def test_filename_too_long_is_400(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    sdist = make_sdist(tmp_path, "hello-world", "1.0")
    refused(client, bastion, token, sdist, upload_form(sdist, "hello-world", "1.0"), 400,
            "filename longer than 255 characters", filename="h" * 250 + "-1.0.tar.gz")


@pytest.mark.parametrize(
    ("kind", "filename", "filetype", "message"),
    [
        ("sdist", "hello_world-1.0.zip", "sdist",
         "Invalid file extension for 'hello_world-1.0.zip': a sdist must end with .tar.gz"),
        ("sdist", "hello_world-1.0.tar.bz2", "sdist", "a sdist must end with .tar.gz"),
        ("sdist", "hello_world-1.0.tar.gz", "bdist_wheel",
         "Invalid file extension for 'hello_world-1.0.tar.gz': a bdist_wheel must end with .whl"),
        ("wheel", "hello_world-1.0-py3-none-any.whl", "sdist", "a sdist must end with .tar.gz"),
        ("wheel", "hello_world-1.0-py3-none-any.egg", "bdist_wheel", "a bdist_wheel must end with .whl"),
    ],
    ids=["zip-sdist", "bz2-sdist", "sdist-as-wheel", "wheel-as-sdist", "egg"],
)
def test_extension_not_matching_filetype_is_400(client, bastion, tmp_path, kind, filename, filetype, message) -> None:
    token = make_user(bastion, "alice")
    path = make_sdist(tmp_path, "hello-world", "1.0") if kind == "sdist" else make_wheel(tmp_path, "hello-world", "1.0")
    refused(client, bastion, token, path, upload_form(path, "hello-world", "1.0", filetype=filetype), 400,
            message, "PEP 625", filename=filename)


@pytest.mark.parametrize(
    ("filename", "message"),
    [
        ("Hello-World-1.0.tar.gz",
         "Invalid source distribution filename 'Hello-World-1.0.tar.gz': PEP 625 requires 'hello_world-1.0.tar.gz'. "
         "Rebuild with a current build backend."),
        ("hello-world-1.0.tar.gz", "PEP 625 requires 'hello_world-1.0.tar.gz'"),
        ("hello_world-1.0.0.tar.gz", "'hello_world-1.0.0.tar.gz': PEP 625 requires 'hello_world-1.0.tar.gz'"),
        ("hello_world-2.0.tar.gz", "Version in filename 'hello_world-2.0.tar.gz' (2.0) does not match the metadata version 1.0."),
        ("helloworld-1.0.tar.gz", "Start filename for 'hello-world' with its normalized name"),
        ("hello_world.tar.gz", "Invalid source distribution filename 'hello_world.tar.gz'"),
        ("hello_world-one.tar.gz", "Invalid source distribution filename 'hello_world-one.tar.gz'"),
    ],
    ids=["pre-pep625", "dashes", "version-spelling", "other-version", "other-name", "no-version", "bad-version"],
)
def test_sdist_filename_not_pep625_is_400(client, bastion, tmp_path, filename, message) -> None:
    token = make_user(bastion, "alice")
    sdist = make_sdist(tmp_path, "hello-world", "1.0", filename=filename)
    refused(client, bastion, token, sdist, upload_form(sdist, "hello-world", "1.0"), 400, message)


@pytest.mark.parametrize(
    ("filename", "message"),
    [
        ("other_name-1.0-py3-none-any.whl",
         "Start filename for 'hello-world' with its normalized name: 'other_name-1.0-py3-none-any.whl' names "
         "'other-name'."),
        ("hello_world-2.0-py3-none-any.whl",
         "Version in filename 'hello_world-2.0-py3-none-any.whl' (2.0) does not match the metadata version 1.0."),
        ("hello_world-1.0.whl", "Invalid wheel filename 'hello_world-1.0.whl'"),
        ("hello_world-1.0-py3-none.whl", "Invalid wheel filename"),
        ("hello_world-1.0-x-py3-none-any.whl", "Invalid wheel filename"),
        ("hello world-1.0-py3-none-any.whl", "Invalid wheel filename"),
    ],
    ids=["other-name", "other-version", "no-tags", "short-tags", "bad-build-tag", "space"],
)
def test_wheel_filename_not_matching_metadata_is_400(client, bastion, wheel, filename, message) -> None:
    token = make_user(bastion, "alice")
    refused(client, bastion, token, wheel, upload_form(wheel, "hello-world", "1.0"), 400, message, filename=filename)


@pytest.mark.parametrize("tag", ["cp311-cp311-linux_x86_64", "py3-none-linux_aarch64", "cp311-cp311-freebsd_14_amd64",
                                 "py3-none-any.linux_x86_64"])
def test_wheel_with_unsupported_platform_tag_is_400(client, bastion, tmp_path, tag) -> None:
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0", tag=tag)
    platform = [p for p in tag.split("-")[2].split(".") if p != "any"][0]
    refused(client, bastion, token, path, upload_form(path, "hello-world", "1.0"), 400,
            f"Binary wheel '{path.name}' has an unsupported platform tag '{platform}'.")


@pytest.mark.parametrize("content_type", ["image/png", "IMAGE/GIF"])
def test_image_content_type_is_400(client, bastion, wheel, content_type) -> None:
    token = make_user(bastion, "alice")
    refused(client, bastion, token, wheel, upload_form(wheel, "hello-world", "1.0"), 400,
            "Invalid distribution file: the upload's Content-Type is an image.", content_type=content_type)


# -- metadata in the artifact ------------------------------------------------------------------


def _with_metadata(tmp_path: Path, kind: str, metadata: str, *, version: str = "1.0") -> Path:
    if kind == "wheel":
        return make_wheel(tmp_path, "hello-world", version, metadata=metadata)
    return make_sdist(tmp_path, "hello-world", version, metadata=metadata)


@pytest.mark.parametrize(
    ("kind", "metadata", "message"),
    [
        ("wheel", "Metadata-Version: 2.1\nName: hello-world\nVersion: not a version\n",
         "'not a version' is invalid for 'version'"),
        ("sdist", "Metadata-Version: 2.1\nName: hello-world\nVersion: not a version\n",
         "'not a version' is invalid for 'version'"),
        ("sdist", "this is not metadata at all", "'name' is a required field"),
        ("wheel", "Metadata-Version: 2.1\nVersion: 1.0\n", "'name' is a required field"),
        ("wheel", "Metadata-Version: 9.9\nName: hello-world\nVersion: 1.0\n", "'9.9' is not a valid metadata version"),
        ("wheel", "Name: hello-world\nVersion: 1.0\n", "not a valid metadata version"),
        ("wheel", "this is not metadata at all", "'name' is a required field"),
        ("wheel", "Metadata-Version: 2.1\nName: hello-world\nVersion: 1.0\nRequires-Dist: foo >=< 1\n",
         "'foo >=< 1' is invalid for 'requires-dist'"),
        ("wheel", "Metadata-Version: 2.1\nName: hello-world\nVersion: 1.0\nRequires-Python: three\n",
         "'three' is invalid for 'requires-python'"),
        ("wheel", "Metadata-Version: 2.1\nName: hello-world\nVersion: 1.0\nLicense-Expression: MIT OR (\n",
         "license-expression"),
    ],
    ids=["bad-version", "sdist-bad-version", "sdist-garbage", "no-name", "unknown-metadata-version",
         "no-metadata-version", "garbage", "bad-requirement", "bad-requires-python",
         "malformed-field-used-early"],
)
def test_invalid_metadata_is_400(client, bastion, tmp_path, kind, metadata, message) -> None:
    token = make_user(bastion, "alice")
    path = _with_metadata(tmp_path, kind, metadata)
    response = refused(client, bastion, token, path, upload_form(path, "hello-world", "1.0"), 400,
                       f"Invalid metadata in '{path.name}':", "Fix the project metadata and rebuild.")
    assert message.lower() in response.text.lower()


def test_metadata_that_is_not_utf8_is_400(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0")
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members["hello_world-1.0.dist-info/METADATA"] = (
        b"Metadata-Version: 2.1\nName: hello-world\nVersion: 1.0\nSummary: caf\xe9\xff\n"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    refused(client, bastion, token, path, upload_form(path, "hello-world", "1.0"), 400,
            f"Invalid metadata in '{path.name}':", "Fix the project metadata and rebuild.")


def test_local_version_is_400(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0+local")
    refused(client, bastion, token, path, upload_form(path, "hello-world", "1.0+local"), 400,
            "The use of local versions in '1.0+local' is not allowed. Remove the '+local' suffix.")


EXTRA_RULES = [
    (dict(summary="x" * 513), "Invalid value for summary: use a single line of at most 512 characters."),
    (dict(extra="Classifier: Programming Language :: Cobol++\n"),
     "Classifier 'Programming Language :: Cobol++' is not a valid classifier: see https://pypi.org/classifiers/"),
    (dict(extra="Classifier: Natural Language :: Ukranian\n"),
     "Classifier 'Natural Language :: Ukranian' has been deprecated, use Natural Language :: Ukrainian instead."),
    (dict(extra="Project-URL: " + "L" * 33 + ", https://example.org\n"),
     f"Project-URL label '{'L' * 33}' is longer than 32 characters."),
    (dict(extra="Requires-Dist: foo @ https://example.org/foo-1.0.tar.gz\n"),
     "Can't have direct dependency: 'foo @ https://example.org/foo-1.0.tar.gz'. "
     "Depend on a released distribution instead."),
    (dict(metadata_version="2.4", extra="License: MIT\nLicense-Expression: MIT\n"),
     "License and License-Expression are mutually exclusive: keep only License-Expression."),
    (dict(content_type="text/x-rst", description="Title\n=====\n\n`unclosed interpreted text\n"),
     "The description failed to render as reStructuredText. Check it with `twine check dist/*`"),
    (dict(description=".. unknown-directive:: boom\n"), "failed to render as reStructuredText"),
    (dict(content_type="text/html", description="<p>hi</p>"),
     ("'description-content-type' must be one of [", "'text/plain'", "'text/markdown'", "not 'text/html'")),
    (dict(content_type="text/markdown; variant=Wiki", description="# hi"),
     ("valid Markdown variants for 'description-content-type' are [", "'GFM'", "'CommonMark'", "not 'Wiki'")),
]


@pytest.mark.parametrize(("kwargs", "message"), EXTRA_RULES,
                         ids=["summary-too-long", "invalid-classifier", "deprecated-classifier",
                              "project-url-label", "direct-url-dependency", "license-and-expression",
                              "broken-rst", "rst-unknown-directive", "unknown-content-type",
                              "unknown-markdown-variant"])
def test_metadata_against_index_rules_is_400(client, bastion, tmp_path, kwargs, message) -> None:
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0", metadata=metadata_text("hello-world", "1.0", **kwargs))
    messages = message if isinstance(message, tuple) else (message,)
    refused(client, bastion, token, path, upload_form(path, "hello-world", "1.0"), 400, *messages)


def test_rst_readme_is_also_checked_in_sdists(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    metadata = metadata_text("hello-world", "1.0", description="Title\n=====\n\n`unclosed\n")
    path = make_sdist(tmp_path, "hello-world", "1.0", metadata=metadata)
    refused(client, bastion, token, path, upload_form(path, "hello-world", "1.0"), 400,
            "The description failed to render as reStructuredText", "text/markdown")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "other-project"},
         "The form's name 'other-project' does not match the name 'hello-world' in the file's metadata."),
        ({"version": "2.0"}, "The form's version '2.0' does not match the version '1.0' in the file's metadata."),
        ({"version": "one"}, "Invalid version 'one': see PEP 440."),
        ({"summary": "Something else entirely"},
         "The form's summary 'Something else entirely' does not match the file's metadata 'A test project'."),
        ({"requires_python": ">=3.12"},
         "The form's requires_python '>=3.12' does not match the file's metadata '>=3.8'."),
    ],
    ids=["name", "version", "invalid-version", "summary", "requires-python"],
)
def test_form_disagreeing_with_metadata_is_400(client, bastion, tmp_path, overrides, message) -> None:
    token = make_user(bastion, "alice")
    metadata = metadata_text("hello-world", "1.0", extra="Requires-Python: >=3.8\n")
    path = make_wheel(tmp_path, "hello-world", "1.0", metadata=metadata)
    refused(client, bastion, token, path, form_for(path, "hello-world", "1.0", overrides), 400, message)


def test_form_agreeing_with_metadata_in_other_spellings_is_accepted(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    metadata = metadata_text("hello-world", "1.0", extra="Requires-Python: >=3.8\n")
    path = make_wheel(tmp_path, "hello-world", "1.0", metadata=metadata)
    accepted(client, token, path, "Hello_World", "1.0.0", summary=" A test project ", requires_python=">=3.8")
    assert simple_json(client, "hello-world")["files"][0]["requires-python"] == ">=3.8"


# -- files that already exist ----------------------------------------------------------------------


def test_identical_reupload_is_200_and_changes_nothing(client, bastion, wheel) -> None:
    token = make_user(bastion, "alice")
    accepted(client, token, wheel, "hello-world", "1.0")
    before = snapshot_state(bastion)
    response = post_upload(client, token, wheel, upload_form(wheel, "hello-world", "1.0"))
    assert response.status_code == 200, response.text
    assert response.text == "OK (identical file already stored)\n"
    assert snapshot_state(bastion) == before


def test_different_file_under_an_existing_name_is_400_file_already_exists(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = make_wheel(tmp_path / "a", "hello-world", "1.0")
    accepted(client, token, first, "hello-world", "1.0")
    second = make_wheel(tmp_path / "b", "hello-world", "1.0", files={"hello_world/extra.py": b"X = 2\n"})
    assert second.name == first.name and second.read_bytes() != first.read_bytes()
    blake2 = digests(second)["blake2_256_digest"]
    response = refused(client, bastion, token, second, upload_form(second, "hello-world", "1.0"), 400,
                       f"'{second.name}', with blake2_256 hash '{blake2}'", "upload a new version instead")
    # twine --skip-existing recognizes exactly this prefix.
    assert response.text.startswith("File already exists")
    assert response.headers["x-bastion-reason"].startswith("File already exists")


def test_same_content_under_another_filename_is_400(client, bastion, wheel) -> None:
    token = make_user(bastion, "alice")
    accepted(client, token, wheel, "hello-world", "1.0")
    refused(client, bastion, token, wheel, upload_form(wheel, "hello-world", "1.0"), 400,
            "File already exists ('hello_world-1.0-py2.py3-none-any.whl'",
            filename="hello_world-1.0-py2.py3-none-any.whl")


def test_deleted_filename_can_never_be_reused(client, bastion, wheel) -> None:
    token = make_user(bastion, "alice")
    with bastion.db.write() as session:
        session.add(DeletedFilename(filename=wheel.name))
    refused(client, bastion, token, wheel, upload_form(wheel, "hello-world", "1.0"), 400,
            "This filename has already been used, use a different version",
            f"'{wheel.name}' was uploaded and deleted before; filenames cannot be reused")


def test_second_sdist_for_a_release_is_400(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    accepted(client, token, make_sdist(tmp_path, "hello-world", "1.0"), "hello-world", "1.0")
    # 1.0.0 is the same release as 1.0 (PEP 440), under a different PEP 625 filename.
    other = make_sdist(tmp_path, "hello-world", "1.0.0")
    refused(client, bastion, token, other, upload_form(other, "hello-world", "1.0.0"), 400,
            "Only one sdist may be uploaded per release: hello-world 1.0 has one already.")


# -- a failure after the blob was written ----------------------------------------------------------


@pytest.mark.parametrize("existing_project", [False, True], ids=["new-project", "existing-project"])
def test_failure_after_blob_write_is_500_and_leaves_nothing(bastion, tmp_path, monkeypatch, existing_project) -> None:
    token = make_user(bastion, "alice")
    with TestClient(create_app(bastion=bastion), raise_server_exceptions=False) as client:
        if existing_project:
            accepted(client, token, make_wheel(tmp_path, "hello-world", "0.9"), "hello-world", "0.9")
        wheel = make_wheel(tmp_path, "hello-world", "1.0")
        stored: list[str] = []

        def failing_refresh(*args, **kwargs):  # type: ignore[no-untyped-def]
            # The file's blob is on disk by now: the failure must take it away again.
            stored.extend(p for p in snapshot_state(bastion)["blobs"] if p.endswith(wheel.name))
            raise RuntimeError("disk on fire")

        monkeypatch.setattr("bastion.packaging.upload.refresh_project_pages", failing_refresh)
        before = snapshot_state(bastion)
        response = post_upload(client, token, wheel, upload_form(wheel, "hello-world", "1.0"))
        assert response.status_code == 500
        assert stored, "the failure was injected before the blob was written"
        assert snapshot_state(bastion) == before
        # And the index still works: the same upload goes through once the failure is gone.
        monkeypatch.undo()
        accepted(client, token, wheel, "hello-world", "1.0")


# -- accepted uploads ------------------------------------------------------------------------------


def _served(client, name: str, paths: list[Path]) -> dict:  # type: ignore[no-untyped-def]
    page = client.get(f"/simple/{name}/")
    assert page.status_code == 200
    document = simple_json(client, name)
    by_name = {entry["filename"]: entry for entry in document["files"]}
    assert sorted(by_name) == sorted(p.name for p in paths)
    for path in paths:
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"#sha256={sha256}\"" in page.text
        assert f">{path.name}</a>" in page.text
        entry = by_name[path.name]
        assert entry["hashes"] == {"sha256": sha256}
        assert entry["size"] == path.stat().st_size
        download = client.get(urljoin(f"http://testserver/simple/{name}/", entry["url"]))
        assert download.status_code == 200
        assert download.content == path.read_bytes()
    return document


def test_sdist_and_wheel_of_one_release_are_accepted_and_served(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    sdist = make_sdist(tmp_path, "hello-world", "1.0")
    wheel = make_wheel(tmp_path, "hello-world", "1.0")
    accepted(client, token, sdist, "hello-world", "1.0")
    accepted(client, token, wheel, "hello-world", "1.0")
    document = _served(client, "hello-world", [sdist, wheel])
    assert document["versions"] == ["1.0"]
    entries = {e["filename"]: e for e in document["files"]}
    assert entries[sdist.name]["core-metadata"] is False
    assert entries[wheel.name]["core-metadata"]["sha256"]


def test_manylinux_wheel_is_accepted(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    wheel = make_wheel(tmp_path, "hello-world", "1.0",
                       tag="cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64")
    accepted(client, token, wheel, "hello-world", "1.0", pyversion="cp311")
    _served(client, "hello-world", [wheel])


def test_metadata_24_with_license_expression_is_accepted(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    metadata = metadata_text("hello-world", "2.0", metadata_version="2.4",
                             extra="License-Expression: MIT OR Apache-2.0\n"
                                   "Classifier: Programming Language :: Python :: 3\n"
                                   "Project-URL: Source, https://example.org/src\n",
                             content_type="text/markdown", description="# Hello\n\nWorld.\n")
    wheel = make_wheel(tmp_path, "hello-world", "2.0", metadata=metadata)
    sdist = make_sdist(tmp_path, "hello-world", "2.0", metadata=metadata)
    accepted(client, token, wheel, "hello-world", "2.0", metadata_version="2.4")
    accepted(client, token, sdist, "hello-world", "2.0", metadata_version="2.4")
    _served(client, "hello-world", [wheel, sdist])
    info = client.get("/pypi/hello-world/json").json()["info"]
    assert info["license_expression"] == "MIT OR Apache-2.0"
    assert info["license"] is None
