"""Kept so that `--config configs/imd2020.py` works from a clone: the config is sdpal_jax.configs.imd2020."""

from sdpal_jax.configs.imd2020 import get_config  # noqa: F401
