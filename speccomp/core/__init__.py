"""The shared core: config schema and loading, data splits, models, training loop, metrics."""
