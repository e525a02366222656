"""Predict instance maps for new images: `python infer.py ckpt_path=RUN/checkpoints/last.ckpt input_dir=DIR`."""

from cellseg.tasks.infer import main

if __name__ == "__main__":
    main()
