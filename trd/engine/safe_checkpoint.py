"""DeepSpeed checkpoints read as tensors and plain data only: torch.load(weights_only=True), with the few
DeepSpeed types its ZeRO optimiser states hold allowed by name. A checkpoint that asks for anything else (a
tampered file in a shared stage directory, say) is refused before anything in it runs."""
from __future__ import annotations

import importlib
import pickle

import torch
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import (
    TorchCheckpointEngine,
)

# Plain-data classes of DeepSpeed 0.19's ZeRO 1/2 optimiser states (loss scaler settings, the ZeRO stage, where a
# parameter's fragment lies); the module states need nothing beyond tensors and containers.
ALLOWED = ("deepspeed.runtime.fp16.loss_scaler.LossScaler", "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
           "deepspeed.runtime.zero.config.ZeroStageEnum", "deepspeed.utils.tensor_fragment.fragment_address")


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file that asks the unpickler for something other than tensors and allowed data."""


def _allowed() -> list[type]:
    classes = []
    for dotted in ALLOWED:
        module, name = dotted.rsplit(".", 1)
        classes.append(getattr(importlib.import_module(module), name))
    return classes


class TensorsOnlyCheckpointEngine(TorchCheckpointEngine):
    def load(self, path: str, map_location=None):
        try:
            with torch.serialization.safe_globals(_allowed()):
                return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpointError(f"{path} asks the unpickler for {_refused(str(err))}, which trd never "
                                        f"unpickles (only tensors and "
                                        f"plain data): it was not written by trd or was tampered with; delete it "
                                        f"to restart the stage from its beginning") from None


def _refused(message: str) -> str:
    """What torch's weights-only unpickler refused, from its error message."""
    detail = message.split("WeightsUnpickler error:", 1)[-1]
    if "GLOBAL " in detail:
        return detail.split("GLOBAL ", 1)[1].split()[0]
    return next((line.strip() for line in detail.splitlines() if line.strip()), "an unknown object")


def load_safely(engine) -> None:
    """Makes every later load_checkpoint of this DeepSpeed engine read through TensorsOnlyCheckpointEngine."""
    engine.checkpoint_engine = TensorsOnlyCheckpointEngine(engine._config)
