"""Kept so that `--config configs/tiny.py` works from a clone: the config is sdpal_jax.configs.tiny."""

from sdpal_jax.configs.tiny import get_config  # noqa: F401
