"""SDPAL on CASIA v2 as in the paper's Table 1 (the release's setup: paper_common.py).

The release's (main.py L185, L193): ``data/lst/CASIA_v2_train.lst`` (11,294
photos) for training and ``CASIA_v2_valid.lst`` (1,255) for validation, both
with authentic photos (mask ``None``: all zero, main.py L41-46) and tampered
ones. To train on exactly that split, build ``casia_v2/release_split`` from
those lists (see the builder's docstring) and run with
``--config.data.dataset=casia_v2/release_split``; the default ``casia_v2``
builder splits 90/10 by a hash of the file name (ours: no list needed).
Length: 100 epochs of 11,294 photos (ours: the release runs until stopped,
keeping the best validation F1).
Variants: ``:gpu``, ``:gpu_tf32``, ``:tpu``, ``:bf16`` (see paper_common.py).
"""

from sdpal_jax.configs.common import parse_variants
from sdpal_jax.configs.paper_common import VARIANTS, paper_config


def get_config(arg=None):
  return paper_config(
    dataset="casia_v2",
    num_train_examples=11_294,  # the release's CASIA_v2_train.lst
    epochs=100,  # ours: a budget
    variants=parse_variants(arg, VARIANTS),
  )
