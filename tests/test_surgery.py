"""Naive Prototype Surgery in closed form (docs/design.md §2) against the paper's explicit
formula."""

from __future__ import annotations

import pytest
import torch

from ps_lightning.prototype_surgery.closed_form import (
    accumulate_gram,
    apply_surgery,
    augmented_gram,
    cutoff_rtol,
    gram,
    naive_head_surgery,
    naive_prototype_surgery,
    noise_floor_rtol,
    surgery_projection,
    truncated_pinv,
    with_constant,
)

N, D, C = 40, 6, 3
DEAD = 2  # a feature that is zero for every sample: G is singular
# The default cutoff (rcond auto) for these float64 features.
RTOL = noise_floor_rtol(D, torch.float64)


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

    result, _ = naive_prototype_surgery(
        weight, initial, gram(features), gram(features[forget_t]), RTOL
    )

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

    projection, _ = surgery_projection(weight, initial, total, RTOL)
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

    result, _ = naive_prototype_surgery(
        weight, initial, gram(features), torch.zeros(D, D).double(), RTOL
    )

    torch.testing.assert_close(result, weight, rtol=0, atol=1e-10)


def test_removing_every_sample_returns_the_initial_prototypes() -> None:
    features, weight, initial = _problem(seed=5)
    full = gram(features)

    result, _ = naive_prototype_surgery(weight, initial, full, full, RTOL)

    torch.testing.assert_close(result, initial, rtol=0, atol=1e-10)


def test_removal_is_additive_over_disjoint_requests() -> None:
    # What cumulative requests rely on: removing A then B is removing A ∪ B.
    features, weight, initial = _problem(seed=6)
    first, second = torch.tensor([0, 4, 9]), torch.tensor([10, 17, 30])
    both = torch.cat([first, second])
    full = gram(features)
    projection, _ = surgery_projection(weight, initial, full, RTOL)

    sequential = apply_surgery(
        initial, projection, full, gram(features[first]) + gram(features[second])
    )

    torch.testing.assert_close(
        sequential, _paper_formula(weight, initial, features, both), rtol=0, atol=1e-10
    )


