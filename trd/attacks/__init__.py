"""Attacks on released models: piggyback fine-tuning, PGD and the target-agnostic attack, membership inference.

The membership-inference names are loaded on first use, so that a stage importing one attack module does not pay
for scikit-learn."""

_MIA = {
    "SampleOutputs": "trd.attacks.features", "collect_outputs": "trd.attacks.features",
    "per_sample_grad_norms": "trd.attacks.features",
    **{name: "trd.attacks.mia" for name in (
        "AttackResult", "balanced", "classifier_attack", "confidence_attack", "entropy_attack",
        "gradient_norm_attack", "loss_attack", "modified_entropy_attack", "run_all", "threshold_attack")},
}


def __getattr__(name: str):
    if name in _MIA:
        import importlib

        return getattr(importlib.import_module(_MIA[name]), name)
    raise AttributeError(f"module 'trd.attacks' has no attribute {name!r}")


__all__ = sorted(_MIA)
