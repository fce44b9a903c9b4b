"""trd.attacks.reuse: which finished attack stage an attack may take its results from, on stage directories laid out
as a plan and the runner write them (stage.json, metrics.json, a released model.safetensors)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from trd.atomic import file_sha256
from trd.attacks.reuse import attacked_sha256, finished_twin
from trd.plan import SHARED_VERSION

ATTACKER = {"seed": 0, "task": {"num_classes": 10}, "scheme": {"mode": "full", "optim": {"lr": [0.01]},
                                                               "checkpoint_every": 0}}
RESULTS = {"acc_pl": {"best": 0.5}, "grid": [{"point": "lr0.01"}]}
TL = b"weights of TL"


def _released(root: Path, name: str, content: bytes) -> Path:
    stage = root / "stages" / f"dispose-{name}"
    stage.mkdir(parents=True)
    (stage / "model.safetensors").write_bytes(content)
    return stage


def _stage(root: Path, name: str, model: Path | None, status: str | None = "done", loaded: bytes | None = TL,
           attacker: dict | None = None, versions: tuple = (SHARED_VERSION, 2), results: dict | None = None):
    """An attack stage dir (its config, inputs) on a released model (or scratch: model None); finished with
    `status` after loading a file of bytes `loaded` unless status is None."""
    stage = root / "stages" / f"piggyback-{name}"
    stage.mkdir(parents=True)
    config = {**(attacker or ATTACKER), "attacked": {"init": "released" if model else "scratch"}}
    inputs = {"model": str(model)} if model else {}
    (stage / "stage.json").write_text(json.dumps({"kind": "piggyback", "shared_version": versions[0],
                                                  "kind_version": versions[1], "config": config, "inputs": inputs}))
    if status is not None:
        (stage / "metrics.json").write_text(json.dumps({
            "kind": "piggyback", "stage": name, "hash": name, "status": status, "world_size": 1, "log": None,
            "code": {"git_commit": "abc"}, "timings": {"stage_seconds": 9.0}, "model_labels": {"method": name},
            "attack_labels": {"seed": 0}, "attacked_sha256": _sha(loaded), **(results or RESULTS)}))
    return stage, config, inputs


def _sha(content: bytes | None) -> str | None:
    return None if content is None else hashlib.sha256(content).hexdigest()


def test_a_disposal_that_released_its_starting_bytes_takes_the_finished_attack_s_results(tmp_path):
    done, _, _ = _stage(tmp_path, "a", _released(tmp_path, "tl", TL))
    gc = _released(tmp_path, "gc", TL)  # no state within the budget: the weights it started from
    me, config, inputs = _stage(tmp_path, "b", gc, status=None)
    digest = attacked_sha256(config, inputs)
    assert digest == file_sha256(gc / "model.safetensors") == _sha(TL)
    other, results = finished_twin(me, 2, config, digest)
    assert other == done
    # None of the runner's keys: the reusing stage's own labels, code and timings are written around them.
    assert results == {**RESULTS, "attacked_sha256": _sha(TL), "reused_from": str(done),
                       "reused_code": {"git_commit": "abc"}}


def test_the_twin_is_judged_by_the_bytes_it_loaded_not_by_its_input_dir_now(tmp_path):
    tl = _released(tmp_path, "tl", TL)
    _stage(tmp_path, "a", tl, loaded=b"weights TL had before it was run again")
    me, config, _ = _stage(tmp_path, "b", _released(tmp_path, "gc", TL), status=None)
    assert finished_twin(me, 2, config, _sha(TL)) is None


@pytest.mark.parametrize("change", ["bytes", "attacker", "kind version", "shared version", "running", "failed",
                                    "no stage.json", "broken stage.json", "stage.json without config",
                                    "broken metrics.json", "ran before the sha256 was recorded"])
def test_nothing_is_reused_unless_the_same_bytes_met_the_same_attacker_to_the_end(tmp_path, change):
    _stage(tmp_path, "a", _released(tmp_path, "tl", TL),
           status={"running": "running", "failed": "failed"}.get(change, "done"),
           loaded=None if change == "ran before the sha256 was recorded" else TL,
           versions=(SHARED_VERSION + (change == "shared version"), 2 - (change == "kind version")),
           attacker={**ATTACKER, "seed": 1} if change == "attacker" else None)
    other = tmp_path / "stages" / "piggyback-a"
    if change == "no stage.json":
        (other / "stage.json").unlink()
    if change == "broken stage.json":
        (other / "stage.json").write_text('{"kind": "piggyback", "kind_ver')
    if change == "stage.json without config":
        (other / "stage.json").write_text(json.dumps({"shared_version": SHARED_VERSION, "kind_version": 2}))
    if change == "broken metrics.json":
        (other / "metrics.json").write_text("{")
    gc = _released(tmp_path, "gc", b"weights of NFT" if change == "bytes" else TL)
    me, config, inputs = _stage(tmp_path, "b", gc, status=None)
    assert finished_twin(me, 2, config, attacked_sha256(config, inputs)) is None


def test_keys_that_do_not_change_results_do_not_stop_reuse(tmp_path):
    done, _, _ = _stage(tmp_path, "a", _released(tmp_path, "tl", TL))
    every_100 = {**ATTACKER, "scheme": {**ATTACKER["scheme"], "checkpoint_every": 100}}
    me, config, inputs = _stage(tmp_path, "b", _released(tmp_path, "gc", TL), status=None, attacker=every_100)
    assert finished_twin(me, 2, config, attacked_sha256(config, inputs))[0] == done


def test_a_scratch_attack_and_a_stage_alone_find_nothing(tmp_path):
    _stage(tmp_path, "a", None, loaded=None)
    me, config, inputs = _stage(tmp_path, "b", None, status=None)
    assert attacked_sha256(config, inputs) is None and finished_twin(me, 2, config, None) is None
    alone, config, inputs = _stage(tmp_path, "c", _released(tmp_path, "tl", TL))
    assert finished_twin(alone, 2, config, attacked_sha256(config, inputs)) is None  # never itself


def test_a_reused_attack_passes_on_where_and_with_which_code_its_results_were_measured(tmp_path):
    first = {"reused_from": str(tmp_path / "stages" / "piggyback-first"), "reused_code": {"git_commit": "000"}}
    _stage(tmp_path, "a", _released(tmp_path, "tl", TL), results={**RESULTS, **first})
    me, config, inputs = _stage(tmp_path, "b", _released(tmp_path, "gc", TL), status=None)
    results = finished_twin(me, 2, config, attacked_sha256(config, inputs))[1]
    assert {key: results[key] for key in first} == first
