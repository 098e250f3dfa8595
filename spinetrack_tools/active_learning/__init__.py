"""Active-learning rounds: workspace state, selection strategies, the round stages, the simulated annotator."""

STRATEGY_NAMES = ("random", "least_confidence", "flip", "biomech", "hybrid")  # strategies.STRATEGIES' keys
DEFAULT_STRATEGY = "least_confidence"  # the most label-efficient in scripts/bench_active_learning.py (README)
