"""The benchmark tool runs end to end at a tiny size (no timing assertions)."""

import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.join(TESTS, "..", "tools")
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
  release = _stand_in_release(tmp_path / "release")
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


# The rest of a stand-in release for the model suite: ``FakeLocator`` is the release's layout
# (tests/torch_release_layout.py) at the dry run's tiny size, ``resnet.model_zoo`` what the
# benchmark patches so that nothing is downloaded.
STAND_IN_FAKE_LOCATOR = """
from types import SimpleNamespace
from torch_release_layout import ReleaseLayout

TINY = SimpleNamespace(backbone_depth=18, deep_stem=True, feature_channels=32, attention_heads=4,
                       decoder_channels=(8, 8, 8, 8))


class FakeLocator(torch.nn.Module):
  def __init__(self, in_channels=512, num_classes=1):
    super().__init__()
    self.layout = ReleaseLayout(TINY)

  def forward(self, x):
    return self.layout(x, (256, 256))
"""


def _stand_in_release(directory):
  directory.mkdir()
  (directory / "sdpal.py").write_text(STAND_IN_SDPAL.format(tests=TESTS) + STAND_IN_FAKE_LOCATOR)
  (directory / "resnet.py").write_text("import types\nmodel_zoo = types.SimpleNamespace()\n")
  return directory


