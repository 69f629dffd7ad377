"""The comparison table users read: one row per model, gaps to the retrained model."""

from __future__ import annotations

import math
from typing import Any

# (header, metric, decimals)
COLUMNS = (
    ("forget acc", "forget_acc", 3),
    ("retain acc", "retain_acc", 3),
    ("test acc", "test_acc", 3),
    ("target-class test acc", "target_class_test_acc", 3),
    ("MIA-efficacy (SVC)", "mia_svc", 3),
    ("SVC attack acc", "mia_svc_attack_acc", 3),
    ("MIA-efficacy (LiRA)", "mia_lira", 3),
    ("LiRA attack acc", "mia_lira_attack_acc", 3),
    ("linear-probe forget acc", "linear_probe_forget_acc", 3),
    ("relearn steps", "relearn_steps", 0),
)


def finite(value: object) -> float | None:
    """A table number as a float, or None where there is none (missing, NaN, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """A markdown table of an evaluation summary (the content of ``metrics.json``)."""
    request = summary["request"]
    title = (
        f"{summary['dataset']}: forget {summary['num_forget']} samples "
        f"(request {request}), retain {summary['num_retain']}"
    )
    header = [
        "model",
        *(name for name, _, _ in COLUMNS),
        "avg gap to retrain",
        "avg gap without MIA",
        "fit time (s)",
    ]
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, result in summary["models"].items():
        metrics = result["metrics"]
        gaps = result.get("gap_to_retrain", {})
        timing = result.get("timing") or {}
        cells = [name, *(_number(metrics.get(key), digits) for _, key, digits in COLUMNS)]
        cells.append(_number(gaps.get("avg_gap")))
        cells.append(_number(gaps.get("avg_gap_without_mia")))
        cells.append(_number(timing.get("fit_seconds"), 2))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [note for name, result in summary["models"].items() if (note := _note(name, result))]
    return "\n".join([*lines, *(["", *notes] if notes else [])]) + "\n"


def _note(name: str, result: dict[str, Any]) -> str | None:
    """What a reader of the row must know: a PS run whose early stop restored its start."""
    record = result.get("unlearning") or {}
    if not record.get("ps_kept_start_state"):
        return None
    # A record written before it carried its sentence says only the flag.
    outcome = record.get("early_stop_outcome") or "kept the starting head (ps_kept_start_state)"
    return f"{name}: PS's early stop {outcome}."
