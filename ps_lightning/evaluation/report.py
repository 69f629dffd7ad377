"""The comparison table users read: one row per model, gaps to the retrained model."""

from __future__ import annotations

import math
from typing import Any

COLUMNS = (
    ("forget acc", "forget_acc"),
    ("retain acc", "retain_acc"),
    ("test acc", "test_acc"),
    ("target-class test acc", "target_class_test_acc"),
    ("MIA-efficacy", "mia_confidence"),
    ("linear-probe forget acc", "linear_probe_forget_acc"),
    ("relearn steps", "relearn_steps"),
)


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """A markdown table of an evaluation summary (the content of ``metrics.json``)."""
    request = summary["request"]
    title = (
        f"{summary['dataset']}: forget {summary['num_forget']} samples "
        f"(request {request}), retain {summary['num_retain']}"
    )
    header = ["model", *(name for name, _ in COLUMNS), "avg gap to retrain", "fit time (s)"]
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, result in summary["models"].items():
        metrics = result["metrics"]
        gap = result.get("gap_to_retrain", {}).get("avg_gap")
        timing = result.get("timing") or {}
        cells = [name, *(_number(metrics.get(key)) for _, key in COLUMNS), _number(gap)]
        cells.append(_number(timing.get("fit_seconds"), 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
