"""SDPAL on one TampCOCO subset (Kwon et al., CAT-Net, IJCV 2022) with the release's setup.

The config argument names the subset and variants: ``configs/tampcoco.py:sp``
(splicing), ``:cm`` (copy-move), ``:bcm`` (blurred copy-move), ``:bcmc``
(blurred copy-move, compressed), e.g. ``configs/tampcoco.py:sp,tpu``. The
default subset is ``sp``.
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
  return paper_config(
    dataset=f"tampcoco/{subsets[0]}",
    num_train_examples=180_000,
    epochs=5,
    variants=[p for p in parts if p not in SUBSETS],
  )
