"""Naive Prototype Surgery in closed form (docs/design.md §2), over plain tensors.

The paper writes the learned change of the prototypes as a combination of training features,
``Θ = (W − W0) · pinv(F)`` (one column per sample), and removes the forget samples' columns:
``W_new = W0 + Θ[:, r] · F_r``. Since ``pinv(F) = (FᵀF)⁺ Fᵀ``, the same result is

    W_new = W0 + (W − W0) · G⁺ · (G − G_f),   G = FᵀF,  G_f = F_fᵀ F_f

which needs only d×d matrices: no N×d pseudo-inverse, no N features held at once. ``G`` is a sum
over batches (so it all-reduces across processes), accumulated in float64 because the algebra
squares the features' condition number.

The bias-aware variant treats the head ``[W, b]`` as prototypes of the augmented features
``[f, 1]`` (the initial bias ``b0`` playing the part of ``W0`` for the constant feature). The
Gram matrix of ``[f, 1]`` holds the plain ``G`` as its top-left d×d block, so one augmented Gram
serves both variants.

**The cutoff of G⁺.** The features come out of the network in float32 (or whatever their dtype):
each entry carries a relative rounding error of about ε (the dtype's machine epsilon), so the
computed ``F̃ = F + E`` with ``‖E‖₂ ≲ √d·ε·‖F‖₂`` and ``G̃ = G + FᵀE + EᵀF + O(ε²)``:
``‖G̃ − G‖₂ ≲ 2√d·ε·λmax`` (λmax the largest eigenvalue of G). By Weyl's inequality every
eigenvalue of G moves by up to that much, so an eigenvalue below ~d·ε·λmax (d ≥ 2√d for d ≥ 4)
is indistinguishable from rounding noise, and its eigendirection is not determined by the data.
Inverting it multiplies noise by up to 1/(d·ε) and throws the new prototypes far out of the span
the model learned in. The rule is NumPy's/LAPACK's rank rule (``rtol = max(m, n)·ε``) applied
with the precision of the *data*: ``rtol = d·ε(feature dtype)`` relative to λmax (for float32
features and d = 64: 7.6e-6). With float64 features it is the float64 default of
``torch.linalg.pinv``, so the identity with the paper's explicit ``pinv(F)`` still holds there.
"""

from __future__ import annotations

from typing import Literal

import torch

# The cutoff a user asks for: an eigenvalue share, or "auto", the noise floor of the features'
# dtype (`cutoff_rtol`), the one default.
Rcond = float | Literal["auto"]


def with_constant(features: torch.Tensor) -> torch.Tensor:
    """``[f, 1]``: the features with a constant column appended, the bias's input."""
    return torch.cat([features, features.new_ones(len(features), 1)], dim=1)


def gram(features: torch.Tensor) -> torch.Tensor:
    """``FᵀF`` of one batch of features (B×d), in float64."""
    f = features.detach().to(torch.float64)
    return f.T @ f


def augmented_gram(features: torch.Tensor) -> torch.Tensor:
    """The (d+1)×(d+1) Gram matrix of ``[f, 1]`` in float64; its top-left d×d block is ``FᵀF``."""
    return gram(with_constant(features.detach().to(torch.float64)))


