"""SDPAL on one TampCOCO subset (Kwon et al., CAT-Net, IJCV 2022) with the release's setup.

The config argument names the subset and variants: ``configs/tampcoco.py:sp``
(splicing), ``:cm`` (copy-move), ``:bcm`` (blurred copy-move), ``:bcmc``
(blurred copy-move, compressed), e.g. ``configs/tampcoco.py:sp,tpu``. The
default subset is ``sp``. The release's TampCOCO lists are not published
(its Table 1 reports TampCOCO; main.py names no TampCOCO list): the splits
are the ``tampcoco`` builder's ``train``/``validation`` (ours).
Data: streamed from the tfds files (``data.pipeline="stream"``; ours: a
subset is far larger than memory), shuffled through a buffer of
``data.shuffle_buffer`` photos where the release's DataLoader reshuffles the
whole split every epoch (main.py L188); a resumed run re-seeds the shuffle
rather than continuing the exact batch order.
Length: 5 epochs of ~180,000 photos (ours: a budget, and an approximate split
size that only sets the epoch length, i.e. how often validation runs).
Variants: ``:gpu``, ``:gpu_tf32``, ``:tpu``, ``:bf16`` (see paper_common.py).
"""

from sdpal_jax.configs.common import parse_variants
from sdpal_jax.configs.paper_common import VARIANTS, paper_config
from sdpal_jax.errors import ConfigError

SUBSETS = ("sp", "cm", "bcm", "bcmc")


def get_config(arg=None):
  parts = parse_variants(arg, VARIANTS + SUBSETS)
  subsets = [p for p in parts if p in SUBSETS] or ["sp"]
  if len(subsets) > 1:
    raise ConfigError(f"name one TampCOCO subset, got {subsets}.")
  c = paper_config(
    dataset=f"tampcoco/{subsets[0]}",
    num_train_examples=180_000,  # ours: approximate size of the builder's train split
    epochs=5,  # ours: a budget
    variants=[p for p in parts if p not in SUBSETS],
  )
  c.data.pipeline = "stream"
  return c
