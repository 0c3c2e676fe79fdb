"""Offline evaluation: exact W1 on toy data, classifier-feature metrics on images."""
from .features import (class_coverage, class_kl, classifier_score, feature_stats,
                       frechet_distance, frechet_distance_features, kid, knn_radii,
                       precision_recall)
from .suite import evaluate, format_table, generator_sampler
from .toy import exact_w1, mode_coverage, toy_metrics, w1_baseline

__all__ = ["evaluate", "format_table", "generator_sampler", "exact_w1", "w1_baseline",
           "mode_coverage", "toy_metrics", "feature_stats", "frechet_distance",
           "frechet_distance_features", "kid", "knn_radii", "precision_recall",
           "class_coverage", "class_kl", "classifier_score"]
