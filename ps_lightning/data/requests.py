"""Forget requests: which training samples a deletion request removes.

Pure functions over label tensors, seeded so that every process (and every later run) draws
the same samples.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

RequestKind = Literal["classes", "random", "indices"]
REQUEST_KINDS: tuple[str, ...] = get_args(RequestKind)
# An id on a line of an ids file: ASCII digits only (str.isdigit also takes "٣", "１２" and "²").
INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def validate_request(
    kind: str,
    classes: list[int],
    ratio: float,
    num_classes: int,
    indices_file: str | None,
) -> None:
    """Check what can be checked without the data, so bad input fails before anything runs."""
    if kind not in REQUEST_KINDS:
        raise ValueError(f"forget={kind!r} is not a request kind; use one of {REQUEST_KINDS}.")
    if kind == "indices":
        if not indices_file:
            raise ValueError(
                "forget='indices' needs forget_indices_file: a JSON list of training-sample "
                "indices, or a text file with one index per line."
            )
        return
    if not 0.0 < ratio <= 1.0:
        raise ValueError(
            f"forget_ratio={ratio} is outside (0, 1]: it is the fraction of samples to forget "
            "(e.g. 0.1 for 10%, 1.0 for whole classes)."
        )
    if kind == "classes":
        if not classes:
            raise ValueError("forget='classes' needs at least one class in forget_classes.")
        unknown = [c for c in classes if not 0 <= c < num_classes]
        if unknown:
            raise ValueError(
                f"forget_classes has unknown classes {unknown}: this dataset has classes "
                f"0..{num_classes - 1}."
            )
        if len(set(classes)) != len(classes):
            raise ValueError(f"forget_classes={classes} names a class twice; list each once.")


def ids_sha256(ids: list[int]) -> str:
    """A request's identity: the hash of its sorted sample ids, whatever file holds them."""
    return hashlib.sha256(json.dumps(sorted(ids)).encode()).hexdigest()


def indices_request(ids: list[int]) -> dict[str, Any]:
    """The record of a request that names its samples: their count and the hash of their ids."""
    return {"kind": "indices", "count": len(ids), "ids_sha256": ids_sha256(ids)}


def request_record(
    kind: str, classes: list[int], ratio: float, seed: int, indices_file: str | None
) -> dict[str, Any]:
    """What a manifest records as the request: its settings, or for ``indices`` its ids."""
    if kind == "indices":
        # Identified by content: an edited file is another request, a moved one is not.
        return indices_request(read_indices_file(str(indices_file)))
    record: dict[str, Any] = {"kind": kind, "ratio": float(ratio), "seed": int(seed)}
    if kind == "classes":
        record["classes"] = sorted(int(c) for c in classes)
    return record


def sample_ids(values: object, source: str) -> list[int]:
    """Training-sample ids as plain ints, the one check the command's ids file and the Python
    API share: integers in a list, tuple, range, set, integer array or tensor; a bool, a float (even
    3.0), a string (even "42") is refused with its position, never rounded or split. Range and
    duplicates are `check_indices`'s."""
    if hasattr(values, "tolist") and not isinstance(values, (str, bytes)):
        values = values.tolist()  # a tensor or an array: its elements as Python numbers
    if isinstance(values, Iterable) and not isinstance(values, (str, bytes, Mapping)):
        values = list(values)  # a range, a set, a generator
    if not isinstance(values, list):
        raise ValueError(
            f"{source}: expected a list of integer sample ids like [3, 17, 42], got "
            f"{type(values).__name__} {values!r}."
        )
    for position, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(
                f"{source}: entry {position} is {value!r} ({type(value).__name__}), not an "
                "integer; sample ids are whole numbers like [3, 17, 42], never rounded or parsed."
            )
    return [int(value) for value in values]


def read_indices_file(path: str) -> list[int]:
    """A JSON list of integers, or one integer per line (blank lines and # comments ignored)."""
    file = Path(path)
    if file.is_dir():
        raise IsADirectoryError(
            f"forget_indices_file '{file}' is a folder; name the file of ids inside it."
        )
    if not file.is_file():
        raise FileNotFoundError(f"forget_indices_file '{file}' does not exist.")
    expected = "a JSON list of integers like [3, 17, 42], or one integer per line"
    try:
        text = file.read_text(encoding="utf-8-sig")  # a byte-order mark is no id
    except UnicodeDecodeError as error:
        byte = error.object[error.start : error.start + 1]
        raise ValueError(
            f"forget_indices_file '{file}' is not UTF-8 text (byte {error.start} is {byte!r}); "
            f"save it as UTF-8 (or ASCII) holding {expected}."
        ) from None
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"forget_indices_file '{file}' is not valid JSON ({error.msg} at line "
                f"{error.lineno} column {error.colno}); it must hold {expected}."
            ) from None
        if not isinstance(values, list):
            raise ValueError(f"forget_indices_file '{file}' must hold {expected}.")
        try:
            return sample_ids(values, f"forget_indices_file '{file}'")
        except ValueError as error:
            raise ValueError(f"{error} The file must hold {expected}.") from None
    lines = [(n + 1, line.split("#", 1)[0].strip()) for n, line in enumerate(text.splitlines())]
    values = [value for _, value in lines if value]
    bad = [(n, value) for n, value in lines if value and not INTEGER_TEXT.fullmatch(value)]
    if bad:
        number, value = bad[0]
        raise ValueError(
            f"forget_indices_file '{file}': line {number} is {value!r}, not an integer written "
            f"in the digits 0-9 ({len(bad)} such lines); the file must hold {expected}."
        )
    return [int(v) for v in values]


