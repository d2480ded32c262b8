"""SDPAL on IMD2020 (Novozamsky et al., WACV-W 2020) with the release's setup.

The release trains and validates on the tampered photos only
(``IMD2020_tamp_{train,valid}.lst``, main.py L184, L192, commented out; the
lists are not published). The ``imd2020`` builder's ``train``/``validation``
splits also hold each photo's authentic original (all-zero mask), so this
config does not yet match the release there: it needs a tampered-only
builder config (or split) to name in ``data.dataset``.
Length: 200 epochs of ~1,800 photos (ours: a budget, and an approximate split
size that only sets the epoch length, i.e. how often validation runs).
Variants: ``:gpu``, ``:gpu_tf32``, ``:tpu``, ``:bf16`` (see paper_common.py).
"""

from sdpal_jax.configs.common import parse_variants
from sdpal_jax.configs.paper_common import VARIANTS, paper_config


def get_config(arg=None):
  return paper_config(
    dataset="imd2020",
    num_train_examples=1_800,  # ours: approximate size of the builder's train split
    epochs=200,  # ours: a budget
    variants=parse_variants(arg, VARIANTS),
  )
