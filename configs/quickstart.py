"""Kept so that `--config configs/quickstart.py` works from a clone: the config is sdpal_jax.configs.quickstart."""

from sdpal_jax.configs.quickstart import get_config  # noqa: F401
