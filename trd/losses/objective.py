"""The disposal objective L_DTL = (1 - lam) * L_retain + lam * L_unlearn.

Plain arithmetic is enough even when L_unlearn is the gradient-collision loss: its custom
backward scales its Hessian-vector products by the incoming gradient (here ``lam``), so
``dtl_objective(retain, gc, lam).backward()`` leaves (1 - lam) grad L_retain + lam grad L_gc.
In a multi-rank run the GC part of that gradient is already summed over ranks while the retain
part is per-rank, which is what an engine that then averages gradients over ranks expects.
"""

from __future__ import annotations

from torch import Tensor


def dtl_objective(retain: Tensor, unlearn: Tensor, lam: float) -> Tensor:
    """(1 - lam) * retain + lam * unlearn, with ``lam`` in [0, 1]."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"the disposal weight lam must lie in [0, 1], got {lam}")
    return (1.0 - lam) * retain + lam * unlearn