def test_surgery_returns_the_dtype_of_the_prototypes() -> None:
    features, weight, initial = _problem(seed=7)
    result, _ = naive_prototype_surgery(
        weight.float(), initial.float(), gram(features), gram(features[:5]), RTOL
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


# --------------------------------------------------------------------------- the cutoff of G⁺


def _trained_on_ill_conditioned_float32_features() -> tuple[torch.Tensor, ...]:
    """Features as a real network gives them, and a head trained the way a real one is.

    Dead units (always zero), near-collinear units (one unit a combination of others up to
    1e-5), stored in float32; the head is trained by gradient descent on augmented features
    (the training pass never sees exactly the evaluation features), so ``W − W0`` is not
    exactly in the span of the stored features.
    """
    generator = torch.Generator().manual_seed(0)
    n, d, c = 600, 16, 4
    labels = torch.arange(n) % c

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    means = 2 * noise(c, d)
    features = torch.relu(means[labels] + noise(n, d))
    features[:, :3] = 0.0
    features[:, 4] = features[:, 3] + 1e-5 * noise(n)
    features[:, 6] = 0.5 * features[:, 5] - 0.25 * features[:, 7] + 1e-5 * noise(n)
    features[:, 9] = features[:, 8] - features[:, 10] + 1e-5 * noise(n)
    initial = 0.1 * noise(c, d)
    weight = initial.clone()
    for _ in range(200):
        augmented = features + 0.05 * noise(n, d) * (features != 0)
        residual = torch.softmax(augmented @ weight.T, dim=1)
        residual[torch.arange(n), labels] -= 1
        weight -= 0.05 * residual.T @ augmented / n
    return features.float(), labels, weight.float(), initial.float()


def test_noise_floor_cutoff_keeps_retain_accuracy_where_the_uncut_surgery_wrecks_it() -> None:
    features, labels, weight, initial = _trained_on_ill_conditioned_float32_features()
    forget = torch.arange(0, 60, 4)
    retain = torch.ones(len(features), dtype=torch.bool)
    retain[forget] = False

    def retain_accuracy(prototypes: torch.Tensor) -> float:
        predictions = (features[retain] @ prototypes.T).argmax(dim=1)
        return float((predictions == labels[retain]).float().mean())

    full, removed = gram(features), gram(features[forget])
    eigenvalues = torch.linalg.eigvalsh(full)
    relative = eigenvalues / eigenvalues.max()
    float32_floor = noise_floor_rtol(features.shape[1], features.dtype)
    # Not vacuous: eigenvalues between the float64 and the float32 floors exist.
    assert bool(((relative > 1e-13) & (relative < float32_floor)).any())
    original = retain_accuracy(weight)

    float64_floor = noise_floor_rtol(features.shape[1], torch.float64)
    uncut, _ = naive_prototype_surgery(weight, initial, full, removed, float64_floor)
    at_floor, _ = naive_prototype_surgery(weight, initial, full, removed, float32_floor)

    assert retain_accuracy(uncut) < original - 0.15
    assert retain_accuracy(at_floor) >= original - 0.005


def test_noise_floor_is_the_rank_rule_at_the_datas_precision() -> None:
    assert noise_floor_rtol(64, torch.float32) == 64 * torch.finfo(torch.float32).eps
    assert noise_floor_rtol(65, torch.float64) == 65 * torch.finfo(torch.float64).eps


def test_auto_cutoff_is_the_noise_floor_of_the_features_dtype_and_a_number_is_kept() -> None:
    assert cutoff_rtol("auto", 64, torch.float32) == noise_floor_rtol(64, torch.float32)
    assert cutoff_rtol("auto", 64, torch.float16) == noise_floor_rtol(64, torch.float16)
    assert cutoff_rtol(1e-9, 64, torch.float32) == 1e-9
    with pytest.raises(ValueError, match="rcond must be 'auto' or a number >= 0"):
        cutoff_rtol(-1e-3, 64, torch.float32)


@pytest.mark.parametrize("with_bias", [False, True])
def test_head_surgery_reports_the_rank_of_the_gram_it_inverted(with_bias: bool) -> None:
    # The dead feature leaves the plain G rank D − 1; the constant column adds one with the bias.
    features, weight, initial = _problem(seed=12)
    head = (weight, torch.zeros(C, dtype=torch.float64))
    full, removed = augmented_gram(features), augmented_gram(features[:4])

    *_, rank = naive_head_surgery(head, (initial, head[1]), full, removed, RTOL, with_bias)

    assert rank == (D if with_bias else D - 1)


@pytest.mark.parametrize("rtol", [0.0, 1e-12, 1e-3, 0.3])
def test_truncated_pinv_drops_the_eigenvalues_that_torch_pinv_drops(rtol: float) -> None:
    features, _, _ = _problem(seed=8)
    features[:, 4] = features[:, 3] + 1e-4 * features[:, 1]  # a small, not zero, eigenvalue
    full = gram(features)

    inverse, rank = truncated_pinv(full, rtol)

    expected = torch.linalg.pinv(full, rtol=rtol, hermitian=True) if rtol else None
    if expected is not None:
        torch.testing.assert_close(inverse, expected, rtol=1e-9, atol=1e-12)
    eigenvalues = torch.linalg.eigvalsh(full).abs()
    assert rank == int((eigenvalues > rtol * eigenvalues.max()).sum())


# --------------------------------------------------------------------------- bias-aware surgery


@pytest.mark.parametrize("forget", FORGET_SETS.values(), ids=FORGET_SETS.keys())
def test_bias_aware_surgery_is_the_papers_formula_on_features_with_a_constant(
    forget: list[int],
) -> None:
    features, weight, initial = _problem(seed=9)
    generator = torch.Generator().manual_seed(10)
    bias = torch.randn(C, generator=generator, dtype=torch.float64)
    initial_bias = torch.randn(C, generator=generator, dtype=torch.float64)
    forget_t = torch.tensor(forget)

    new_weight, new_bias, _ = naive_head_surgery(
        (weight, bias),
        (initial, initial_bias),
        augmented_gram(features),
        augmented_gram(features[forget_t]),
        noise_floor_rtol(D + 1, torch.float64),
        with_bias=True,
    )

    expected = _paper_formula(
        torch.cat([weight, bias[:, None]], dim=1),
        torch.cat([initial, initial_bias[:, None]], dim=1),
        with_constant(features),
        forget_t,
    )
    torch.testing.assert_close(new_weight, expected[:, :D], rtol=0, atol=1e-10)
    torch.testing.assert_close(new_bias, expected[:, D], rtol=0, atol=1e-10)


def test_surgery_without_the_bias_uses_the_plain_block_and_keeps_the_bias() -> None:
    features, weight, initial = _problem(seed=11)
    bias, initial_bias = torch.ones(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)
    forget = torch.tensor([2, 5, 30])
    full, removed = augmented_gram(features), augmented_gram(features[forget])
    # N×(D+1) vs N×D products: BLAS may sum in another order; entries ≤ 53, so ≤ 2.4e-13 off.
    torch.testing.assert_close(full[:D, :D], gram(features), rtol=0, atol=1e-12)

    new_weight, new_bias, _ = naive_head_surgery(
        (weight, bias), (initial, initial_bias), full, removed, 1e-12, with_bias=False
    )

    torch.testing.assert_close(
        new_weight, _paper_formula(weight, initial, features, forget), rtol=0, atol=1e-10
    )
    assert torch.equal(new_bias, bias)