@pytest.mark.slow
def test_gpu_benchmark_dry_run_reports_every_suite_and_never_imports_tensorflow(tmp_path):
  """The one GPU command (tools/gpu_benchmark.sh), its --dry_run on the CPU: graph, inference
  and train rows, the memory check, ratios against the release where torch is installed, and no
  process of it imported TensorFlow."""
  with_release = importlib.util.find_spec("torch") is not None
  out = tmp_path / "out"
  command = ["bash", os.path.join(TOOLS, "gpu_benchmark.sh"), str(out), "--dry_run"]
  if with_release:
    command += ["--torch_reference", str(_stand_in_release(tmp_path / "release"))]
  start = time.monotonic()
  run = subprocess.run(command, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHON": sys.executable})  # fmt: skip
  assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
  assert time.monotonic() - start < 450  # the script's own hard limit in a dry run
  report = json.loads((out / "benchmark.json").read_text())
  markdown = (out / "benchmark.md").read_text()
  rows = report["rows"]
  for row in rows:
    assert "error" not in row, row
    assert row["seconds"] > 0 and row["peak_rss_mib"] is not None
    assert "peak_device_mib" in row and row["peak_device_mib"] is None  # CPU: no allocator peak
    assert row["device"] == "cpu"
    assert row["tensorflow_imported"] is False
  assert report["tensorflow_imported"] is False
  assert "TensorFlow imported by a benchmark process: no" in markdown

  release = {"release"} if with_release else set()
  graph = {(r["nodes"], r["method"]) for r in rows if r["suite"] == "graph"}
  assert graph == {(n, m) for n in ("8x8", "16x16") for m in {"dense", "blocked"} | release}
  model = [r for r in rows if r["suite"] == "model"]
  impls = {"jax float32", "jax bfloat16"} | release
  assert {(r["size"], r["mode"], r["impl"]) for r in model} == {
    (64, mode, impl) for mode in ("inference", "train") for impl in impls
  }
  for row in model:
    assert row["images_per_s"] > 0 and row["batch"] == 2
    if row["impl"] != "release":  # compiled in parallel first, then loaded from the cache
      assert row["compile_s"] > 0 and row["first_call_s"] > 0

  checks = {c["impl"]: c for c in report["memory_check"]}
  assert set(checks) == impls
  for check in checks.values():
    assert check["size"] == 64 and check["limit_gb"] == 80
    assert 0 < check["peak_gb"] < 80 and check["fits"] is True
    assert "RSS" in check["source"]
  assert "### memory" in markdown

  ours = [r for r in rows if r.get("impl", r.get("method")) not in ("release",)]
  if with_release:
    assert all(r["speedup_vs_release"] > 0 for r in ours)
    assert "speedup_vs_release" in markdown
  else:
    assert not any("speedup_vs_release" in r for r in rows)
    assert "speedup_vs_release: not measured (no --torch_reference given)" in markdown
  device = (out / "device.txt").read_text()
  assert "# nvidia-smi -L" in device and "jax" in device


def test_memory_check_takes_the_largest_train_step_and_the_device_peak_where_there_is_one():
  rows = [
    {"suite": "model", "size": 512, "mode": "train", "impl": "jax float32", "batch": 4,
     "seconds": 1.0, "peak_rss_mib": 10.0, "peak_device_mib": 99999.0, "device": "gpu"},
    {"suite": "model", "size": 1024, "mode": "inference", "impl": "jax float32", "batch": 1,
     "seconds": 1.0, "peak_rss_mib": 10.0, "peak_device_mib": 99999.0, "device": "gpu"},
    {"suite": "model", "size": 1024, "mode": "train", "impl": "jax float32", "batch": 1,
     "seconds": 1.0, "peak_rss_mib": 10.0, "peak_device_mib": 40000.0, "device": "gpu"},
    {"suite": "model", "size": 1024, "mode": "train", "impl": "jax bfloat16", "batch": 1,
     "seconds": 1.0, "peak_rss_mib": 90000.0, "peak_device_mib": None, "device": "cpu"},
    {"suite": "model", "size": 1024, "mode": "train", "impl": "release", "batch": 1,
     "error": "torch.OutOfMemoryError: CUDA out of memory."},
  ]  # fmt: skip
  checks = {c["impl"]: c for c in benchmark.memory_check(rows, 80)}
  assert set(checks) == {"jax float32", "jax bfloat16", "release"}
  # 40000 MiB = 41.94 GB (10^9 bytes): fits; the CPU row falls back to RSS: 94.37 GB does not.
  assert checks["jax float32"]["peak_gb"] == pytest.approx(41.943, abs=1e-3)
  assert checks["jax float32"]["fits"] is True and checks["jax float32"]["size"] == 1024
  assert checks["jax bfloat16"]["peak_gb"] == pytest.approx(94.372, abs=1e-3)
  assert checks["jax bfloat16"]["fits"] is False and "RSS" in checks["jax bfloat16"]["source"]
  assert "out of memory" in checks["release"]["error"] and "fits" not in checks["release"]


def test_batches_per_size_and_a_spent_time_budget_skips_without_starting_a_process():
  args = benchmark.parse_args(["--model_sizes", "256,1024", "--batch", "256:16,1024:1",
                               "--time_budget", "0"])  # fmt: skip
  assert (args.batch_for(256), args.batch_for(1024)) == (16, 1)
  assert benchmark.parse_args(["--batch", "3"]).batch_for(512) == 3
  with pytest.raises(SystemExit):
    benchmark.parse_args(["--model_sizes", "256,512", "--batch", "256:16"])
  result = benchmark._run(args, {"kind": "no such worker", "threads": 1})
  assert result["error"].startswith("skipped: the time budget (0 s) was spent")


def test_notes_say_why_there_are_no_ratios():
  without = benchmark.report_notes(benchmark.parse_args([]), False, 12.0)
  assert "speedup_vs_release: not measured (no --torch_reference given)" in without
  assert "TensorFlow imported by a benchmark process: no" in without


def _checkpoint_folders(root):
  """A stand-in ensemble (two members) and a single checkpoint: only what
  ``sdpal_jax.checkpoint`` reads to tell them apart; nothing is loaded."""
  ensemble = root / "ensemble"
  for name in ("first", "second"):
    (ensemble / "members" / name).mkdir(parents=True)
    (ensemble / "members" / name / "config.json").write_text("{}")
  (ensemble / "ensemble.json").write_text(
    json.dumps({"combine": "mean_probability", "members": ["members/first", "members/second"]})
  )
  single = root / "single"
  single.mkdir()
  (single / "config.json").write_text("{}")
  return str(ensemble), str(single)


def test_predict_suite_times_an_ensemble_beside_its_first_member_and_reports_ratios(
  tmp_path, monkeypatch
):
  """The suite's specs, rows and ratios, with the worker replaced by a stand-in whose
  'seconds' are the network passes it was asked for (no process, no timing)."""
  ensemble, single = _checkpoint_folders(tmp_path)
  out = tmp_path / "out"
  out.mkdir()
  specs = []

  def fake_run(args, spec, env_extra=None):
    del args, env_extra
    photo = np.load(spec["photo"])
    assert photo.dtype == np.uint8 and photo.shape == (24, 40, 3)  # WIDTHxHEIGHT 40x24
    specs.append(spec)
    if spec["checkpoint"] == single and spec["flip_average"]:
      return {"error": "out of memory (killed)"}
    networks = 2 if spec["network"] == "ensemble" else 1
    return {"seconds": 0.5 * networks * (2 if spec["flip_average"] else 1), "first_call_s": 9.0}

  monkeypatch.setattr(benchmark, "_run", fake_run)
  args = benchmark.parse_args(["--suite", "predict", "--out", str(out), "--repeats", "2",
                               "--predict_checkpoints", f"{ensemble},{single}",
                               "--predict_sizes", "40x24"])  # fmt: skip
  rows = benchmark.predict_suite(args, str(out))

  first = os.path.join(ensemble, "members/first")
  assert [(s["checkpoint"], s["network"], s["flip_average"]) for s in specs] == [
    (first, "member", False), (first, "member", True),
    (ensemble, "ensemble", False), (ensemble, "ensemble", True),
    (single, "single", False), (single, "single", True),
  ]  # fmt: skip
  assert all(s["kind"] == "predict" and s["repeats"] == 2 for s in specs)
  assert not list(out.iterdir())  # the photo is removed afterwards
  table = [(r["checkpoint"], r["network"], r.get("member"), r["flip_average"], r["photo"],
            r.get("ratio")) for r in rows]  # fmt: skip
  assert table == [
    (ensemble, "member", "first", False, "40x24", 1.0),
    (ensemble, "member", "first", True, "40x24", 2.0),
    (ensemble, "ensemble", None, False, "40x24", 2.0),
    (ensemble, "ensemble", None, True, "40x24", 4.0),
    (single, "single", None, False, "40x24", 1.0),
    (single, "single", None, True, "40x24", None),  # failed: an error, no ratio
  ]
  assert all(r["suite"] == "predict" and r["first_call_s"] == 9.0 for r in rows[:5])
  assert rows[5]["error"] == "out of memory (killed)"
  markdown = benchmark.markdown(rows, {"cpu": "x", "cpu_count": 2, "threads": 2, "date": "d"})
  assert "### predict" in markdown
  assert "| checkpoint | network | member | flip_average | photo | seconds | ratio |" in markdown
  notes = benchmark.report_notes(args, False, 1.0)
  assert any(n.startswith("predict: seconds per photo (WIDTHxHEIGHT") for n in notes)
  assert not any("speedup_vs_release" in n for n in notes)  # no graph or model suite ran


def test_predict_ratio_needs_the_one_network_plain_row_of_the_same_checkpoint_and_size():
  rows = [
    {"suite": "model", "size": 64, "seconds": 1.0},
    {"suite": "predict", "checkpoint": "c", "network": "member", "flip_average": False,
     "photo": "8x8", "error": "timed out after 1 s"},
    {"suite": "predict", "checkpoint": "c", "network": "ensemble", "flip_average": False,
     "photo": "8x8", "seconds": 2.0},
    {"suite": "predict", "checkpoint": "c", "network": "member", "flip_average": False,
     "photo": "16x16", "seconds": 4.0},
    {"suite": "predict", "checkpoint": "c", "network": "ensemble", "flip_average": True,
     "photo": "16x16", "seconds": 14.0},
  ]  # fmt: skip
  benchmark.predict_ratios(rows)
  assert [r.get("ratio") for r in rows] == [None, None, None, 1.0, 3.5]


def test_tiles_count_the_network_passes_of_a_photo_as_the_predictor_tiles_it():
  from sdpal_jax.inference import Predictor  # noqa: PLC0415

  def member(full_resolution):  # only the tiling settings matter: no network
    return Predictor(None, {}, None, None, full_resolution=full_resolution, tile_size=512,
                     tile_overlap=64)  # fmt: skip

  # WIDTHxHEIGHT 384x256: whole; 1024x768: 3 rows x 2 columns; 2048x1536: 5 x 4; 600x520: 2 x 2.
  for (width, height), tiles in {(384, 256): 1, (1024, 768): 6, (2048, 1536): 20,
                                 (600, 520): 4}.items():  # fmt: skip
    assert benchmark._tiles(member(True), height, width) == tiles
  assert benchmark._tiles(member(False), 1536, 2048) == 1


def test_realistic_photo_is_deterministic_uint8_of_the_size_asked():
  photo = benchmark.realistic_photo(40, 24)
  assert photo.dtype == np.uint8 and photo.shape == (24, 40, 3)
  assert np.array_equal(photo, benchmark.realistic_photo(40, 24))
  assert 20 < photo.std() < 80  # neither flat nor saturated
  assert benchmark._sizes("384x256,1024x768") == [(384, 256), (1024, 768)]
  with pytest.raises(SystemExit):
    benchmark.parse_args(["--predict_sizes", "384"])
  with pytest.raises(SystemExit):
    benchmark.parse_args(["--suite", "predcit"])


@pytest.mark.slow
def test_predict_suite_runs_the_packaged_model_through_the_worker_without_tensorflow(tmp_path):
  report = _benchmark(tmp_path, "--suite", "predict", "--predict_sizes", "64x48")
  rows = report["rows"]
  assert [(r["network"], r["flip_average"]) for r in rows] == [
    ("member", False), ("member", True), ("ensemble", False), ("ensemble", True),
  ]  # fmt: skip
  assert [(r["networks"], r["passes"]) for r in rows] == [(1, 1), (1, 2), (2, 2), (2, 4)]
  for row in rows:
    assert "error" not in row, row
    assert row["seconds"] > 0 and row["first_call_s"] > 0 and row["ratio"] > 0
    assert row["photo"] == "64x48" and row["tensorflow_imported"] is False
  assert rows[0]["ratio"] == 1.0
  assert report["tensorflow_imported"] is False
