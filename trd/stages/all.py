"""Imports every built-in stage so its planner and runner are registered."""
from trd.stages import dispose, evaluate, pretrain, transfer  # noqa: F401
from trd.stages import mia  # noqa: F401
from trd.stages import piggyback  # noqa: F401
from trd.stages import report  # noqa: F401
