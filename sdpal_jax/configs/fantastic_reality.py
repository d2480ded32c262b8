"""SDPAL on FantasticReality (Kniaz et al., NeurIPS 2019) with the release's setup.

The release names ``FantasticReality_{train,valid}.lst`` (main.py L183, L191,
commented out) but does not publish them: the splits here are the
``fantastic_reality`` builder's ``train``/``validation`` (ours).
Length: 50 epochs of ~16,000 photos (ours: a budget, and an approximate
split size that only sets the epoch length, i.e. how often validation runs).
Variants: ``:gpu``, ``:gpu_tf32``, ``:tpu``, ``:bf16`` (see paper_common.py).
"""

from sdpal_jax.configs.common import parse_variants
from sdpal_jax.configs.paper_common import VARIANTS, paper_config


def get_config(arg=None):
  return paper_config(
    dataset="fantastic_reality",
    num_train_examples=16_000,  # ours: approximate size of the builder's train split
    epochs=50,  # ours: a budget
    variants=parse_variants(arg, VARIANTS),
  )
