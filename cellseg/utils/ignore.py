"""The ignore values of training targets, one per kind of map (docs/framework.md#weak-label-utilities).

- `IGNORE_CLASS` (255): class-index targets (uint8: supervised masks, scribbles, COIN's segmentation and edge
  targets); losses skip these pixels.
- `IGNORE_INSTANCE` (65535): instance-id pseudo-labels (uint16, where 255 is a valid instance id): pixels a weak
  method is unsure of, neither an instance nor background.
"""

IGNORE_CLASS = 255
IGNORE_INSTANCE = 65535
