"""`python -m cellseg.data.convert DATASET --src NATIVE --dst ROOT`."""

from __future__ import annotations

import sys

from cellseg.data.convert import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m cellseg.data.convert"))
