"""Imports every built-in stage so its planner and runner are registered."""
from trd.stages import evaluate, pretrain, transfer  # noqa: F401
