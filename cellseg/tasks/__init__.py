"""Task entry points behind train.py, eval.py and infer.py (and the cellseg-* console scripts)."""
