"""Fine-tuning (FT) and l1-sparse fine-tuning.

FT: train the original model on the retain set only, so that the forget set fades by
catastrophic forgetting (Warnecke et al. 2023; the SalUn and l1-sparse code run SGD, momentum
0.9, weight decay 5e-4, lr 0.01, 10 epochs on CIFAR-10).

Both as in OPTML-Group/Unlearn-Saliency, ``Classification/unlearn/FT.py`` (``FT`` and
``FT_l1``, run each epoch by ``iterative_unlearn``, ``Classification/unlearn/impl.py``): one
pass over the retain set per epoch, one SGD step per batch, at a constant learning rate. The
reference's schedule is ``MultiStepLR(milestones=--decreasing_lr, gamma=0.1)`` stepped once per
epoch, with ``--decreasing_lr`` "91,136" and ``--warmup`` 0 by default
(``Classification/arg_parser.py``), so in its 10 epochs (``--unlearn_epochs``) at
``--unlearn_lr`` 0.01 the learning rate never changes.

l1-sparse (Jia et al. 2023, "Model Sparsity Can Simplify Machine Unlearning"; also
OPTML-Group/Unlearn-Sparse, ``unlearn/FT.py``): FT with an l1 penalty on all weights,
``alpha · (1 − epoch / epochs) · ‖θ‖₁`` at epoch ``epoch`` (from 0), so the coefficient falls
linearly from ``alpha`` at the first epoch to ``alpha / epochs`` at the last (0.1·alpha for the
reference's 10 epochs), never to 0: ``FT_iter``'s ``args.alpha * (1 - epoch /
(args.unlearn_epochs - args.no_l1_epochs))`` with ``no_l1_epochs`` 0 (neither repository's
``arg_parser.py`` defines ``--no_l1_epochs``; 0 is this project's reading). alpha has no
published value: both READMEs' l1-sparse command lines (``--unlearn FT_prune``, which runs
``FT_l1``) leave ``--alpha ${alpha}`` to the user, and ``arg_parser.py``'s default, 0.2, is
the "unlearn noise" of other methods. Neither repository's files pass any other value; the only
one in their histories is ``"FT_prune": "--alpha 0.0001 --unlearn_epochs 10 "`` in
Unlearn-Sparse's ``run.py``, deleted in commit ddec203 before the linear decay was added. The
5e-4 here is this project's earlier choice, not a published value, and no selection grid
(``benchmarks/grids/<dataset>.yaml``) varies it.
"""

from __future__ import annotations

from typing import Any

import torch

from ps_lightning.unlearning.baselines.image_module import Batch, ImageUnlearningModule


class FineTune(ImageUnlearningModule):
    """FT: the whole model trained on the retain set (see `ImageUnlearningModule` for the
    arguments: epochs, lr, momentum, weight_decay)."""

    train_on = "retain"

    def unlearning_loss(self, batch: Batch) -> torch.Tensor:
        return self.cross_entropy(batch)


class L1Sparse(FineTune):
    """FT plus a linearly decaying l1 penalty on the weights.

    Args:
        alpha: the l1 coefficient at the first epoch; it decays linearly to alpha / epochs at
            the last.
        **kwargs: `ImageUnlearningModule`'s arguments (original_ckpt, epochs, lr, ...).
    """

    def __init__(self, original_ckpt: str, alpha: float = 5e-4, **kwargs: Any) -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}.")
        super().__init__(original_ckpt, **kwargs)

    def l1_coefficient(self) -> float:
        epochs = max(self.hparams.epochs, 1)
        return self.hparams.alpha * (1 - self.current_epoch / epochs)

    def unlearning_loss(self, batch: Batch) -> torch.Tensor:
        l1 = sum(p.abs().sum() for p in self.model.parameters())
        self.log("unlearn/l1_norm", l1, on_step=False, on_epoch=True, batch_size=len(batch[1]))
        return super().unlearning_loss(batch) + self.l1_coefficient() * l1
