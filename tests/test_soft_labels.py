"""Soft labels of Prototype Surgery (docs/design.md §3) on cases computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ps_lightning.prototype_surgery.soft_labels import (
    paper_cross_entropy,
    soft_cross_entropy,
    soft_labels,
)


def _softmax(values: list[float]) -> list[float]:
    exps = [0.0 if v == -math.inf else math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def _by_hand(z: list[float], y: int, top_k: int = 2) -> list[float]:
    """docs/design.md §3 step by step: drop y, its logit goes to the top_k other classes in
    proportion to the softmax of their own logits, then softmax."""
    others = sorted((c for c in range(len(z)) if c != y), key=lambda c: -z[c])[:top_k]
    shares = _softmax([z[c] for c in others])
    shifted = list(z)
    shifted[y] = -math.inf
    for c, share in zip(others, shares, strict=True):
        shifted[c] += z[y] * share
    return _softmax(shifted)


def _target(z: list[float], y: int, top_k: int = 2) -> torch.Tensor:
    return soft_labels(torch.tensor([z]), torch.tensor([y]), top_k)[0].double()


def test_true_class_on_top_gives_its_logit_to_the_two_runner_ups() -> None:
    z, y = [1.0, 2.0, 3.0], 2
    p_a = math.exp(2) / (math.exp(2) + math.exp(1))  # class 1, the runner-up
    shifted = [1.0 + 3.0 * (1 - p_a), 2.0 + 3.0 * p_a]
    expected = [*_softmax(shifted), 0.0]

    torch.testing.assert_close(_target(z, y), torch.tensor(expected).double(), rtol=0, atol=1e-6)


def test_true_class_not_on_top_still_loses_all_its_mass() -> None:
    z, y = [3.0, 1.0, 2.0, -4.0], 1
    expected = torch.tensor(_by_hand(z, y)).double()

    target = _target(z, y)

    torch.testing.assert_close(target, expected, rtol=0, atol=1e-6)
    assert target[1] == 0.0
    assert target[3] > 0  # not a runner-up: keeps its own (small) share
    # Classes 0 and 2 inherit z[y] = 1 in proportion softmax(3, 2).
    p0 = math.exp(3) / (math.exp(3) + math.exp(2))
    assert math.isclose(
        float(target[0] / target[2]), math.exp((3 + p0) - (2 + 1 - p0)), rel_tol=1e-5
    )


def test_two_classes_give_everything_to_the_other_class() -> None:
    for z, y, expected in (
        ([0.5, -1.0], 0, [0.0, 1.0]),
        ([0.5, -1.0], 1, [1.0, 0.0]),
        ([-3.0, 7.0], 1, [1.0, 0.0]),
    ):
        for top_k in (1, 2):
            assert _target(z, y, top_k).tolist() == expected


@pytest.mark.parametrize("top_k", [1, 3])
def test_top_k_runner_ups_inherit_the_true_logit(top_k: int) -> None:
    z, y = [1.0, 4.0, 2.0, 0.0, -1.0], 1
    target = _target(z, y, top_k)
    torch.testing.assert_close(
        target, torch.tensor(_by_hand(z, y, top_k)).double(), atol=1e-6, rtol=0
    )
    if top_k == 1:
        # all of z[y] = 4 goes to class 2: shifted logits (1, -inf, 6, 0, -1)
        torch.testing.assert_close(
            target, torch.tensor(_softmax([1, -math.inf, 6, 0, -1])).double(), atol=1e-6, rtol=0
        )


def test_top_k_larger_than_the_other_classes_shares_among_all_of_them() -> None:
    z, y = [0.2, 1.5, -0.7], 0
    torch.testing.assert_close(
        _target(z, y, top_k=5), torch.tensor(_by_hand(z, y, top_k=2)).double(), atol=1e-6, rtol=0
    )


def test_runner_ups_are_chosen_among_the_other_classes_even_with_a_negative_true_logit() -> None:
    # The original code zeroed z[y] and then took the top two, which here picks y itself.
    z, y = [-1.0, -5.0, -6.0], 0
    target = _target(z, y)
    assert target[0] == 0.0
    torch.testing.assert_close(target, torch.tensor(_by_hand(z, y)).double(), atol=1e-6, rtol=0)


def test_batch_equals_row_by_row_and_rows_are_distributions() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=generator) * 4
    labels = torch.randint(0, 7, (50,), generator=generator)

    batch = soft_labels(logits, labels)

    rows = torch.cat([soft_labels(logits[i : i + 1], labels[i : i + 1]) for i in range(50)])
    assert torch.equal(batch, rows)
    assert torch.all(batch.gather(1, labels[:, None]) == 0)
    torch.testing.assert_close(batch.sum(dim=1), torch.ones(50), rtol=0, atol=1e-6)
    for i in range(50):
        expected = torch.tensor(_by_hand(logits[i].tolist(), int(labels[i])))
        torch.testing.assert_close(batch[i], expected.float(), rtol=0, atol=1e-6)


def test_soft_labels_carry_no_gradient_to_the_original_logits() -> None:
    logits = torch.randn(4, 5, requires_grad=True)
    assert not soft_labels(logits, torch.tensor([0, 1, 2, 3])).requires_grad


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="top_k"):
        soft_labels(torch.zeros(2, 3), torch.tensor([0, 1]), top_k=0)
    with pytest.raises(ValueError, match="two classes"):
        soft_labels(torch.zeros(2, 1), torch.tensor([0, 0]))


def test_soft_cross_entropy_equals_cross_entropy_on_one_hot_targets() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(32, 10, generator=generator, requires_grad=True)
    labels = torch.randint(0, 10, (32,), generator=generator)

    soft = soft_cross_entropy(logits, F.one_hot(labels, 10).float())
    hard = F.cross_entropy(logits, labels)

    torch.testing.assert_close(soft, hard, rtol=1e-6, atol=1e-6)
    (soft_grad,) = torch.autograd.grad(soft, logits)
    (hard_grad,) = torch.autograd.grad(hard, logits)
    torch.testing.assert_close(soft_grad, hard_grad, rtol=1e-6, atol=1e-7)


def test_soft_cross_entropy_is_minimal_at_the_target_distribution() -> None:
    targets = torch.softmax(torch.tensor([[2.0, 0.5, -1.0, 0.0]]), dim=1)
    at_target = soft_cross_entropy(targets.log(), targets)
    entropy = -(targets * targets.log()).sum()
    torch.testing.assert_close(at_target, entropy)
    assert soft_cross_entropy(torch.zeros(1, 4), targets) > at_target


def test_paper_loss_is_cross_entropy_on_the_softmax_of_the_logits_as_the_reference_has_it() -> None:
    # link4sourcecode/PS-Unlearning, utils/models.py FT_relabel, restated literally:
    # outputs = torch.softmax(outputs, dim=1); loss = nn.CrossEntropyLoss()(outputs, labels),
    # with the soft labels as probability targets.
    generator = torch.Generator().manual_seed(3)
    logits = (3 * torch.randn(6, 5, generator=generator)).requires_grad_()
    targets = soft_labels(torch.randn(6, 5, generator=generator), torch.tensor([0, 1, 2, 3, 4, 1]))
    literal_logits = logits.detach().clone().requires_grad_()

    ours = paper_cross_entropy(logits, targets)
    reference = torch.nn.CrossEntropyLoss()(torch.softmax(literal_logits, dim=1), targets)
    ours.backward()
    reference.backward()

    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits.grad, literal_logits.grad, rtol=0, atol=1e-7)
    # Not the single-softmax loss: the double softmax is a different objective.
    assert abs(float(ours) - float(soft_cross_entropy(logits, targets))) > 0.1
