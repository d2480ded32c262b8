"""Two JAX processes on localhost (gloo CPU collectives) train like one process."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import sgd_training

TESTS = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(TESTS, "..", "configs")

WORKER = """
import sys, jax
port, process_id, configs, tests, workdir, out = sys.argv[1:]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
  coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id),
  local_device_ids=[0],
)
assert jax.process_count() == 2 and jax.device_count() == 2, jax.devices()
sys.path[:0] = [configs, tests]
import tiny, sgd_training
run = sgd_training.train_with_sgd(sgd_training.sgd_config(tiny.get_config()), workdir)
sgd_training.save_run(out, run)
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_end_with_identical_parameters_equal_to_one_process(tmp_path):
  """Two processes of one device each: bit-identical results in both, and the SGD step of one
  process with one device (same losses, same parameter and BatchNorm-statistics updates)."""
  import tensorflow_datasets as tfds  # noqa: PLC0415

  import sdpal_jax.datasets  # noqa: F401, PLC0415

  # Build the data once here: two processes building it at once would race, and the one that
  # finishes first would wait past gloo's connection deadline for the other.
  tfds.builder("synthetic_forgery/mixed_tiny").download_and_prepare()
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  workers = [
    subprocess.Popen(
      [
        sys.executable,
        "-c",
        WORKER,
        str(port),
        str(i),
        CONFIGS,
        TESTS,
        str(tmp_path / "w2"),
        str(tmp_path / f"p{i}.npz"),
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )  # fmt: skip
    for i in range(2)
  ]
  outputs = [w.communicate(timeout=900) for w in workers]
  for worker, (_, stderr) in zip(workers, outputs, strict=True):
    assert worker.returncode == 0, stderr[-3000:]
  first = sgd_training.load_run(str(tmp_path / "p0.npz"))
  second = sgd_training.load_run(str(tmp_path / "p1.npz"))
  # Both processes hold the same replicated state and score the whole validation split.
  assert set(first) == {"params", "batch_stats", "losses", "validation_auc"}
  for key in first:
    np.testing.assert_array_equal(first[key], second[key], err_msg=key)

  sys.path.insert(0, CONFIGS)
  import tiny  # noqa: PLC0415

  config = sgd_training.sgd_config(tiny.get_config())
  single = sgd_training.train_with_sgd(config, str(tmp_path / "w1"))
  single["grad_norms"] = sgd_training.logged_grad_norms(str(tmp_path / "w1"))
  first["grad_norms"] = sgd_training.logged_grad_norms(str(tmp_path / "w2"))  # process 0's log
  before = sgd_training.initial_variables(config)
  sgd_training.assert_same_training(first, single, before)


PREEMPTED_WORKER = """
import sys, jax
port, process_id, configs, workdir, service = sys.argv[1:]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_enable_preemption_service", service == "on")
jax.distributed.initialize(
  coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id),
  local_device_ids=[0],
)
sys.path.insert(0, configs)
import tiny
from sdpal_jax import train
c = tiny.get_config()
c.num_train_steps = 150; c.log_every_steps = 1
c.eval_every_steps = 1000; c.checkpoint_every_steps = 1000  # only the preemption saves
result = train.train_and_evaluate(c, workdir)
print("STOPPED AT", result["step"], flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("service", ["on", "off"])
def test_sigterm_to_one_process_stops_both_at_the_same_saved_step(tmp_path, service):
  """A preemption notice reaching one process only: both save one step and exit 0.

  ``service="on"``: JAX's preemption sync manager agrees on the step; "off"
  (``jax_enable_preemption_service=False``): the SIGTERM flags are all-gathered.
  """
  import re  # noqa: PLC0415
  import signal  # noqa: PLC0415

  import tensorflow_datasets as tfds  # noqa: PLC0415

  import sdpal_jax.datasets  # noqa: F401, PLC0415
  from sdpal_jax import checkpoint  # noqa: PLC0415

  tfds.builder("synthetic_forgery/mixed_tiny").download_and_prepare()
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  workdir = tmp_path / "w"

  def start(i, stdout):
    args = [
      *(sys.executable, "-c", PREEMPTED_WORKER),
      *(str(port), str(i), CONFIGS, str(workdir), service),
    ]
    return subprocess.Popen(args, env=env, stdout=stdout, stderr=subprocess.STDOUT, text=True)

  with open(tmp_path / "p1.log", "w") as log1:
    first, second = start(0, subprocess.PIPE), start(1, log1)
    try:
      seen = []
      for line in first.stdout:  # process 0 prints a progress line after every step
        seen.append(line)
        if line.startswith("step 3/"):
          second.send_signal(signal.SIGTERM)  # the notice reaches process 1 only
          break
      else:
        raise AssertionError("process 0 ended before step 3:\n" + "".join(seen[-40:]))
      rest, _ = first.communicate(timeout=600)
      second.wait(timeout=600)
    finally:
      for worker in (first, second):
        if worker.poll() is None:
          worker.kill()
  output0 = "".join(seen) + rest
  output1 = (tmp_path / "p1.log").read_text()
  assert first.returncode == 0, output0[-3000:]
  assert second.returncode == 0, output1[-3000:]
  stopped = [int(re.search(r"STOPPED AT (\d+)", out).group(1)) for out in (output0, output1)]
  assert stopped[0] == stopped[1], (stopped, output1[-3000:])
  assert 3 <= stopped[0] < 150, output1[-3000:]  # not run to its end: the notice was honoured
  assert checkpoint.saved_steps(str(workdir)) == [stopped[0]]
