"""The pipeline layer: building trainers, and running multi-stage methods stage by stage (resumable, cached)."""
