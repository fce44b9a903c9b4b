"""public_model: a pretrained model the experiment did not train (ImageNet weights converted by
launch/convert_weights.py, a file from elsewhere), as a stage whose model.safetensors later stages read: the
public model Renofeation distils and fine-tunes from (renofeation.public) and the agnostic attack crafts on
(agnostic.public). The file is checked at submission and its sha256 is part of the stage, so another file is
another stage."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from trd.atomic import file_sha256
from trd.config import ConfigError, parse
from trd.config.nodes import common_config
from trd.contract import MODEL_FILE
from trd.data.role_config import role_config
from trd.models import read_metadata
from trd.models.io import check_expected
from trd.plan import StageKind


@dataclass
class PublicModelConfig:
    path: str  # a .safetensors file written by trd (launch/convert_weights.py converts torchvision's)


def plan(cfg, plan) -> None:
    node = parse(cfg.get("public_model"), PublicModelConfig, "public_model")
    path = Path(node.path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"public_model.path={path} does not exist: give a .safetensors file (convert torchvision's "
                          f"with python launch/convert_weights.py)")
    target = role_config(cfg, "target")
    try:
        check_expected(read_metadata(path), {"name": cfg["model"]["name"], "image_size": int(target["image_size"])},
                       path)
    except ValueError as err:
        raise ConfigError(f"public_model: {err}; choose the matching model= and data.target.image_size") from None
    plan.add("public_model", "public_model", {**common_config(cfg), "path": str(path), "sha256": file_sha256(path)},
             model={"method": "public"})


def run(ctx) -> dict:
    c = ctx.config
    if file_sha256(c["path"]) != c["sha256"]:
        raise ValueError(f"{c['path']} changed since the experiment was planned: submit it again")
    if ctx.env.is_main:
        shutil.copyfile(c["path"], ctx.dir / MODEL_FILE)
    return {"path": c["path"], "sha256": c["sha256"], "metadata": read_metadata(c["path"])}


KIND = StageKind("public_model", plan, run, schema=PublicModelConfig)
