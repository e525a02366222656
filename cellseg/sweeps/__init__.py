"""Hyper-parameter search drivers (Optuna with SQLite storage: resumable, failed trials recorded)."""
