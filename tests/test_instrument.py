"""The measuring instrument against inputs whose right answer is known.

Each test here guards one way the instrument can be wrong while still printing plausible
numbers: an attack that mixes up members and non-members or learns from the reporting half of
the test set, a linear probe or relearn count that measures nothing, and PS's early stop with
the wrong sign, the wrong held-out level or no restore of the state it chose.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from unlearning_fixtures import (
    CONFIGS,
    QUIET,
    Original,
    load_checkpoint,
    original,
    result_checkpoint,
    retrain_ckpt,
    run_cli,
)

from ps_lightning.data import DigitsDataModule
from ps_lightning.evaluation.probes import linear_probe_accuracy, reaches_accuracy, relearn_steps
from ps_lightning.metrics import (
    MIA_ATTACKS,
    attack_accuracy,
    likelihood_ratio_attack,
    mia_efficacy,
    split_metrics,
    svc_attack,
)
from ps_lightning.models.classifier import load_classifier
from ps_lightning.steps import run_step

__all__ = ["original", "retrain_ckpt"]  # fixtures used below


def _normal(mean: float, std: float, count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return mean + std * torch.randn(count, generator=generator, dtype=torch.float64)


def _logits_with_scaled_confidence(scaled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Two-class logits whose true class has log p/(1-p) = ``scaled``."""
    logits = torch.zeros(len(labels), 2, dtype=torch.float64)
    return logits.scatter(1, labels[:, None], scaled[:, None])


# --------------------------------------------------------------------------- membership attacks

# Members' logit-scaled confidence ~ N(3, 1), non-members' ~ N(1, 1): the best test on one
# score is a threshold at 2, right with probability Φ(1) ≈ 0.841 on either population.
BAYES_ACCURACY = NormalDist().cdf(1.0)
ATTACKS = {"svc": (torch.sigmoid, svc_attack), "lira": (lambda s: s, likelihood_ratio_attack)}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_accuracy_reaches_the_bayes_accuracy_of_known_populations(name: str) -> None:
    transform, attack = ATTACKS[name]  # the SVC reads the confidence p, LiRA log p/(1-p)
    labels = torch.zeros(3000, dtype=torch.long)
    members = (transform(_normal(3.0, 1.0, 3000, 0)), labels)
    nonmembers = (transform(_normal(1.0, 1.0, 2000, 1)), labels[:2000])

    assert attack_accuracy(attack, members, nonmembers) == pytest.approx(BAYES_ACCURACY, abs=0.03)
    # Forget samples drawn like non-members are called non-members as often as non-members are.
    like_nonmembers = (transform(_normal(1.0, 1.0, 2000, 2)), labels[:2000])
    # (The SVC's learned threshold sits near, not at, the best one: a looser bound.)
    efficacy = mia_efficacy(attack, members, nonmembers, like_nonmembers)
    assert efficacy == pytest.approx(BAYES_ACCURACY, abs=0.05)
    like_members = (transform(_normal(3.0, 1.0, 2000, 3)), labels[:2000])
    assert mia_efficacy(attack, members, nonmembers, like_members) == pytest.approx(
        1 - BAYES_ACCURACY, abs=0.05
    )


def test_likelihood_ratio_attack_compares_members_with_non_members_of_their_own_class() -> None:
    # Class 0 is recognised far more confidently than class 1, members of each class by two
    # standard deviations more than its non-members: pooled over classes the two overlap
    # almost completely; per class the best accuracy is again Φ(1).
    labels = torch.arange(4000) % 2
    offset = torch.where(labels == 0, 6.0, 0.0).double()
    members = (offset + _normal(2.0, 1.0, 4000, 0), labels)
    nonmembers = (offset + _normal(0.0, 1.0, 4000, 1), labels)

    accuracy = attack_accuracy(likelihood_ratio_attack, members, nonmembers)

    assert accuracy == pytest.approx(BAYES_ACCURACY, abs=0.03)
    # Without the class: pooled Gaussians (too few samples per class) do clearly worse.
    pooled = attack_accuracy(
        lambda s, y, m: likelihood_ratio_attack(s, y, m, min_class_samples=10**6),
        members,
        nonmembers,
    )
    assert pooled < accuracy - 0.1


