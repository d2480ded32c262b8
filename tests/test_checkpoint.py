"""Checkpoint directories: what predict/evaluate/train share."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


# --- TrainingCheckpoints: resume, best/, save errors -----------------------------------------


def _train_state(fill: float = 1.0):
  """A small real TrainState (Adam): 200k random float32 parameters (an 800 kB data file)."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import optax  # noqa: PLC0415

  from sdpal_jax.train_state import TrainState  # noqa: PLC0415

  return TrainState.create(
    apply_fn=None,
    params={"dense": {"kernel": fill + jax.random.normal(jax.random.key(0), (500, 400))}},
    batch_stats={"bn": {"mean": jnp.zeros(4, jnp.float32)}},
    tx=optax.adam(1e-3),
  )


def _training_checkpoints(workdir):
  return checkpoint.TrainingCheckpoints(str(workdir), keep=3, best_metric="validation/pixel_f1")


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("damaged", ["array data", "metadata"])
def test_resume_falls_back_to_the_previous_step_when_the_latest_has_a_truncated_file(
  tmp_path, caplog, damaged
):
  saved = _training_checkpoints(tmp_path)
  saved.save(1, _train_state(1.0).replace(step=1))
  saved.save(2, _train_state(2.0).replace(step=2))
  saved.close()
  step_dir = tmp_path / checkpoint.LATEST_DIR / "2"
  if damaged == "array data":
    files = [os.path.join(d, n) for d, _, names in os.walk(step_dir) for n in names]
    _truncate(max(files, key=os.path.getsize))
    named = ["dense.kernel", f"{checkpoint.LATEST_DIR}/2/model"]  # the array and its database
  else:
    _truncate(step_dir / "train_state" / "_METADATA")
    named = [f"{checkpoint.LATEST_DIR}/2/train_state/_METADATA"]

  resumed = _training_checkpoints(tmp_path)
  with caplog.at_level("WARNING"):
    state, origin = resumed.restore_or_initialize(_train_state(0.0))
  assert origin == "resumed from step 1"
  assert int(state.step) == 1
  np.testing.assert_array_equal(
    state.params["dense"]["kernel"], _train_state(1.0).params["dense"]["kernel"]
  )
  warning = next(r.getMessage() for r in caplog.records if "damaged" in r.getMessage())
  assert all(name in warning for name in named), warning
  assert (tmp_path / checkpoint.UNREADABLE_DIR / "2").is_dir()  # kept for inspection
  resumed.save(2, state.replace(step=2))  # the damaged step's number is free again
  resumed.close()
  assert checkpoint.saved_steps(str(tmp_path)) == [1, 2]


def test_resume_skips_a_latest_step_with_non_finite_values(tmp_path, caplog):
  """A step a diverged run saved (as training did before it stopped on NaN) is set aside."""
  saved = _training_checkpoints(tmp_path)
  saved.save(1, _train_state(1.0).replace(step=1))
  saved.save(2, _train_state(float("nan")).replace(step=2))
  saved.close()
  resumed = _training_checkpoints(tmp_path)
  with caplog.at_level("WARNING"):
    state, origin = resumed.restore_or_initialize(_train_state(0.0))
  resumed.close()
  assert origin == "resumed from step 1" and np.isfinite(state.params["dense"]["kernel"]).all()
  warning = next(r.getMessage() for r in caplog.records if "damaged" in r.getMessage())
  assert f"{checkpoint.LATEST_DIR}/2 is damaged (it holds non-finite values" in warning
  assert checkpoint.saved_steps(str(tmp_path)) == [1]


def test_a_resume_that_no_step_can_take_names_the_latest_and_moves_nothing(tmp_path):
  saved = _training_checkpoints(tmp_path)
  saved.save(1, _train_state())
  saved.close()
  other_model = _train_state().replace(params={"dense": {"kernel": np.zeros((3, 3), np.float32)}})
  resumed = _training_checkpoints(tmp_path)
  with pytest.raises(CheckpointError, match=f"{checkpoint.LATEST_DIR}/1: cannot restore") as e:
    resumed.restore_or_initialize(other_model)
  resumed.close()
  assert "\n" not in str(e.value)
  assert os.listdir(tmp_path / checkpoint.LATEST_DIR) == ["1"]
  assert not (tmp_path / checkpoint.UNREADABLE_DIR).exists()


def test_a_best_step_at_or_after_the_resumed_step_is_replaced_when_beaten(tmp_path):
  """A run killed between its best/ save and its regular save at step 3 left best/3 beside
  checkpoints/2; the resumed run reaches step 3 again with a better validation."""
  state = _train_state()
  first = _training_checkpoints(tmp_path)
  first.save(2, state.replace(step=2))
  first.save_if_best(3, state, {"validation/pixel_f1": 0.1})
  first.close()

  resumed = _training_checkpoints(tmp_path)
  restored, origin = resumed.restore_or_initialize(state)
  assert origin == "resumed from step 2"
  assert resumed.save_if_best(3, restored, {"validation/pixel_f1": 0.5})
  resumed.save(3, restored)
  resumed.close()
  best = checkpoint.checkpoint_manager(str(tmp_path / checkpoint.BEST_DIR), max_to_keep=None)
  assert best.all_steps() == [3] and best.metrics(3)["validation/pixel_f1"] == 0.5
  best.close()


def test_a_value_below_a_best_save_still_in_flight_is_not_best(tmp_path):
  checkpoints = _training_checkpoints(tmp_path)
  state = _train_state()
  assert checkpoints.save_if_best(10, state, {"validation/pixel_f1": 0.5})
  assert not checkpoints.save_if_best(20, state, {"validation/pixel_f1": 0.4})
  assert checkpoints.best_value() == 0.5
  checkpoints.close()


def test_a_non_finite_validation_value_is_never_best(tmp_path):
  checkpoints = _training_checkpoints(tmp_path)
  assert not checkpoints.save_if_best(1, _train_state(), {"validation/pixel_f1": float("nan")})
  assert checkpoints.best.all_steps() == [] and checkpoints.best_value() is None
  checkpoints.close()


SAVE_ON_A_FULL_DISK = """
import resource, sys
sys.path.insert(0, sys.argv[2])
import test_checkpoint
from sdpal_jax import checkpoint
from sdpal_jax.errors import CheckpointError
checkpoints = test_checkpoint._training_checkpoints(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # files over 100 kB: EFBIG
try:
  checkpoints.save(5, test_checkpoint._train_state())
except CheckpointError as e:
  print("raised by save:", e)
"""


def test_a_failed_save_is_an_error_of_its_own_step_not_of_the_next_save(tmp_path):
  """A write that the file system refuses (here: RLIMIT_FSIZE, EFBIG, as a full disk's ENOSPC)
  is a one-line CheckpointError from ``save`` itself, naming the step."""
  tests = os.path.dirname(os.path.abspath(__file__))
  run = subprocess.run(
    [sys.executable, "-c", SAVE_ON_A_FULL_DISK, str(tmp_path), tests],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  lines = [line for line in run.stdout.splitlines() if line.startswith("raised by save:")]
  assert len(lines) == 1, run.stdout[-2000:] + run.stderr[-3000:]
  assert "step 5: saving" in lines[0] and f"{checkpoint.LATEST_DIR}/5" in lines[0]
