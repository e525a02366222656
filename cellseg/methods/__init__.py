"""Methods: thin LightningModules and stage functions over the shared data, model, post-processing and metrics."""
