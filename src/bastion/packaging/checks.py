"""The upload checks, one small function each, in the order the pipeline runs them.

Each raises ``UploadRejected`` with the message twine prints, and returns nothing (or the value
it parsed) when the upload may go on.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import readme_renderer.markdown
import readme_renderer.rst
import readme_renderer.txt
from packaging.metadata import ExceptionGroup as MetadataExceptionGroup
from packaging.metadata import InvalidMetadata, Metadata, parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
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
from bastion.packaging.names import is_valid_name

PYPI = "pypi"
"""Upload strictness: today's PyPI rules (the setting upload_strictness)."""
LENIENT = "lenient"
"""Upload strictness: what PyPI accepted in earlier years (imports; the setting upload_strictness)."""
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
        r"^macosx_\d+_\d+_(x86_64|arm64|universal2|intel|fat64|fat32|fat3|fat|universal|i386|ppc|ppc64)$",
        r"^linux_(armv6l|armv7l)$",
        r"^ios_\d+_\d+_(arm64|x86_64)_(iphoneos|iphonesimulator)$",
        r"^android_\d+_(arm64_v8a|armeabi_v7a|x86_64|x86)$",
        r"^pyodide_\d+_\d+_wasm32$",
        r"^pyemscripten_\d+_\d+_wasm32$",  # PyPI takes these (cbor2 6.3.0, 2026-11)
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


def check_extension(filename: str, filetype: str, strictness: str = PYPI) -> None:
    """``.whl`` wheels and ``.tar.gz`` sdists (PEP 625); ``lenient`` also takes the ``.zip`` sdists
    that PEP 527 allowed and PyPI took until October 2025."""
    allowed = FILETYPES[filetype] + ((".zip",) if filetype == "sdist" and strictness == LENIENT else ())
    if not filename.endswith(allowed):
        wanted = " or ".join(allowed)
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


