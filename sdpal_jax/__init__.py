"""sdpal_jax: SDPAL image forgery localisation in JAX/Flax."""

from sdpal_jax.errors import SdpalError

__all__ = ["SdpalError"]
__version__ = "0.1.0"