def accumulate_gram(total: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor:
    """Add one batch's ``FᵀF`` to a running float64 sum (``None`` starts one)."""
    batch_gram = gram(features)
    return batch_gram if total is None else total.add_(batch_gram.to(total.device))


def noise_floor_rtol(dim: int, feature_dtype: torch.dtype) -> float:
    """``d·ε(feature dtype)``: eigenvalues of a d×d Gram matrix below this fraction of the
    largest are rounding noise of features stored in ``feature_dtype`` (module docstring)."""
    return dim * torch.finfo(feature_dtype).eps


def cutoff_rtol(rcond: Rcond, dim: int, feature_dtype: torch.dtype) -> float:
    """The eigenvalue cutoff of the d×d Gram matrix's pseudo-inverse, relative to its largest
    eigenvalue: ``rcond`` itself, or for ``"auto"`` the noise floor of features stored in
    ``feature_dtype`` (`noise_floor_rtol`). The one place ``"auto"`` is resolved."""
    rtol = noise_floor_rtol(dim, feature_dtype) if rcond == "auto" else float(rcond)
    if not rtol >= 0:
        raise ValueError(f"rcond must be 'auto' or a number >= 0, got {rcond!r}.")
    return rtol


def truncated_pinv(matrix: torch.Tensor, rtol: float) -> tuple[torch.Tensor, int]:
    """Pseudo-inverse of a symmetric positive semi-definite matrix that drops every eigenvalue
    whose magnitude is at most ``rtol`` times the largest; also returns how many it kept.

    The same rule as ``torch.linalg.pinv(matrix, rtol=rtol, hermitian=True)``, done through one
    eigendecomposition so that the kept rank is known.
    """
    if rtol < 0:
        raise ValueError(f"rtol must be >= 0, got {rtol}.")
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    magnitude = eigenvalues.abs()
    kept = magnitude > rtol * magnitude.max() if len(magnitude) else magnitude.bool()
    inverse = torch.where(kept, 1.0 / torch.where(kept, eigenvalues, 1.0), 0.0)
    return (eigenvectors * inverse) @ eigenvectors.T, int(kept.sum())


def surgery_projection(
    weight: torch.Tensor,
    initial_weight: torch.Tensor,
    full_gram: torch.Tensor,
    rtol: float,
) -> tuple[torch.Tensor, int]:
    """``(W − W0) · G⁺`` (C×d, float64): the part of a request's cost that depends only on the
    original model; also the rank of ``G⁺`` (one eigendecomposition gives both).

    The Moore–Penrose pseudo-inverse, not ``G⁻¹``: a dead (always-zero) feature makes ``G``
    singular, and the pseudo-inverse is what reproduces the paper's ``pinv(F)`` formula.
    ``rtol``: the eigenvalue cutoff relative to the largest (`cutoff_rtol`).
    """
    delta = (weight.detach() - initial_weight.detach()).to(torch.float64)
    inverse, rank = truncated_pinv(full_gram, rtol)
    return delta @ inverse, rank


def apply_surgery(
    initial_weight: torch.Tensor,
    projection: torch.Tensor,
    full_gram: torch.Tensor,
    forget_gram: torch.Tensor,
) -> torch.Tensor:
    """``W0 + (W − W0)·G⁺·(G − G_f)``, returned in the dtype of ``initial_weight``."""
    new_weight = initial_weight.to(torch.float64) + projection @ (full_gram - forget_gram)
    return new_weight.to(initial_weight.dtype)


def naive_prototype_surgery(
    weight: torch.Tensor,
    initial_weight: torch.Tensor,
    full_gram: torch.Tensor,
    forget_gram: torch.Tensor,
    rtol: float,
) -> tuple[torch.Tensor, int]:
    """The new prototypes after removing the samples whose Gram matrix is ``forget_gram``, and
    the rank of the pseudo-inverse used."""
    projection, rank = surgery_projection(weight, initial_weight, full_gram, rtol)
    return apply_surgery(initial_weight, projection, full_gram, forget_gram), rank


def naive_head_surgery(
    head: tuple[torch.Tensor, torch.Tensor],
    initial_head: tuple[torch.Tensor, torch.Tensor],
    full_augmented_gram: torch.Tensor,
    forget_augmented_gram: torch.Tensor,
    rtol: float,
    with_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Naive PS of a final layer ``(W, b)``; returns the new ``(W, b)`` and the rank of the
    pseudo-inverse used.

    Both Gram matrices are over ``[f, 1]`` ((d+1)×(d+1)). ``with_bias``: operate on ``[W, b]``
    against ``[f, 1]`` with ``[W0, b0]`` as the initial state; otherwise on ``W`` against ``f``
    (the top-left blocks) and keep ``b`` as it is (the paper).
    """
    weight, bias = head
    initial_weight, initial_bias = initial_head
    if not with_bias:
        dim = weight.shape[1]
        new_weight, rank = naive_prototype_surgery(
            weight,
            initial_weight,
            full_augmented_gram[:dim, :dim],
            forget_augmented_gram[:dim, :dim],
            rtol,
        )
        return new_weight, bias.detach().clone(), rank
    joined = torch.cat([weight.detach(), bias.detach()[:, None]], dim=1)
    initial_joined = torch.cat([initial_weight.detach(), initial_bias.detach()[:, None]], dim=1)
    new_joined, rank = naive_prototype_surgery(
        joined, initial_joined, full_augmented_gram, forget_augmented_gram, rtol
    )
    return new_joined[:, :-1].contiguous(), new_joined[:, -1].contiguous(), rank
