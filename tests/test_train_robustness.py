"""Training loses nothing: divergence stops before a NaN is saved, an incompatible resume touches
nothing, one run per workdir, Ctrl-C saves the step, and exit statuses a wrapper can read."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from sdpal_jax import checkpoint, configs, train
from sdpal_jax.errors import ConfigError

TESTS = os.path.dirname(os.path.abspath(__file__))


def _tiny(**fields):
  config = configs.load("tiny")
  for key, value in fields.items():
    config[key] = value
  return config


def _cli(workdir, *overrides, config="tiny"):
  return [
    sys.executable, "-m", "sdpal_jax.train", f"--config={config}", f"--workdir={workdir}",
    *overrides,
  ]  # fmt: skip


def _one_clean_error(run):
  assert run.returncode == 2, run.stdout[-1000:] + run.stderr[-3000:]
  errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
  return errors[0]


def _wait_for(predicate, timeout, what, proc=None):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    if proc is not None and proc.poll() is not None:
      break
    time.sleep(0.5)
  raise AssertionError(f"{what} did not happen within {timeout} s")


@pytest.fixture(scope="module")
def good_workdir(tmp_path_factory):
  """Two finite steps of the tiny config: checkpoints/2, best/2 and config.json."""
  workdir = tmp_path_factory.mktemp("good")
  train.train_and_evaluate(_tiny(num_train_steps=2), str(workdir))
  return workdir


# --- divergence --------------------------------------------------------------------------------


@pytest.mark.slow
def test_resuming_with_a_diverging_learning_rate_stops_and_keeps_the_good_steps(
  good_workdir, tmp_path
):
  """lr 1e6 turns the loss into nan within a few steps: the run stops naming that step and the
  last good checkpoint; nothing non-finite is saved and step 2 is not rotated out (keep=3)."""
  workdir = tmp_path / "w"
  shutil.copytree(good_workdir, workdir)
  config = _tiny(num_train_steps=20, log_every_steps=10, eval_every_steps=100)
  config.optimizer.learning_rate = 1e6
  with pytest.raises(train.TrainingDivergedError) as raised:
    train.train_and_evaluate(config, str(workdir))
  message = str(raised.value)
  assert "\n" not in message
  assert "training diverged at step" in message and "stopped without saving it" in message
  bad_step = int(message.split("training diverged at step ")[1].split(" ")[0])
  saved = checkpoint.saved_steps(str(workdir))
  last_good = max(s for s in saved)
  assert f"Last good checkpoint: {workdir / checkpoint.LATEST_DIR / str(last_good)}" in message
  assert 2 in saved and last_good < bad_step
  for step in saved:
    variables = checkpoint.load_inference_checkpoint(str(workdir), step=step).variables
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(variables)), step


def test_all_finite_sees_one_nan_among_the_leaves():
  tree = {"a": np.ones((3, 2), np.float32), "b": {"c": np.zeros(4, np.float32)}, "n": 3}
  assert bool(train._all_finite(tree))
  tree["b"]["c"][2] = np.nan
  assert not bool(train._all_finite(tree))


# --- resume with another config ----------------------------------------------------------------


def test_safe_changes_resume_and_shape_changes_are_named():
  config = _tiny()
  safe = _tiny(num_train_steps=99, eval_every_steps=7, log_every_steps=1, seed=5)
  safe.optimizer.learning_rate = 3e-5
  safe.optimizer.schedule = "cosine"
  safe.checkpoint_every_steps = 11
  safe.model.walk.method = "blocked"
  safe.evals[0].max_examples = 3
  assert train.resume_conflicts(config, safe) == []
  wider = _tiny()
  wider.model.feature_channels = 64
  wider.optimizer.grad_clip = 1.0
  assert train.resume_conflicts(config, wider) == [
    "model.feature_channels: 32 -> 64",
    "optimizer.grad_clip (on): False -> True",
  ]
  other = train.resume_conflicts(config, configs.load("quickstart"))
  assert "preprocess.image_size: [64, 64] -> [128, 128]" in other, other


def _recorded_workdir(root):
  """What a resume checks first, without training: a tiny run's config.json and a saved step."""
  workdir = root / "recorded"
  variables = {"params": {"w": np.zeros(3, np.float32)}, "batch_stats": {}}
  checkpoint.save_inference_checkpoint(str(workdir), variables=variables, config=_tiny(), step=2)
  return workdir


