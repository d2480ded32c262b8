"""SDPAL on CASIA v2 as in the paper's Table 1 (the release's setup, paper_common.py).

Splits: the ``casia_v2`` builder's ``train``/``validation``; to use the
release's exact 11,294 / 1,255 split, build ``casia_v2/release_split`` from the
release's ``.lst`` files (see the builder's docstring) and run with
``--config.data.dataset=casia_v2/release_split``.
Variants: ``configs/casia_v2.py:gpu``, ``:tpu``, ``:bf16`` (see paper_common.py).
"""

from sdpal_jax.configs.common import parse_variants
from sdpal_jax.configs.paper_common import VARIANTS, paper_config


def get_config(arg=None):
  return paper_config(
    dataset="casia_v2",
    num_train_examples=11_294,
    epochs=100,
    variants=parse_variants(arg, VARIANTS),
  )
