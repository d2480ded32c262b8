"""SDPAL on IMD2020 (Novozamsky et al., WACV-W 2020) with the release's setup.

The release trains on the tampered images only (``IMD2020_tamp_*.lst``); the
``imd2020`` builder's ``train``/``validation`` splits hold the manipulated
images with their masks. Variants: ``:gpu``, ``:tpu``, ``:bf16``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from paper_common import paper_config, parse_variants  # noqa: E402


def get_config(arg=None):
  return paper_config(
    dataset="imd2020", num_train_examples=1_800, epochs=200, variants=parse_variants(arg)
  )