@pytest.mark.slow
def test_resuming_another_model_is_one_error_line_and_leaves_the_workdir_untouched(tmp_path):
  workdir = _recorded_workdir(tmp_path)
  recorded = (workdir / "config.json").read_bytes()
  before = sorted(os.listdir(workdir))
  errors = []
  for args in (
    _cli(workdir, "--config.model.feature_channels=64"),
    _cli(workdir, config="quickstart"),
  ):
    error = _one_clean_error(subprocess.run(args, capture_output=True, text=True, timeout=300))
    assert str(workdir) in error and "cannot resume" in error
    assert (workdir / "config.json").read_bytes() == recorded
    assert sorted(os.listdir(workdir)) == sorted({*before, train.LOCK_FILE})  # no events
    errors.append(error)
  assert "(model.feature_channels: 32 -> 64)" in errors[0]
  assert "preprocess.image_size: [64, 64] -> [128, 128]" in errors[1]


def test_a_file_given_as_workdir_is_a_config_error(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("not a directory")
  with pytest.raises(ConfigError, match=f"workdir {path} is a file"):
    train.train_and_evaluate(_tiny(), str(path))


# --- one run per workdir ---------------------------------------------------------------------

HOLD_THE_LOCK_AND_DIE = """
import os, signal, sys
from sdpal_jax import train
train.WorkdirLock(sys.argv[1]).acquire()
print("locked by", os.getpid(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
  run = subprocess.run(
    [sys.executable, "-c", HOLD_THE_LOCK_AND_DIE, str(tmp_path)],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert run.returncode == -signal.SIGKILL and "locked by" in run.stdout, run.stderr[-2000:]
  dead_pid = run.stdout.split("locked by")[1].split()[0]
  assert (tmp_path / train.LOCK_FILE).read_text().startswith(f"pid {dead_pid} on ")
  with train.WorkdirLock(str(tmp_path)):  # the kernel released the dead process's lock
    assert f"pid {os.getpid()} " in (tmp_path / train.LOCK_FILE).read_text()


@pytest.fixture(scope="module")
def running_training(tmp_path_factory):
  """A real tiny training run that goes on until a test stops it (stderr in a file)."""
  workdir = tmp_path_factory.mktemp("running")
  stderr_path = workdir.parent / f"{workdir.name}.stderr"
  stdout_path = workdir.parent / f"{workdir.name}.stdout"
  with open(stderr_path, "w") as stderr, open(stdout_path, "w") as stdout:
    proc = subprocess.Popen(
      _cli(workdir, "--config.num_train_steps=100000", "--config.log_every_steps=1",
           "--config.checkpoint_every_steps=1000", "--config.eval_every_steps=1000"),
      stdout=stdout, stderr=stderr, text=True,
    )  # fmt: skip
  _wait_for(
    lambda: "step 1/100000" in stdout_path.read_text(), 600, "the first training step", proc
  )
  yield proc, workdir, stdout_path, stderr_path
  if proc.poll() is None:
    proc.kill()
    proc.wait()


@pytest.mark.slow
def test_second_run_into_busy_workdir_stops_at_once(running_training):
  proc, workdir, _, _ = running_training
  started = time.monotonic()
  second = subprocess.run(_cli(workdir), capture_output=True, text=True, timeout=300)
  error = _one_clean_error(second)
  assert f"pid {proc.pid} on " in error and "in use by another training run" in error
  assert time.monotonic() - started < 120  # no data read, no compilation (imports only)
  assert proc.poll() is None  # the first run goes on


@pytest.mark.slow
def test_ctrl_c_saves_the_current_step_and_exits_130(running_training):
  proc, workdir, stdout_path, stderr_path = running_training
  proc.send_signal(signal.SIGINT)
  assert proc.wait(timeout=300) == 128 + signal.SIGINT, stderr_path.read_text()[-3000:]
  stderr = stderr_path.read_text()
  assert "Traceback" not in stderr and "SIGINT received" in stderr
  steps = [int(s) for s in os.listdir(workdir / checkpoint.LATEST_DIR) if s.isdigit()]
  assert len(steps) == 1 and 0 < steps[0] < 1000  # the interrupted step, not a periodic one
  assert f"stopped by SIGINT at step {steps[0]}/100000" in stdout_path.read_text()
  assert checkpoint.load_inference_checkpoint(str(workdir)).step == steps[0]
  assert json.loads((workdir / "config.json").read_text())["num_train_steps"] == 100000


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once(tmp_path):
  """The first Ctrl-C only asks for a save at the end of the step; the second one, here during
  the setup (data, compilation), ends the process at once with SIGINT's default action."""
  stderr_path = tmp_path / "stderr"
  with open(stderr_path, "w") as stderr:
    proc = subprocess.Popen(
      _cli(tmp_path / "w"), stdout=subprocess.DEVNULL, stderr=stderr, text=True
    )
  try:
    _wait_for(lambda: (tmp_path / "w" / train.LOCK_FILE).exists(), 300, "the lock", proc)
    proc.send_signal(signal.SIGINT)
    _wait_for(lambda: "SIGINT received" in stderr_path.read_text(), 120, "the first Ctrl-C", proc)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == -signal.SIGINT, stderr_path.read_text()[-3000:]
    assert time.monotonic() - started < 10
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
