"""SDPAL on FantasticReality (Kniaz et al., NeurIPS 2019) with the release's setup.

Splits: the ``fantastic_reality`` builder's ``train``/``validation`` (the
release's ``FantasticReality_{train,valid}.lst`` are not published).
Variants: ``:gpu``, ``:tpu``, ``:bf16`` (see paper_common.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from paper_common import paper_config, parse_variants  # noqa: E402


def get_config(arg=None):
  return paper_config(
    dataset="fantastic_reality", num_train_examples=16_000, epochs=50, variants=parse_variants(arg)
  )
