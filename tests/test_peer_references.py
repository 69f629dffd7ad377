"""The peer methods behave as their reference code defines: how often an epoch sees each
sample, the order of the passes, batch sizes, labels, learning rates; and a diverged method
fails its own step instead of writing NaN weights."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from unlearning_fixtures import Original, init_default, original

from ps_lightning.data import DigitsDataModule
from ps_lightning.data.samplers import AugmentedImageBatch, SequentialPartsSampler
from ps_lightning.harness.methods import method_configs
from ps_lightning.steps import resolved_config
from ps_lightning.unlearning import SCRUB, SSD, GradientAscent, L1Sparse, RandomLabel, SalUn

__all__ = ["original"]  # fixture used below

REPO = Path(__file__).resolve().parents[1]
DATASETS = sorted(p.name for p in (REPO / "configs").iterdir() if p.is_dir())


def flat_parameters(module: L.LightningModule) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.model.parameters()]).clone()


class BatchLog(L.Callback):
    """(epoch, part, sample keys) of every training batch, as the step receives it (a batch
    of served tensors: part ``tensors``), the learning rate of its step, and whether the step
    changed the model's parameters."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, str, list[bytes]]] = []
        self.lrs: list[tuple[int, float]] = []
        self.moved: list[bool] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        parts = batch.items() if isinstance(batch, dict) else [("tensors", batch)]
        for part, (images, *_) in parts:
            keys = [row.numpy().tobytes() for row in images.cpu()]
            self.batches.append((trainer.current_epoch, part, keys))
        self.lrs.append((trainer.current_epoch, trainer.optimizers[0].param_groups[0]["lr"]))
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
    module: L.LightningModule, data: DigitsDataModule, root: Path, *callbacks: L.Callback
) -> tuple[L.Trainer, BatchLog]:
    log = BatchLog()
    trainer = L.Trainer(
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[log, *callbacks],
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


class UnionLog(L.Callback):
    """Per training batch of served tensors: (epoch, true labels, forget rows, the forget
    labels the module holds for the epoch)."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        _, labels, forget_rows = batch
        drawn = pl_module.epoch_forget_labels.clone()
        self.batches.append((trainer.current_epoch, labels.clone(), forget_rows.clone(), drawn))


@pytest.mark.parametrize("method", [RandomLabel, SalUn])
def test_random_label_union_is_one_shuffled_pass_under_labels_drawn_once_per_epoch(
    method: type[RandomLabel], original: Original, tmp_path: Path
) -> None:
    # RL.py, for "cifar100" and "TinyImagenet": per epoch, `forget_dataset.targets =
    # np.random.randint(0, args.num_classes, ...)`, then one shuffled pass over
    # `ConcatDataset([forget_dataset, retain_dataset])`.
    data = DigitsDataModule(forget_ratio=1.0, augment=False)  # all 146 samples of class 1
    module = method(str(original.ckpt), passes="union", epochs=2)
    trained_on: list[torch.Tensor] = []
    cross_entropy = module.cross_entropy

    def recording_cross_entropy(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        trained_on.append(batch[1].clone())
        return cross_entropy(batch)

    module.cross_entropy = recording_cross_entropy  # type: ignore[method-assign]
    union = UnionLog()
    _, log = fit(module, data, tmp_path, union)
    num_forget, num_retain = len(data.forget_indices), len(data.retain_indices)
    assert len(trained_on) == len(union.batches)
    draws = []
    for epoch in (0, 1):
        batches = [
            (labels, rows, drawn, used)
            for (e, labels, rows, drawn), used in zip(union.batches, trained_on, strict=True)
            if e == epoch
        ]
        rows = torch.cat([r for _, r, _, _ in batches])
        # Every sample once: each forget row once, as many retain samples as the retain set.
        assert torch.equal(rows[rows >= 0].sort().values, torch.arange(num_forget))
        assert int((rows < 0).sum()) == num_retain
        # Shuffled together, not a forget pass then a retain pass.
        assert any(bool((r >= 0).any() and (r < 0).any()) for _, r, _, _ in batches)
        # One draw for the whole epoch: forget samples train on it, retain samples on theirs.
        drawn = batches[0][2]
        assert all(torch.equal(d, drawn) for _, _, d, _ in batches)
        for labels, r, _, used in batches:
            assert torch.equal(used[r >= 0], drawn[r[r >= 0]])
            assert torch.equal(used[r < 0], labels[r < 0])
        draws.append(drawn)
    assert not torch.equal(draws[0], draws[1])  # drawn again each epoch
    assert {part for _, part, _ in log.batches} == {"tensors"}
    assert module.train_on == "full"


@pytest.mark.parametrize("dataset", DATASETS)
def test_random_label_and_salun_run_the_loop_rl_py_picks_for_the_dataset(dataset: str) -> None:
    # RL.py: `if args.dataset == "cifar100" or args.dataset == "TinyImagenet"`: the union pass;
    # `elif args.dataset == "cifar10" or args.dataset == "svhn"`: forget pass, then retain pass
    # (the class default, also for this project's other datasets).
    expected = "union" if dataset in ("cifar100", "tinyimagenet") else "sequential"
    for config in ("random_label.yaml", "salun.yaml"):
        # As the CLI resolves it: a config may include another (image_folder's include
        # cifar10's), and a class default fills what none sets.
        step = resolved_config(["fit", "--config", str(REPO / "configs" / dataset / config)])
        assert step["fit"]["model"]["init_args"]["passes"] == expected, config


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


def test_scrub_defaults_are_the_notebooks_loaders_and_args() -> None:
    # meghdadk/SCRUB, large_scale_unlearning.ipynb: `forget_loader = replace_loader_dataset(...,
    # batch_size=512, ...)`, `retain_loader = ...(..., batch_size=256, ...)` (its
    # del_batch_size 32 and sgda_batch_size 128 are never read); sgda_epochs 3, msteps 2,
    # sgda_learning_rate 0.0005, lr_decay_epochs [3,5,9], lr_decay_rate 0.1, kd_T 4, gamma 0.99,
    # alpha 0.001, sgda_momentum 0.9, sgda_weight_decay 5e-4, augment=False.
    expected = {
        "forget_batch_size": 512,
        "retain_batch_size": 256,
        "epochs": 3,
        "max_step_epochs": 2,
        "lr": 5e-4,
        "lr_decay_epochs": (3, 5, 9),
        "lr_decay_rate": 0.1,
        "temperature": 4.0,
        "ce_weight": 0.99,
        "kl_weight": 0.001,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "train_augmentation": False,
    }
    assert {key: init_default(SCRUB, key) for key in expected} == expected


def test_scrub_learning_rate_is_repdistillers_adjust_learning_rate(original: Original) -> None:
    module = SCRUB(str(original.ckpt))
    # The notebook: `for epoch in range(1, args.sgda_epochs + 1): lr =
    # sgda_adjust_learning_rate(epoch, args, optimizer)`, which sets
    # `sgda_learning_rate * lr_decay_rate ** np.sum(epoch > np.asarray(lr_decay_epochs))`.
    for epoch in range(1, 13):
        steps = np.sum(epoch > np.asarray([3, 5, 9]))
        assert module.learning_rate(epoch - 1) == pytest.approx(0.0005 * 0.1**steps, rel=1e-12)
    constant = SCRUB(str(original.ckpt), lr_decay_epochs=())
    assert {constant.learning_rate(epoch) for epoch in range(12)} == {0.0005}


def test_scrub_makes_the_whole_max_pass_then_the_whole_min_pass(
    original: Original, tmp_path: Path
) -> None:
    # 575 forget and 862 retain samples: forget batches of 512 and retain batches of 256.
    data = DigitsDataModule(forget="random", forget_ratio=0.4)
    module = SCRUB(str(original.ckpt), epochs=5)  # otherwise the class defaults
    _, log = fit(module, data, tmp_path)
    num_forget, num_retain = len(data.forget_indices), len(data.retain_indices)
    forget_batches, retain_batches = -(-num_forget // 512), -(-num_retain // 256)
    assert (forget_batches, retain_batches) == (2, 4)
    for epoch in range(5):
        batches = [(part, len(keys)) for e, part, keys in log.batches if e == epoch]
        assert [p for p, _ in batches] == ["forget"] * forget_batches + ["retain"] * retain_batches
        assert max(n for p, n in batches if p == "forget") == 512
        assert max(n for p, n in batches if p == "retain") == 256
    # Every batch moves the student, except the forget batches after msteps epochs.
    max_epoch = [True] * (forget_batches + retain_batches)
    min_only_epoch = [False] * forget_batches + [True] * retain_batches
    assert log.moved == max_epoch * 2 + min_only_epoch * 3
    # Set at the start of each epoch: epochs 1-3 (from 1) at lr, 4 and 5 at lr / 10.
    per_epoch = [sorted({lr for e, lr in log.lrs if e == epoch}) for epoch in range(5)]
    assert per_epoch == [[0.0005]] * 3 + [[pytest.approx(0.00005)]] * 2
    # The reference trains unaugmented: SCRUB's loader says so, the datamodule's own setting is
    # kept.
    parts = [part for batch in module.train_dataloader() for part in batch.values()]
    assert parts and not any(isinstance(part, AugmentedImageBatch) for part in parts)
    assert data.hparams.augment is True


def test_l1_sparse_learning_rate_is_constant_and_its_l1_coefficient_decays_linearly(
    original: Original, tmp_path: Path
) -> None:
    # Unlearn-Saliency, unlearn/impl.py: `MultiStepLR(optimizer, milestones=decreasing_lr,
    # gamma=0.1)` stepped once per epoch, decreasing_lr "91,136" and warmup 0 by default
    # (arg_parser.py): the learning rate never changes in its epochs. unlearn/FT.py:
    # `current_alpha = args.alpha * (1 - epoch / (args.unlearn_epochs - args.no_l1_epochs))`.
    defaults = {"lr": 0.01, "epochs": 10, "momentum": 0.9, "weight_decay": 5e-4}
    assert {key: init_default(L1Sparse, key) for key in defaults} == defaults
    coefficients: list[tuple[int, float]] = []
    record = L.pytorch.callbacks.LambdaCallback(
        on_train_batch_start=lambda trainer, module, *_: coefficients.append(
            (trainer.current_epoch, module.l1_coefficient())
        )
    )
    module = L1Sparse(str(original.ckpt), epochs=3, alpha=1e-4)
    _, log = fit(module, no_augmentation_data(), tmp_path, record)
    assert {e for e, _ in log.lrs} == {0, 1, 2}
    assert {lr for _, lr in log.lrs} == {0.01}
    for epoch in range(3):
        in_epoch = sorted({c for e, c in coefficients if e == epoch})
        assert in_epoch == [pytest.approx(1e-4 * (1 - epoch / 3))]


def test_ssd_importance_passes_use_the_references_batches_of_128(
    original: Original, tmp_path: Path
) -> None:
    # if-loops/selective-synaptic-dampening, src/forget_random_main.py: `forget_train_dl =
    # DataLoader(list(forget_train), batch_size=128)`; `full_train_dl = DataLoader(...,
    # batch_size=batch_size)` with `-b` default 128.
    assert init_default(SSD, "importance_batch_size") == 128
    data = no_augmentation_data()
    asked: list[tuple[str, int | None]] = []
    eval_dataloader = data.eval_dataloader

    def recording_eval_dataloader(split: Any, batch_size: int | None = None) -> Any:
        asked.append((split, batch_size))
        return eval_dataloader(split, batch_size)

    data.eval_dataloader = recording_eval_dataloader  # type: ignore[method-assign]
    fit(SSD(str(original.ckpt)), data, tmp_path)
    assert ("forget", 128) in asked and ("full", 128) in asked


# The paper's code (main.py): the PS epochs and learning rate per dataset (README, "The paper's
# parameters"); digits and Fashion-MNIST take MNIST's.
PAPER_PS = {
    "mnist": (0.01, 50),
    "digits": (0.01, 50),
    "fashion_mnist": (0.01, 50),
    "cifar10": (0.05, 150),
    "cifar100": (0.15, 150),
    "tinyimagenet": (0.3, 150),
}


@pytest.mark.parametrize("dataset", DATASETS)
def test_ps_paper_row_runs_the_papers_released_values(dataset: str) -> None:
    # What the harness runs on the dataset: its ps.yaml with the row's overrides, whatever
    # ps.yaml ships (the selected `ps` values on digits and Fashion-MNIST: lr 0.03).
    if dataset not in PAPER_PS:  # your own images: the paper has no values for them
        assert "ps_paper" not in method_configs(dataset)
        return
    config, overrides = method_configs(dataset)["ps_paper"]
    step = resolved_config(
        ["fit", "--config", str(REPO / "configs" / dataset / config), *overrides]
    )
    model = step["fit"]["model"]["init_args"]
    paper = {
        "method": "ps",
        "trainable": "bias",
        "loss": "paper",  # the released code's double softmax
        "early_stop": "off",
        "retain_anchor": 0.0,
        "optimizer": "adam",
        "weight_decay": 1e-4,
    }
    assert {key: model[key] for key in paper} == paper
    assert step["fit"]["data"]["init_args"]["batch_size"] == 256
    assert (model["lr"], model["epochs"]) == PAPER_PS[dataset]


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
