"""The upload checks, one small function each, in the order the pipeline runs them.

Each raises ``UploadRejected`` with the message twine prints, and returns nothing (or the value
it parsed) when the upload may go on.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

import readme_renderer.markdown
import readme_renderer.rst
import readme_renderer.txt
from packaging.metadata import ExceptionGroup as MetadataExceptionGroup
from packaging.metadata import InvalidMetadata, Metadata
from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version
from trove_classifiers import all_classifiers, deprecated_classifiers

from bastion.packaging.errors import UploadRejected

FILETYPES = {"sdist": (".tar.gz",), "bdist_wheel": (".whl",)}
MAX_VERSION_LENGTH = 100  # the releases.version column
MAX_PYTHON_TAGS_LENGTH = 50  # the files.python_version column
DIGEST_FIELDS = ("sha256_digest", "md5_digest", "blake2_256_digest")
_HEX = re.compile(r"^[0-9a-f]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Platform tags PyPI accepts for wheels; a plain linux_* tag promises nothing and is refused.
_PLATFORM_PATTERNS = [
    re.compile(p)
    for p in (
        r"^any$",
        r"^win32$", r"^win_amd64$", r"^win_arm64$", r"^win_ia64$",
        r"^manylinux1_(x86_64|i686)$",
        r"^manylinux2010_(x86_64|i686)$",
        r"^manylinux2014_(x86_64|i686|aarch64|armv7l|ppc64|ppc64le|s390x)$",
        r"^manylinux_\d+_\d+_(x86_64|i686|aarch64|armv7l|ppc64|ppc64le|s390x|riscv64|loongarch64)$",
        r"^musllinux_\d+_\d+_(x86_64|i686|aarch64|armv7l|ppc64le|s390x|riscv64|loongarch64)$",
        r"^macosx_\d+_\d+_(x86_64|arm64|universal2|intel|fat64|fat32|universal|i386|ppc|ppc64)$",
        r"^linux_(armv6l|armv7l)$",
        r"^ios_\d+_\d+_(arm64|x86_64)_(iphoneos|iphonesimulator)$",
        r"^android_\d+_(arm64_v8a|armeabi_v7a|x86_64|x86)$",
        r"^pyodide_\d+_\d+_wasm32$",
    )
]


def check_protocol(form: Mapping[str, str]) -> None:
    if form.get(":action", "file_upload") != "file_upload":
        raise UploadRejected(f"Unsupported ':action' {form.get(':action')!r}: only 'file_upload' is supported.")
    if form.get("protocol_version", "1") != "1":
        raise UploadRejected("Unknown protocol version: Bastion speaks upload protocol_version 1 (as twine sends).")


def check_filetype(form: Mapping[str, str]) -> str:
    filetype = form.get("filetype", "")
    if filetype not in FILETYPES:
        raise UploadRejected(
            f"Invalid value for filetype. Error: Use a known file type ('sdist' or 'bdist_wheel'), not {filetype!r}."
        )
    return filetype


def check_required_fields(form: Mapping[str, str]) -> None:
    for field_name in ("name", "version"):
        if not form.get(field_name, "").strip():
            raise UploadRejected(f"'{field_name}' is a required field. Upload with twine, which sends it.")
        if _CONTROL.search(form[field_name]):  # the name is looked up before the file is read
            raise UploadRejected(f"Invalid value for {field_name}: it must not contain control characters.")


def check_digests_present(form: Mapping[str, str]) -> None:
    present = [f for f in DIGEST_FIELDS if form.get(f)]
    if not present:
        raise UploadRejected("Include at least one message digest (sha256_digest, blake2_256_digest or md5_digest).")
    for field_name in present:
        if not _HEX.match(form[field_name].lower()):
            raise UploadRejected(f"Invalid value for {field_name}: it must be a hexadecimal digest.")


def check_filename_text(filename: str) -> None:
    if not filename or _CONTROL.search(filename) or "/" in filename or "\\" in filename:
        raise UploadRejected(
            f"Cannot upload a file named {filename!r}: filenames must not contain control characters, '/' or '\\'."
        )
    if len(filename) > 255:
        raise UploadRejected("Cannot upload a file with a filename longer than 255 characters.")


def check_extension(filename: str, filetype: str) -> None:
    if not filename.endswith(FILETYPES[filetype]):
        wanted = " or ".join(FILETYPES[filetype])
        raise UploadRejected(
            f"Invalid file extension for '{filename}': a {filetype} must end with {wanted} "
            "(PEP 625 sdists are .tar.gz, PEP 427 wheels are .whl)."
        )


def check_content_type(content_type: str | None) -> None:
    if content_type and content_type.lower().startswith("image/"):
        raise UploadRejected("Invalid distribution file: the upload's Content-Type is an image.")


def check_digests_match(form: Mapping[str, str], computed: Mapping[str, str]) -> None:
    """Compare every digest the client sent with ours, in constant time."""
    for field_name in DIGEST_FIELDS:
        sent = form.get(field_name)
        if sent and not hmac.compare_digest(sent.lower().encode(), computed[field_name].encode()):
            raise UploadRejected(
                f"The digest supplied does not match a digest calculated from the uploaded file "
                f"({field_name}). Upload again; the file may have been corrupted in transit."
            )


def limit_text(limit: int) -> str:
    """A size limit as configured: whole MiB, or exact bytes (never rounded down to "0 MiB")."""
    return f"{limit // (1024 * 1024)} MiB" if limit % (1024 * 1024) == 0 else f"{limit} bytes"


def check_file_size(size: int, limit: int, filename: str) -> None:
    if size > limit:
        # While spooling, ``size`` is only what has arrived so far: do not state it as the file's size.
        raise UploadRejected(
            f"File too large. Limit for this index is {limit_text(limit)}; '{filename}' is larger. "
            "Ask an index admin to raise max_file_size.",
            status=413,
        )
    if size == 0:
        raise UploadRejected(f"Invalid distribution file '{filename}': the file is empty.")


def check_project_size(current: int, added: int, limit: int, name: str) -> None:
    if current + added > limit:
        raise UploadRejected(
            f"Project size too large. Limit for project '{name}' total size is "
            f"{limit_text(limit)}. Delete old files or ask an index admin to raise max_project_size.",
            status=413,
        )


def parse_core_metadata(raw: bytes, filename: str) -> Metadata:
    """Validate the artifact's METADATA / PKG-INFO with packaging.metadata."""
    try:
        metadata = Metadata.from_email(raw, validate=True)
    except MetadataExceptionGroup as group:
        reasons = "; ".join(str(exc) for exc in group.exceptions)
        raise UploadRejected(f"Invalid metadata in '{filename}': {reasons}. Fix the project metadata and rebuild.") from None
    except (InvalidMetadata, ValueError) as exc:
        raise UploadRejected(f"Invalid metadata in '{filename}': {exc}. Fix the project metadata and rebuild.") from None
    return metadata


