"""Training: loss goes down, checkpoints load, resume is exact, best/ agrees with evaluate,
SIGTERM is clean, devices agree, the command line works by config name and installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import sgd_training

from sdpal_jax import checkpoint, configs, evaluate, train
from sdpal_jax.errors import CheckpointError, ConfigError
from sdpal_jax.inference import Predictor

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
VALIDATION = "synthetic_forgery/mixed_tiny:validation"


def _tiny(**fields):
  config = configs.load("tiny")
  for key, value in fields.items():
    config[key] = value
  return config


def _leaves(state):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("full")
  # AUC, not F1: after 4 steps the tiny model predicts no tampered pixel (F1 = 0 at every step).
  config = _tiny(num_train_steps=4, best_metric="validation/pixel_auc")
  return workdir, train.train_and_evaluate(config, str(workdir))


@pytest.mark.slow
def test_training_lowers_the_loss_and_leaves_a_checkpoint_predict_can_use(tmp_path):
  config = _tiny(
    num_train_steps=12, log_every_steps=3, eval_every_steps=12, checkpoint_every_steps=12
  )
  result = train.train_and_evaluate(config, str(tmp_path))
  losses = result["train_losses"]
  assert losses[-1] < losses[0], losses
  assert {"pixel_f1", "pixel_auc"} <= set(result["eval"]["validation"])
  assert result["eval"]["validation"]["num_scored"] == 6  # the whole mixed_tiny validation split
  loaded = checkpoint.load_inference_checkpoint(str(tmp_path))
  assert loaded.model_config.backbone_depth == 18
  prob = Predictor.from_checkpoint(str(tmp_path)).predict_image(np.zeros((40, 50, 3), np.uint8))
  assert prob.shape == (40, 50)
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))


@pytest.mark.slow
def test_resumed_run_ends_with_the_same_parameters(uninterrupted, tmp_path):
  _, full = uninterrupted
  train.train_and_evaluate(_tiny(num_train_steps=2), str(tmp_path))
  resumed = train.train_and_evaluate(_tiny(num_train_steps=4), str(tmp_path))
  assert resumed["step"] == 4
  for a, b in zip(_leaves(full["state"]), _leaves(resumed["state"]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_best_checkpoint_is_kept_beside_the_latest(uninterrupted):
  workdir, _ = uninterrupted
  assert os.listdir(workdir / checkpoint.BEST_DIR)
  assert sorted(os.listdir(workdir / checkpoint.LATEST_DIR)) == ["2", "4"]
  assert not (workdir / "best_f1.txt").exists()  # orbax's own step metrics, no sidecar


@pytest.mark.slow
def test_best_checkpoint_metric_equals_what_evaluate_prints_for_it(uninterrupted):
  workdir, result = uninterrupted
  best = checkpoint.checkpoint_manager(str(workdir / checkpoint.BEST_DIR), max_to_keep=None)
  step = best.best_step() or max(best.all_steps())
  recorded = best.metrics(step)["validation/pixel_auc"]
  best.close()
  assert checkpoint.load_inference_checkpoint(str(workdir)).step == step
  (printed,) = evaluate.evaluate_datasets(
    [str(workdir)], [VALIDATION], progress=False, verbose=False
  ).values()
  assert printed[VALIDATION]["pixel_auc"] == pytest.approx(recorded, abs=1e-7)
  # and the loop's last validation is the evaluator's result for the last step's weights
  (last,) = evaluate.evaluate_datasets(
    [Predictor.from_checkpoint(str(workdir), step=4)], [VALIDATION], progress=False, verbose=False
  ).values()
  assert last[VALIDATION]["pixel_auc"] == pytest.approx(
    result["eval"]["validation"]["pixel_auc"], abs=1e-7
  )


def test_a_missing_init_from_stops_before_any_data_is_read(tmp_path):
  with pytest.raises(CheckpointError, match="no_backbone_here"):
    train.train_and_evaluate(
      _tiny(init_from=str(tmp_path / "no_backbone_here")), str(tmp_path / "w")
    )
  assert not (tmp_path / "w").exists()


def test_best_metric_must_name_a_validation(tmp_path):
  with pytest.raises(ConfigError, match="best_metric"):
    train.train_and_evaluate(_tiny(best_metric="test/pixel_f1"), str(tmp_path))


def test_invalid_config_values_are_named(tmp_path):
  with pytest.raises(ConfigError, match="num_train_steps"):
    train.train_and_evaluate(_tiny(num_train_steps=0), str(tmp_path))
  bad = _tiny()
  bad.model.walk.method = "exact"
  with pytest.raises(ConfigError, match="walk.method"):
    train.train_and_evaluate(bad, str(tmp_path))


def test_a_model_without_an_input_size_must_train_on_crops(tmp_path):
  config = _tiny()
  config.preprocess.image_size = None
  with pytest.raises(ConfigError, match="data.crop_size"):
    train.train_and_evaluate(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_crops_at_the_photos_own_scale_train_a_model_that_predicts_at_any_size(tmp_path):
  config = _tiny(num_train_steps=2, eval_every_steps=2, checkpoint_every_steps=2)
  config.preprocess.image_size = None
  config.data.resize_policy = "random_crop"
  config.data.crop_size = (64, 64)
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result["eval"]["validation"]["num_scored"] == 6
  predictor = Predictor.from_checkpoint(str(tmp_path))
  assert predictor.preprocess_config.image_size is None and predictor.full_resolution
  assert predictor.predict_image(np.zeros((72, 96, 3), np.uint8)).shape == (72, 96)


def _cli(workdir, *overrides, config="tiny"):
  return [
    sys.executable, "-m", "sdpal_jax.train", f"--config={config}", f"--workdir={workdir}",
    *overrides,
  ]  # fmt: skip


@pytest.mark.slow
def test_unknown_config_field_stops_with_its_name_and_status_2(tmp_path):
  run = subprocess.run(
    _cli(tmp_path, "--config.no_such_field=3"), capture_output=True, text=True, timeout=300
  )
  assert run.returncode == 2
  assert "no_such_field" in run.stderr


@pytest.mark.slow
def test_bad_config_names_and_values_exit_2_with_one_error_line(tmp_path):
  for args in (
    _cli(tmp_path, config="no_such_config"),
    _cli(tmp_path, config="quickstart:nope"),
    _cli(tmp_path, "--config.num_train_steps=0"),
  ):
    run = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path):
  proc = subprocess.Popen(
    _cli(tmp_path, "--config.num_train_steps=100000", "--config.checkpoint_every_steps=1000",
         "--config.eval_every_steps=1000"),
    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
  )  # fmt: skip
  deadline = time.time() + 400
  events = None
  while time.time() < deadline and proc.poll() is None:
    logs = [n for n in os.listdir(tmp_path) if n.startswith("events")] if tmp_path.exists() else []
    if logs and os.path.getsize(tmp_path / logs[0]) > 200:  # training steps are being logged
      events = logs[0]
      break
    time.sleep(1)
  assert events, "training never started"
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]  # saved, then stopped
  steps = [int(s) for s in os.listdir(tmp_path / checkpoint.LATEST_DIR) if s.isdigit()]
  assert steps and 0 < max(steps) < 100000
  assert checkpoint.load_inference_checkpoint(str(tmp_path)).step == max(steps)


def test_a_sigterm_arriving_during_the_flag_all_gather_stops_at_the_next_step(monkeypatch):
  """Several processes without JAX's preemption service all-gather their SIGTERM flags after
  every step. A notice that lands while this process waits inside that all-gather must not be
  overwritten by the all-gather's result (gathered before it came): it stops the next step."""
  from jax.experimental import multihost_utils  # noqa: PLC0415

  real_allgather = multihost_utils.process_allgather
  calls = []

  def allgather_during_which_sigterm_arrives(flag):
    calls.append(int(flag))
    if len(calls) == 1:
      os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler before this call returns
    return real_allgather(flag)

  previous_handler = signal.getsignal(signal.SIGTERM)
  try:
    preemption = train._Preemption()
    preemption._mode = "allgather"  # what a multi-process run without the service uses
    monkeypatch.setattr(
      multihost_utils, "process_allgather", allgather_during_which_sigterm_arrives
    )
    assert not preemption.reached(1)  # gathered before the notice: every process goes on
    assert preemption.reached(2)  # the notice, kept, reaches every process one step later
    assert calls == [0, 1]
  finally:
    signal.signal(signal.SIGTERM, previous_handler)


