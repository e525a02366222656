"""Scribble2Label: the LightningModule (`module.py`) and the EMA of its predictions that makes pseudo-labels
(`ema_maps.py`)."""
