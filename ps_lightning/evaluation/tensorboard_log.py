"""What `ps-lightning test` shows in TensorBoard, built from its summary (``metrics.json``).

Scalars (any logger), each logged once at step 0:

- ``eval/<model>/metric/<name>``: each number of the model's table row (accuracies, attacks,
  probes, relearn steps), the value the table shows;
- ``eval/<model>/gap_to_retrain/<name>``: its absolute gap to the retrained model, with
  ``avg_gap`` and ``avg_gap_without_mia``;
- ``eval/<model>/fit_seconds``: the fit time of the run that made the model.

Per-class accuracy is a figure, not scalars: a scalar chart would put the class index on its
step axis and smooth across classes, drawing values that are not the data.

TensorBoard only:

- images ``comparison/vs_retrain`` (the table as a chart, with each model's avg gap without
  and with the MIA term; the data it draws is ``comparison.json``), ``confusion_matrix/<model>``
  (test split, counts in the cells) and ``per_class_accuracy/<model>`` (bars per class: the
  original before, the model after, the retrained model as the target; test, forget and retain
  splits);
- text ``table``: the markdown table of ``table.md``;
- HParams: one run per model (``hparams/<model>``, the original and retrained ones for
  reference): its method, role and name first, then the options that acted on the run and its
  record, as typed values, and the table's numbers as ``hparams/<name>``
  (`ps_lightning.evaluation.hparams`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from ps_lightning.evaluation.figures import confusion_matrix_figure, per_class_accuracy_figure
from ps_lightning.evaluation.hparams import hparam_rows, write_hparams
from ps_lightning.evaluation.report import finite
from ps_lightning.metrics import PER_CLASS_SPLITS


def table_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """Tag → value of every number the comparison table holds, per model (missing and NaN
    values left out)."""
    scalars: dict[str, float] = {}
    for name, result in summary["models"].items():
        groups = {
            "metric": {k: v for k, v in result["metrics"].items() if not isinstance(v, list)},
            "gap_to_retrain": result.get("gap_to_retrain", {}),
        }
        for group, values in groups.items():
            for key, value in values.items():
                if (number := finite(value)) is not None:
                    scalars[f"eval/{name}/{group}/{key}"] = number
        if (seconds := finite((result.get("timing") or {}).get("fit_seconds"))) is not None:
            scalars[f"eval/{name}/fit_seconds"] = seconds
    return scalars


def per_class_series(
    summary: dict[str, Any], name: str, split: str, original: str | None
) -> dict[str, list[float | None]]:
    """The original before, the model after, the retrained model as the target (each once)."""
    labels: dict[str, str] = {}
    for model, role in ((original, "before"), (name, "after"), (summary["retrain"], "target")):
        if model is not None and model not in labels:
            labels[model] = f"{model} ({role})"
    return {
        label: summary["models"][model]["metrics"][f"class_{split}_acc"]
        for model, label in labels.items()
    }


def log_to_tensorboard(
    writer: SummaryWriter,
    summary: dict[str, Any],
    comparison: Figure,
    test_confusion: dict[str, torch.Tensor],
    table: str,
    original: str | None,
) -> None:
    """The figures, the table as text and the HParams rows of an evaluation (the scalars go
    through the run's logger: `table_scalars`)."""
    writer.add_text("table", table)
    writer.add_figure("comparison/vs_retrain", comparison)
    for name in summary["models"]:
        writer.add_figure(
            f"confusion_matrix/{name}",
            confusion_matrix_figure(test_confusion[name], f"{name}: test split"),
        )
        writer.add_figure(
            f"per_class_accuracy/{name}",
            per_class_accuracy_figure(
                {
                    split: per_class_series(summary, name, split, original)
                    for split in PER_CLASS_SPLITS
                },
                f"{name}: accuracy per class",
                summary["target_classes"],
            ),
        )
    write_hparams(Path(writer.log_dir), hparam_rows(summary, original))
