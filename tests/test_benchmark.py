"""The benchmark tool runs end to end at a tiny size (no timing assertions)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

TOOLS = os.path.join(os.path.dirname(__file__), "..", "tools")
sys.path.insert(0, TOOLS)
import benchmark  # noqa: E402

TINY_MODEL = '{"backbone_depth": 18, "feature_channels": 32, "attention_heads": 4, "decoder_channels": [8, 8, 8, 8]}'


def test_realistic_features_are_non_negative_and_make_a_non_trivial_graph():
  features = benchmark.realistic_features(16, 32)
  assert features.shape == (1, 16, 16, 32) and features.min() >= 0
  density = benchmark.edge_density(features, 0.4)
  assert 0.05 < density < 0.95


# A stand-in for the release checkout that ``--torch_reference`` names: its ``sdpal.py`` with a
# ``GraphRandomWalkNPR`` written in torch from the paper (tests/torch_release_layout.py), so the
# benchmark's release comparison runs wherever torch is installed.
STAND_IN_SDPAL = """
import sys
import torch
sys.path.insert(0, {tests!r})
from torch_release_layout import neighbour_pixel_residual, random_walk


class GraphRandomWalkNPR(torch.nn.Module):
  def __init__(self, walk_steps=3, walk_restart_prob=0.7, graph_threshold=0.5):
    super().__init__()
    self.steps, self.a, self.threshold = walk_steps, walk_restart_prob, graph_threshold

  def forward(self, x):
    npr = neighbour_pixel_residual(x)
    return npr, random_walk(torch.cat([x, npr], 1), self.steps, self.a, self.threshold)
"""


def _benchmark(tmp_path, *args):
  command = [sys.executable, os.path.join(TOOLS, "benchmark.py"), "--out", str(tmp_path),
             "--repeats", "1", *args]  # fmt: skip
  run = subprocess.run(command, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  return json.loads((tmp_path / "benchmark.json").read_text())


@pytest.mark.torch
@pytest.mark.slow
def test_graph_suite_compares_every_walk_with_the_exact_one_and_the_release(tmp_path):
  pytest.importorskip("torch", reason="the torch extra is not installed")
  release = tmp_path / "release"
  release.mkdir()
  (release / "sdpal.py").write_text(STAND_IN_SDPAL.format(tests=os.path.dirname(__file__)))
  report = _benchmark(
    tmp_path / "out", "--suite", "graph", "--graph_sizes", "8", "--channels", "16",
    "--torch_reference", str(release),
  )  # fmt: skip
  graph = {r["method"]: r for r in report["rows"] if r["suite"] == "graph"}
  assert set(graph) == {"dense", "blocked", "sampled", "release"}
  for row in graph.values():
    assert row["seconds"] > 0 and "error" not in row
  assert graph["dense"]["max_abs_diff_vs_exact"] < 1e-5
  # 64 nodes, fewer than the 1024 landmarks: the sampled walk is the exact one.
  assert graph["sampled"]["mean_relative_error"] < 1e-5
  assert graph["release"]["max_abs_diff_vs_exact"] < 1e-4
  assert graph["dense"]["speedup_vs_release"] > 0
  assert "### graph" in (tmp_path / "out" / "benchmark.md").read_text()


@pytest.mark.slow
def test_model_suite_times_inference_and_training(tmp_path):
  report = _benchmark(
    tmp_path, "--suite", "model", "--model_sizes", "64", "--dtypes", "float32",
    "--model_overrides", TINY_MODEL,
  )  # fmt: skip
  model = [r for r in report["rows"] if r["suite"] == "model"]
  assert {(r["mode"], r["impl"]) for r in model} == {
    ("inference", "jax float32"),
    ("train", "jax float32"),
  }
  assert all(r["images_per_s"] > 0 and "error" not in r for r in model)
  assert "### model" in (tmp_path / "benchmark.md").read_text()


def test_relative_error_is_zero_for_equal_maps_and_scales():
  x = np.random.default_rng(0).random((1, 4, 4, 3))
  assert benchmark._relative_error(x, x) == 0
  assert benchmark._relative_error(1.1 * x, x) == pytest.approx(0.1)
