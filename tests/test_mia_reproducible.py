"""The membership attacks' numbers depend only on the models' outputs and the attacks' seed:
not on the global random state that whatever ran before left, nor on the thread count.

(The demo table's MIA columns still move between machines: the trained weights do, with the
thread count and CPU kernels of training; see the README's demo table. This pins the part the
evaluation controls.)"""

from __future__ import annotations

import random

import numpy as np
import torch

from ps_lightning.metrics import (
    MIA_ATTACKS,
    attack_accuracy,
    mia_efficacy,
    split_metrics,
)

MIA_COLUMNS = [name for attack in MIA_ATTACKS for name in (attack, f"{attack}_attack_acc")]


def _logits(count: int, seed: int, confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo's situation: well-classified samples, members and non-members alike (an
    attack near chance, so which members it draws and how it splits them moves its numbers)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (count,), generator=generator)
    logits = torch.randn(count, 10, generator=generator)
    logits[torch.arange(count), labels] += confidence + torch.randn(count, generator=generator)
    return logits, labels


# As in `make demo`: 1422 retain, 180 + 180 test halves, 15 forget samples.
OUTPUTS = {
    "retain": _logits(1422, 0, 8.0),
    "calibration": _logits(180, 1, 7.8),
    "test": _logits(180, 2, 7.8),
    "forget": _logits(15, 3, 7.9),
}


def _mia_columns() -> dict[str, float]:
    metrics = split_metrics(OUTPUTS, num_classes=10, target_classes=[1])
    return {name: metrics[name] for name in MIA_COLUMNS}


def _disturb_global_random_state(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    np.random.rand(seed + 1)
    torch.rand(seed + 1)


def test_the_attacks_seed_decides_their_numbers() -> None:
    """Otherwise the tests below could not tell a seeded attack from an unseeded one."""
    for score, attack in MIA_ATTACKS.values():
        members, nonmembers, forget = (
            (score(*OUTPUTS[split]), OUTPUTS[split][1])
            for split in ("retain", "calibration", "forget")
        )
        by_seed = {
            (
                mia_efficacy(attack, members, nonmembers, forget, seed=seed),
                attack_accuracy(attack, members, nonmembers, seed=seed),
            )
            for seed in range(4)
        }
        assert len(by_seed) > 1, score.__name__


def test_mia_columns_ignore_the_global_random_state() -> None:
    _disturb_global_random_state(1)
    first = _mia_columns()
    for seed in (2, 12345):
        _disturb_global_random_state(seed)
        assert _mia_columns() == first


def test_mia_columns_do_not_depend_on_the_thread_count() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = _mia_columns()
        torch.set_num_threads(2)
        assert _mia_columns() == one_thread
    finally:
        torch.set_num_threads(before)
