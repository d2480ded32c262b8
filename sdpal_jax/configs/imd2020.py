"""SDPAL on IMD2020 (Novozamsky et al., WACV-W 2020) with the release's setup.

The release trains on the tampered images only (``IMD2020_tamp_*.lst``); the
``imd2020`` builder's ``train``/``validation`` splits hold the manipulated
images with their masks. Variants: ``:gpu``, ``:tpu``, ``:bf16``.
"""

from sdpal_jax.configs.common import parse_variants
from sdpal_jax.configs.paper_common import VARIANTS, paper_config


def get_config(arg=None):
  return paper_config(
    dataset="imd2020", num_train_examples=1_800, epochs=200, variants=parse_variants(arg, VARIANTS)
  )
