"""The typed view of a classifier checkpoint's ``ps_lightning`` record, and the one check of a
checkpoint against the data of a step (unlearning and evaluation both use it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ps_lightning.data.datamodule import UnlearningDataModule

# Why a step needs a model trained on which part of the training set.
TRAIN_ON_PURPOSE = {
    "full": "unlearning starts from an original model trained on the full training set.",
    "retain": (
        "it is not a model retrained without this forget set (it must be trained with "
        "train_on: retain on the same split_manifest)."
    ),
}


@dataclass(frozen=True)
class ClassifierRecord:
    """What a checkpoint says about itself: where it lies, its architecture and init arguments,
    and the data it was trained on (``train_on``, the dataset, the training set's fingerprint
    and the forget ids of its split), and what the unlearning step that made it recorded."""

    path: str
    architecture: str
    init_args: dict[str, Any]
    train_on: str | None
    dataset: str | None
    fingerprint: str | None
    forget_indices: list[int] | None
    unlearning: dict[str, Any] | None

    @classmethod
    def from_checkpoint_record(cls, path: str, record: dict[str, Any]) -> ClassifierRecord:
        """From the ``ps_lightning`` record `load_classifier` returns for ``path``."""
        data = record.get("data") or {}
        manifest = data.get("split_manifest") or {}
        return cls(
            path=str(path),
            architecture=record["architecture"],
            init_args=dict(record["init_args"]),
            train_on=data.get("train_on"),
            dataset=manifest.get("dataset"),
            fingerprint=manifest.get("fingerprint"),
            forget_indices=manifest.get("forget_indices"),
            unlearning=record.get("unlearning"),
        )

    def check_shape(self, num_classes: int | None, in_channels: int | None) -> None:
        """Refuse a checkpoint whose classes or input channels are not the data's (``None``:
        not known yet)."""
        for name, expected in (("num_classes", num_classes), ("in_channels", in_channels)):
            if expected is not None and self.init_args.get(name) != expected:
                raise ValueError(
                    f"the checkpoint '{self.path}' has {name}={self.init_args.get(name)} but the "
                    f"data have {name}={expected}: it was trained on another dataset. Use a "
                    "checkpoint of this dataset."
                )

    def check_data(self, datamodule: UnlearningDataModule, train_on: str | None = None) -> None:
        """Refuse a checkpoint not trained on ``datamodule``'s training set, or (``train_on``
        given) not trained on that part of it: ``full`` (an original model) or ``retain`` (a
        model retrained without ``datamodule``'s forget set)."""
        if (
            self.dataset != datamodule.dataset_name
            or self.fingerprint != datamodule.train_fingerprint
        ):
            raise ValueError(
                f"'{self.path}' was trained on '{self.dataset}' (fingerprint {self.fingerprint}), "
                f"not on this data ('{datamodule.dataset_name}', fingerprint "
                f"{datamodule.train_fingerprint}). Use a checkpoint of the same training set."
            )
        if train_on is None:
            return
        same_split = (
            train_on != "retain" or self.forget_indices == datamodule.forget_indices.tolist()
        )
        if self.train_on != train_on or not same_split:
            raise ValueError(
                f"'{self.path}' was trained with train_on={self.train_on!r}: "
                f"{TRAIN_ON_PURPOSE[train_on]}"
            )

    def check_request(self, datamodule: UnlearningDataModule) -> None:
        """Refuse an unlearned model made for another request than ``datamodule``'s: scored on
        this one, it would pass for this request's result."""
        if self.unlearning is None or self.forget_indices == datamodule.forget_indices.tolist():
            return
        removed = len(self.forget_indices or [])
        raise ValueError(
            f"'{self.path}' is the result of another request (it removed {removed} samples; this "
            f"one forgets {len(datamodule.forget_indices)}, not the same ones): score it on its "
            "own split, --data.init_args.split_manifest <its run folder>/split.json."
        )