def check_metadata_rules(metadata: Metadata) -> None:
    """PyPI's rules beyond the metadata specification."""
    version: Version = metadata.version
    if version.local is not None:
        raise UploadRejected(
            f"The use of local versions in '{version}' is not allowed. Remove the '+{version.local}' suffix."
        )
    if len(str(version)) > MAX_VERSION_LENGTH:
        raise UploadRejected(f"Version '{version}' is longer than {MAX_VERSION_LENGTH} characters: use a shorter version.")
    summary = metadata.summary or ""
    if len(summary) > 512 or "\n" in summary:
        raise UploadRejected("Invalid value for summary: use a single line of at most 512 characters.")
    for classifier in metadata.classifiers or []:
        if classifier in deprecated_classifiers:
            replacement = ", ".join(deprecated_classifiers[classifier]) or "nothing"
            raise UploadRejected(f"Classifier '{classifier}' has been deprecated, use {replacement} instead.")
        if classifier not in all_classifiers:
            raise UploadRejected(
                f"Classifier '{classifier}' is not a valid classifier: see https://pypi.org/classifiers/ for the list."
            )
    for label in (metadata.project_urls or {}):
        if len(label) > 32:
            raise UploadRejected(f"Project-URL label '{label}' is longer than 32 characters.")
    for requirement in metadata.requires_dist or []:
        if requirement.url:
            raise UploadRejected(
                f"Can't have direct dependency: '{requirement}'. Depend on a released distribution instead."
            )
    if metadata.license and metadata.license_expression:
        raise UploadRejected("License and License-Expression are mutually exclusive: keep only License-Expression.")


