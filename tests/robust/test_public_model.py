"""A public model given as a file: checked at submission (exists, trd's safetensors, the experiment's model and
image size), its sha256 part of the stage, and the stage hands the file on as its model; Renofeation and the
agnostic attack then read it like any pretrained stage."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from trd.config import ConfigError
from trd.models import build_model, load_model, save_model
from trd.stages import public_model

PUBLIC = ["renofeation.public=public_model", "agnostic.public=public_model",
          "stages=[public_model,renofeation,agnostic,report]"]


def _file(tmp_path, name="cnn", image_size=32):
    path = tmp_path / "public.safetensors"
    save_model(build_model(name, num_classes=7, image_size=image_size), path)
    return path


def test_the_file_is_the_public_model_of_renofeation_and_of_the_agnostic_attack(tmp_path, plan_exp):
    path = _file(tmp_path)
    plan = plan_exp("renofeation_demo", tmp_path / "out", *PUBLIC, f"+public_model.path={path}")
    assert plan["renofeation/finetune"].inputs == {"pretrained": "public_model"}
    assert plan["agnostic/renofeation/finetune"].inputs == {"model": "renofeation/finetune", "public": "public_model"}
    spec = plan["public_model"]
    assert spec.config["path"] == str(path) and len(spec.config["sha256"]) == 64
    stage_dir = tmp_path / "stage"
    stage_dir.mkdir()
    metrics = public_model.run(SimpleNamespace(config=spec.config, dir=stage_dir, env=SimpleNamespace(is_main=True)))
    assert metrics["metadata"]["num_classes"] == 7
    assert load_model(stage_dir / "model.safetensors").num_classes == 7


@pytest.mark.parametrize("make,message", [
    (lambda tmp: tmp / "missing.safetensors", "does not exist: give a .safetensors file"),
    (lambda tmp: _file(tmp, "resnet18"), "public_model: "),
    (lambda tmp: _file(tmp, image_size=64), "public_model: "),
])
def test_a_file_that_cannot_be_the_public_model_is_one_line_at_submission(tmp_path, plan_exp, make, message):
    with pytest.raises(ConfigError) as err:
        plan_exp("renofeation_demo", tmp_path / "out", *PUBLIC, f"+public_model.path={make(tmp_path)}")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def imagenet_resnet18(tmp_path_factory):
    """The converted ImageNet ResNet-18 the 224 px settings read (45 MB): written once for all five of them."""
    public = tmp_path_factory.mktemp("public")
    save_model(build_model("resnet18", num_classes=1000, image_size=224, stem="imagenet"),
               public / "resnet18_imagenet.safetensors")
    return public


@pytest.mark.parametrize("dataset", ["cub200", "flowers102", "dogs120", "actions40", "indoor67"])
def test_each_224px_study_setting_plans_every_method_from_the_converted_imagenet_file(tmp_path, monkeypatch, plan_exp,
                                                                                     imagenet_resnet18, dataset):
    monkeypatch.setenv("TRD_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TRD_PUBLIC", str(imagenet_resnet18))
    plan = plan_exp(f"renofeation_{dataset}", tmp_path / "out", placeholder_shards=True)
    for method in ("linear", "finetune", "l2sp", "delta", "scratch", "renofeation"):
        assert plan[f"agnostic/renofeation/{method}"].inputs["public"] == "public_model"
    assert plan["renofeation/renofeation"].config["swa"] == {"lr": 0.005, "every": 500, "start": 0.5}
    assert plan["renofeation/finetune"].config["target"]["image_size"] == 224


@pytest.mark.parametrize("model", ["resnet50", "mobilenet_v2"])
def test_the_study_setting_plans_with_each_of_its_other_models(tmp_path, monkeypatch, plan_exp, model):
    monkeypatch.setenv("TRD_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TRD_PUBLIC", str(tmp_path / "public"))
    save_model(build_model(model, num_classes=1000, image_size=224, stem="imagenet"),
               tmp_path / "public" / f"{model}_imagenet.safetensors")
    plan = plan_exp("renofeation_cub200", tmp_path / "out", f"model={model}", placeholder_shards=True)
    assert plan["renofeation/renofeation"].config["model"]["name"] == model
    assert plan["renofeation/renofeation"].config["distill_blocks"][-1] == build_model(model, 1, 224).block_names[-1]
