"""Kept so that `--config configs/tampcoco.py` works from a clone: the config is sdpal_jax.configs.tampcoco."""

from sdpal_jax.configs.tampcoco import get_config  # noqa: F401
