"""SDPAL on IMD2020 (Novozamsky et al., WACV-W 2020) with the release's setup.

  sdpal-train --config imd2020:gpu --workdir W

The release trains and validates on the tampered photos only
(``IMD2020_tamp_{train,valid}.lst``, main.py L184, L192, commented out; the
lists are not published): so does this config, on the ``imd2020/tampered``
builder config's ``train``/``validation`` splits (ours: split by a hash of the
photo's folder). Build it once with ``python -m sdpal_jax.datasets.build
imd2020/tampered --manual_dir DIR``.
Length: 200 epochs of ~1,600 photos (ours: a budget, and an approximate split
size, 80% of the 2,010 manipulated photos, that only sets the epoch length,
i.e. how often validation runs).
Variants: ``:gpu``, ``:gpu_tf32``, ``:tpu``, ``:bf16`` (see paper_common.py).
"""

from sdpal_jax.configs.common import parse_variants
from sdpal_jax.configs.paper_common import VARIANTS, paper_config


def get_config(arg=None):
  return paper_config(
    dataset="imd2020/tampered",  # the manipulated photos only, as the release's lists
    num_train_examples=1_600,  # ours: approximate size of the tampered train split
    epochs=200,  # ours: a budget
    variants=parse_variants(arg, VARIANTS),
  )
