"""The known traps of OSV data, each with a test of the reader (osv.py) and the matcher (match.py).

No database: these are the rules every consumer relies on. The import-level traps (alias merging
in the JSON API, withdrawn records, PEP 503 names against real projects) are in test_ingest.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bastion.advisories.match import Matcher, is_affected, unparsed_events
from bastion.advisories.osv import RecordError, load_json, load_yaml, parse_record

BASE = """\
id: PYSEC-2099-1
modified: 2023-11-07T20:24:23.946863Z
published: 2020-08-05T14:15:00Z
aliases:
- CVE-2099-0001
details: something bad
affected:
- package:
    ecosystem: PyPI
    name: Some_Project.Name
  ranges:
  - type: ECOSYSTEM
    events:
    - introduced: "0"
    - fixed: 1.2.0
  versions:
  - 1.0
  - 1.10
"""


def _record(text: str = BASE):  # type: ignore[no-untyped-def]
    return parse_record(load_yaml(text))


def _m(events: list[dict[str, str]], versions: list[str] | None = None, kind: str = "ECOSYSTEM") -> Matcher:
    return Matcher([{"type": kind, "events": events}], versions or [])


# -- reading ----------------------------------------------------------------------------------------

def test_unquoted_yaml_timestamps_are_read_as_utc_moments_and_stored_as_text() -> None:
    record = _record()
    assert record.modified == datetime(2023, 11, 7, 20, 24, 23, 946863, tzinfo=UTC)
    assert record.published == datetime(2020, 8, 5, 14, 15, tzinfo=UTC)
    # The stored record is JSON: the timestamps stay the text that was written.
    assert record.record["modified"] == "2023-11-07T20:24:23.946863Z"
    json.dumps(record.record)


def test_a_reader_that_already_made_datetimes_is_accepted_too() -> None:
    data = load_yaml(BASE)
    data["modified"] = datetime(2023, 11, 7, 20, 24, 23)  # naive, as PyYAML's default loader gives
    record = parse_record(data)
    assert record.modified == datetime(2023, 11, 7, 20, 24, 23, tzinfo=UTC)
    assert record.record["modified"] == "2023-11-07T20:24:23Z"


def test_unquoted_versions_keep_their_text_not_a_float() -> None:
    entry = _record().affected[0]
    assert entry.versions == ["1.0", "1.10"]  # a float reader would say 1.0 and 1.1
    assert Matcher(entry.ranges, entry.versions).affects("1.10")


def test_names_are_normalized_per_pep_503() -> None:
    assert _record().affected[0].name == "some-project-name"


def test_other_ecosystems_are_left_out_and_git_ranges_kept_but_not_matched() -> None:
    text = BASE.replace("""  versions:
  - 1.0
  - 1.10
""", """  - type: GIT
    repo: https://github.com/x/y
    events:
    - introduced: 0123456789abcdef0123456789abcdef01234567
    - fixed: 89abcdef0123456789abcdef0123456789abcdef
- package:
    ecosystem: npm
    name: left-pad
  ranges:
  - type: SEMVER
    events:
    - introduced: "0"
