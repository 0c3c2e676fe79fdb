"""What each metric is: a description, which way is better, the key of its real-data reference.

The one table behind the metric table (:func:`wganlab.metrics.suite.format_table`), the
comparisons' verdicts and the plots' reference lines. Keys in the table are bare (``fd``); the
helpers also take them as logged (``eval/fd``) or summarised (``final/fd``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

#: prefixes a metric key is logged or summarised under
PREFIXES = ("eval/", "final/")


@dataclass(frozen=True)
class MetricInfo:
    description: str
    better: str                       # "lower", "higher", or "" (no verdict)
    reference: Optional[str] = None   # bare key of its real-data reference, if it has one


METRICS: dict[str, MetricInfo] = {
    "w1": MetricInfo("exact W1 to a real sample", "lower", "w1_baseline"),
    "modes_hit": MetricInfo("modes hit", "higher", "modes_hit_ref"),
    "high_quality": MetricInfo("share of samples within 3 sigma of a mode", "higher",
                               "high_quality_ref"),
    "mode_kl": MetricInfo("KL(mode histogram || uniform)", "lower", "mode_kl_ref"),
    "fd": MetricInfo("Fréchet distance, classifier features", "lower", "fd_ref"),
    "kid": MetricInfo("KID (unbiased MMD^2, cubic kernel)", "lower", "kid_ref"),
    "precision": MetricInfo("precision (k=3 NN manifold)", "higher", "precision_ref"),
    "recall": MetricInfo("recall (k=3 NN manifold)", "higher", "recall_ref"),
    "coverage": MetricInfo("classes made >= half as often as real", "higher", "coverage_ref"),
    "class_kl": MetricInfo("KL(generated || real class histogram)", "lower", "class_kl_ref"),
    "is": MetricInfo("classifier score (IS analogue, max = #classes)", "higher", "is_ref"),
    "classifier_acc": MetricInfo("evaluator held-out accuracy", ""),
}
#: the references' bare keys
REFERENCES = frozenset(m.reference for m in METRICS.values() if m.reference)
#: bare keys logged beside the metrics that are none: sample sizes, counts, spreads
BOOKKEEPING = frozenset({"n", "real_n", "ref_n", "modes_total", "kid_std"})


def split_prefix(key: str) -> tuple[str, str]:
    """(``eval/`` or ``final/`` or "", the bare key)."""
    for p in PREFIXES:
        if key.startswith(p):
            return p, key[len(p):]
    return "", key


def direction(key: str) -> Optional[str]:
    """"lower" or "higher" for a metric with a verdict (bare or prefixed), else None."""
    info = METRICS.get(split_prefix(key)[1])
    return info.better if info and info.better else None


def reference_key(key: str) -> str:
    """The key of a metric's real-data reference, with the same prefix: ``eval/w1`` ->
    ``eval/w1_baseline``, ``eval/fd`` -> ``eval/fd_ref``; any other key: key + ``_ref``."""
    prefix, bare = split_prefix(key)
    info = METRICS.get(bare)
    return prefix + (info.reference if info and info.reference else bare + "_ref")