EIGHT_DEVICES = """
import sys, jax
sys.path.insert(0, sys.argv[1])
import sgd_training
from sdpal_jax import configs
assert jax.device_count() == 8, jax.devices()
run = sgd_training.train_with_sgd(sgd_training.sgd_config(configs.load("tiny")), sys.argv[2])
run["grad_norms"] = sgd_training.logged_grad_norms(sys.argv[2])
sgd_training.save_run(sys.argv[3], run)
"""


@pytest.mark.slow
def test_eight_devices_give_the_parameters_of_one_device(tmp_path):
  """The same SGD steps on 8 devices and on 1: same losses and first gradient norm, and the
  same parameter and BatchNorm-statistics updates (the statistics of the whole global batch)."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = tmp_path / "eight.npz"
  run = subprocess.run(
    [sys.executable, "-c", EIGHT_DEVICES, TESTS, str(tmp_path / "w8"), str(out)],
    env=env, capture_output=True, text=True, timeout=900,
  )  # fmt: skip
  assert run.returncode == 0, run.stderr[-3000:]
  config = sgd_training.sgd_config(_tiny())
  single = sgd_training.train_with_sgd(config, str(tmp_path / "w1"))
  single["grad_norms"] = sgd_training.logged_grad_norms(str(tmp_path / "w1"))
  before = sgd_training.initial_variables(config)
  sgd_training.assert_same_training(sgd_training.load_run(str(out)), single, before)


@pytest.mark.slow
def test_config_json_records_model_and_preprocessing(uninterrupted):
  workdir, _ = uninterrupted
  raw = json.loads((workdir / "config.json").read_text())
  assert raw["preprocess"]["image_size"] == [64, 64]
  assert raw["model"]["feature_channels"] == 32


def test_logged_training_metrics_are_clu_averages_over_the_logged_steps():
  averaged = train.TrainMetrics.single_from_model_output(
    loss=np.asarray([1.0, 2.0, 6.0]), grad_norm=np.asarray([0.5, 0.5, 2.0])
  ).compute()
  np.testing.assert_allclose(float(averaged["loss"]), 3.0)
  np.testing.assert_allclose(float(averaged["grad_norm"]), 1.0)


@pytest.mark.slow
def test_installed_package_trains_by_config_name_from_another_directory(tmp_path):
  """``pip install .`` (not editable), then ``sdpal-train --config tiny`` outside the clone."""
  target = tmp_path / "site"
  install = subprocess.run(
    [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
     "--target", str(target), ROOT],
    capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert install.returncode == 0, install.stderr[-3000:]
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = dict(os.environ, PYTHONPATH=str(target))
  where = subprocess.run(
    [sys.executable, "-c", "import sdpal_jax; print(sdpal_jax.__file__)"],
    cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
  )  # fmt: skip
  assert where.stdout.startswith(str(target)), where.stdout + where.stderr
  run = subprocess.run(
    [str(target / "bin" / "sdpal-train"), "--config", "tiny", "--workdir", "w",
     "--config.num_train_steps=2"],
    cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert run.returncode == 0, run.stderr[-3000:]
  assert "step 2/2" in run.stdout
  assert checkpoint.load_inference_checkpoint(str(elsewhere / "w")).step == 2


@pytest.mark.parametrize(
  "command", ["sdpal-train", "sdpal-evaluate", "sdpal-predict", "sdpal-convert", "sdpal-average"]
)
@pytest.mark.slow
def test_console_scripts_list_their_flags_in_help(command):
  script = os.path.join(os.path.dirname(sys.executable), command)
  run = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
  expected = {
    "sdpal-train": ["--workdir", "--config"],
    "sdpal-evaluate": ["--workdir", "--datasets", "--protocol", "--perturb"],
    "sdpal-predict": ["--checkpoint", "--output_dir", "--full_resolution"],
    "sdpal-convert": ["--input", "--output_dir", "--kind"],
    "sdpal-average": ["--workdir", "--steps", "--output_dir"],
  }[command]
  for flag in expected:
    assert flag in run.stdout, run.stdout[-2000:]
