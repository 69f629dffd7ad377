"""Naive Prototype Surgery in closed form (DESIGN §2) against the paper's explicit formula."""

from __future__ import annotations

import pytest
import torch

from ps_lightning.unlearning.surgery import (
    accumulate_gram,
    apply_surgery,
    gram,
    naive_prototype_surgery,
    surgery_projection,
)

N, D, C = 40, 6, 3
DEAD = 2  # a feature that is zero for every sample: G is singular


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(N, D, generator=generator, dtype=torch.float64)
    features[:, DEAD] = 0.0
    weight = torch.randn(C, D, generator=generator, dtype=torch.float64)
    initial = torch.randn(C, D, generator=generator, dtype=torch.float64)
    return features, weight, initial


def _paper_formula(
    weight: torch.Tensor, initial: torch.Tensor, features: torch.Tensor, forget: torch.Tensor
) -> torch.Tensor:
    """``W0 + Θ[:, r] · F_r`` with ``Θ = (W − W0) · pinv(F)``: the paper's N-column form."""
    theta = (weight - initial) @ torch.linalg.pinv(features)
    retain = torch.ones(len(features), dtype=torch.bool)
    retain[forget] = False
    return initial + theta[:, retain] @ features[retain]


FORGET_SETS = {
    "one sample": [7],
    "a block": list(range(5, 15)),
    "scattered": [0, 3, 11, 12, 25, 39],
    "all but one": list(range(1, N)),
}


@pytest.mark.parametrize("forget", FORGET_SETS.values(), ids=FORGET_SETS.keys())
def test_gram_form_equals_the_papers_pinv_formula_with_a_dead_feature(forget: list[int]) -> None:
    features, weight, initial = _problem()
    forget_t = torch.tensor(forget)
    assert torch.linalg.matrix_rank(gram(features)) == D - 1  # the dead feature is real

    result = naive_prototype_surgery(weight, initial, gram(features), gram(features[forget_t]))

    expected = _paper_formula(weight, initial, features, forget_t)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-10)


def test_gram_accumulated_in_batches_gives_the_same_surgery() -> None:
    features, weight, initial = _problem(seed=1)
    forget = torch.tensor([1, 2, 3, 20, 33])
    total = None
    for batch in features.split(7):  # uneven batches, the last one shorter
        total = accumulate_gram(total, batch)
    assert total is not None
    torch.testing.assert_close(total, features.T @ features, rtol=0, atol=1e-12)

    projection = surgery_projection(weight, initial, total)
    result = apply_surgery(initial, projection, total, gram(features[forget]))

    torch.testing.assert_close(
        result, _paper_formula(weight, initial, features, forget), rtol=0, atol=1e-10
    )


def test_float32_features_are_accumulated_in_float64() -> None:
    features, _, _ = _problem(seed=2)
    single = features.float()
    total = accumulate_gram(torch.zeros(D, D, dtype=torch.float64), single)
    assert total.dtype == torch.float64
    exact = single.double().T @ single.double()
    torch.testing.assert_close(total, exact, rtol=0, atol=1e-12)


def test_removing_nothing_returns_the_trained_prototypes() -> None:
    # The paper's premise: the learned change lies in the span of the training features,
    # W − W0 = A · F. Then W0 + (W − W0)·G⁺·G = W exactly, also with a dead feature.
    features, _, initial = _problem(seed=3)
    coefficients = torch.randn(
        C, N, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    weight = initial + coefficients @ features

    result = naive_prototype_surgery(weight, initial, gram(features), torch.zeros(D, D).double())

    torch.testing.assert_close(result, weight, rtol=0, atol=1e-10)


def test_removing_every_sample_returns_the_initial_prototypes() -> None:
    features, weight, initial = _problem(seed=5)
    full = gram(features)

    result = naive_prototype_surgery(weight, initial, full, full)

    torch.testing.assert_close(result, initial, rtol=0, atol=1e-10)


def test_removal_is_additive_over_disjoint_requests() -> None:
    # What cumulative requests rely on: removing A then B is removing A ∪ B.
    features, weight, initial = _problem(seed=6)
    first, second = torch.tensor([0, 4, 9]), torch.tensor([10, 17, 30])
    both = torch.cat([first, second])
    full = gram(features)
    projection = surgery_projection(weight, initial, full)

    sequential = apply_surgery(
        initial, projection, full, gram(features[first]) + gram(features[second])
    )

    torch.testing.assert_close(
        sequential, _paper_formula(weight, initial, features, both), rtol=0, atol=1e-10
    )


def test_surgery_returns_the_dtype_of_the_prototypes() -> None:
    features, weight, initial = _problem(seed=7)
    result = naive_prototype_surgery(
        weight.float(), initial.float(), gram(features), gram(features[:5])
    )
    assert result.dtype == torch.float32
    torch.testing.assert_close(
        result.double(),
        _paper_formula(
            weight.float().double(), initial.float().double(), features, torch.arange(5)
        ),
        rtol=0,
        atol=1e-5,
    )