def test_efficacy_of_a_class_no_member_holds_uses_all_classes() -> None:
    # A wholly forgotten class (2) has no retain member; its forget samples are scored against
    # the Gaussians of all classes, and look like non-members there.
    members = (_normal(4.0, 0.5, 400, 0), torch.arange(400) % 2)
    nonmembers = (_normal(0.0, 0.5, 600, 1), torch.arange(600) % 3)
    forgotten = (_normal(0.0, 0.5, 100, 2), torch.full((100,), 2))

    assert mia_efficacy(likelihood_ratio_attack, members, nonmembers, forgotten) == 1.0


def _synthetic_outputs(calibration_like_members: bool) -> dict[str, tuple[torch.Tensor, ...]]:
    """A model that memorised its training samples: members at log p/(1-p) ≈ 4, held-out
    samples ≈ 0, the forget samples held out too. The reporting half of the test set is made to
    look like members, so an attack fitted on it instead of the calibration half cannot find
    the difference."""
    labels = torch.arange(600) % 2

    def split(mean: float, seed: int, count: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
        rows = labels[:count]
        return _logits_with_scaled_confidence(_normal(mean, 1.0, count, seed), rows), rows

    return {
        "retain": split(4.0, 0),
        "forget": split(0.0, 1, 200),
        "test": split(4.0, 2),
        "calibration": split(4.0 if calibration_like_members else 0.0, 3),
    }


@pytest.mark.parametrize("attack", list(MIA_ATTACKS))
def test_every_attack_fits_on_retain_members_against_calibration_non_members(attack: str) -> None:
    metrics = split_metrics(_synthetic_outputs(False), num_classes=2, target_classes=[0, 1])

    # N(4, 1) vs N(0, 1): the best accuracy is Φ(2) ≈ 0.977.
    assert metrics[f"{attack}_attack_acc"] == pytest.approx(NormalDist().cdf(2.0), abs=0.03)
    assert metrics[attack] == pytest.approx(NormalDist().cdf(2.0), abs=0.04)


@pytest.mark.parametrize("attack", list(MIA_ATTACKS))
def test_attacks_report_chance_when_held_out_samples_look_like_members(attack: str) -> None:
    metrics = split_metrics(_synthetic_outputs(True), num_classes=2, target_classes=[0, 1])

    assert metrics[f"{attack}_attack_acc"] == pytest.approx(0.5, abs=0.06)


def _expected_attacks(model_ckpt: Path, data: DigitsDataModule) -> dict[str, float]:
    model, _ = load_classifier(str(model_ckpt))
    outputs = {}
    with torch.no_grad():
        for split in ("retain", "calibration", "forget"):
            images, labels = data.samples(split).tensors
            outputs[split] = (model(data.model_input(images)), labels)
    expected = {}
    for name, (score, attack) in MIA_ATTACKS.items():
        members, nonmembers, forget = (
            (score(*outputs[s]), outputs[s][1]) for s in ("retain", "calibration", "forget")
        )
        expected[name] = mia_efficacy(attack, members, nonmembers, forget)
        expected[f"{name}_attack_acc"] = attack_accuracy(attack, members, nonmembers)
    return expected


def test_evaluate_fits_the_attacks_on_the_calibration_half(
    original: Original, retrain_ckpt: Path, tmp_path: Path
) -> None:
    checkpoints = json.dumps({"original": str(original.ckpt), "retrain": str(retrain_ckpt)})
    run_dir = run_cli(
        "test",
        "evaluate.yaml",
        tmp_path,
        "evaluate",
        "--model.init_args.checkpoints",
        checkpoints,
        "--model.init_args.original",
        "null",
        "--data.init_args.split_manifest",
        str(original.manifest),
    )
    summary = json.loads((run_dir / "metrics.json").read_text())
    data = DigitsDataModule(split_manifest=str(original.manifest))

    for name, ckpt in (("original", original.ckpt), ("retrain", retrain_ckpt)):
        metrics = summary["models"][name]["metrics"]
        for metric, value in _expected_attacks(ckpt, data).items():
            assert metrics[metric] == pytest.approx(value, abs=1e-12), (name, metric)
    table = (run_dir / "table.md").read_text()
    original_row = next(line for line in table.splitlines() if line.startswith("| original |"))
    assert f"| {summary['models']['original']['metrics']['mia_lira_attack_acc']:.3f} |" in (
        original_row
    )


# --------------------------------------------------------------------------- probes


def _clusters(count: int, seed: int, informative: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Ten classes; informative: each a tight cluster around its own corner of 10-d space,
    otherwise features independent of the labels."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    noise = torch.randn(count, 10, generator=generator)
    features = 4.0 * F.one_hot(labels, 10).float() + noise if informative else noise
    return features, labels


@pytest.mark.parametrize(("informative", "expected"), [(True, 1.0), (False, 0.1)])
def test_linear_probe_accuracy_is_what_the_features_allow(
    informative: bool, expected: float
) -> None:
    train = _clusters(1000, 0, informative)
    test = _clusters(1000, 1, informative)

    assert linear_probe_accuracy(*train, *test) == pytest.approx(expected, abs=0.04)


def _misclassifying_head() -> torch.nn.Linear:
    # z1 - z0 = -1 at x = 1: the forget samples (x = 1, label 1) are all called class 0.
    head = torch.nn.Linear(1, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.25], [-0.25]]))
        head.bias.copy_(torch.tensor([0.25, -0.25]))
    return head


