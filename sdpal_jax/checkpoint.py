"""Checkpoint directories that ``predict``, ``evaluate`` and ``train`` share.

Layout of a directory ``DIR`` (a training workdir or a converted checkpoint)::

  DIR/config.json          the full config as JSON; at least "model" (see
                           model_config.default_model_config) and "preprocess".
  DIR/checkpoints/<step>/  orbax CheckpointManager steps; item "model" holds
                           {"params": ..., "batch_stats": ...}; training adds
                           its own items (optimizer state etc.) beside it.
  DIR/best/<step>/         optional, same items: the best step by validation F1.

``load_inference_checkpoint`` prefers ``best/`` and falls back to the latest
step in ``checkpoints/``. Orbax writes each step to a temporary folder and
renames it when complete, so an interrupted save never leaves a step that
looks finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import ml_collections
import orbax.checkpoint as ocp

from sdpal_jax import model_config as model_config_lib
from sdpal_jax.errors import CheckpointError

CONFIG_FILE = "config.json"
LATEST_DIR = "checkpoints"
BEST_DIR = "best"
MODEL_ITEM = "model"


@dataclasses.dataclass
class InferenceCheckpoint:
  """What a model needs to predict: variables, model and preprocessing configs."""

  variables: dict[str, Any]
  model_config: ml_collections.ConfigDict
  preprocess_config: ml_collections.ConfigDict
  step: int
  config: ml_collections.ConfigDict
  path: str


def _to_jsonable(value):
  if isinstance(value, ml_collections.ConfigDict):
    return {k: _to_jsonable(v) for k, v in value.items()}
  if isinstance(value, dict):
    return {k: _to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_to_jsonable(v) for v in value]
  return value


def write_config(directory: str, config: ml_collections.ConfigDict) -> None:
  """Writes ``config.json`` atomically (temporary file + rename)."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, CONFIG_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(_to_jsonable(config), f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _tuples(value, reference):
  """JSON lists back to tuples where the reference config has tuples."""
  if isinstance(reference, tuple) and isinstance(value, list):
    return tuple(value)
  return value


def read_config(directory: str) -> ml_collections.ConfigDict:
  """Reads ``config.json``; model/preprocess fields are merged over the defaults."""
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.exists(path):
    raise CheckpointError(
      f"{path} is missing: {directory} is not an sdpal_jax checkpoint directory "
      "(train with sdpal_jax.train or convert with tools/convert_torch_checkpoint.py)."
    )
  try:
    with open(path) as f:
      raw = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{path}: cannot read the config ({e}).") from e
  config = ml_collections.ConfigDict(raw)
  with config.unlocked():
    for name, default in (
      ("model", model_config_lib.default_model_config()),
      ("preprocess", model_config_lib.default_preprocess_config()),
    ):
      merged = default
      for key, value in raw.get(name, {}).items():
        if (
          isinstance(value, dict)
          and key in merged
          and isinstance(merged[key], ml_collections.ConfigDict)
        ):
          for k2, v2 in value.items():
            merged[key][k2] = _tuples(v2, merged[key].get(k2))
        else:
          merged[key] = _tuples(value, merged.get(key))
      config[name] = merged
  return config


def checkpoint_manager(
  directory: str, *, max_to_keep: int | None = 3, item_names=(MODEL_ITEM,)
) -> ocp.CheckpointManager:
  """An orbax CheckpointManager over ``directory`` (absolute path)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=item_names)


def save_inference_checkpoint(
  directory: str,
  *,
  variables: dict[str, Any],
  config: ml_collections.ConfigDict,
  step: int = 0,
) -> str:
  """Writes ``config.json`` and ``checkpoints/<step>/model``; returns the directory.

  Args:
    directory: output directory (created).
    variables: ``{"params": ..., "batch_stats": ...}`` of the SDPAL model.
    config: must contain ``model`` and ``preprocess`` ConfigDicts.
    step: the step number to record.
  """
  for name in ("model", "preprocess"):
    if name not in config:
      raise CheckpointError(f"config has no '{name}' section; cannot save a usable checkpoint.")
  write_config(directory, config)
  manager = checkpoint_manager(os.path.join(directory, LATEST_DIR))
  manager.save(step, args=ocp.args.Composite(**{MODEL_ITEM: ocp.args.StandardSave(variables)}))
  manager.wait_until_finished()
  manager.close()
  return directory


def find_model_steps(directory: str) -> tuple[str, int] | None:
  """(manager directory, step) to load: the best step if any, else the latest."""
  for sub in (BEST_DIR, LATEST_DIR):
    path = os.path.abspath(os.path.join(directory, sub))
    if not os.path.isdir(path):
      continue
    steps = ocp.utils.checkpoint_steps(path)
    if steps:
      return path, max(steps)
  return None


def load_inference_checkpoint(directory: str) -> InferenceCheckpoint:
  """Loads variables and configs from a checkpoint directory (see module doc)."""
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise CheckpointError(f"{directory}: no such checkpoint directory.")
  config = read_config(directory)
  found = find_model_steps(directory)
  if found is None:
    raise CheckpointError(
      f"{directory}: no finished checkpoint step under {BEST_DIR}/ or {LATEST_DIR}/."
    )
  path, step = found
  manager = checkpoint_manager(path, max_to_keep=None)
  try:
    restored = manager.restore(
      step, args=ocp.args.Composite(**{MODEL_ITEM: ocp.args.StandardRestore()})
    )
  except Exception as e:  # orbax raises many types; name the file for the user.
    raise CheckpointError(f"{path}/{step}: cannot restore the model weights ({e}).") from e
  finally:
    manager.close()
  model_config_lib.validate_model_config(config.model)
  model_config_lib.validate_preprocess_config(config.preprocess)
  return InferenceCheckpoint(
    variables=dict(restored[MODEL_ITEM]),
    model_config=config.model,
    preprocess_config=config.preprocess,
    step=int(step),
    config=config,
    path=directory,
  )
