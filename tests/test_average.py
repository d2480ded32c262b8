"""Checkpoint averaging (sdpal_jax.average): the mean of a run's saved steps as a checkpoint."""

from __future__ import annotations

import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from model_fixtures import save_tiny_checkpoint, tiny_model_config

from sdpal_jax import average, checkpoint, model_config
from sdpal_jax.errors import CheckpointError, SdpalError
from sdpal_jax.inference import Predictor
from sdpal_jax.models import build_model, init_model


def _tree(seed):
  rng = np.random.default_rng(seed)
  return {
    "params": {"conv": {"kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32)}},
    "batch_stats": {"bn": {"mean": rng.normal(size=4).astype(np.float32)}},
  }


def test_average_variables_is_the_leafwise_mean():
  trees = [_tree(seed) for seed in range(3)]
  mean = average.average_variables(trees)
  for keys in (("params", "conv", "kernel"), ("batch_stats", "bn", "mean")):
    leaves = [t[keys[0]][keys[1]][keys[2]] for t in trees]
    got = mean[keys[0]][keys[1]][keys[2]]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.mean(leaves, axis=0), rtol=1e-6)


def test_average_variables_of_half_precision_leaves_is_float32():
  trees = [jax.tree.map(lambda x: x.astype(np.float16), _tree(seed)) for seed in range(2)]
  mean = average.average_variables(trees)
  assert mean["params"]["conv"]["kernel"].dtype == np.float32


def test_average_variables_rejects_different_structures_shapes_and_integer_leaves():
  other = _tree(1)
  other["params"]["extra"] = {"bias": np.zeros(4, np.float32)}
  with pytest.raises(CheckpointError, match="different variables"):
    average.average_variables([_tree(0), other])
  wrong_shape = _tree(1)
  wrong_shape["params"]["conv"]["kernel"] = np.zeros((3, 3, 2, 8), np.float32)
  with pytest.raises(CheckpointError, match=r"\['params'\]\['conv'\]\['kernel'\].*shapes differ"):
    average.average_variables([_tree(0), wrong_shape])
  counters = [{"count": np.array(1, np.int32)}, {"count": np.array(2, np.int32)}]
  with pytest.raises(CheckpointError, match="int32 array cannot be averaged"):
    average.average_variables(counters)
  with pytest.raises(CheckpointError, match="nothing to average"):
    average.average_variables([])


@pytest.mark.parametrize(
  "spec, expected",
  [("last:2", [700, 800]), ("last:4", [200, 400, 700, 800]), ("800, 200", [200, 800])],
)
def test_parse_steps_takes_the_latest_k_or_a_list(spec, expected):
  assert average.parse_steps(spec, [800, 200, 400, 700]) == expected


@pytest.mark.parametrize(
  "spec, message",
  [
    ("last:1", "need 2 to 4 steps"),
    ("last:5", "need 2 to 4 steps"),
    ("last:x", "whole number"),
    ("200,300", r"\[300\] not saved"),
    ("400", "at least two steps"),
    ("a,b", "give 'last:K'"),
  ],
)
def test_parse_steps_names_what_is_wrong(spec, message):
  with pytest.raises(SdpalError, match=message):
    average.parse_steps(spec, [200, 400, 700, 800])


def _run_with_two_steps(tmp_path):
  """A tiny checkpoint directory with steps 1 (seed 0) and 2 (seed 1); returns (dir, [v1, v2])."""
  run = save_tiny_checkpoint(tmp_path / "run", seed=0)
  first = checkpoint.load_inference_checkpoint(run, 1)
  second_variables = init_model(build_model(first.model_config), jax.random.key(1), (1, 64, 64, 3))
  checkpoint.save_inference_checkpoint(run, variables=second_variables, config=first.config, step=2)
  return run, [first.variables, checkpoint.load_inference_checkpoint(run, 2).variables]


def test_averaged_checkpoint_holds_the_mean_and_predicts(tmp_path):
  run, variables = _run_with_two_steps(tmp_path)
  out = average.average_checkpoints(run, [1, 2], str(tmp_path / "avg"))
  loaded = checkpoint.load_inference_checkpoint(out)
  assert loaded.step == 2
  assert list(loaded.config.averaged_from.steps) == [1, 2]
  assert loaded.config.averaged_from.workdir == str(tmp_path / "run")
  expected = jax.tree.map(lambda a, b: (np.asarray(a) + np.asarray(b)) / 2, *variables)
  jax.tree.map(
    lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7),
    loaded.variables,
    expected,
  )
  image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  probabilities = Predictor.from_checkpoint(out).predict_image(image)
  assert probabilities.shape == (64, 64) and np.all(np.isfinite(probabilities))


def _small_run(tmp_path):
  """Two steps of small arrays under a tiny model's config (no network built): a run to average."""
  config = ml_collections.ConfigDict()
  config.model = tiny_model_config()
  config.preprocess = model_config.default_preprocess_config()
  run = str(tmp_path / "run")
  for step in (1, 2):
    checkpoint.save_inference_checkpoint(run, variables=_tree(step), config=config, step=step)
  return run


def test_averaging_refuses_to_overwrite_a_directory_with_files(tmp_path):
  run = _small_run(tmp_path)
  taken = tmp_path / "taken"
  taken.mkdir()
  (taken / "notes.txt").write_text("keep me")
  with pytest.raises(CheckpointError, match="not empty"):
    average.average_checkpoints(run, [1, 2], str(taken))
  assert (taken / "notes.txt").read_text() == "keep me"


def test_sdpal_average_command_writes_the_mean_and_names_bad_steps(tmp_path):
  run = _small_run(tmp_path)
  ok = subprocess.run(
    [sys.executable, "-m", "sdpal_jax.average", "--workdir", run, "--steps", "last:2",
     "--output_dir", str(tmp_path / "avg")],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "the mean of steps 1, 2" in ok.stdout
  averaged = checkpoint.load_inference_checkpoint(str(tmp_path / "avg"))
  assert averaged.step == 2
  np.testing.assert_allclose(
    averaged.variables["params"]["conv"]["kernel"],
    (_tree(1)["params"]["conv"]["kernel"] + _tree(2)["params"]["conv"]["kernel"]) / 2,
    rtol=1e-6,
  )
  bad = subprocess.run(
    [sys.executable, "-m", "sdpal_jax.average", "--workdir", run, "--steps", "1,5",
     "--output_dir", str(tmp_path / "avg2")],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert bad.returncode == 2
  assert "error: --steps: [5] not saved; saved steps: [1, 2]." in bad.stderr
  assert "Traceback" not in bad.stderr
