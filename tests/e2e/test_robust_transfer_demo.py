"""+exp=cartl_demo through launch/submit.py with Renofeation's stage added, cut to the mechanics (one epoch each):
a natural and a PGD-AT source model (FDM's loss is covered against its float64 reference in tests/robust, vanilla
last-k transfer by tests/robust/test_neft_and_frozen_parts.py), each transferred by NEFT, Renofeation from the
natural model, every released model attacked by PGD and by the target-agnostic attack crafted on the natural
model; the report's two tables and its figure. One run for both families: the attacks are the same stages whoever released the model. What the
full demos measure is in the README (`+exp=cartl_demo`, `+exp=renofeation_demo`): too long for the suite."""
from __future__ import annotations

import csv
import shutil

import pytest
from cli import finish_stage_on_ranks, stage_dir, stage_metrics, submit

from trd.engine.distributed import free_port
from trd.models import read_metadata
from trd.models.release import released_model_path

pytestmark = pytest.mark.slow

SHORT = ["pretrain.epochs=1", "robust_pretrain.lams=[0.0]", "robust_pretrain.epochs=1", "robust_transfer.epochs=1",
         "robust_transfer.methods=[neft]", "report.reference=neft", "pgd.steps=[2,5]", "agnostic.steps=5", "agnostic.step=0.08",
         "+renofeation=default", "renofeation.methods=[renofeation]", "renofeation.epochs=1",
         "renofeation.swa.every=1", "renofeation.student={name:cnn,width:16}",
         "stages=[pretrain,robust_pretrain,robust_transfer,renofeation,pgd,agnostic,report]"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("out")
    submit("+exp=cartl_demo", f"out_root={out}", *SHORT, data_root=data_root, timeout=900)
    return out / "cartl_demo"


def _cells(exp, table):
    with open(exp / "report" / f"{table}.csv") as f:
        return {(r["row"], r["column"]): r for r in csv.DictReader(f)}


def test_every_transfer_is_released_attacked_and_reported(demo):
    metrics = stage_metrics(demo)
    assert all(m["status"] == "done" for m in metrics.values())
    for source in ("pretrain", "robust_pretrain_pgd_at"):
        name = f"robust_transfer/{source}/neft"
        pgd = metrics[f"pgd/{name}"]
        assert pgd["rob"] == pgd["rob_at"]["5"] and pgd["rob_at"]["2"] <= pgd["acc"] and pgd["test_samples"] == 500
        assert 0 < metrics[f"agnostic/{name}"]["clean"] <= 1 and metrics[f"agnostic/{name}"]["asr"] is not None
    assert metrics["agnostic/renofeation/renofeation"]["asr"] is not None
    assert metrics["pgd/renofeation/renofeation"]["model_labels"] == {"method": "renofeation"}
    # released in the student's architecture, without the matching convolutions
    assert read_metadata(released_model_path(stage_dir(demo, "renofeation/renofeation")))["options"]["width"] == 16
    swa = metrics["renofeation/renofeation"]["swa"]
    assert swa["averaged"] >= 2 and 0 < swa["acc_last_weights"] <= 1
    assert metrics["robust_transfer/pretrain/neft"]["neft_layers"] == ["block1.0", "head"]
    robust = _cells(demo, "robustness")
    assert robust["neft source=natural", "Rob PGD-5"]["status"] == "ok"
    agnostic = _cells(demo, "agnostic")
    assert agnostic["neft source=pgd_at", "ASR"]["status"] == agnostic["renofeation", "ASR"]["status"] == "ok"
    assert (demo / "report" / "asr_vs_clean.png").stat().st_size > 0


def test_the_attacks_on_two_ranks_count_every_test_image_once_and_agree_with_one_rank(demo, tmp_path):
    """One released model's two attack stages run again as a world of two ranks, on the same finished inputs.
    Each rank attacks its own share of the test set and the totals count the 500 images once. The agnostic
    attack has no random start, so it perturbs each image as one rank does (up to float reduction order); PGD
    draws its random start per rank, so only its clean accuracy must agree exactly."""
    name, metrics = "robust_transfer/pretrain/neft", stage_metrics(demo)
    for attack in ("pgd", "agnostic"):
        one = metrics[f"{attack}/{name}"]
        again = tmp_path / attack
        again.mkdir()
        shutil.copy(stage_dir(demo, f"{attack}/{name}") / "stage.json", again)
        two = finish_stage_on_ranks(again, 2, free_port())
        assert two["status"] == "done" and two["world_size"] == 2 and one["world_size"] == 1
        assert two["test_samples"] == one["test_samples"] == 500
        if attack == "pgd":
            assert two["acc"] == one["acc"] and abs(two["rob"] - one["rob"]) <= 0.05
        else:
            assert abs(two["clean"] - one["clean"]) <= 1 / 500 and abs(two["asr"] - one["asr"]) <= 0.01
