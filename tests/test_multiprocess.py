"""Two JAX processes on localhost (gloo CPU collectives) train like one process."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np

from sdpal_jax import train

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")

WORKER = """
import sys, numpy as np, jax
port, process_id, configs, workdir, out = sys.argv[1:]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
  coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id),
  local_device_ids=[0],
)
assert jax.process_count() == 2 and jax.device_count() == 2, jax.devices()
sys.path.insert(0, configs)
import tiny
from sdpal_jax import train
c = tiny.get_config(); c.num_train_steps = 2; c.optimizer.learning_rate = 1e-5
result = train.train_and_evaluate(c, workdir)
leaves = jax.tree_util.tree_leaves((result["state"].params, result["state"].batch_stats))
np.save(out, np.concatenate([np.ravel(x) for x in leaves]))
print("AUC", result["eval"]["validation"]["pixel_auc"])
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_end_with_identical_parameters_equal_to_one_process(tmp_path):
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
        str(tmp_path / "w2"),
        str(tmp_path / f"p{i}.npy"),
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
  first, second = np.load(tmp_path / "p0.npy"), np.load(tmp_path / "p1.npy")
  np.testing.assert_array_equal(first, second)
  # Both processes compute the validation metrics over the whole split: the same numbers.
  assert outputs[0][0].split("AUC")[-1] == outputs[1][0].split("AUC")[-1]

  sys.path.insert(0, CONFIGS)
  import tiny  # noqa: PLC0415

  config = tiny.get_config()
  config.num_train_steps = 2
  config.optimizer.learning_rate = 1e-5
  single = train.train_and_evaluate(config, str(tmp_path / "w1"))["state"]
  leaves = jax.tree_util.tree_leaves((single.params, single.batch_stats))
  expected = np.concatenate([np.ravel(x) for x in leaves])
  np.testing.assert_allclose(first, expected, rtol=1e-4, atol=5e-5)
