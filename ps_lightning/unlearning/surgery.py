"""Naive Prototype Surgery in closed form (DESIGN §2), over plain tensors.

The paper writes the learned change of the prototypes as a combination of training features,
``Θ = (W − W0) · pinv(F)`` (one column per sample), and removes the forget samples' columns:
``W_new = W0 + Θ[:, r] · F_r``. Since ``pinv(F) = (FᵀF)⁺ Fᵀ``, the same result is

    W_new = W0 + (W − W0) · G⁺ · (G − G_f),   G = FᵀF,  G_f = F_fᵀ F_f

which needs only d×d matrices: no N×d pseudo-inverse, no N features held at once. ``G`` is a sum
over batches (so it all-reduces across processes), accumulated in float64 because the algebra
squares the features' condition number.
"""

from __future__ import annotations

import torch


def gram(features: torch.Tensor) -> torch.Tensor:
    """``FᵀF`` of one batch of features (B×d), in float64."""
    f = features.detach().to(torch.float64)
    return f.T @ f


def accumulate_gram(total: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor:
    """Add one batch's ``FᵀF`` to a running float64 sum (``None`` starts one)."""
    batch_gram = gram(features)
    return batch_gram if total is None else total.add_(batch_gram.to(total.device))


def surgery_projection(
    weight: torch.Tensor, initial_weight: torch.Tensor, full_gram: torch.Tensor
) -> torch.Tensor:
    """``(W − W0) · G⁺`` (C×d, float64): the part of a request's cost that depends only on the
    original model, cached once per model in the surgery index.

    The Moore–Penrose pseudo-inverse, not ``G⁻¹``: a dead (always-zero) feature makes ``G``
    singular, and the pseudo-inverse is what reproduces the paper's ``pinv(F)`` formula.
    """
    delta = (weight.detach() - initial_weight.detach()).to(torch.float64)
    return delta @ torch.linalg.pinv(full_gram, hermitian=True)


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
) -> torch.Tensor:
    """The new prototypes after removing the samples whose Gram matrix is ``forget_gram``."""
    projection = surgery_projection(weight, initial_weight, full_gram)
    return apply_surgery(initial_weight, projection, full_gram, forget_gram)
