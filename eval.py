"""Evaluate predicted instance maps: `python eval.py data=monuseg split=test pred_dir=DIR`."""

from cellseg.tasks.evaluate import main

if __name__ == "__main__":
    main()