""")
    record = _record(text)
    assert [a.name for a in record.affected] == ["some-project-name"]
    ranges = record.affected[0].ranges
    assert [r["type"] for r in ranges] == ["ECOSYSTEM", "GIT"]
    assert ranges[1]["repo"] == "https://github.com/x/y"
    git_only = Matcher([ranges[1]], [])
    assert not git_only.affects("1.0")
    assert not git_only.affects("0123456789abcdef0123456789abcdef01234567")


@pytest.mark.parametrize(("text", "reason"), [
    ("id: [unclosed", "not valid YAML"),
    ("- just\n- a list\n", "an OSV record must be a mapping"),
    ("modified: 2023-01-01T00:00:00Z\n", "'id' is missing"),
    ("id: X-1\n", "'modified' is missing"),
    ("id: X-1\nmodified: yesterday\n", "'modified' is not an RFC 3339 timestamp"),
    ("id: X-1\nmodified: 2023-01-01T00:00:00Z\naffected: {a: 1}\n", "'affected' must be a list"),
    ("id: X-1\nmodified: 2023-01-01T00:00:00Z\naliases: CVE-1\n", "'aliases' must be a list of ids"),
    ("id: X-1\nmodified: 2023-01-01T00:00:00Z\naffected:\n- package: {ecosystem: PyPI}\n",
     "affected[0].package needs an 'ecosystem' and a 'name'"),
    ("id: X-1\nmodified: 2023-01-01T00:00:00Z\naffected:\n- package: {ecosystem: PyPI, name: a}\n"
     "  ranges:\n  - type: SEMVER2\n    events: [{introduced: '0'}]\n",
     "affected[0].ranges[0]: unknown range type 'SEMVER2'"),
    ("id: X-1\nmodified: 2023-01-01T00:00:00Z\naffected:\n- package: {ecosystem: PyPI, name: a}\n"
     "  ranges:\n  - type: ECOSYSTEM\n    events: [{fixed: '1.0'}]\n",
     "a range needs an 'introduced' event"),
    ("id: X-1\nmodified: 2023-01-01T00:00:00Z\naffected:\n- package: {ecosystem: PyPI, name: a}\n"
     "  ranges:\n  - type: ECOSYSTEM\n    events: [{introduced: '0', fixed: '1'}]\n",
     "must be a mapping with exactly one of"),
    ("id: X-1\nmodified: 2023-01-01T00:00:00Z\naffected:\n- package: {ecosystem: PyPI, name: a}\n"
     "  ranges:\n  - type: ECOSYSTEM\n    events: [{introduced: '0'}, {patched: '2'}]\n",
     "unknown event 'patched'"),
])
def test_malformed_records_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_record(load_yaml(text))
    assert reason in str(caught.value)


def test_bad_json_is_refused_with_the_reason() -> None:
    with pytest.raises(RecordError, match="not valid JSON"):
        load_json(b'{"id": "X-1", ')


# -- matching ---------------------------------------------------------------------------------------

def test_fixed_is_exclusive_and_introduced_zero_is_below_everything() -> None:
    m = _m([{"introduced": "0"}, {"fixed": "1.2.0"}])
    assert m.affects("0.0.1.dev0")
    assert m.affects("1.1.9")
    assert m.affects("1.2.0rc1")  # a pre-release of the fix comes before it
    assert not m.affects("1.2.0")
    assert not m.affects("1.2")  # PEP 440 equality: 1.2 == 1.2.0
    assert not m.affects("2.0")


def test_last_affected_is_inclusive() -> None:
    m = _m([{"introduced": "1.0"}, {"last_affected": "1.4"}])
    assert not m.affects("0.9")
    assert m.affects("1.0")
    assert m.affects("1.4")
    assert not m.affects("1.4.post1")
    assert not m.affects("1.5")


def test_events_out_of_order_are_sorted_before_evaluating() -> None:
    in_order = _m([{"introduced": "1.0"}, {"fixed": "1.5"}, {"introduced": "2.0"}, {"fixed": "2.3"}])
    shuffled = _m([{"fixed": "2.3"}, {"introduced": "2.0"}, {"fixed": "1.5"}, {"introduced": "1.0"}])
    for version in ("0.5", "1.0", "1.4", "1.5", "1.9", "2.0", "2.2", "2.3", "3.0"):
        assert in_order.affects(version) == shuffled.affects(version), version
    assert shuffled.affects("2.2") and not shuffled.affects("1.9")
    # Read in file order, the first event (fixed 2.3) and the last (introduced 1.0) would mark
    # everything from 1.0 up as affected.
    assert not shuffled.affects("3.0")


def test_versions_list_and_ranges_disagree_affected_is_listed_or_in_range() -> None:
    # 0.9 is listed though the range starts at 1.0; 1.1 is in the range though not listed.
    m = _m([{"introduced": "1.0"}, {"fixed": "1.2"}], versions=["0.9", "1.0"])
    assert m.affects("0.9")
    assert m.affects("1.1")
    assert not m.affects("0.8")
    assert not m.affects("1.2")


def test_limit_caps_the_range_and_star_is_no_cap() -> None:
    capped = _m([{"introduced": "0"}, {"limit": "2.0"}])
    assert capped.affects("1.9")
    assert not capped.affects("2.0")
    assert not capped.affects("3.0")
    uncapped = _m([{"introduced": "0"}, {"limit": "*"}])
    assert uncapped.affects("99")


def test_versions_that_are_not_pep_440() -> None:
    # Listed: matched by their exact text (the regression over the snapshot needs this).
    m = _m([{"introduced": "0"}, {"fixed": "0.2.0"}], versions=["0.1-bulbasaur", "2013-01-21T20:33:09+0100"])
    assert m.affects("0.1-bulbasaur")
    assert m.affects("2013-01-21T20:33:09+0100")
    assert not m.affects("0.1-charmander")
    # An unparseable fixed event is ignored, leaving the range open (the conservative side), and
    # is reported so that the importer can say so.
    open_ended = _m([{"introduced": "1.0"}, {"fixed": "0.2.0-n653-garbage!"}])
    assert open_ended.affects("5.0")
    assert unparsed_events(open_ended_ranges := [{"type": "ECOSYSTEM", "events": [
        {"introduced": "1.0"}, {"fixed": "0.2.0-n653-garbage!"}]}]) == ["fixed: 0.2.0-n653-garbage!"]
    assert is_affected("5.0", open_ended_ranges, [])


def test_fixed_in_and_first_fix() -> None:
    m = _m([{"introduced": "0"}, {"fixed": "1.5"}, {"introduced": "2.0"}, {"fixed": "2.3"}])
    assert m.fixed_in() == ["1.5", "2.3"]
    assert m.first_fix_after("1.0") == "1.5"
    assert m.first_fix_after("2.1") == "2.3"
    assert m.first_fix_after("3.0") is None


def test_semver_ranges_are_matched_like_ecosystem_ones() -> None:
    assert _m([{"introduced": "1.0.0"}, {"fixed": "1.0.5"}], kind="SEMVER").affects("1.0.4")
