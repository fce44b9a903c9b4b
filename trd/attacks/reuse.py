"""A finished attack on the same bytes by the same attacker, found among the stages of an out_root, whose results
an attack stage takes instead of running again. A disposal that finds no state within its target budget releases
the weights it started from, byte for byte, and a best-of-grid attack on them costs as much as the one already run
on the model they came from. The attacker sees nothing but the file and its stage config, so the stage config
(less where the attacked model came from and the keys that do not change results), the code versions in the
stage hash, and the sha256 of the file the finished attack loaded decide what the results are."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from trd import contract
from trd.atomic import file_sha256, read_json
from trd.attacks.piggyback import attacked_path
from trd.metrics import read_metrics
from trd.plan import SHARED_VERSION, output_relevant

ATTACKED_SHA256 = "attacked_sha256"  # metrics.json: the sha256 of the file the attack loaded (null: scratch)
# What a broken neighbouring stage dir (half-written, hand-edited, its model gone) raises; it is passed over.
_UNREADABLE = (OSError, ValueError, KeyError, TypeError, AttributeError)


def attacked_sha256(config: Mapping, inputs: Mapping[str, str | Path]) -> str | None:
    """The sha256 of the file an attack stage starts from, as it is now (None for scratch, or a missing user file:
    the attack says so; a released model not yet written raises FileNotFoundError)."""
    path = attacked_path(config["attacked"], inputs.get("model"))
    return file_sha256(path) if path is not None and path.is_file() else None


def _attacker(config: Mapping) -> dict:
    return output_relevant({key: value for key, value in config.items() if key != "attacked"})


def _twin_results(other: Path, kind_version: int, attacker: dict, digest: str) -> dict | None:
    planned = read_json(other / contract.STAGE_FILE)
    if not planned or planned.get("shared_version") != SHARED_VERSION or planned.get("kind_version") != kind_version:
        return None
    if _attacker(planned["config"]) != attacker:
        return None
    metrics = read_metrics(other)
    if metrics.get("status") != contract.DONE or metrics.get(ATTACKED_SHA256) != digest:
        return None
    results = {key: value for key, value in metrics.items() if key not in contract.RUNNER_KEYS}
    return {**results, "reused_from": results.get("reused_from", str(other)),
            "reused_code": results.get("reused_code", metrics.get("code"))}


def finished_twin(stage_dir: Path, kind_version: int, config: Mapping, digest: str | None) -> tuple[Path, dict] | None:
    """(directory, results with reused_from and reused_code) of a finished stage beside stage_dir, of the same kind
    and versions, whose config equals this one's but for the attacked model and which loaded a file of sha256
    digest; None when there is none. A neighbour that cannot be read is passed over."""
    if digest is None:
        return None
    kind = stage_dir.name.rsplit("-", 1)[0]
    attacker = _attacker(config)
    for other in sorted(stage_dir.parent.glob(f"{kind}-*")):
        if other == stage_dir:
            continue
        try:
            results = _twin_results(other, kind_version, attacker, digest)
        except _UNREADABLE:
            continue
        if results is not None:
            return other, results
    return None
