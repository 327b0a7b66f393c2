"""The typosquat name check (bastion.scanning.names): each technique with a squat it catches and a
near name it lets through, projects on this index as targets, the refusal message, and the loader
of the popular-names CSV."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bastion.scanning.names import EXISTING, POPULAR, NameIndex, Resemblance, load_popular


@pytest.fixture(scope="module")
def shipped() -> list[str]:
    return load_popular(None)


@pytest.fixture(scope="module")
def index(shipped: list[str]) -> NameIndex:
    return NameIndex.build(shipped)


def small(*popular: str, **options: object) -> NameIndex:
    return NameIndex.build(popular, **options)


# -- the real squats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("squat", "target", "how"),
    [
        ("certifia", "certifi", "one letter inserted"),
        ("botoa3", "boto3", "one letter inserted"),
        ("reqeusts", "requests", "letters swapped"),
        ("python-dateutils", "python-dateutil", "one letter inserted"),
        ("urlib3", "urllib3", "doubled letter dropped"),
        ("beautifoulsoup", "beautifulsoup4", "one letter inserted and version digits dropped"),
        ("maptplotlib", "matplotlib", "one letter inserted"),
        ("numpyy", "numpy", "doubled letter"),
        ("pandass", "pandas", "doubled letter"),
    ],
)
def test_real_squats_are_caught(index: NameIndex, squat: str, target: str, how: str) -> None:
    assert index.check(squat) == Resemblance(target, POPULAR, how)


def test_popular_names_themselves_are_not_flagged(index: NameIndex, shipped: list[str]) -> None:
    # Every name in the list, including those past the protected ranks, in any spelling.
    flagged = [name for name in shipped if index.check(name) is not None]
    assert flagged == []
    assert index.check("Python_DateUtil") is None
    assert index.check("SCIKIT.LEARN") is None
    assert index.is_known("Requests")


# -- each technique: a squat and a near name that passes -----------------------------------------


@pytest.mark.parametrize(
    ("squat", "target", "how"),
    [
        ("requestss", "requests", "doubled letter"),
        ("request", "requests", "one letter dropped"),
        ("requesta", "requests", "'a' typed for 's', its neighbour on the keyboard"),
        ("requelts", "requests", "one letter changed"),
        ("rnatplotlib", "matplotlib", "'rn' looks like 'm'"),
        ("vvheel", "wheel", "'vv' looks like 'w'"),
        ("cljango", "django", "'cl' looks like 'd'"),
        ("c0l0rama", "colorama", "'0' looks like 'o'"),
        ("f1ask", "flask", "'1' looks like 'l'"),
        ("dateutil-python", "python-dateutil", "words reordered"),
        ("python-requests", "requests", "'python-' prefix added"),
        ("pyrequests", "requests", "'py' prefix added"),
        ("requests-py", "requests", "'-py' suffix added"),
        ("requests-python", "requests", "'-python' suffix added"),
        ("dateutil", "python-dateutil", "'python-' prefix removed"),
        ("requests2", "requests", "version digits appended"),
        ("numpy3", "numpy", "version digits appended"),
        ("scikitlearn", "scikit-learn", "separators added or removed"),
        ("torch-vision", "torchvision", "separators added or removed"),
    ],
)
def test_each_technique_catches_its_squat(index: NameIndex, squat: str, target: str, how: str) -> None:
    assert index.check(squat) == Resemblance(target, POPULAR, how)


@pytest.mark.parametrize(
    "near",
    [
        "reqeutss",  # two swaps: two edits from requests
        "scikit-learning",  # three letters more
        "python-dateutil-extras",  # a word more
        "matplotlib-venn-extras",
        "flask-widgetry",
        "rnatplotlibs",  # a look-alike and a letter more
    ],
)
def test_names_two_steps_away_pass(index: NameIndex, near: str) -> None:
    assert index.check(near) is None


def test_short_names_have_no_one_edit_protection() -> None:
    # six, rich: their one-edit neighbours (sip, rick) are ordinary words and real projects.
    names = small("six", "rich", "numpy")
    assert names.check("sip") is None
    assert names.check("sixx") is None
    assert names.check("rick") is None
    # a top-500 name of five letters is protected, one of four is not
    assert names.check("numpyy") == Resemblance("numpy", POPULAR, "doubled letter")


def test_one_edit_against_short_names_is_limited_to_the_most_popular() -> None:
    names = small(*(f"filler-project-{i}" for i in range(600)), "numpy")  # numpy ranked 601st
    assert names.check("numpyy") is None
    assert small("numpy").check("numpyy") is not None


def test_affixes_need_a_core_of_four_letters() -> None:
    names = small("six", "rich")
    assert names.check("pysix") is None  # "six" is too short for a prefix to be telling
    assert names.check("pyrich") == Resemblance("rich", POPULAR, "'py' prefix added")


def test_digits_appended_and_affix_removed_only_protect_the_top_1000() -> None:
    fillers = [f"filler-project-{i}" for i in range(1000)]
    low = small(*fillers, "python-dateutil", "pandas")  # ranked 1001st and 1002nd
    assert low.check("dateutil") is None
    assert low.check("pandas3") is None
    assert low.check("python-dateutill") is not None  # one edit still protects them
    high = small("python-dateutil", "pandas")
    assert high.check("dateutil") == Resemblance("python-dateutil", POPULAR, "'python-' prefix removed")
    assert high.check("pandas3") == Resemblance("pandas", POPULAR, "version digits appended")


def test_only_the_protected_ranks_are_targets() -> None:
    names = small("requests", "matplotlib", protect_top=1)
    assert names.check("reqeusts") is not None
    assert names.check("maptplotlib") is None  # known, but not protected
    assert names.check("matplotlib") is None  # and never flagged itself


def test_the_most_popular_target_is_named() -> None:
    # "requestt" is one edit from both; the more popular one is the one named.
    names = small("requests", "requestd")
    assert names.check("requestt") == Resemblance("requests", POPULAR, "one letter changed")


# -- existing projects ------------------------------------------------------------------------------


def test_existing_projects_are_protected_and_released() -> None:
    names = NameIndex.build(["requests"], ["acme-billing"])
    assert names.check("acme-biling") == Resemblance("acme-billing", EXISTING, "doubled letter dropped")
    assert names.check("billing-acme") == Resemblance("acme-billing", EXISTING, "words reordered")
    assert names.check("acme-billing") is None  # the project itself

    names.add_existing("Internal_Metrics")
    assert names.check("internal-metricp") == Resemblance("Internal_Metrics", EXISTING, "one letter changed")
    assert names.check("internalmetrics") == Resemblance("Internal_Metrics", EXISTING, "separators added or removed")

    names.remove_existing("internal-metrics")
    assert names.check("internal-metricp") is None
    assert names.check("internalmetrics") is None
    assert names.check("acme-biling") is not None  # the other project still protects


def test_removing_an_existing_copy_of_a_popular_name_keeps_it_protected() -> None:
    names = NameIndex.build(["requests"], ["requests"])
    names.remove_existing("requests")
    assert names.check("reqeusts") == Resemblance("requests", POPULAR, "letters swapped")
    assert names.check("requests") is None


def test_an_allowed_squat_once_created_is_not_flagged_again() -> None:
    names = NameIndex.build(["requests"])
    assert names.check("reqeusts") is not None
    names.add_existing("reqeusts")  # an admin allowed it and the project was created
    assert names.check("reqeusts") is None
    names.remove_existing("reqeusts")
    assert names.check("reqeusts") is not None


def test_numbered_existing_projects_stay_cheap() -> None:
    numbered = [f"plugin-{i}" for i in range(5000)]
    started = time.perf_counter()
    names = NameIndex.build([], numbered)
    assert names.check("plugin-12x") == Resemblance("plugin-12", EXISTING, "one letter inserted")
    assert names.check("plugin-7") is None
    for name in numbered:
        names.remove_existing(name)
    assert names.check("plugin-12x") is None
    assert time.perf_counter() - started < 10  # quadratic slots took minutes


# -- the message ------------------------------------------------------------------------------------


def test_message_names_the_project_and_how_to_ask_for_an_exception(index: NameIndex) -> None:
    found = index.check("reqeusts")
    assert found is not None
    message = found.message("reqeusts")
    assert message.startswith("The name 'reqeusts' is too similar to the popular project 'requests' "
                              "(letters swapped)")
    assert "ask an index admin to allow it" in message
    assert "bastion names allow reqeusts" in message
    assert "\n" not in message and message.isprintable()


def test_message_for_an_existing_project_says_so() -> None:
    found = NameIndex.build([], ["acme-billing"]).check("acme-biling")
    assert found is not None
    assert "the existing project 'acme-billing'" in found.message("acme-biling")


# -- cost -------------------------------------------------------------------------------------------


def test_build_and_check_are_fast(shipped: list[str]) -> None:
    started = time.perf_counter()
    names = NameIndex.build(shipped)
    built = time.perf_counter() - started
    candidates = [name + "x" for name in shipped[:2000]] + shipped[5000:7000]
    started = time.perf_counter()
    for name in candidates:
        names.check(name)
    per_check = (time.perf_counter() - started) / len(candidates)
    # Generous bounds for a shared machine: measured ~0.1 s and ~5-10 us.
    assert built < 3
    assert per_check < 0.001


# -- the CSV loader ---------------------------------------------------------------------------------


def test_shipped_list_loads_most_popular_first(shipped: list[str]) -> None:
    assert len(shipped) == 15000
    assert shipped[0] == "boto3"
    assert "requests" in shipped[:10]
    assert load_popular(None, limit=3) == shipped[:3]


def test_loader_reads_a_csv(tmp_path: Path) -> None:
    path = tmp_path / "top.csv"
    path.write_text('download_count,project\n10,"alpha"\n5,beta\n\n1,gamma\n', encoding="utf-8")
    assert load_popular(path) == ["alpha", "beta", "gamma"]
    assert load_popular(path, limit=2) == ["alpha", "beta"]


def test_loader_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(ValueError, match=r"popular names file .*nope\.csv does not exist"):
        load_popular(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is empty"),
        ("count,name\n1,alpha\n", "has no 'project' column"),
        ("download_count,project\n", "lists no projects"),
        ("download_count,project\n1,alpha\n2\n", "line 3: no project name"),
        ('download_count,project\n1,"alpha\n', "not valid CSV"),
    ],
)
def test_loader_bad_csv(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        load_popular(path)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_loader_not_text(tmp_path: Path) -> None:
    path = tmp_path / "top.csv"
    path.write_bytes(b"download_count,project\n1,\xff\xfe\x00\n")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        load_popular(path)


def test_projects_added_while_names_are_checked() -> None:
    # The server adds and removes projects from request threads while others check names.
    names = NameIndex.build([], ["acme-billing"])
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for i in range(3000):
                names.add_existing(f"acme-billing-{i}")
                names.remove_existing(f"acme-billing-{i}")
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    worker = threading.Thread(target=churn)
    worker.start()
    while worker.is_alive():
        assert names.check("acme-biling") == Resemblance("acme-billing", EXISTING, "doubled letter dropped")
    worker.join()
    assert errors == []
