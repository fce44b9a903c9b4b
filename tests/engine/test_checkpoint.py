"""Resume checkpoints are read as tensors and plain data only, under every ZeRO stage trd supports; a tampered
file is refused before anything in it runs; an unreadable latest checkpoint falls back to the one before it."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
import torch.nn.functional as F
from test_loop import Batches, _engine

from trd.engine.checkpoint import CheckpointError, CheckpointManager
from trd.engine.safe_checkpoint import UnsafeCheckpointError


def _steps(engine, n: int, first: int = 0) -> None:
    for step, (x, y) in enumerate(list(Batches())[:n], start=first):
        torch.manual_seed(step)  # the dropout masks of a step, as the loop seeds them
        loss = F.cross_entropy(engine(x), y)
        engine.backward(loss)
        engine.step()


def _state(engine) -> list[torch.Tensor]:
    return [p.detach().clone() for p in engine.module.parameters()]


@pytest.mark.parametrize("zero_stage", [0, 1, 2])
def test_resume_restores_model_and_optimiser_through_the_safe_loader(tmp_path, process_group, zero_stage):
    env = process_group
    engine = _engine(env, zero_stage)
    ckpt = CheckpointManager(tmp_path, env)
    _steps(engine, 2)
    ckpt.save(engine, {"epoch": 0, "step": 2, "global_step": 2})
    _steps(engine, 2, first=2)  # the reference goes on from the checkpoint
    expected = _state(engine)
    resumed = _engine(env, zero_stage)
    assert ckpt.load(resumed) == {"epoch": 0, "step": 2, "global_step": 2}
    _steps(resumed, 2, first=2)
    assert all(torch.equal(a, b) for a, b in zip(expected, _state(resumed)))  # optimiser state came back too


def test_two_tags_are_kept_and_an_unreadable_latest_falls_back_to_the_previous(tmp_path, process_group, capfd):
    env = process_group
    engine = _engine(env)
    ckpt = CheckpointManager(tmp_path, env)
    for step in (2, 4, 6):
        _steps(engine, 1)
        ckpt.save(engine, {"epoch": 0, "step": step, "global_step": step})
    tags = sorted(p.name for p in (tmp_path / "checkpoint").iterdir() if p.is_dir())
    assert tags == ["step000000004", "step000000006"]
    model_file = tmp_path / "checkpoint" / "step000000006" / "mp_rank_00_model_states.pt"
    model_file.write_bytes(model_file.read_bytes()[:200])  # truncated
    assert ckpt.load(_engine(env)) == {"epoch": 0, "step": 4, "global_step": 4}
    assert "step000000006 cannot be read" in capfd.readouterr().err
    older = tmp_path / "checkpoint" / "step000000004" / "mp_rank_00_model_states.pt"
    older.write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        ckpt.load(_engine(env))
    message = str(err.value)
    assert "\n" not in message and "no checkpoint in" in message and f"delete {tmp_path / 'checkpoint'}" in message
    ckpt.remove()
    assert not (tmp_path / "checkpoint").exists()


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_tampered_checkpoint_is_refused_and_never_executed(tmp_path, process_group):
    env = process_group
    engine = _engine(env)
    ckpt = CheckpointManager(tmp_path, env)
    _steps(engine, 1)
    ckpt.save(engine, {"epoch": 0, "step": 1, "global_step": 1})
    marker = tmp_path / "executed"
    states = tmp_path / "checkpoint" / "step000000001" / "mp_rank_00_model_states.pt"
    with open(states, "wb") as f:
        pickle.dump({"module": _Exploit(str(marker))}, f, protocol=2)
    with pytest.raises(UnsafeCheckpointError, match="os.system|posix.system") as err:
        ckpt.load(_engine(env))
    assert not marker.exists()
    assert "\n" not in str(err.value) and "never unpickles" in str(err.value)
