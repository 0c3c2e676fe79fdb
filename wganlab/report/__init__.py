"""Comparisons across runs: equal-budget tables, verdicts and plots."""
