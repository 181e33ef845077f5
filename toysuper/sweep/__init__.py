"""Experiments: TOML configs, planning, running, the results store, figures, the CLI."""