def check_form_agrees(form: Mapping[str, str], metadata: Metadata) -> None:
    """Beyond PyPI: what the index serves comes from the artifact, so the form must agree with it."""
    if canonicalize_name(form.get("name", "")) != canonicalize_name(metadata.name):
        raise UploadRejected(
            f"The form's name '{form.get('name')}' does not match the name '{metadata.name}' in the file's metadata."
        )
    try:
        form_version = Version(form.get("version", ""))
    except ValueError:
        raise UploadRejected(f"Invalid version '{form.get('version')}': see PEP 440.") from None
    if form_version != metadata.version:
        raise UploadRejected(
            f"The form's version '{form.get('version')}' does not match the version '{metadata.version}' "
            "in the file's metadata."
        )
    for field_name, value in (("requires_python", metadata.requires_python), ("summary", metadata.summary)):
        sent = form.get(field_name)
        if sent and sent.strip() and str(value or "").strip() != sent.strip():
            raise UploadRejected(
                f"The form's {field_name} {sent!r} does not match the file's metadata {str(value or '')!r}."
            )


@dataclass(frozen=True)
class ParsedFilename:
    """What a distribution filename says."""

    name: str
    """Normalized project name."""
    version: Version
    """Version in the filename."""
    python_version: str
    """``source`` for sdists, the wheel's python tags otherwise (PyPI's python_version field)."""


def check_wheel_filename(filename: str, metadata: Metadata) -> ParsedFilename:
    try:
        name, version, _build, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise UploadRejected(f"Invalid wheel filename '{filename}': {exc}. See PEP 427.") from None
    _check_name_version(filename, name, version, metadata)
    for tag in sorted(tags, key=str):
        if not any(p.match(tag.platform) for p in _PLATFORM_PATTERNS):
            raise UploadRejected(f"Binary wheel '{filename}' has an unsupported platform tag '{tag.platform}'.")
    python_version = _python_tags(tags)
    if len(python_version) > MAX_PYTHON_TAGS_LENGTH:
        raise UploadRejected(
            f"Binary wheel '{filename}' lists too many Python tags ({python_version!r}): "
            f"at most {MAX_PYTHON_TAGS_LENGTH} characters of tags are stored."
        )
    return ParsedFilename(name=name, version=version, python_version=python_version)


def _python_tags(tags: frozenset[Tag]) -> str:
    return ".".join(sorted({tag.interpreter for tag in tags}))


def check_sdist_filename(filename: str, metadata: Metadata) -> ParsedFilename:
    try:
        name, version = parse_sdist_filename(filename)
    except InvalidSdistFilename as exc:
        raise UploadRejected(f"Invalid source distribution filename '{filename}': {exc}. See PEP 625.") from None
    _check_name_version(filename, name, version, metadata)
    expected = f"{re.sub(r'[-_.]+', '_', metadata.name).lower()}-{metadata.version}.tar.gz"
    if filename != expected:
        raise UploadRejected(
            f"Invalid source distribution filename '{filename}': PEP 625 requires '{expected}'. "
            "Rebuild with a current build backend."
        )
    return ParsedFilename(name=name, version=version, python_version="source")


def _check_name_version(filename: str, name: str, version: Version, metadata: Metadata) -> None:
    if name != canonicalize_name(metadata.name):
        raise UploadRejected(
            f"Start filename for '{metadata.name}' with its normalized name: '{filename}' names '{name}'."
        )
    if version != metadata.version:
        raise UploadRejected(
            f"Version in filename '{filename}' ({version}) does not match the metadata version {metadata.version}."
        )


def check_readme(metadata: Metadata) -> None:
    """The description must render safely, as pypi.org renders it (readme_renderer)."""
    description = metadata.description or ""
    content_type = (metadata.description_content_type or "text/x-rst").strip()
    mime, _, params = content_type.partition(";")
    mime = mime.strip().lower()
    if mime not in ("text/plain", "text/x-rst", "text/markdown"):
        raise UploadRejected(
            f"Invalid description content type '{content_type}': use text/plain, text/x-rst or text/markdown."
        )
    if not description.strip():
        return
    if mime == "text/x-rst":
        if readme_renderer.rst.render(description) is None:
            raise UploadRejected(
                "The description failed to render as reStructuredText. Check it with "
                "`twine check dist/*`, or set Description-Content-Type to text/markdown."
            )
    elif mime == "text/markdown":
        variant = "GFM"
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "variant":
                variant = value.strip()
        if variant not in ("GFM", "CommonMark"):
            raise UploadRejected(f"Unknown markdown variant '{variant}': use GFM or CommonMark.")
        if readme_renderer.markdown.render(description, variant=variant) is None:
            raise UploadRejected("The description failed to render as Markdown.")
    else:
        readme_renderer.txt.render(description)
