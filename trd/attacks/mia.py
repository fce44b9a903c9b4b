"""Membership inference on the source training data: members = training samples, non-members = test samples.

Every attack reports the AUC and a held-out accuracy:

* AUC is threshold-free. Threshold attacks compute it on all samples; the classifier attacks on the
  half they were not fit on.
* Accuracy is honest rather than the usual optimistic "best threshold on the same data": members
  and non-members are each split in two halves (attack_halves); the threshold (or SVC) is fit on
  one half and its accuracy is measured on the other. Accuracy is balanced accuracy,
  (TPR + TNR) / 2, which equals plain accuracy on balanced sets and stays 0.5 for a constant
  guess when a half is one sample short.

Attacks follow Yeom et al. (2018, loss), Song & Mittal (2021, true-class confidence, entropy,
modified entropy) and the SVC attack of machine-unlearning benchmarks (Jia et al. 2023, "SVC_MIA").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from trd.attacks import scores
from trd.attacks.features import SampleOutputs


@dataclass(frozen=True)
class AttackResult:
    accuracy: float  # balanced accuracy on the held-out half
    auc: float
    threshold: float | None  # score threshold (score >= threshold -> member); None for classifiers

    def as_dict(self) -> dict[str, float]:
        return {"acc": self.accuracy, "auc": self.auc}


def balanced(members: SampleOutputs, nonmembers: SampleOutputs, seed: int) -> tuple[SampleOutputs, SampleOutputs]:
    """The same number of members and non-members: the larger set is subsampled (order kept) with seed."""
    n = min(len(members), len(nonmembers))
    if n == 0:
        raise ValueError(f"need members and non-members, got {len(members)} and {len(nonmembers)}")
    rng = np.random.default_rng(seed)

    def take(outputs: SampleOutputs) -> SampleOutputs:
        if len(outputs) == n:
            return outputs
        return outputs.subset(np.sort(rng.choice(len(outputs), size=n, replace=False)))

    return take(members), take(nonmembers)


def attack_halves(n_members: int, n_nonmembers: int, seed: int):
    """((fit, eval) member indices, (fit, eval) non-member indices): each group shuffled and halved."""
    if n_members < 2 or n_nonmembers < 2:
        raise ValueError(f"held-out evaluation needs >= 2 members and >= 2 non-members, "
                         f"got {n_members} and {n_nonmembers}")
    rng = np.random.default_rng(seed)

    def halve(n: int):
        order = rng.permutation(n)
        return np.sort(order[: n // 2]), np.sort(order[n // 2:])

    return halve(n_members), halve(n_nonmembers)


def balanced_accuracy(member_is_member: np.ndarray, nonmember_is_member: np.ndarray) -> float:
    return float((np.mean(member_is_member) + 1.0 - np.mean(nonmember_is_member)) / 2.0)


def best_threshold(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> tuple[float, float]:
    """(threshold, balanced accuracy) of the best rule "score >= threshold -> member" on these scores.

    The threshold sits halfway between the lowest score called a member and the next lower score,
    so that it generalises symmetrically; +inf (nobody is a member) when no cut beats chance.
    """
    members = np.sort(np.asarray(member_scores, dtype=np.float64))
    nonmembers = np.sort(np.asarray(nonmember_scores, dtype=np.float64))
    candidates = np.unique(np.concatenate([members, nonmembers]))
    tpr = 1.0 - np.searchsorted(members, candidates, side="left") / len(members)
    tnr = np.searchsorted(nonmembers, candidates, side="left") / len(nonmembers)
    accuracy = (tpr + tnr) / 2.0
    k = int(np.argmax(accuracy))
    if accuracy[k] <= 0.5:
        # No cut beats a constant guess: call nobody a member rather than pick an arbitrary one.
        # (Cutting at the lowest score, k = 0, calls everyone a member and always scores 0.5, so
        # from here on k >= 1 and there is a lower neighbour.)
        return float("inf"), 0.5
    lower, upper = candidates[k - 1], candidates[k]
    middle = lower + (upper - lower) / 2.0
    return float(middle if middle > lower else upper), float(accuracy[k])


def _check_scores(name: str, values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{name} must be one score per sample, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contain non-finite values")
    return values


def _auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    is_member = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    # Balanced sets make AUC and accuracy comparable; with unequal sets AUC is still unbiased.
    return float(roc_auc_score(is_member, np.concatenate([member_scores, nonmember_scores])))


def threshold_attack(member_scores, nonmember_scores, *, seed: int = 0) -> AttackResult:
    """Higher score = "member". Threshold fit on one half, accuracy on the other; AUC on all samples."""
    member_scores = _check_scores("member scores", member_scores)
    nonmember_scores = _check_scores("non-member scores", nonmember_scores)
    (m_fit, m_eval), (n_fit, n_eval) = attack_halves(len(member_scores), len(nonmember_scores), seed)
    threshold, _ = best_threshold(member_scores[m_fit], nonmember_scores[n_fit])
    accuracy = balanced_accuracy(member_scores[m_eval] >= threshold, nonmember_scores[n_eval] >= threshold)
    return AttackResult(accuracy, _auc(member_scores, nonmember_scores), threshold)


def loss_attack(members: SampleOutputs, nonmembers: SampleOutputs, *, seed: int = 0) -> AttackResult:
    """Yeom et al.: training samples have lower loss."""
    return threshold_attack(-members.loss, -nonmembers.loss, seed=seed)


def confidence_attack(members: SampleOutputs, nonmembers: SampleOutputs, *, seed: int = 0) -> AttackResult:
    """Song & Mittal: higher probability of the true class (not of the top class) on training samples."""
    return threshold_attack(scores.true_class_confidence(members.logits, members.labels),
                            scores.true_class_confidence(nonmembers.logits, nonmembers.labels), seed=seed)


def entropy_attack(members: SampleOutputs, nonmembers: SampleOutputs, *, seed: int = 0) -> AttackResult:
    """Lower prediction entropy on training samples (label-free)."""
    return threshold_attack(-scores.entropy(members.logits), -scores.entropy(nonmembers.logits), seed=seed)


def modified_entropy_attack(members: SampleOutputs, nonmembers: SampleOutputs, *, seed: int = 0) -> AttackResult:
    """Song & Mittal: lower modified entropy on training samples."""
    return threshold_attack(-scores.modified_entropy(members.logits, members.labels),
                            -scores.modified_entropy(nonmembers.logits, nonmembers.labels), seed=seed)


def gradient_norm_attack(members: SampleOutputs, nonmembers: SampleOutputs, *, seed: int = 0) -> AttackResult:
    """White-box: training samples sit nearer a minimum of their own loss, so their gradient is smaller."""
    if members.grad_norm is None or nonmembers.grad_norm is None:
        raise ValueError("gradient_norm_attack needs outputs collected with grad_norms=True")
    return threshold_attack(-members.grad_norm, -nonmembers.grad_norm, seed=seed)


def output_attack_features(outputs: SampleOutputs) -> np.ndarray:
    """Per-sample black-box features for the attack classifier, each on a bounded or log scale."""
    probs = scores.softmax(outputs.logits)
    num_classes = probs.shape[1]
    top = -np.sort(-probs, axis=1)[:, :3]
    columns = [
        scores.true_class_confidence(outputs.logits, outputs.labels),
        np.log1p(outputs.loss),
        scores.entropy(outputs.logits) / np.log(max(num_classes, 2)),
        np.log1p(scores.modified_entropy(outputs.logits, outputs.labels)),
        (probs.argmax(axis=1) == outputs.labels).astype(np.float64),
    ]
    return np.column_stack(columns + [top])


def _svc_attack(members_x: np.ndarray, nonmembers_x: np.ndarray, seed: int) -> AttackResult:
    (m_fit, m_eval), (n_fit, n_eval) = attack_halves(len(members_x), len(nonmembers_x), seed)
    x_fit = np.concatenate([members_x[m_fit], nonmembers_x[n_fit]])
    y_fit = np.concatenate([np.ones(len(m_fit)), np.zeros(len(n_fit))])
    # C=3, gamma="auto" as in the SVC_MIA of Jia et al.; class_weight keeps odd halves balanced.
    attack = make_pipeline(StandardScaler(), SVC(C=3.0, gamma="auto", kernel="rbf", class_weight="balanced"))
    attack.fit(x_fit, y_fit)
    member_margin = attack.decision_function(members_x[m_eval])
    nonmember_margin = attack.decision_function(nonmembers_x[n_eval])
    accuracy = balanced_accuracy(member_margin > 0, nonmember_margin > 0)
    return AttackResult(accuracy, _auc(member_margin, nonmember_margin), None)


def classifier_attack(members: SampleOutputs, nonmembers: SampleOutputs, seed: int = 0) -> AttackResult:
    """RBF SVC on output features, fit on half the members/non-members, scored on the other half."""
    return _svc_attack(output_attack_features(members), output_attack_features(nonmembers), seed)


THRESHOLD_ATTACKS = {
    "loss": loss_attack,
    "confidence": confidence_attack,
    "entropy": entropy_attack,
    "modified_entropy": modified_entropy_attack,
}


def run_all(members: SampleOutputs, nonmembers: SampleOutputs, seed: int = 0) -> dict[str, dict[str, float]]:
    """{attack: {"acc", "auc"}} on balanced members/non-members; white-box attacks only when their data was collected."""
    members, nonmembers = balanced(members, nonmembers, seed)
    results = {name: attack(members, nonmembers, seed=seed) for name, attack in THRESHOLD_ATTACKS.items()}
    results["classifier"] = classifier_attack(members, nonmembers, seed)
    if members.grad_norm is not None and nonmembers.grad_norm is not None:
        results["gradient_norm"] = gradient_norm_attack(members, nonmembers, seed=seed)
    return {name: result.as_dict() for name, result in results.items()}
