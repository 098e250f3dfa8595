"""Active-learning rounds: workspace state, selection strategies, the round stages, the simulated annotator."""
