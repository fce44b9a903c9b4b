"""Losses of the disposal stage: gradient collision (GC/NGC) and the paper's baselines."""

from trd.losses.gradient_collision import GCStats, gradient_collision_loss

__all__ = ["GCStats", "gradient_collision_loss"]
