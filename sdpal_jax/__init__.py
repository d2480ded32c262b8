"""sdpal_jax: SDPAL image forgery localisation in JAX/Flax."""

import os

# TensorFlow is only the data reader here (tfds); its C++ start-up INFO lines
# would bury the commands' own output. A value the user set is kept.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from sdpal_jax.errors import SdpalError  # noqa: E402

__all__ = ["SdpalError"]
__version__ = "0.1.0"
