"""SDPAL on FantasticReality (Kniaz et al., NeurIPS 2019) with the release's setup.

Splits: the ``fantastic_reality`` builder's ``train``/``validation`` (the
release's ``FantasticReality_{train,valid}.lst`` are not published).
Variants: ``:gpu``, ``:tpu``, ``:bf16`` (see paper_common.py).
"""

from sdpal_jax.configs.common import parse_variants
from sdpal_jax.configs.paper_common import VARIANTS, paper_config


def get_config(arg=None):
  return paper_config(
    dataset="fantastic_reality",
    num_train_examples=16_000,
    epochs=50,
    variants=parse_variants(arg, VARIANTS),
  )
