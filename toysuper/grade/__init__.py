"""Grading SAEs against the ground truth: matching, metrics, diagnostics, formats."""