# What the metadata reader needs of packaging: the email header each field is read from and the
# Metadata-Version that standardized it (packaging's own record of both, on its descriptors).
_FIELD_HEADERS: dict[str, str] = {
    name: value.raw_name for name, value in vars(Metadata).items() if hasattr(value, "raw_name")
}
_FIELD_ADDED: dict[str, str] = {
    name: value.added for name, value in vars(Metadata).items() if hasattr(value, "added")
}
_FIELD_BY_HEADER = {header.lower(): field for field, header in _FIELD_HEADERS.items()}
_VERSION_ORDER = ("1.0", "1.1", "1.2", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6")
_ESSENTIAL = frozenset({"metadata_version", "name", "version"})
_MAJOR_MINOR = re.compile(r"^[12]\.\d{1,2}$")  # the shape every tool wrote ("2.0", "1.3"), nothing else
# Distribution filenames: what pip's own filename patterns take (no spaces, no non-ASCII look-alikes).
_PLAIN_FILENAME = re.compile(r"^[A-Za-z0-9._+!-]+$")


@dataclass(frozen=True)
class CoreMetadata:
    """A distribution's METADATA / PKG-INFO as the index reads it."""

    metadata: Metadata
    """Every field validated by packaging (fields used before the Metadata-Version that standardized
    them are validated by the rules of the version that did); in lenient mode without the fields
    that are malformed."""
    raw: dict[str, Any]
    """The fields as written, with the declared Metadata-Version, less the fields lenient mode
    left out: what the index stores and serves in its JSON API."""
    notes: tuple[str, ...] = ()
    """Lenient mode: the fields left out of ``metadata`` and why."""
    left_out: frozenset[str] = frozenset()
    """Lenient mode: the raw names of the fields left out (the form is not compared on them)."""
    misread: frozenset[str] = frozenset()
    """The raw names of the fields that a reader ending the headers at an unindented stray line
    (``rejoin_stray_header_lines``) sees otherwise: uv sends those values, so the form is not
    compared on them; what the index stores is the rejoined reading."""


def _header(field: str) -> str:
    return _FIELD_HEADERS.get(field, field).title()


def _invalid(filename: str, reasons: list[str]) -> UploadRejected:
    return UploadRejected(
        f"Invalid metadata in '{filename}': {'; '.join(reasons)}. Fix the project metadata and rebuild."
    )


def _validation_version(declared: object, present: set[str], strictness: str) -> tuple[str, list[str]]:
    """The Metadata-Version whose rules validate the file's fields, and what is wrong with the
    declared one. That is the declared version, raised to the one that standardized the newest field
    the file uses (setuptools wrote License-File under 2.1 and 2.2 for years; PyPI accepted and
    serves those files). A declared version that is not valid is reported, and the fields are
    still validated (by the newest rules) so that every problem is named at once."""
    text = str(declared or "").strip()
    problems: list[str] = []
    if text == "2.0" and strictness == PYPI:
        problems.append(
            "Metadata-Version '2.0' is not a valid metadata version: it was a draft that was never "
            "accepted, and PyPI refuses it (rebuild with a current build backend, or ask an index "
            "admin for upload_strictness = lenient)"
        )
    elif text not in _VERSION_ORDER:
        try:
            parsed: Version | None = Version(text) if _MAJOR_MINOR.match(text) else None
        except ValueError:
            parsed = None
        if strictness == PYPI or parsed is None or parsed.major not in (1, 2):
            problems.append(f"Metadata-Version {text!r} is not a valid metadata version "
                            f"(known: {', '.join(_VERSION_ORDER)})")
        else:
            # An old tool's unofficial number (2.0, 1.3): read with the rules of the next real one.
            later = [v for v in _VERSION_ORDER if Version(v) >= parsed]
            text = later[0] if later else _VERSION_ORDER[-1]
    if text not in _VERSION_ORDER:
        text = _VERSION_ORDER[-1]
    needed = max((_VERSION_ORDER.index(_FIELD_ADDED.get(f, "1.0")) for f in present), default=0)
    return _VERSION_ORDER[max(_VERSION_ORDER.index(text), needed)], problems


def read_core_metadata(data: bytes, filename: str, strictness: str = PYPI, *,
                       fallback_name: str | None = None) -> CoreMetadata:
    """Read and validate the artifact's METADATA / PKG-INFO with packaging.metadata.

    Both modes accept a field used before the Metadata-Version that standardized it, and store it.
    ``pypi`` refuses a malformed field, naming it; ``lenient`` leaves it out of what the index
    interprets (it stays in the file) unless it is the name, the version or the Metadata-Version.
    Unknown headers are ignored, as PyPI never sees them (twine sends only the fields it knows).
    ``fallback_name`` (an import's --project-from-filename) stands in for a Name that is missing,
    ``UNKNOWN`` or not a valid name; the file itself is not changed."""
    notes: list[str] = []
    rejoined = rejoin_stray_header_lines(data)
    try:
        raw, unparsed = parse_email(data if rejoined is None else rejoined.data)
    except (ValueError, UnicodeError) as exc:
        raise _invalid(filename, [f"the file cannot be read as core metadata ({exc})"]) from None
    misread: frozenset[str] = frozenset()
    if rejoined is not None:
        naive, naive_unparsed = parse_email(data)
        misread = frozenset({f for f in set(raw) | set(naive) if raw.get(f) != naive.get(f)}  # type: ignore[literal-required]
                            | {_field_of(key) for key in naive_unparsed})
        hidden = sorted(misread & INSTALLER_FIELDS)
        if hidden:  # both modes: the index must not list what pip and uv read otherwise
            raise _invalid(filename, [
                f"the line {rejoined.first!r} inside the header block is not a header, so pip and uv stop reading "
                f"headers there and read {', '.join(hidden)} otherwise than the rest of the file says; indent "
                "continuation lines (a space first) or end the headers with a blank line"])
        notes.append("unindented lines inside the header block were read as the continuation of the header "
                     f"before them (the form is not compared on {', '.join(sorted(misread))})")
        data = rejoined.data
    written_name = raw.get("name") or ""
    if fallback_name and (written_name.upper() == "UNKNOWN" or not is_valid_name(written_name)):
        raw["name"] = fallback_name
        unparsed.pop("Name", None)
        notes.append(f"Name taken from the filename ({fallback_name}): the metadata has no usable name")
    if isinstance(raw.get("description"), str) and _description_in_header(data):
        raw["description"] = unfold_description(raw["description"])
    for key in list(unparsed):
        values = unparsed[key]
        field = _field_of(key)
        # A single-value field written twice with the same text (old tools did): one value.
        if (key.lower() in _FIELD_BY_HEADER and len(values) > 1 and len(set(values)) == 1
                and field not in raw and isinstance(values[0], str)):
            raw[field] = values[0]  # type: ignore[literal-required]
            del unparsed[key]
    malformed = sorted(key for key in unparsed if key.lower() in _FIELD_BY_HEADER)
    if malformed:
        reasons = [f"the field {key!r} has invalid data (a single-value field given twice, or "
                   "a value that is not text)" for key in malformed]
        # Requires-Python decides which Pythons are offered the file: never guessed, never dropped.
        essential = {_FIELD_HEADERS[f].lower() for f in _ESSENTIAL | {"requires_python"}}
        if strictness == PYPI or any(key.lower() in essential for key in malformed):
            raise _invalid(filename, reasons)
        notes.extend(reasons)
    interpreted: dict[str, Any] = dict(raw)
    for _attempt in range(len(interpreted) + 1):
        version, problems = _validation_version(raw.get("metadata_version"),
                                                set(interpreted) - {"metadata_version"}, strictness)
        try:
            metadata = Metadata.from_raw({**interpreted, "metadata_version": version}, validate=True)  # type: ignore[typeddict-item]
        except RecursionError:  # packaging's marker parser recurses once per parenthesis
            raise _invalid(filename, ["a Requires-Dist or Provides-Extra marker is nested too deeply"]) from None
        except MetadataExceptionGroup as group:
            errors = [error for error in group.exceptions if isinstance(error, InvalidMetadata)]
            others = [error for error in group.exceptions if not isinstance(error, InvalidMetadata)]
            fields = {_field_of(error.field) for error in errors}
            if (strictness == PYPI or problems or others or not fields or fields & _ESSENTIAL
                    or not fields <= set(interpreted)):
                raise _invalid(filename, problems + [str(error) for error in group.exceptions]) from None
            for error in errors:
                notes.append(f"{_header(_field_of(error.field))} left out: {error}")
            for field in fields:
                interpreted.pop(field, None)
            continue
        if problems:
            raise _invalid(filename, problems)
        # Stored and served (JSON API) as written, less what lenient left out as malformed.
        return CoreMetadata(metadata=metadata, raw=dict(interpreted), notes=tuple(notes),
                            left_out=frozenset(set(raw) - set(interpreted))
                            | frozenset(_field_of(key) for key in malformed), misread=misread)
    raise _invalid(filename, ["the metadata could not be validated"])


_FOLD = re.compile(r"^(?: {8}|       \|)")
# What the email parser (and so pip, uv and importlib.metadata) takes for a header line: a name of
# printable ASCII other than ':' ending in ':', or an mbox "From " line (email.feedparser.headerRE).
_HEADER_LINE = re.compile(rb"^(?:From |([\x21-\x39\x3b-\x7e]*):)")
# The fields installers read from a wheel's METADATA: a rejoined reading must agree on them with
# the email parser's, or the index would list a dependency or a Requires-Python pip never sees.
INSTALLER_FIELDS = frozenset({"name", "version", "requires_dist", "requires_python"})


@dataclass(frozen=True)
class Rejoined:
    """The metadata with its stray lines read as continuations (``rejoin_stray_header_lines``)."""

    data: bytes
    first: str
    """The first stray line, for messages."""


def rejoin_stray_header_lines(data: bytes) -> Rejoined | None:
    """The metadata with unindented lines inside its header block read as continuations (a space
    is put before each), or None when there are none. setuptools wrote a multi-line value
    (passlib 1.7.4's ``Keywords``, on PyPI) without folding it; an email parser ends the headers
    at the first such line and reads every header after it (classifiers, Requires-Python, ...) as
    the description. A run of lines counts as stray only when a core-metadata header comes right
    after it, so a description body that follows the headers without a blank line is left as it
    is. Lines, header names and the blank line that ends the headers are found as the email
    parser finds them (any of \\r\\n, \\r, \\n ends a line)."""
    head, sep, body = _split_head(data)
    lines = head.splitlines(keepends=True)
    out: list[bytes] = []
    stray: list[bytes] = []
    first: bytes | None = None
    for line in lines:
        match = _HEADER_LINE.match(line)
        if line[:1] in (b" ", b"\t") or (match is None and not out):
            out.extend(stray)
            stray = []
            out.append(line)
        elif match is None:
            stray.append(line)
        else:
            name = (match.group(1) or b"").decode("ascii").strip().lower()
            if stray and name in _FIELD_BY_HEADER:
                out.extend(b" " + item for item in stray)
                first = first or stray[0]
            else:
                out.extend(stray)
            stray = []
            out.append(line)
    out.extend(stray)
    if first is None:
        return None
    return Rejoined(b"".join(out) + sep + body, first.rstrip(b"\r\n").decode("utf-8", "replace")[:80])


_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def _split_head(data: bytes) -> tuple[bytes, bytes, bytes]:
    """The header block, the blank line that ends it, and the rest: lines end with \\r\\n, \\r or
    \\n, as the email parser splits them."""
    for match in _LINE.finditer(data):
        if match.group() in (b"\n", b"\r", b"\r\n"):
            return data[:match.start()], match.group(), data[match.end():]
    return data, b"", b""


_DESCRIPTION_HEADER = re.compile(rb"^description[ \t]*:", re.IGNORECASE | re.MULTILINE)


def _description_in_header(data: bytes) -> bool:
    """True when the description is written as a header (before the first blank line), not as
    the message body: only a header is folded."""
    return _DESCRIPTION_HEADER.search(_split_head(data)[0]) is not None


def unfold_description(text: str) -> str:
    """A description written in the header (Metadata-Version 1.x and 2.0: distutils and
    setuptools indent every line after the first by 8 spaces, or 7 and a '|'), with that prefix
    removed, as pkginfo and the core metadata specification read it. packaging keeps the prefix,
    and reStructuredText then fails to render (six 1.16.0's sdist: "no content permitted")."""
    lines = text.split("\n")
    rest = [line for line in lines[1:] if line.strip()]
    if len(lines) < 2 or not rest or not all(_FOLD.match(line) for line in rest):
        return text
    return "\n".join([lines[0], *(_FOLD.sub("", line) for line in lines[1:])])


def _field_of(header_or_field: str) -> str:
    """packaging names a field by its header in errors; the raw key it belongs to."""
    lowered = header_or_field.lower()
    return _FIELD_BY_HEADER.get(lowered, lowered)


def parse_core_metadata(raw: bytes, filename: str) -> Metadata:
    """Validate the artifact's METADATA / PKG-INFO under today's PyPI rules."""
    return read_core_metadata(raw, filename, PYPI).metadata


def check_metadata_rules(metadata: Metadata, strictness: str = PYPI) -> None:
    """The index's rules beyond the metadata specification. The version must fit the index in
    both modes; the rest are PyPI's rules of today, which ``lenient`` does not apply (files PyPI
    accepted before it made them: deprecated classifiers, local versions from private indexes)."""
    version: Version = metadata.version
    if len(str(version)) > MAX_VERSION_LENGTH:
        raise UploadRejected(f"Version '{version}' is longer than {MAX_VERSION_LENGTH} characters: use a shorter version.")
    if strictness == LENIENT:
        return
    if version.local is not None:
        raise UploadRejected(
            f"The use of local versions in '{version}' is not allowed. Remove the '+{version.local}' suffix."
        )
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


def _words(values: object) -> set[str]:
    """Keywords as a set: the form may send one comma-separated string or one field per keyword,
    and old files separate them with spaces."""
    items = values if isinstance(values, (list, tuple)) else [values]
    return {word for item in items if item for word in re.split(r"[,\s]+", str(item)) if word}


def _text(value: object) -> str:
    """A description or summary compared without its line endings and runs of whitespace."""
    return " ".join(str(value or "").split())


def _disagree(field_name: str, sent: object, stored: object) -> UploadRejected:
    return UploadRejected(
        f"The form's {field_name} {sent!r} does not match the file's metadata {stored!r}. "
        "Upload the file with twine or uv, which send the file's own metadata."
    )


def check_form_agrees(form: Mapping[str, str], metadata: Metadata,
                      lists: Mapping[str, Sequence[str]] | None = None, left_out: frozenset[str] = frozenset()) -> None:
    """Beyond PyPI: what the index serves comes from the artifact, so the form must agree with it.

    Compared by meaning, never as text: names normalized, versions as ``Version``, specifier
    sets as ``SpecifierSet``, requirements as ``Requirement``, keywords and classifiers as sets,
    summary and description without line endings and whitespace runs. Only what the form sends
    is compared (twine leaves out some fields, e.g. License-File under Metadata-Version 2.1), and
    not the fields lenient mode left out of the file's metadata as malformed (``left_out``)."""
    lists = {k: v for k, v in (lists or {}).items() if k not in left_out}
    form = {k: v for k, v in form.items() if k not in left_out}  # never name or version: those are refused
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
    sent = (form.get("requires_python") or "").strip()
    if sent:
        try:
            sent_specifiers = SpecifierSet(sent)
        except InvalidSpecifier:
            raise UploadRejected(f"Invalid value for requires_python {sent!r}: see PEP 440 version specifiers.") from None
        if sent_specifiers != (metadata.requires_python or SpecifierSet()):
            raise _disagree("requires_python", sent, str(metadata.requires_python or ""))
    for field_name in ("summary", "description"):
        sent = form.get(field_name) or ""
        if sent.strip() and _text(sent) != _text(getattr(metadata, field_name)):
            shown = sent if len(sent) <= 80 else sent[:77] + "..."
            stored = str(getattr(metadata, field_name) or "")
            raise _disagree(field_name, shown, stored if len(stored) <= 80 else stored[:77] + "...")
    keywords = lists.get("keywords") or ([form["keywords"]] if form.get("keywords") else [])
    if keywords and _words(keywords) != _words(metadata.keywords or []):
        raise _disagree("keywords", ", ".join(sorted(_words(keywords))), ", ".join(sorted(_words(metadata.keywords or []))))
    classifiers = [c for c in lists.get("classifiers", ()) if c.strip()]
    if classifiers and {c.strip() for c in classifiers} != set(metadata.classifiers or []):
        extra = sorted({c.strip() for c in classifiers} ^ set(metadata.classifiers or []))
        raise _disagree("classifiers", "; ".join(sorted(c.strip() for c in classifiers)),
                        f"{'; '.join(sorted(metadata.classifiers or []))} (differing: {'; '.join(extra)})")
    requirements = [r for r in lists.get("requires_dist", ()) if r.strip()]
    if requirements:
        try:
            sent_requirements = {Requirement(r) for r in requirements}
        except InvalidRequirement as exc:
            raise UploadRejected(f"Invalid value for requires_dist: {exc}.") from None
        except RecursionError:
            raise UploadRejected("Invalid value for requires_dist: a marker is nested too deeply.") from None
        if sent_requirements != set(metadata.requires_dist or []):
            raise _disagree("requires_dist", "; ".join(sorted(map(str, sent_requirements))),
                            "; ".join(sorted(map(str, metadata.requires_dist or []))))


@dataclass(frozen=True)
class ParsedFilename:
    """What a distribution filename says."""

    name: str
    """Normalized project name."""
    version: Version
    """Version in the filename."""
    python_version: str
    """``source`` for sdists, the wheel's python tags otherwise (PyPI's python_version field)."""


def _check_plain(filename: str, kind: str) -> None:
    if not _PLAIN_FILENAME.match(filename):
        raise UploadRejected(
            f"Invalid {kind} filename {filename!r}: use only ASCII letters, digits and . _ + ! - "
            "(PEP 427 and PEP 625 names; pip refuses others)."
        )


def check_wheel_filename(filename: str, metadata: Metadata, strictness: str = PYPI) -> ParsedFilename:
    _check_plain(filename, "wheel")
    try:
        name, version, _build, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise UploadRejected(f"Invalid wheel filename '{filename}': {exc}. See PEP 427.") from None
    _check_name_version(filename, name, version, metadata)
    if strictness == PYPI:
        # PEP 427 as PyPI enforces it since October 2025: the name part is the normalized name.
        expected = canonicalize_name(metadata.name).replace("-", "_")
        written = filename.split("-", 1)[0]
        if written != expected:
            raise UploadRejected(
                f"Filename '{filename}' should contain the normalized project name '{expected}', not "
                f"'{written}' (PEP 427). Rebuild with a current build backend, or rename the file to "
                f"'{expected}-{filename.split('-', 1)[1]}'."
            )
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


SDIST_SUFFIXES = (".tar.gz", ".zip")


def check_sdist_filename(filename: str, metadata: Metadata, strictness: str = PYPI) -> ParsedFilename:
    """``pypi``: the PEP 625 name, exactly (what PyPI enforces since October 2025). ``lenient``: any
    ``NAME-VERSION.tar.gz`` or ``.zip`` whose name normalizes to the project's and whose version
    equals the metadata's (``zope.interface-4.0.tar.gz``, ``azure-common-1.1.28.zip``, ``foo-1.0-1.tar.gz``)."""
    expected = f"{canonicalize_name(metadata.name).replace('-', '_')}-{metadata.version}.tar.gz"
    _check_plain(filename, "source distribution")
    legacy = _legacy_sdist_name(filename, metadata)
    if strictness == LENIENT and legacy is not None:
        return legacy
    if strictness == PYPI and filename == expected and legacy is not None:
        return legacy
    if legacy is None:  # say what is wrong with the name or the version before the spelling
        try:
            name, version = parse_sdist_filename(filename)
        except InvalidSdistFilename as exc:
            raise UploadRejected(
                f"Invalid source distribution filename '{filename}': {exc}. PEP 625 requires '{expected}'."
            ) from None
        _check_name_version(filename, name, version, metadata)
    if strictness == PYPI:
        raise UploadRejected(
            f"Invalid source distribution filename '{filename}': PEP 625 requires '{expected}'. "
            "Rebuild with a current build backend."
        )
    raise UploadRejected(
        f"Invalid source distribution filename '{filename}': it must be the project name and the version "
        f"in its metadata ({metadata.name} {metadata.version}) joined by '-', ending in .tar.gz or .zip, "
        f"e.g. '{expected}'."
    )


def _sdist_splits(filename: str) -> Iterator[tuple[str, Version]]:
    """Every (NAME, VERSION) reading of ``NAME-VERSION.tar.gz`` / ``.zip`` whose right part is a PEP
    440 version, the longest name first (a version may hold a hyphen: "foo-1.0-1")."""
    stem = next((filename[: -len(s)] for s in SDIST_SUFFIXES if filename.endswith(s)), None)
    if stem is None or not _PLAIN_FILENAME.match(filename):
        return
    parts = stem.split("-")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            yield "-".join(parts[:cut]), Version("-".join(parts[cut:]))
        except ValueError:
            continue


def name_version_from_filename(filename: str) -> tuple[str, str] | None:
    """NAME and VERSION as a distribution's filename gives them (PEP 427 for wheels; for sdists
    the longest valid name before a PEP 440 version), or None."""
    if filename.endswith(".whl"):
        try:
            _name, wheel_version, _build, _tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            return None
        return filename.split("-", 1)[0], str(wheel_version)
    for name, version in _sdist_splits(filename):
        if is_valid_name(name):
            return name, str(version)
    return None


def _legacy_sdist_name(filename: str, metadata: Metadata) -> ParsedFilename | None:
    """The file's name and version if ``filename`` is NAME-VERSION.tar.gz or .zip, with NAME
    normalizing to the metadata's name and VERSION equal to its version, else None."""
    for name, version in _sdist_splits(filename):
        if canonicalize_name(name) == canonicalize_name(metadata.name) and version == metadata.version:
            return ParsedFilename(name=canonicalize_name(name), version=version, python_version="source")
    return None


def _check_name_version(filename: str, name: str, version: Version, metadata: Metadata) -> None:
    if name != canonicalize_name(metadata.name):
        raise UploadRejected(
            f"Start filename for '{metadata.name}' with its normalized name: '{filename}' names '{name}'."
        )
    if version != metadata.version:
        raise UploadRejected(
            f"Version in filename '{filename}' ({version}) does not match the metadata version {metadata.version}."
        )


def check_readme(metadata: Metadata, strictness: str = PYPI) -> None:
    """The description must render safely, as pypi.org renders it (readme_renderer). ``lenient``
    accepts one that no longer renders with today's renderer (the pages show it as plain text)."""
    if strictness == LENIENT:
        return
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
        # readme_renderer.markdown.render gives None exactly when the variant's renderer (comrak, in readme_renderer 46)
        # gives nothing; its highlighting and cleaning cannot fail, and cost more than the rendering
        # (a pygments stylesheet built per call): the pages do those when they show the description.
        renderer = readme_renderer.markdown.variants.get(variant)
        if renderer is None or not renderer(description):
            raise UploadRejected("The description failed to render as Markdown.")
    else:
        readme_renderer.txt.render(description)
