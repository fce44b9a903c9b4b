"""trd's attacker is at least as strong as a plain fine-tuning loop a free-rider would write in an afternoon
(reference_attacker.py), on the same released weights and data: for a pretrained model and for scratch, trd's
best-of-grid accuracy reaches the reference's within the test set's standard error."""
from __future__ import annotations

import math
import os

import pytest
import torch
from cli import REPO, finish_stage, train_briefly
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from reference_attacker import best_accuracy, tensors

from trd.data import build_loader
from trd.experiment import plan_experiment
from trd.models import build_model, save_model

pytestmark = pytest.mark.slow

# The attacker's task: a quarter of the embedded piggyback task (150 training images), the whole test split.
TASK = ('+data.piggyback.small={embedded: synth_piggyback, train: "${data.root}/synth_piggyback/32px/train-{000000..000001}.tar", '
        'test: "${data.root}/synth_piggyback/32px/test-{000000..000001}.tar", num_classes: 10, image_size: 32, fraction: 0.25}')


@pytest.fixture(scope="module")
def released(tmp_path_factory, data_root) -> tuple[torch.nn.Module, str]:
    """A width-8 CNN pretrained for 3 epochs on the embedded source task: features that transfer."""
    os.environ["TRD_DATA"] = data_root
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+exp=demo"])
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=20, image_size=32, width=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = build_loader(source, "train", 64, train=True)
    train_briefly(model, loader, optimizer)
    model.replace_head(10)  # released with a head for its own target task; the attacker replaces it anyway
    path = tmp_path_factory.mktemp("released") / "model.safetensors"
    save_model(model, path)
    return model, str(path)


@pytest.fixture(scope="module")
def trd_attack(tmp_path_factory, data_root, released):
    """trd's demo attacker on one model ("released" or "scratch"), with all its schemes or the linear probe only."""
    runs: dict[tuple[str, bool], dict] = {}

    def attack(which: str, linear_only: bool) -> dict:
        if (which, linear_only) not in runs:
            out = tmp_path_factory.mktemp("out")
            os.environ["TRD_DATA"] = data_root
            # The linear probes alone, at the demo's budget: with half of it the probe stopped 3 points short of
            # the reference while its gains per evaluation were already below one standard error.
            only = ["~piggyback.schemes.finetune", "piggyback.paper_scheme=linear"] if linear_only else []
            with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
                cfg = compose(config_name="config", overrides=[
                    "+exp=demo", f"out_root={out}", "stages=[piggyback]", TASK, "piggyback.tasks=[small]",
                    "+model.width=8", f"+piggyback.models.released={{path: {released[1]}, method: pretrained}}", *only])
            plan = plan_experiment(cfg)
            plan.write(out / "demo")
            best = None
            for spec in plan.of_kind("piggyback"):
                if spec.attack["attacks"] == which:
                    metrics = finish_stage(spec.dir)
                    best = metrics if best is None or metrics["acc_pl"]["best"] > best["acc_pl"]["best"] else best
            runs[which, linear_only] = best
        return runs[which, linear_only]

    return attack


def _reference(model, data_root, modes) -> tuple[float, int]:
    role = {"embedded": "synth_piggyback", "train": f"{data_root}/synth_piggyback/32px/train-{{000000..000001}}.tar",
            "test": f"{data_root}/synth_piggyback/32px/test-{{000000..000001}}.tar", "num_classes": 10, "image_size": 32,
            "fraction": 0.25, "augment": False}
    train = tensors(build_loader(role, "train", 256, train=False))
    test = tensors(build_loader(role, "test", 256, train=False))
    return best_accuracy(model, 10, train, test, modes=modes), len(test[1])


# Out of the default run (the suite's 15 minutes), with `python -m pytest -m extended`: the linear probes on the
# released model (about 1.5 minutes alone, 5 beside the rest of the suite), then every scheme on the released
# model and on scratch (about 15 minutes on two cores).
@pytest.mark.parametrize("which,modes", [
    pytest.param("released", ("linear",), id="released-linear-probe", marks=pytest.mark.extended),
    pytest.param("released", ("linear", "full"), id="released", marks=pytest.mark.extended),
    pytest.param("scratch", ("linear", "full"), id="scratch", marks=pytest.mark.extended),
])
def test_trd_reaches_the_plain_loop_on_the_same_weights_and_data(which, modes, released, trd_attack, data_root):
    if which == "released":
        model = released[0]
    else:
        torch.manual_seed(0)
        model = build_model("cnn", num_classes=10, image_size=32, width=8)
    reference, n = _reference(model, data_root, modes)
    ours = trd_attack(which, linear_only=modes == ("linear",))
    standard_error = math.sqrt(reference * (1 - reference) / n)
    assert ours["acc_pl"]["best"] >= reference - standard_error, (which, ours["acc_pl"]["best"], reference,
                                                                  ours["saturation"])
