"""trd.attacks.reuse: which finished attack stage an attack may take its results from, on stage directories laid out
as a plan writes them (stage.json, metrics.json, a released model.safetensors)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from trd.atomic import file_sha256
from trd.attacks.reuse import finished_twin

ATTACKER = {"seed": 0, "task": {"num_classes": 10}, "scheme": {"mode": "full", "optim": {"lr": [0.01]}}}


def _model(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _stage(root: Path, name: str, attacked: dict, inputs: dict | None = None, status: str | None = "done",
           version: int = 2, attacker: dict | None = None, results: dict | None = None) -> tuple[Path, dict]:
    stage = root / "stages" / f"piggyback-{name}"
    stage.mkdir(parents=True)
    config = {**(attacker or ATTACKER), "attacked": attacked}
    (stage / "stage.json").write_text(json.dumps({"kind": "piggyback", "kind_version": version, "config": config,
                                                  "inputs": {k: str(v) for k, v in (inputs or {}).items()}}))
    if status is not None:
        (stage / "metrics.json").write_text(json.dumps({
            "kind": "piggyback", "stage": name, "hash": name, "status": status, "world_size": 1, "log": None,
            "timings": {"stage_seconds": 9.0}, "model_labels": {"method": name}, "attack_labels": {"seed": 0},
            **(results or {"acc_pl": {"best": 0.5}, "grid": [{"point": "lr0.01"}]})}))
    return stage, config


def _released(root: Path, name: str, content: bytes) -> Path:
    stage = root / "stages" / f"dispose-{name}"
    _model(stage / "model.safetensors", content)
    return stage


def _file(path: Path) -> dict:
    return {"init": "file", "path": str(path), "sha256": file_sha256(path)}


@pytest.fixture
def tl(tmp_path) -> Path:
    return _released(tmp_path, "tl", b"weights of TL")


def test_a_released_model_with_the_same_bytes_takes_the_finished_attack_s_results(tmp_path, tl):
    done, _ = _stage(tmp_path, "a", {"init": "released"}, {"model": tl})
    gc = _released(tmp_path, "gc", b"weights of TL")  # a disposal that released the weights it started from
    me, config = _stage(tmp_path, "b", {"init": "released"}, {"model": gc}, status=None)
    other, results = finished_twin(me, 2, config, {"model": gc})
    assert other == done
    assert results == {"acc_pl": {"best": 0.5}, "grid": [{"point": "lr0.01"}]}  # none of the runner's keys


def test_a_user_file_is_matched_by_its_sha256_against_released_and_file_attacks(tmp_path, tl):
    copy = _model(tmp_path / "user" / "copy.safetensors", b"weights of TL")
    done, _ = _stage(tmp_path, "a", {"init": "released"}, {"model": tl})
    me, config = _stage(tmp_path, "b", _file(copy), status=None)
    assert finished_twin(me, 2, config, {})[0] == done
    (done / "metrics.json").unlink()
    (me / "metrics.json").write_text(json.dumps({"status": "done", "acc_pl": {"best": 0.4}}))
    gc = _released(tmp_path, "gc", b"weights of TL")  # a released model against a finished file attack
    you, config = _stage(tmp_path, "c", {"init": "released"}, {"model": gc}, status=None)
    assert finished_twin(you, 2, config, {"model": gc}) == (me, {"acc_pl": {"best": 0.4}})


@pytest.mark.parametrize("change", ["bytes", "attacker", "version", "running", "failed", "unplanned"])
def test_nothing_is_reused_unless_the_same_file_met_the_same_attacker_to_the_end(tmp_path, tl, change):
    _stage(tmp_path, "a", {"init": "released"}, {"model": tl},
           status={"running": "running", "failed": "failed"}.get(change, "done"),
           version=1 if change == "version" else 2,
           attacker={**ATTACKER, "seed": 1} if change == "attacker" else None)
    if change == "unplanned":
        (tmp_path / "stages" / "piggyback-a" / "stage.json").unlink()
    gc = _released(tmp_path, "gc", b"weights of NFT" if change == "bytes" else b"weights of TL")
    me, config = _stage(tmp_path, "b", {"init": "released"}, {"model": gc}, status=None)
    assert finished_twin(me, 2, config, {"model": gc}) is None


def test_a_scratch_attack_and_a_stage_alone_find_nothing(tmp_path, tl):
    _stage(tmp_path, "a", {"init": "scratch"})
    me, config = _stage(tmp_path, "b", {"init": "scratch"}, status=None)
    assert finished_twin(me, 2, config, {}) is None
    alone, config = _stage(tmp_path, "c", {"init": "released"}, {"model": tl})
    assert finished_twin(alone, 2, config, {"model": tl}) is None  # never itself


def test_a_reused_attack_passes_on_where_its_results_were_measured(tmp_path, tl):
    first = str(tmp_path / "stages" / "piggyback-first")
    _stage(tmp_path, "a", {"init": "released"}, {"model": tl}, results={"acc_pl": {"best": 0.5}, "reused_from": first})
    gc = _released(tmp_path, "gc", b"weights of TL")
    me, config = _stage(tmp_path, "b", {"init": "released"}, {"model": gc}, status=None)
    assert finished_twin(me, 2, config, {"model": gc})[1]["reused_from"] == first
