"""The peer methods behave as their reference code defines: how often an epoch sees each
sample, the order of the passes, batch sizes, labels, learning rates; and a diverged method
fails its own step instead of writing NaN weights."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from unlearning_fixtures import Original, original

from ps_lightning.data import DigitsDataModule
from ps_lightning.data.datamodule import SequentialPartsSampler
from ps_lightning.unlearning import SCRUB, GradientAscent, RandomLabel, SalUn

__all__ = ["original"]  # fixture used below


def flat_parameters(module: L.LightningModule) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.model.parameters()]).clone()


class BatchLog(L.Callback):
    """(epoch, part, sample keys) of every training batch, as the step receives it, and
    whether the step changed the model's parameters."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, str, list[bytes]]] = []
        self.moved: list[bool] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        for part, (images, _) in batch.items():
            keys = [row.numpy().tobytes() for row in images.cpu()]
            self.batches.append((trainer.current_epoch, part, keys))
        self.before = flat_parameters(pl_module)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.moved.append(not torch.equal(self.before, flat_parameters(pl_module)))


def fit(
    module: L.LightningModule, data: DigitsDataModule, root: Path
) -> tuple[L.Trainer, BatchLog]:
    log = BatchLog()
    trainer = L.Trainer(
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[log],
    )
    trainer.fit(module, datamodule=data)
    return trainer, log


def no_augmentation_data() -> DigitsDataModule:
    # Unaugmented images identify their samples; the request: 10% of class 1.
    return DigitsDataModule(forget_ratio=0.1, augment=False)


@pytest.mark.parametrize("method", [RandomLabel, SalUn])
def test_random_label_epochs_are_one_forget_pass_then_one_retain_pass(
    method: type[RandomLabel], original: Original, tmp_path: Path
) -> None:
    data = no_augmentation_data()
    _, log = fit(method(str(original.ckpt), epochs=2), data, tmp_path)
    sizes = {"forget": len(data.forget_indices), "retain": len(data.retain_indices)}
    for epoch in (0, 1):
        parts = [part for e, part, _ in log.batches if e == epoch]
        # Every forget batch comes before every retain batch.
        assert parts == sorted(parts), f"epoch {epoch}: passes interleaved: {parts}"
        for part, size in sizes.items():
            seen = Counter(
                k for e, p, keys in log.batches if e == epoch and p == part for k in keys
            )
            assert sum(seen.values()) == size, f"epoch {epoch}: {part} seen {sum(seen.values())}"
            assert len(seen) == size and set(seen.values()) == {1}


def test_random_labels_include_the_true_label(original: Original) -> None:
    torch.manual_seed(0)
    labels = torch.full((20000,), 3)
    drawn = RandomLabel(str(original.ckpt)).forget_labels(labels)
    # randint(0, C): every class, the true one included, about 1/C of the time each.
    counts = torch.bincount(drawn, minlength=10).float() / len(drawn)
    assert torch.allclose(counts, torch.full((10,), 0.1), atol=0.01), counts
    wrong = RandomLabel(str(original.ckpt), labels="wrong").forget_labels(labels)
    assert not (wrong == 3).any()


def test_salun_learning_rate_is_the_references(original: Original) -> None:
    optimizer = SalUn(str(original.ckpt)).configure_optimizers()
    assert optimizer.param_groups[0]["lr"] == 0.013
    assert SalUn(str(original.ckpt)).hparams.epochs == 10


def test_scrub_makes_the_whole_max_pass_then_the_whole_min_pass(
    original: Original, tmp_path: Path
) -> None:
    data = DigitsDataModule(forget_ratio=1.0)  # all of class 1: several forget batches of 32
    module = SCRUB(str(original.ckpt), epochs=3, max_step_epochs=2)
    _, log = fit(module, data, tmp_path)
    num_forget, num_retain = len(data.forget_indices), len(data.retain_indices)
    forget_batches, retain_batches = -(-num_forget // 32), -(-num_retain // 128)
    assert forget_batches > 1 and retain_batches > 1
    for epoch in range(3):
        batches = [(part, len(keys)) for e, part, keys in log.batches if e == epoch]
        assert [p for p, _ in batches] == ["forget"] * forget_batches + ["retain"] * retain_batches
        assert max(n for p, n in batches if p == "forget") == 32
        assert max(n for p, n in batches if p == "retain") == 128
    # Every batch moves the student, except the forget batches after msteps epochs.
    max_epoch = [True] * (forget_batches + retain_batches)
    min_only_epoch = [False] * forget_batches + [True] * retain_batches
    assert log.moved == max_epoch + max_epoch + min_only_epoch
    # The reference trains unaugmented: SCRUB says so, the datamodule's own setting is kept.
    assert data.augments_training() is False
    assert data.hparams.augment is True


def test_a_method_with_non_finite_weights_fails_and_writes_nothing(
    original: Original, tmp_path: Path
) -> None:
    module = GradientAscent(str(original.ckpt))
    module.model.prototypes.weight.data[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite weights"):
        module.on_fit_end()
    assert not any(tmp_path.iterdir())


def test_sequential_passes_shard_each_part_evenly_across_processes() -> None:
    sizes, batch_sizes = {"forget": 5, "retain": 11}, {"forget": 2, "retain": 4}
    shards = [
        list(SequentialPartsSampler(sizes, batch_sizes, seed=0, num_replicas=2, rank=rank))
        for rank in (0, 1)
    ]
    # Every process takes as many steps (DDP would hang otherwise), parts in the same order.
    assert [part for part, _ in shards[0]] == [part for part, _ in shards[1]]
    assert len(shards[0]) == len(SequentialPartsSampler(sizes, batch_sizes, 0, 2, 0))
    for part, size in sizes.items():
        rows = [row for shard in shards for p, batch in shard if p == part for row in batch]
        assert set(rows) == set(range(size))  # together they cover the part
        assert len(rows) == -(-size // 2) * 2  # padded by at most one repeat per process
        assert all(len(b) <= batch_sizes[part] for s in shards for p, b in s if p == part)
