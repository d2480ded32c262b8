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


def test_benchmark_writes_markdown_and_json_for_graph_and_model(tmp_path):
  args = [sys.executable, os.path.join(TOOLS, "benchmark.py"), "--suite", "graph,model",
          "--out", str(tmp_path), "--graph_sizes", "8", "--channels", "16", "--model_sizes", "64",
          "--dtypes", "float32", "--repeats", "1", "--model_overrides", TINY_MODEL]  # fmt: skip
  torch_available = True
  try:
    import torch  # noqa: F401, PLC0415
  except ImportError:
    torch_available = False
  release = "/tmp/sdpal_release"
  if torch_available and os.path.exists(os.path.join(release, "sdpal.py")):
    args += ["--torch_reference", release, "--max_release_model_size", "0"]
  run = subprocess.run(args, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  report = json.loads((tmp_path / "benchmark.json").read_text())
  graph = {r["method"]: r for r in report["rows"] if r["suite"] == "graph"}
  assert {"dense", "blocked", "sampled"} <= set(graph)
  for row in graph.values():
    assert row["seconds"] > 0 and "error" not in row
  assert graph["dense"]["max_abs_diff_vs_exact"] < 1e-5
  assert 0 <= graph["sampled"]["mean_relative_error"] < 0.5
  if "release" in graph:
    assert graph["release"]["max_abs_diff_vs_exact"] < 1e-4
  model = [r for r in report["rows"] if r["suite"] == "model"]
  assert {(r["mode"], r["impl"]) for r in model} == {
    ("inference", "jax float32"),
    ("train", "jax float32"),
  }
  assert all(r["images_per_s"] > 0 for r in model)
  assert "### graph" in (tmp_path / "benchmark.md").read_text()


def test_relative_error_is_zero_for_equal_maps_and_scales():
  x = np.random.default_rng(0).random((1, 4, 4, 3))
  assert benchmark._relative_error(x, x) == 0
  assert benchmark._relative_error(1.1 * x, x) == pytest.approx(0.1)