def test_relearn_steps_counts_the_adam_steps_until_the_target() -> None:
    head = _misclassifying_head()
    before = [p.detach().clone() for p in head.parameters()]
    inputs, labels = torch.ones(8, 1), torch.ones(8, dtype=torch.long)

    # Adam moves each of the four parameters by about lr per step, so z1 - z0 at x = 1 rises by
    # about 0.4: -1.0, -0.6, -0.2, +0.2 — right after the third step.
    assert relearn_steps(head, inputs, labels, inputs, labels, 1.0, lr=0.1) == 3
    assert relearn_steps(head, inputs, labels, inputs, labels, 1.0, lr=0.05) == 6
    assert relearn_steps(head, inputs, labels, inputs, labels, 0.0) == 0  # already there
    assert relearn_steps(head, inputs, labels, inputs, labels, 1.0, lr=0.1, max_steps=2) == 3
    for parameter, original_value in zip(head.parameters(), before, strict=True):
        assert torch.equal(parameter, original_value)  # the model under test is not touched


class CountingLookup(torch.nn.Module):
    """Logits read from a table by the input's index; counts the rows it was asked for."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.rows = 0

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        self.rows += len(indices)
        return self.logits[indices]


def test_reaches_accuracy_decides_as_the_whole_set_would_and_stops_early_when_far() -> None:
    generator = torch.Generator().manual_seed(0)
    for trial in range(200):
        total = int(torch.randint(1, 1200, (1,), generator=generator))
        logits = torch.randn(total, 3, generator=generator)
        labels = torch.randint(0, 3, (total,), generator=generator)
        full = int((logits.argmax(dim=1) == labels).sum()) / total
        targets = [full, full - 1 / total, full + 1 / total, 0.0, 1.0]
        targets.append(float(torch.rand(1, generator=generator)))
        for target in targets:
            model = CountingLookup(logits)
            decided = reaches_accuracy(model, torch.arange(total), labels, target, batch_size=64)
            assert decided == (full >= target), (trial, total, full, target)
    # Exactly at the target only if every later sample is right: all right, or right at the end.
    for right_from in (0, 100, 250):
        logits = torch.zeros(300, 2)
        logits[right_from:, 1] = 1.0
        labels = torch.ones(300, dtype=torch.long)
        target = (300 - right_from) / 300
        assert reaches_accuracy(CountingLookup(logits), torch.arange(300), labels, target, 64)
    # A forgotten class against a high target: settled within the first batches.
    wrong = torch.zeros(5000, 2)
    wrong[:, 0] = 1.0
    model = CountingLookup(wrong)
    assert not reaches_accuracy(model, torch.arange(5000), torch.ones(5000, dtype=torch.long), 0.9)
    assert model.rows <= 1024


# --------------------------------------------------------------------------- PS's early stop


LR = "0.002"  # three states: +0.068, +0.021 (restored), -0.030 (the stop)


class HeadTrajectory(L.Callback):
    """Records the final layer before every PS step: the states PS's early stop chooses from."""

    def __init__(self) -> None:
        self.states: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.heldout_level = float("nan")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        head = pl_module.model.prototypes
        self.states.append(
            (trainer.global_step, head.weight.detach().clone(), head.bias.detach().clone())
        )

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.heldout_level = pl_module.stopper.heldout_level


