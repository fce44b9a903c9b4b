"""The disposal stage through the CLI: methods fan out, each evaluated; a diverging run stops as diverged."""
from __future__ import annotations

import json

import pytest
from cli import FAST, stage_dir, stage_metrics, submit

pytestmark = pytest.mark.slow

# A quarter of the source data keeps each disposal epoch to 15 steps; both tests share one out_root, so the
# second reuses the first's pretrain and transfer stages.
SMALL = [*FAST, "+data.source.fraction=0.25", "transfer.scratch_baseline=false",
         "stages=[pretrain,transfer,dispose,evaluate]"]


@pytest.fixture(scope="module")
def out_root(tmp_path_factory):
    return tmp_path_factory.mktemp("dispose")


def test_disposal_methods_run_and_are_evaluated(out_root, data_root):
    tmp_path = out_root
    submit("+exp=demo", f"out_root={tmp_path}", *SMALL, "dispose.epochs=1", "dispose.methods=[gc,unif]",
           data_root=data_root)
    metrics = stage_metrics(tmp_path / "demo")
    for method in ("gc", "unif"):
        assert metrics[f"dispose/{method}"]["status"] == "done"
        labels = metrics[f"dispose/{method}"]["model_labels"]
        assert labels["method"] == method and labels["lam"] == 0.9
        assert set(metrics[f"evaluate/dispose/{method}"]["acc"]) == {"source", "target"}
        events = list((stage_dir(tmp_path / "demo", f"dispose/{method}") / "tensorboard").glob("events.*"))
        assert events
    gc_events = (stage_dir(tmp_path / "demo", "dispose/gc") / "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(gc_events)).Reload().Tags()["scalars"]
    for tag in ("epoch/loss/total_sq_norm", "epoch/loss/sum_chunk_sq_norms", "epoch/loss/mean_pair_cosine",
                "epoch/loss/retain", "epoch/loss/unlearn", "epoch/acc/source", "epoch/acc/target"):
        assert tag in tags, tags


def test_diverging_disposal_stops_as_diverged_and_keeps_its_last_good_checkpoint(out_root, data_root):
    proc = submit("+exp=demo", f"out_root={out_root}", "name=diverge", *SMALL, "dispose.methods=[neg]",
                  "dispose.lam=1.0", "dispose.grad_clip=0", "dispose.optim.name=sgd", "dispose.optim.lr=1e38",
                  "dispose.checkpoint_every=1",
                  data_root=data_root, check=False)
    assert proc.returncode == 1
    assert "reused finished stages: pretrain, transfer" in proc.stdout
    exp = out_root / "diverge"
    metrics = json.loads((stage_dir(exp, "dispose/neg") / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "non-finite" in metrics["error"]
    pointer = json.loads((stage_dir(exp, "dispose/neg") / "checkpoint" / "resume.json").read_text())
    assert pointer["progress"]["global_step"] >= 1
    assert not (stage_dir(exp, "dispose/neg") / "model.safetensors").exists()
    assert json.loads((exp / "dispatch.json").read_text())["not_run"] == ["evaluate/dispose/neg"]
