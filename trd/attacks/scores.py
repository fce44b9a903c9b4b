"""Per-sample quantities of a softmax output that membership attacks threshold, in float64.

Log-probabilities come from a float64 log-softmax of the logits, so log F_y stays finite (and
accurate) even when F_y underflows to 0; only log(1 - F_i), which cancels when F_i rounds to 1,
needs clamping.
"""

from __future__ import annotations

import numpy as np

LOG_EPS = 1e-30  # the floor Song & Mittal's reference code uses inside log()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def true_class_log_prob(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.take_along_axis(log_softmax(logits), np.asarray(labels)[:, None], axis=1)[:, 0]


def true_class_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """F_y(x), the probability of the true class."""
    return np.exp(true_class_log_prob(logits, labels))


def entropy(logits: np.ndarray) -> np.ndarray:
    """-sum_i F_i log F_i; terms with F_i = 0 contribute 0 (their log-probability is finite)."""
    log_p = log_softmax(logits)
    return -(np.exp(log_p) * log_p).sum(axis=1)


def modified_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song & Mittal (2021): Mentr(F(x), y) = -(1 - F_y) log F_y - sum_{i != y} F_i log(1 - F_i).

    Unlike the entropy it uses the label: it is 0 only for a confident correct prediction and
    grows without bound for a confident wrong one, which is what separates members from
    non-members that the model also classifies confidently.
    """
    log_p = log_softmax(logits)
    p = np.exp(log_p)
    labels = np.asarray(labels)
    rows = np.arange(len(labels))
    log_one_minus_p = np.log(np.maximum(1.0 - p, LOG_EPS))
    terms = -p * log_one_minus_p
    terms[rows, labels] = -(1.0 - p[rows, labels]) * log_p[rows, labels]
    return terms.sum(axis=1)
