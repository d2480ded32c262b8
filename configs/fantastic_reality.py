"""Kept so that `--config configs/fantastic_reality.py` works from a clone: the config is sdpal_jax.configs.fantastic_reality."""

from sdpal_jax.configs.fantastic_reality import get_config  # noqa: F401