def check_indices(
    indices: list[int], num_train: int, source: str, what: str = "training set"
) -> None:
    out_of_range = [i for i in indices if not 0 <= i < num_train]
    if out_of_range:
        raise ValueError(
            f"{source}: indices {out_of_range[:5]} are out of range; the {what} has "
            f"{num_train} samples (valid indices 0..{num_train - 1})."
        )
    if len(set(indices)) != len(indices):
        seen: set[int] = set()
        duplicates = sorted({i for i in indices if i in seen or seen.add(i)})
        raise ValueError(
            f"{source}: indices {duplicates[:5]} appear more than once; list each once."
        )


def draw_forget_indices(
    labels: torch.Tensor,
    kind: str,
    classes: list[int],
    ratio: float,
    seed: int,
    indices_file: str | None = None,
) -> torch.Tensor:
    """Sorted int64 indices of the training samples to forget.

    ``classes``: ``round(ratio · n_c)`` samples of each listed class (ratio 1.0: whole classes),
    ``random``: ``round(ratio · N)`` samples of the whole set, ``indices``: the file's list.
    """
    num_train = len(labels)
    generator = torch.Generator().manual_seed(seed)
    if kind == "indices":
        assert indices_file is not None
        chosen = read_indices_file(indices_file)
        check_indices(chosen, num_train, f"forget_indices_file '{indices_file}'")
        forget = torch.tensor(chosen, dtype=torch.long)
    elif kind == "random":
        count = round(ratio * num_train)
        forget = torch.randperm(num_train, generator=generator)[:count]
    else:
        parts = []
        for cls in classes:
            members = torch.nonzero(labels == cls).flatten()
            count = round(ratio * len(members))
            parts.append(members[torch.randperm(len(members), generator=generator)[:count]])
        forget = torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
    if len(forget) == 0:
        raise ValueError(
            "the forget set is empty: the request selects no training sample (raise "
            "forget_ratio, or choose classes that have training samples)."
        )
    if len(forget) == num_train:
        raise ValueError(
            "the request forgets every training sample, leaving an empty retain set; "
            "forget a part of the data."
        )
    return torch.sort(forget).values


def split_rows(chosen: list[int], total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sorted int64 rows ``chosen`` of ``total``, and the sorted rest."""
    is_chosen = torch.zeros(total, dtype=torch.bool)
    is_chosen[chosen] = True
    return torch.nonzero(is_chosen).flatten(), torch.nonzero(~is_chosen).flatten()


def covers_whole_classes(labels: torch.Tensor, forget_indices: torch.Tensor) -> bool:
    """Whether the samples ``forget_indices`` are exactly every sample of their classes."""
    forget_labels = labels[forget_indices]
    classes = forget_labels.unique()
    return bool((labels[:, None] == classes).any(1).sum() == len(forget_labels))


def emptied_classes(labels: torch.Tensor, removed: torch.Tensor) -> list[int]:
    """The classes none of whose samples is left once the samples ``removed`` are."""
    left = torch.ones(len(labels), dtype=torch.bool)
    left[removed] = False
    touched = labels[removed].unique()
    return [int(c) for c in touched if not bool((left & (labels == c)).any())]


def targets_few_classes(forget_labels: torch.Tensor, num_classes: int) -> bool:
    """Whether a request lies within at most half of the classes: the paper's request (part of
    a class) is one; a random request of any size that leaves no class untouched is not."""
    return len(forget_labels.unique()) <= num_classes // 2


def split_test_set(num_test: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded half of the test set for calibration, the other half for reporting.

    Decisions that look at held-out data (the MIA attack model, early stopping) use the
    calibration half, so that no reported number is tuned on the samples it is scored on.
    """
    order = torch.randperm(num_test, generator=torch.Generator().manual_seed(seed + 1))
    half = num_test // 2
    return torch.sort(order[:half]).values, torch.sort(order[half:]).values
