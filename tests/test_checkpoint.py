"""Checkpoint directories: what predict/evaluate/train share."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
import pytest

from sdpal_jax import checkpoint, model_config
from sdpal_jax.errors import CheckpointError, ConfigError


def _config(**model_fields):
  config = ml_collections.ConfigDict()
  config.model = model_config.default_model_config()
  for key, value in model_fields.items():
    config.model[key] = value
  config.preprocess = model_config.default_preprocess_config()
  return config


def _variables():
  rng = np.random.default_rng(0)
  return {
    "params": {"conv": {"kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32)}},
    "batch_stats": {"bn": {"mean": np.zeros(4, np.float32), "var": np.ones(4, np.float32)}},
  }


def test_saved_checkpoint_restores_variables_and_configs(tmp_path):
  variables = _variables()
  checkpoint.save_inference_checkpoint(
    str(tmp_path),
    variables=variables,
    config=_config(backbone_depth=18, output_size=(64, 64)),
    step=7,
  )
  loaded = checkpoint.load_inference_checkpoint(str(tmp_path))
  assert loaded.step == 7
  assert loaded.model_config.backbone_depth == 18
  assert tuple(loaded.model_config.output_size) == (64, 64)
  assert isinstance(loaded.model_config.decoder_channels, tuple)
  assert loaded.preprocess_config.normalization == "raw"
  np.testing.assert_array_equal(
    loaded.variables["params"]["conv"]["kernel"], variables["params"]["conv"]["kernel"]
  )


def test_config_json_missing_fields_fall_back_to_defaults(tmp_path):
  checkpoint.save_inference_checkpoint(str(tmp_path), variables=_variables(), config=_config())
  path = tmp_path / "config.json"
  raw = json.loads(path.read_text())
  del raw["model"]["walk"]["num_landmarks"]
  raw["model"]["walk"]["method"] = "blocked"
  path.write_text(json.dumps(raw))
  loaded = checkpoint.load_inference_checkpoint(str(tmp_path))
  assert loaded.model_config.walk.method == "blocked"
  assert (
    loaded.model_config.walk.num_landmarks == model_config.default_model_config().walk.num_landmarks
  )


def test_best_step_is_preferred_over_latest(tmp_path):
  config = _config()
  checkpoint.save_inference_checkpoint(str(tmp_path), variables=_variables(), config=config, step=9)
  best = _variables()
  best["params"]["conv"]["kernel"] = np.full((3, 3, 2, 4), 5.0, np.float32)
  manager = checkpoint.checkpoint_manager(str(tmp_path / checkpoint.BEST_DIR))
  import orbax.checkpoint as ocp

  manager.save(3, args=ocp.args.Composite(model=ocp.args.StandardSave(best)))
  manager.wait_until_finished()
  loaded = checkpoint.load_inference_checkpoint(str(tmp_path))
  assert loaded.step == 3
  assert float(loaded.variables["params"]["conv"]["kernel"][0, 0, 0, 0]) == 5.0


def test_missing_directory_config_or_steps_are_named(tmp_path):
  with pytest.raises(CheckpointError, match="no such checkpoint directory"):
    checkpoint.load_inference_checkpoint(str(tmp_path / "nope"))
  with pytest.raises(CheckpointError, match="config.json is missing"):
    checkpoint.load_inference_checkpoint(str(tmp_path))
  checkpoint.write_config(str(tmp_path), _config())
  with pytest.raises(CheckpointError, match="no finished checkpoint step"):
    checkpoint.load_inference_checkpoint(str(tmp_path))


def test_unfinished_step_is_ignored(tmp_path):
  """An orbax temporary folder left by a killed save is not taken for a checkpoint."""
  checkpoint.save_inference_checkpoint(
    str(tmp_path), variables=_variables(), config=_config(), step=1
  )
  os.makedirs(tmp_path / checkpoint.LATEST_DIR / "5.orbax-checkpoint-tmp-123" / "model")
  assert checkpoint.load_inference_checkpoint(str(tmp_path)).step == 1


def test_invalid_config_value_names_the_field(tmp_path):
  checkpoint.save_inference_checkpoint(
    str(tmp_path), variables=_variables(), config=_config(output_stride=12)
  )
  with pytest.raises(ConfigError, match="model.output_stride=12"):
    checkpoint.load_inference_checkpoint(str(tmp_path))
