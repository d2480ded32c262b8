"""Training configs shipped with the package, selectable by name or by path.

``--config quickstart`` names a config here, ``--config quickstart:tpu`` adds
its argument (variants are listed in each file's docstring);
``--config path/to/mine.py[:arg]`` loads any file with a ``get_config(arg)``
(your own configs can start from ``sdpal_jax.configs.common.base_config``).
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from sdpal_jax.errors import ConfigError

PACKAGED = (
  "quickstart",
  "default_model",
  "tiny",
  "casia_v2",
  "fantastic_reality",
  "imd2020",
  "tampcoco",
)
_HERE = os.path.dirname(os.path.abspath(__file__))


def resolve(spec: str) -> str:
  """``NAME[:arg]`` or ``path.py[:arg]`` -> ``/absolute/path.py[:arg]`` (checked to exist)."""
  path, sep, arg = spec.partition(":")
  if path in PACKAGED:
    path = os.path.join(_HERE, f"{path}.py")
  elif not path.endswith(".py"):
    raise ConfigError(
      f"--config {spec!r}: not a packaged config ({', '.join(PACKAGED)}) nor a .py file."
    )
  if not os.path.isfile(path):
    raise ConfigError(f"--config {spec!r}: no such file {path}.")
  return os.path.abspath(path) + sep + arg


def load(spec: str) -> ml_collections.ConfigDict:
  """The ConfigDict that ``--config spec`` gives (without command-line overrides)."""
  path, _, arg = resolve(spec).partition(":")
  module_spec = importlib.util.spec_from_file_location(
    "sdpal_config_" + os.path.basename(path)[:-3], path
  )
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path} has no get_config(arg) function.")
  return module.get_config(arg or None)
