"""Kept so that `--config configs/casia_v2.py` works from a clone: the config is sdpal_jax.configs.casia_v2."""

from sdpal_jax.configs.casia_v2 import get_config  # noqa: F401
