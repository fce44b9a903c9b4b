"""A finished attack on the same weights by the same attacker, found among the stages of an out_root, whose
results an attack stage takes instead of running again. A disposal that finds no state within its target budget
releases the weights it started from, byte for byte, and a best-of-grid attack on them costs as much as the one
already run on the model they came from. The attacker sees nothing but the file and its config, so the stage
config less where the attacked model came from, plus the file's sha256, decides what the results are."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from trd import contract
from trd.atomic import file_sha256, read_json
from trd.metrics import read_metrics


def attacked_file(config: Mapping, inputs: Mapping[str, str | Path]) -> Path | None:
    """The safetensors file an attack stage starts from (None for a randomly initialised model)."""
    attacked = config["attacked"]
    if attacked["init"] == "file":
        return Path(attacked["path"])
    if attacked["init"] == "released":
        return Path(inputs["model"]) / contract.MODEL_FILE
    return None


def _sha256(config: Mapping, inputs: Mapping[str, str | Path]) -> str | None:
    if config["attacked"]["init"] == "file":
        return config["attacked"]["sha256"]
    path = attacked_file(config, inputs)
    return file_sha256(path) if path is not None and path.is_file() else None


def _attacker(config: Mapping) -> dict:
    return {key: value for key, value in config.items() if key != "attacked"}


def finished_twin(stage_dir: Path, kind_version: int, config: Mapping,
                  inputs: Mapping[str, str | Path]) -> tuple[Path, dict] | None:
    """(directory, results) of a finished stage beside stage_dir of the same kind and version whose attacker config
    equals this one's and whose attacked file has the same bytes; None when there is none."""
    if attacked_file(config, inputs) is None:
        return None
    kind = stage_dir.name.rsplit("-", 1)[0]
    mine, digest = _attacker(config), None
    for other in sorted(stage_dir.parent.glob(f"{kind}-*")):
        if other == stage_dir:
            continue
        planned = read_json(other / contract.STAGE_FILE)
        if not planned or planned.get("kind_version") != kind_version or _attacker(planned["config"]) != mine:
            continue
        metrics = read_metrics(other)
        if metrics.get("status") != contract.DONE:
            continue
        digest = digest or _sha256(config, inputs)
        if digest is not None and _sha256(planned["config"], planned["inputs"]) == digest:
            return other, {key: value for key, value in metrics.items() if key not in contract.RUNNER_KEYS}
    return None
