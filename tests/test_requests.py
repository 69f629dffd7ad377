"""Forget requests: which training samples a deletion request names, and bad requests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ps_lightning.data import requests as requests_module
from ps_lightning.data.requests import (
    draw_forget_indices,
    read_indices_file,
    split_test_set,
    validate_request,
)

# 10 samples of class 0, 25 of class 1, 7 of class 2 and 40 of class 3, interleaved by a fixed
# permutation so that a class's members are not one contiguous block.
COUNTS = {0: 10, 1: 25, 2: 7, 3: 40}
LABELS = torch.cat([torch.full((n,), c) for c, n in COUNTS.items()])[
    torch.randperm(sum(COUNTS.values()), generator=torch.Generator().manual_seed(5))
]
N = len(LABELS)  # 82


def draw(kind: str = "classes", classes=(1,), ratio: float = 0.1, seed: int = 209, **kw):
    return draw_forget_indices(LABELS, kind, list(classes), ratio, seed, **kw)


# --------------------------------------------------------------------------- classes


def test_classes_request_takes_round_ratio_of_each_listed_class() -> None:
    forget = draw("classes", classes=[0, 1, 2], ratio=0.2)
    per_class = torch.bincount(LABELS[forget], minlength=4).tolist()
    # round(0.2 · n_c): 10 → 2, 25 → 5, 7 → 1.4 → 1; class 3 is not listed.
    assert per_class == [2, 5, 1, 0]


def test_classes_request_with_ratio_one_forgets_whole_classes() -> None:
    forget = draw("classes", classes=[1, 2], ratio=1.0)
    expected = torch.nonzero((LABELS == 1) | (LABELS == 2)).flatten()
    assert forget.tolist() == expected.tolist()


def test_forget_indices_are_sorted_unique_int64() -> None:
    forget = draw("classes", classes=[3, 0], ratio=0.5)
    assert forget.dtype == torch.int64
    assert forget.tolist() == sorted(set(forget.tolist()))
    assert len(forget) == 5 + 20


def test_random_request_takes_round_ratio_of_the_whole_set() -> None:
    forget = draw("random", classes=[], ratio=0.3)
    assert len(forget) == 25  # round(0.3 · 82) = round(24.6)
    assert len(set(forget.tolist())) == 25
    assert forget.tolist() == sorted(forget.tolist())
    assert int(forget.min()) >= 0 and int(forget.max()) < N
    # A random request is not confined to one class.
    assert len(LABELS[forget].unique()) > 1


@pytest.mark.parametrize("kind", ["classes", "random"])
def test_draw_is_deterministic_for_a_seed_and_changes_with_the_seed(kind: str) -> None:
    first = draw(kind, classes=[3], ratio=0.3, seed=11)
    again = draw(kind, classes=[3], ratio=0.3, seed=11)
    other = draw(kind, classes=[3], ratio=0.3, seed=12)
    assert first.tolist() == again.tolist()
    assert len(other) == len(first)
    assert other.tolist() != first.tolist()


def test_draw_is_identical_in_another_process() -> None:
    # Every DDP rank and every later run must name the same samples: no hidden global RNG.
    # The module is loaded from its file so that the child imports torch only, not Lightning.
    code = (
        "import importlib.util, json, sys, torch\n"
        "spec = importlib.util.spec_from_file_location('requests_module', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "draw = module.draw_forget_indices\n"
        "labels = torch.arange(500) % 7\n"
        "print(json.dumps([draw(labels, 'classes', [2, 5], 0.3, 209).tolist(),"
        " draw(labels, 'random', [], 0.1, 4).tolist()]))\n"
    )
    torch.manual_seed(123)  # the global RNG state must not matter
    labels = torch.arange(500) % 7
    here = [
        draw_forget_indices(labels, "classes", [2, 5], 0.3, 209).tolist(),
        draw_forget_indices(labels, "random", [], 0.1, 4).tolist(),
    ]
    result = subprocess.run(
        [sys.executable, "-c", code, requests_module.__file__],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(result.stdout) == here


# --------------------------------------------------------------------------- index files


def test_indices_request_reads_a_json_list_and_sorts_it(tmp_path: Path) -> None:
    file = tmp_path / "forget.json"
    file.write_text("[7, 3, 41, 0]")
    assert read_indices_file(str(file)) == [7, 3, 41, 0]
    forget = draw("indices", ratio=0.5, indices_file=str(file))
    assert forget.tolist() == [0, 3, 7, 41]


def test_indices_file_one_per_line_skips_blank_lines_and_comments(tmp_path: Path) -> None:
    file = tmp_path / "forget.txt"
    file.write_text("# samples the user asked to delete\n12\n\n  5  \n30 # a note\n\n")
    assert read_indices_file(str(file)) == [12, 5, 30]
    assert draw("indices", indices_file=str(file)).tolist() == [5, 12, 30]


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ("[1.5, 2]", r"entry 0 is 1.5 \(float\), not an integer"),
        ("[1, 2.5]", r"entry 1 is 2.5 \(float\), not an integer"),
        ("[1.0, 2]", r"entry 0 is 1.0 \(float\), not an integer"),
        ("[true, 3]", r"entry 0 is True \(bool\), not an integer"),
        ('["3", 4]', r"entry 0 is '3' \(str\), not an integer"),
        ('{"forget": [1]}', "line 1 is '{\"forget\": \\[1\\]}', not an integer"),
        ("abc", "line 1 is 'abc', not an integer"),
        ("1\ntwo\n", "line 2 is 'two', not an integer"),
        ("3.5\n", "line 1 is '3.5', not an integer"),
        ("\u0663\n", "line 1 is '\u0663', not an integer"),  # an Arabic-Indic three
        ("\uff11\uff12\n", "line 1 is '\uff11\uff12', not an integer"),  # a full-width 12
        ("\u00b2\n", "line 1 is '\u00b2', not an integer"),  # a superscript two
        ("[1, 2", "is not valid JSON"),
    ],
    ids=[
        "json-float-first",
        "json-float",
        "json-float-integral",
        "json-bool",
        "json-string-digits",
        "json-object",
        "word",
        "word-on-line-2",
        "line-float",
        "arabic-indic-digit",
        "full-width-digits",
        "superscript",
        "broken-json",
    ],
)
def test_non_integer_index_file_is_refused_naming_the_file_and_the_entry(
    tmp_path: Path, content: str, names: str
) -> None:
    file = tmp_path / "forget.txt"
    file.write_text(content)
    with pytest.raises(ValueError, match=names) as refused:
        read_indices_file(str(file))
    assert str(file) in str(refused.value)
    assert "one integer per line" in str(refused.value)  # says what the file must hold


def test_an_index_file_that_is_not_utf8_or_a_folder_is_named_with_the_fix(
    tmp_path: Path,
) -> None:
    utf16 = tmp_path / "forget.txt"
    utf16.write_bytes("3\n17\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"forget\.txt' is not UTF-8 text.*save it as UTF-8"):
        read_indices_file(str(utf16))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"3\n\xe917\n")
    with pytest.raises(ValueError, match=r"byte 2 is b'\\xe9'"):
        read_indices_file(str(latin1))
    with pytest.raises(IsADirectoryError, match="is a folder; name the file of ids inside it"):
        read_indices_file(str(tmp_path))
    with_bom = tmp_path / "bom.json"
    with_bom.write_bytes(b"\xef\xbb\xbf[3, 17]")
    assert read_indices_file(str(with_bom)) == [3, 17]


def test_missing_index_file_is_reported_by_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.json' does not exist"):
        draw("indices", indices_file=str(missing))
    assert list(tmp_path.iterdir()) == []


def test_out_of_range_indices_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "forget.json"
    file.write_text(json.dumps([0, 5, N, -1]))
    with pytest.raises(ValueError, match=r"out of range.*82 samples"):
        draw("indices", indices_file=str(file))


def test_duplicate_indices_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "forget.txt"
    file.write_text("4\n9\n4\n")
    with pytest.raises(ValueError, match=r"\[4\] appear more than once"):
        draw("indices", indices_file=str(file))


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("kind", "classes", "ratio", "indices_file", "message"),
    [
        ("classes", [10], 0.1, None, r"unknown classes \[10\].*0\.\.9"),
        ("classes", [-1, 2], 0.1, None, r"unknown classes \[-1\]"),
        ("classes", [1, 3, 1], 0.1, None, "names a class twice"),
        ("classes", [], 0.1, None, "at least one class"),
        ("classes", [1], 0.0, None, r"forget_ratio=0.0 is outside \(0, 1\]"),
        ("classes", [1], 1.5, None, r"forget_ratio=1.5 is outside \(0, 1\]"),
        ("random", [], -0.2, None, "is outside"),
        ("everything", [1], 0.1, None, "'everything' is not a request kind"),
        ("indices", [], 0.1, None, "needs forget_indices_file"),
    ],
)
def test_validate_request_refuses_bad_requests(kind, classes, ratio, indices_file, message) -> None:
    with pytest.raises(ValueError, match=message):
        validate_request(kind, classes, ratio, 10, indices_file)


def test_validate_request_accepts_good_requests() -> None:
    validate_request("classes", [0, 9], 1.0, 10, None)
    validate_request("random", [], 0.5, 10, None)
    validate_request("indices", [], 0.0, 10, "some.json")  # ratio is irrelevant for a file


def test_request_selecting_no_sample_is_refused() -> None:
    # round(0.05 · 7) = 0: class 2 has too few samples for this ratio.
    with pytest.raises(ValueError, match="forget set is empty"):
        draw("classes", classes=[2], ratio=0.05)


def test_empty_index_file_is_an_empty_forget_set(tmp_path: Path) -> None:
    file = tmp_path / "forget.json"
    file.write_text("[]")
    with pytest.raises(ValueError, match="forget set is empty"):
        draw("indices", indices_file=str(file))


@pytest.mark.parametrize(
    ("kind", "classes"), [("random", []), ("classes", [0, 1, 2, 3])], ids=["random", "classes"]
)
def test_request_forgetting_everything_is_refused(kind: str, classes: list[int]) -> None:
    with pytest.raises(ValueError, match="empty retain set"):
        draw(kind, classes=classes, ratio=1.0)


# --------------------------------------------------------------------------- test-set halves


@pytest.mark.parametrize("num_test", [360, 11])
def test_calibration_and_report_halves_are_disjoint_and_cover_the_test_set(num_test: int) -> None:
    calibration, report = split_test_set(num_test, 209)
    assert len(calibration) == num_test // 2
    assert len(report) == num_test - num_test // 2
    assert set(calibration.tolist()).isdisjoint(report.tolist())
    assert sorted(calibration.tolist() + report.tolist()) == list(range(num_test))
    assert calibration.tolist() == sorted(calibration.tolist())
    assert report.tolist() == sorted(report.tolist())


def test_test_set_halves_are_seeded() -> None:
    first, _ = split_test_set(100, 3)
    again, _ = split_test_set(100, 3)
    other, _ = split_test_set(100, 4)
    assert first.tolist() == again.tolist()
    assert first.tolist() != other.tolist()
    # A seeded shuffle, not simply the first half.
    assert first.tolist() != list(range(50))
