"""Small SDPAL configs and checkpoints shared by tests."""

from __future__ import annotations

import subprocess
import sys

import jax
import ml_collections

from sdpal_jax import checkpoint, model_config
from sdpal_jax.configs.tiny import tiny_model
from sdpal_jax.models import build_model, init_model


def tiny_model_config(**overrides) -> ml_collections.ConfigDict:
  """The ``tiny`` config's network (seconds to compile) with ``overrides`` (``walk_*``: walk.*)."""
  c = tiny_model()
  for key, value in overrides.items():
    if key.startswith("walk_"):
      c.walk[key[len("walk_") :]] = value
    else:
      c[key] = value
  return c


def save_tiny_checkpoint(
  directory, *, image_size=(64, 64), normalization="imagenet", seed=0, tile_size=None, **model
):
  """A random-weight tiny SDPAL checkpoint directory; returns its path."""
  config = ml_collections.ConfigDict()
  config.model = tiny_model_config(**model)
  config.preprocess = model_config.default_preprocess_config()
  config.preprocess.image_size = image_size
  config.preprocess.normalization = normalization
  config.preprocess.tile_size = tile_size
  size = image_size or (64, 64)
  variables = init_model(build_model(config.model), jax.random.key(seed), (1, *size, 3))
  checkpoint.save_inference_checkpoint(str(directory), variables=variables, config=config, step=1)
  return str(directory)


def run_packager(*args: str, cwd) -> subprocess.CompletedProcess:
  """``python -m sdpal_jax.packaged_model ARGS`` in ``cwd``, output captured."""
  return subprocess.run(
    [sys.executable, "-m", "sdpal_jax.packaged_model", *args],
    capture_output=True, text=True, timeout=300, cwd=cwd,
  )  # fmt: skip
