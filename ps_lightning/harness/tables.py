"""The harness's tables: mean ± std over seeds of every metric, gap and time per model, in
markdown and JSON, and the selection table; `merge_rows` keeps other methods' rows beside a
run's own (``--merge``).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from ps_lightning.evaluation.report import COLUMNS
from ps_lightning.harness.methods import cli_value

# The evaluation's metric columns, the one schema of both tables; the harness adds its own.
METRICS = tuple(key for _, key, _ in COLUMNS)
HARNESS_COLUMNS = (
    ("avg gap ↓", "avg_gap"),
    ("avg gap without MIA", "avg_gap_without_mia"),
    ("fit time (s)", "fit_seconds"),
    ("speed-up vs retrain", "speedup_vs_retrain"),
)


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and std of the finite values; the std is NaN (not 0) for a single value."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def aggregate(
    per_seed: list[dict[str, Any]], names: list[str]
) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and std over seeds of every metric, gap and time, per model, in ``names`` order."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for name in names:
        present = [summary for summary in per_seed if name in summary["models"]]
        rows = [summary["models"][name] for summary in present]
        retrain_rows = [summary["models"][summary["retrain"]] for summary in present]
        columns = {metric: [r["metrics"][metric] for r in rows] for metric in METRICS}
        for gap in ("avg_gap", "avg_gap_without_mia"):
            columns[gap] = [r["gap_to_retrain"][gap] for r in rows]
        seconds = [(r.get("timing") or {}).get("fit_seconds") for r in rows]
        columns["fit_seconds"] = seconds
        retrain_seconds = [(r.get("timing") or {}).get("fit_seconds") for r in retrain_rows]
        columns["speedup_vs_retrain"] = [
            rs / s if s and rs else float("nan")
            for s, rs in zip(seconds, retrain_seconds, strict=True)
        ]
        columns["peak_host_mib"] = [(r.get("timing") or {}).get("peak_host_mib") for r in rows]
        table[name] = {key: _mean_std(values) for key, values in columns.items()}
        failures = len(per_seed) - len(present)
        table[name]["failed_seeds"] = (float(failures), math.nan)
    return table


def markdown(
    dataset: str,
    scenario: str,
    seeds: list[int],
    table: dict,
    isolate: bool,
    method_extra: dict[str, list[str]] | None = None,
) -> str:
    """A scenario's table (`aggregate`) in markdown; ``isolate`` adds the peak host memory, and
    ``method_extra`` (`Harness.method_extra`) a line per method run with more arguments."""
    columns = [*((name, key) for name, key, _ in COLUMNS), *HARNESS_COLUMNS]
    if isolate:
        columns.append(("peak host MiB", "peak_host_mib"))
    header = ["model", *(name for name, _ in columns)]
    lines = [
        f"### {dataset} — {scenario} "
        + (f"(mean ± std over seeds {seeds})" if len(seeds) > 1 else f"(seed {seeds[0]})"),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    wide = ("fit_seconds", "speedup_vs_retrain", "peak_host_mib", "relearn_steps")
    for name, row in table.items():
        failures = int(row.get("failed_seeds", (0.0, math.nan))[0])
        label = name if not failures else f"{name} (failed on {failures} of {len(seeds)} seeds)"
        cells = [label]
        for _, key in columns:
            mean, std = row[key]
            digits = 1 if key in wide else 3
            if math.isnan(mean):
                cells.append("failed" if failures == len(seeds) else "–")
            elif math.isnan(std):
                cells.append(f"{mean:.{digits}f}")
            else:
                cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    if method_extra:
        lines.append("")
        lines += [
            f"{name} ran with {' '.join(extra)} (`--method-arg`)."
            for name, extra in method_extra.items()
        ]
    return "\n".join(lines) + "\n"


def selection_markdown(
    dataset: str, scenarios: list[str], seeds: list[int], selection: dict[str, Any]
) -> str:
    """The selection table: every grid point's mean avg gap, the chosen one marked."""
    lines = [
        f"### {dataset} — selection (mean avg gap over seeds {seeds} × scenarios {scenarios})",
        "",
        "Never reported: these seeds serve only to choose each method's values.",
        "",
        "| method | grid point | mean avg gap | chosen |",
        "|---|---|---|---|",
    ]
    for method, result in selection.items():
        for name, entry in result["points"].items():
            gap = entry["mean_avg_gap"]
            shown = "failed" if gap is None else f"{gap:.4f}"
            point = ", ".join(f"{k}={cli_value(v)}" for k, v in entry["values"].items())
            lines.append(
                f"| {method} | {point} | {shown} | {'✓' if name == result['chosen'] else ''} |"
            )
    failed = [method for method, result in selection.items() if result["chosen"] is None]
    if failed:
        lines += [
            "",
            f"Every grid point failed on at least one selection run for {', '.join(failed)}: "
            "reported as shipped.",
        ]
    return "\n".join(lines) + "\n"


def merge_rows(
    path: Path, seeds: list[int], per_seed: list[dict[str, Any]], entries: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """With ``--merge``: this run's rows beside the other methods' rows of the table at ``path``
    (if any), seed by seed. Refused unless that table has the same seeds and its original and
    retrained models scored exactly as this run's: its rows' gaps were measured against them."""
    if not path.is_file():
        return per_seed, entries
    previous = json.loads(path.read_text())
    if previous["seeds"] != seeds:
        raise ValueError(
            f"--merge: '{path}' holds seeds {previous['seeds']}, this run {seeds}; merge runs "
            "of the same seeds."
        )
    kept = {name: entry for name, entry in previous["methods"].items() if name not in entries}
    merged = []
    for new, old in zip(per_seed, previous["per_seed"], strict=True):
        for reference in ("original", "retrain"):
            ours, theirs = new["models"][reference]["metrics"], old["models"][reference]["metrics"]
            # Metrics added since that table was made are not compared; every other is exact.
            if any(ours.get(name) != value for name, value in theirs.items()):
                raise ValueError(
                    f"--merge: seed {new['seed']}'s {reference} model scores otherwise than the "
                    f"one '{path}' measured its rows against (another thread count or CPU "
                    "trains other weights); run every method instead."
                )
        merged.append(
            {
                **new,
                "models": {
                    **{n: row for n, row in old["models"].items() if n in kept},
                    **new["models"],
                },
                "failed": {
                    **{n: why for n, why in old["failed"].items() if n in kept},
                    **new["failed"],
                },
                "steps": {
                    **{n: step for n, step in old.get("steps", {}).items() if n in kept},
                    **new["steps"],
                },
            }
        )
    return merged, {**kept, **entries}
