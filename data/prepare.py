"""Thin wrapper: `python data/prepare.py DATASET --src DOWNLOADED --out DIR` (same as `python -m cellseg.data.convert`).

Accepts --out and --dst alike. Never downloads: --src is a local copy of the native release.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from cellseg.data.convert import main
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cellseg.data.convert import main

if __name__ == "__main__":
    sys.exit(main(prog="python data/prepare.py"))
