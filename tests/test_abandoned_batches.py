"""A script that stops iterating ``input_pipeline.train_batches`` exits normally."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

TAKE_ONE_BATCH = textwrap.dedent(
  """
  import sys
  from sdpal_jax import data_config, input_pipeline
  c = data_config.default_data_config()
  c.dataset, c.pipeline, c.shuffle_buffer = sys.argv[1], sys.argv[2], 4
  batches = input_pipeline.train_batches(
    c, image_size=(32, 32), global_batch_size=32, seed=0, normalization="raw")
  print("batch", next(batches)["image"].shape, flush=True)
  """
)


def _large_photos(root, n=8, size=768):
  """Tp/Gt pairs large enough that the pipeline is still decoding when the script ends."""
  os.makedirs(root / "Tp")
  os.makedirs(root / "Gt")
  rng = np.random.default_rng(0)
  for i in range(n):
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "Tp" / f"im{i}.png")
    Image.fromarray(((image[..., 0] > 128) * 255).astype(np.uint8)).save(root / "Gt" / f"im{i}.png")


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["stream", "memory"])
def test_script_that_takes_one_batch_and_returns_exits_within_seconds(tmp_path, pipeline):
  """The generator stays referenced until the interpreter shuts down, with tf.data threads
  refilling its prefetch buffer through tf.numpy_function: the shutdown used to wait for them
  forever (the stream pipeline every time, the memory pipeline often)."""
  _large_photos(tmp_path / "photos")
  start = time.monotonic()
  try:
    run = subprocess.run(
      [sys.executable, "-c", TAKE_ONE_BATCH, str(tmp_path / "photos"), pipeline],
      capture_output=True, text=True, timeout=120,
    )  # fmt: skip
  except subprocess.TimeoutExpired:
    pytest.fail(f"the {pipeline} pipeline's script did not exit within 120 s of starting")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "batch (32, 32, 32, 3)" in run.stdout
  print(f"{pipeline}: {time.monotonic() - start:.1f} s from start to exit")
