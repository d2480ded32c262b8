"""tfds builders for forgery datasets; importing this package registers them."""

from sdpal_jax.datasets import synthetic_forgery  # noqa: F401 (registers the builder)
