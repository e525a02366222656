"""Train a method: `python train.py method=<coin|s2l|supervised> data=<dataset> [key=value ...]`."""

from cellseg.tasks.train import main

if __name__ == "__main__":
    main()
