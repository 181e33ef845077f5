"""Ground truth: the planted features, how they fire and where they point."""
