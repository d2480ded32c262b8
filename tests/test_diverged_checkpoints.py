"""predict and evaluate on a run that diverged: no number for a NaN map, --step to an earlier one.

One workdir holds three saved steps of the tiny network: step 1 healthy, step 2 with finite
weights whose maps are NaN (negative BatchNorm variances), step 3 with NaN weights (what an
unguarded diverged run saves). The latest is step 3, and there is no ``best/``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import jax
import numpy as np
import pytest
from model_fixtures import save_tiny_checkpoint
from PIL import Image

from sdpal_jax import checkpoint, evaluate, predict
from sdpal_jax.errors import CheckpointError, ConfigError
from sdpal_jax.evaluator import EvaluationError
from sdpal_jax.inference import Predictor


def _with_leaves(tree, name: str, value: float):
  """``tree`` with every array whose key is ``name`` filled with ``value``."""

  def replace(path, leaf):
    return np.full_like(leaf, value) if getattr(path[-1], "key", None) == name else leaf

  return jax.tree_util.tree_map_with_path(replace, tree)


@pytest.fixture(scope="module")
def diverged_workdir(tmp_path_factory):
  workdir = save_tiny_checkpoint(tmp_path_factory.mktemp("run") / "run")
  loaded = checkpoint.load_inference_checkpoint(workdir, step=1)
  variables = loaded.variables
  nan_maps = {**variables, "batch_stats": _with_leaves(variables["batch_stats"], "var", -1.0)}
  nan_weights = {**variables, "params": _with_leaves(variables["params"], "kernel", np.nan)}
  for step, broken in ((2, nan_maps), (3, nan_weights)):
    checkpoint.save_inference_checkpoint(workdir, variables=broken, config=loaded.config, step=step)
  assert checkpoint.saved_steps(workdir) == [1, 2, 3]
  return workdir


@pytest.fixture()
def photos(tmp_path):
  rng = np.random.default_rng(0)
  paths = []
  for name in ("first.png", "second.png"):
    paths.append(str(tmp_path / name))
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(paths[-1])
  return paths


def _strict_json(path):
  def refuse(constant):
    raise ValueError(f"{path} holds {constant}: not JSON")

  with open(path) as f:
    return json.load(f, parse_constant=refuse)


def test_nan_weights_are_refused_at_load_naming_the_step_and_the_saved_ones(diverged_workdir):
  with pytest.raises(CheckpointError, match=r"step 3 hold \d+ NaN .*saved steps: \[1, 2, 3\]"):
    Predictor.from_checkpoint(diverged_workdir)
  assert Predictor.from_checkpoint(diverged_workdir, step=1).step == 1


def test_predict_stops_at_the_first_nan_map_and_keeps_summary_json_valid(
  diverged_workdir, photos, tmp_path
):
  healthy = Predictor.from_checkpoint(diverged_workdir, step=1)
  done = predict.predict_files(healthy, photos, str(tmp_path / "healthy"))
  assert [r["stem"] for r in done["images"]] == ["first", "second"]
  assert all(math.isfinite(r["score"]) for r in done["images"])

  nan_maps = Predictor.from_checkpoint(diverged_workdir, step=2)
  out = tmp_path / "nan"
  with pytest.raises(predict.NonFiniteMapError) as raised:
    predict.predict_files(nan_maps, photos, str(out))
  message = str(raised.value)
  assert photos[0] in message and f"{diverged_workdir} (step 2)" in message
  assert (
    "4096 NaN and 0 infinite values of 4096 pixels" in message
    and "--step" in message
    and "\n" not in message
  )
  summary = _strict_json(out / "summary.json")
  assert summary["images"] == []
  assert [s["file"] for s in summary["skipped"]] == [photos[0]]  # stopped there
  assert sorted(p.name for p in out.iterdir()) == ["summary.json"]  # no map, mask or overlay


def test_evaluate_prints_no_number_for_nan_maps_and_names_dataset_and_image(diverged_workdir):
  rng = np.random.default_rng(1)
  mask = np.zeros((64, 64), np.uint8)
  mask[8:24, 8:40] = 1
  items = [
    {"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "mask": mask, "name": name}
    for name in ("a.png", "b.png")
  ]
  nan_maps = Predictor.from_checkpoint(diverged_workdir, step=2)
  for protocol in ("dataset", "image", "best"):
    request = evaluate.EvaluationRequest(protocol=protocol)
    with pytest.raises(EvaluationError, match=r"^toy: a\.png: predicted probabilities not finite"):
      evaluate.evaluate_datasets(
        [nan_maps], [("toy", items)], request, progress=False, verbose=False
      )


def _run(*args, timeout=300):
  return subprocess.run(
    [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout
  )


def _one_error_line(completed):
  assert completed.returncode == 2, completed.stderr[-3000:]
  assert "Traceback" not in completed.stderr
  lines = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1, completed.stderr[-3000:]
  return lines[0]


@pytest.mark.slow
def test_predict_cli_step_picks_a_saved_step_and_a_missing_one_lists_them(
  diverged_workdir, photos, tmp_path
):
  base = ["sdpal_jax.predict", f"--checkpoint={diverged_workdir}"]
  missing = _run(*base, "--step=7", f"--output_dir={tmp_path / 'o7'}", photos[0])
  assert "no step 7; saved steps: [1, 2, 3]" in _one_error_line(missing)
  latest = _run(*base, f"--output_dir={tmp_path / 'o3'}", photos[0])
  assert "step 3 hold" in _one_error_line(latest)
  nan_maps = _run(*base, "--step=2", f"--output_dir={tmp_path / 'o2'}", *photos)
  line = _one_error_line(nan_maps)
  assert photos[0] in line and "(step 2)" in line and "NaN" in line
  assert _strict_json(tmp_path / "o2" / "summary.json")["images"] == []
  earlier = _run(*base, "--step=1", f"--output_dir={tmp_path / 'o1'}", *photos)
  assert earlier.returncode == 0, earlier.stderr[-3000:]
  assert len(_strict_json(tmp_path / "o1" / "summary.json")["images"]) == 2


@pytest.mark.slow
def test_evaluate_cli_exits_2_without_a_table_for_nan_maps_and_takes_step(
  diverged_workdir, photos, tmp_path
):
  lst = tmp_path / "toy.lst"
  lst.write_text("".join(f"{p},None\n" for p in photos))
  base = ["sdpal_jax.evaluate", f"--workdir={diverged_workdir}", f"--datasets={lst}"]
  nan_maps = _run(*base, "--step=2", f"--output_dir={tmp_path / 'e2'}")
  line = _one_error_line(nan_maps)
  assert str(lst) in line and "first.png" in line and "not finite" in line
  assert "| Model |" not in nan_maps.stdout and not (tmp_path / "e2" / "results.json").exists()
  missing = _run(*base, "--step=7", f"--output_dir={tmp_path / 'e7'}")
  assert "no step 7; saved steps: [1, 2, 3]" in _one_error_line(missing)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_file_given_as_output_dir_is_a_one_line_error(tmp_path, photos, command):
  taken = tmp_path / "results.txt"
  taken.write_text("not a folder")
  args = {
    "predict": ["sdpal_jax.predict", f"--output_dir={taken}", photos[0]],
    "evaluate": ["sdpal_jax.evaluate", "--workdir=x", "--datasets=y.lst", f"--output_dir={taken}"],
  }[command]
  line = _one_error_line(_run(*args))
  assert f"--output_dir={taken} is a file, not a folder" in line
  with pytest.raises(ConfigError, match="is a file, not a folder"):
    predict.predict_files(None, [], str(taken / "inside"))
