"""Kept so that `--config configs/default_model.py` works from a clone: the config is sdpal_jax.configs.default_model."""

from sdpal_jax.configs.default_model import get_config  # noqa: F401