def _confidence_level(original: Original, data: DigitsDataModule) -> tuple[torch.Tensor, float]:
    """The forget samples' features, and the level PS must stop at: the original model's mean
    true-class confidence on calibration samples of the forget samples' classes, weighted by
    the forget set's class mix."""
    model, _ = load_classifier(str(original.ckpt))
    with torch.no_grad():
        forget_images, forget_labels = data.samples("forget").tensors
        features = model.forward_features(data.model_input(forget_images))
        images, labels = data.samples("calibration").tensors
        confidence = torch.softmax(model(data.model_input(images)), 1)[
            torch.arange(len(labels)), labels
        ]
    per_class = {int(c): float(confidence[labels == c].mean()) for c in labels.unique()}
    return features, sum(per_class[int(c)] for c in forget_labels) / len(forget_labels)


def test_ps_early_stop_restores_the_state_closest_to_the_calibration_level(
    original: Original, tmp_path: Path
) -> None:
    args = [
        "fit",
        "--config",
        str(CONFIGS / "ps.yaml"),
        "--run",
        "ps",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
        *QUIET,
        "--trainer.callbacks+=test_instrument.HeadTrajectory",
        "--model.init_args.original_ckpt",
        str(original.copy_to(tmp_path / "original")),
        # A request whose samples the short-trained original recognises more confidently
        # than held-out samples of their class (10% of class 2), so that PS has work to do.
        "--data.init_args.split_manifest",
        "null",
        "--data.init_args.forget_classes",
        "[2]",
        "--model.init_args.early_stop",
        "on",
        "--model.init_args.epochs",
        "300",
        "--model.init_args.lr",
        LR,
    ]
    cli = run_step(args)
    trajectory = next(c for c in cli.trainer.callbacks if isinstance(c, HeadTrajectory))
    data = DigitsDataModule(
        forget_classes=[2], split_manifest=str(tmp_path / "digits" / "ps" / "split.json")
    )
    features, level = _confidence_level(original, data)
    forget_labels = data.samples("forget").tensors[1]

    def excess(weight: torch.Tensor, bias: torch.Tensor) -> float:
        confidence = torch.softmax(F.linear(features, weight, bias), 1)
        return float(confidence[torch.arange(len(forget_labels)), forget_labels].mean()) - level

    assert trajectory.heldout_level == pytest.approx(level, abs=1e-6)
    excesses = [excess(weight, bias) for _, weight, bias in trajectory.states]
    # It stops at the first state at or below the level, and only there.
    assert all(e > 0 for e in excesses[:-1]) and excesses[-1] <= 0, excesses
    closest = min(range(len(excesses)), key=lambda i: abs(excesses[i]))
    record = load_checkpoint(result_checkpoint(tmp_path / "digits" / "ps"))
    step, weight, bias = trajectory.states[closest]
    assert record["ps_lightning"]["unlearning"]["restored_step"] == step
    assert torch.allclose(record["state_dict"]["net.fc.weight"], weight)
    assert torch.allclose(record["state_dict"]["net.fc.bias"], bias)
    # Not vacuous: the last step overshot, so the restored state is an earlier one.
    assert closest < len(excesses) - 1 and not math.isclose(excesses[-1], excesses[closest])
