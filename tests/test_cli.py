"""The command lines' flags reach the code they name: sdpal-convert, sdpal-evaluate, sdpal-predict.

Each command runs as a user runs it (``python -m sdpal_jax.X``, a fresh process); its outputs
are checked against independent oracles: the torch file's own tensors, scikit-learn on
predictions made in this process, NumPy thresholds, PIL resizes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from model_fixtures import save_tiny_checkpoint
from PIL import Image
from sklearn import metrics as skm

from sdpal_jax.inference import Predictor


def _run(module, *args, timeout=600):
  return subprocess.run(
    [sys.executable, "-m", f"sdpal_jax.{module}", *map(str, args)],
    capture_output=True, text=True, timeout=timeout,
  )  # fmt: skip


def _one_clean_error(run):
  """Exit status 2 with one ``error:`` line and no traceback."""
  assert run.returncode == 2, run.stdout[-1000:] + run.stderr[-2000:]
  errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
  return errors[0]


# --- sdpal-convert ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_resnet18(tmp_path_factory):
  """A ResNet-18 ``.pth`` in torchvision's layout (conv1/bn1 stem, fc head), built by torch."""
  torch = pytest.importorskip("torch", reason="the torch extra is not installed")
  from torch_release_layout import ResNet, randomised_state_dict  # noqa: PLC0415

  network = ResNet(18, deep_stem=False, strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1))
  state = randomised_state_dict(network, seed=3)
  state["fc.weight"] = np.zeros((1000, 512), np.float32)
  state["fc.bias"] = np.zeros(1000, np.float32)
  path = tmp_path_factory.mktemp("pth") / "resnet18.pth"
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, path)
  return path, state


@pytest.mark.torch
def test_convert_backbone_writes_the_files_tensors_for_init_from(torchvision_resnet18, tmp_path):
  import orbax.checkpoint as ocp  # noqa: PLC0415

  from sdpal_jax import checkpoint  # noqa: PLC0415

  path, state = torchvision_resnet18
  out = tmp_path / "converted"
  run = _run(
    "convert", f"--input={path}", f"--output_dir={out}", "--kind=backbone", "--depth=18",
    "--nodeep_stem",
  )  # fmt: skip
  assert run.returncode == 0, run.stderr[-3000:]
  assert f"--config.init_from={out}" in run.stdout
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(checkpoint.resolve_backbone(str(out)))
  np.testing.assert_array_equal(
    restored["params"]["stem"]["conv"]["kernel"],
    np.transpose(state["conv1.weight"], (2, 3, 1, 0)),  # OIHW -> HWIO
  )
  np.testing.assert_array_equal(
    restored["batch_stats"]["layer4_1"]["conv2"]["norm"]["bn"]["var"],
    state["layer4.1.bn2.running_var"],
  )
  np.testing.assert_array_equal(
    restored["params"]["layer3_0"]["downsample"]["norm"]["bn"]["scale"],
    state["layer3.0.downsample.1.weight"],
  )


@pytest.mark.torch
@pytest.mark.slow
def test_convert_with_the_wrong_stem_or_kind_names_the_keys_and_exits_2(
  torchvision_resnet18, tmp_path
):
  path, _ = torchvision_resnet18
  # A torchvision file read as a v1c (deep stem) backbone: the stem keys are missing and the
  # 7x7 stem is unknown, all in one message.
  wrong_stem = _run(
    "convert", f"--input={path}", f"--output_dir={tmp_path / 'a'}", "--kind=backbone",
    "--depth=18",
  )  # fmt: skip
  assert "resnet18.pth" in _one_clean_error(wrong_stem)
  assert (
    "stem.0.weight" in wrong_stem.stderr
    and "unknown (5): bn1.bias, bn1.running_mean" in wrong_stem.stderr
  )
  wrong_kind = _run("convert", f"--input={path}", f"--output_dir={tmp_path / 'b'}")
  assert "resnet18.pth" in _one_clean_error(wrong_kind)
  assert "missing (" in wrong_kind.stderr and "mscc.backbone_net." in wrong_kind.stderr
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_convert_a_missing_file_exits_2_naming_it(tmp_path):
  missing = tmp_path / "nope.pth"
  error = _one_clean_error(_run("convert", f"--input={missing}", f"--output_dir={tmp_path / 'o'}"))
  assert str(missing) in error and "no such file" in error
  assert not (tmp_path / "o").exists()


def test_convert_without_its_required_flags_exits_2(tmp_path):
  error = _one_clean_error(_run("convert", f"--output_dir={tmp_path}"))
  assert "--input" in error


@pytest.mark.torch
@pytest.mark.slow
def test_convert_release_writes_a_checkpoint_predict_loads_with_the_release_preprocessing(
  tmp_path,
):
  """A full-size state dict in the release's layout (ResNet-101, 512 channels, built by torch)."""
  torch = pytest.importorskip("torch", reason="the torch extra is not installed")
  from torch_release_layout import ReleaseLayout, randomised_state_dict  # noqa: PLC0415

  from sdpal_jax import checkpoint, model_config  # noqa: PLC0415

  state = randomised_state_dict(ReleaseLayout(model_config.release_model_config()), seed=9)
  path = tmp_path / "release.pth"
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, path)
  run = _run("convert", f"--input={path}", f"--output_dir={tmp_path / 'ckpt'}", timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  loaded = checkpoint.load_inference_checkpoint(str(tmp_path / "ckpt"))
  assert tuple(loaded.preprocess_config.image_size) == (256, 256)
  assert loaded.preprocess_config.normalization == "raw"
  assert (loaded.model_config.backbone_depth, loaded.model_config.deep_stem) == (101, True)
  pairs = {
    ("params", "backbone", "stem_0", "conv", "kernel"): "mscc.backbone_net.stem.0.weight",
    ("batch_stats", "backbone", "layer3_22", "conv3", "norm", "bn", "var"): (
      "mscc.backbone_net.layer3.22.bn3.running_var"
    ),
    ("params", "mopc", "fusion", "conv", "kernel"): "mscc.bottleneck_fusion.0.weight",
    ("params", "moap", "fuse", "norm", "bn", "bias"): "fuse_conv.1.bias",
    ("params", "dpal", "to_k2", "kernel"): "diff_attn.to_k2.weight",
    ("params", "dpal", "refine2", "conv", "bias"): "conv_refine.refine.3.bias",
    ("params", "decoder", "up1", "conv2", "conv", "kernel"): "unet.up1.conv.double_conv.3.weight",
    ("params", "decoder", "outc", "bias"): "unet.outc.conv.bias",
  }
  for path_in_tree, key in pairs.items():
    value = loaded.variables
    for part in path_in_tree:
      value = value[part]
    expected = state[key]
    if expected.ndim == 4:
      expected = np.transpose(expected, (2, 3, 1, 0))
    np.testing.assert_array_equal(np.asarray(value), expected, err_msg=key)


# --- sdpal-evaluate --------------------------------------------------------------------------


def _dataset(root, sizes=((40, 48), (40, 48), (40, 48), (36, 44), (40, 48))):
  """A .lst split: random photos with rectangular masks (the last photo authentic)."""
  rng = np.random.default_rng(21)
  lines, items = [], []
  os.makedirs(root / "Tp")
  os.makedirs(root / "Gt")
  for i, size in enumerate(sizes):
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "Tp" / f"im{i}.png")
    mask = np.zeros(size, np.uint8)
    if i < len(sizes) - 1:
      mask[5 + i : 20 + i, 8 : 30 - i] = 1
      Image.fromarray(mask * 255).save(root / "Gt" / f"im{i}.png")
      lines.append(f"Tp/im{i}.png,Gt/im{i}.png")
    else:
      lines.append(f"Tp/im{i}.png,None")
    items.append((image, mask))
  (root / "split.lst").write_text("\n".join(lines) + "\n")
  return str(root / "split.lst"), items


def _pooled(predictor, items):
  probs = [predictor.predict_image(image) for image, _ in items]
  scores = np.concatenate([p.ravel() for p in probs])
  labels = np.concatenate([m.ravel() for _, m in items])
  return scores, labels


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
  """A random tiny checkpoint and a copy with every weight perturbed (one compilation)."""
  import ml_collections  # noqa: PLC0415

  from sdpal_jax import checkpoint  # noqa: PLC0415

  root = tmp_path_factory.mktemp("evaluate")
  first = save_tiny_checkpoint(root / "ck0")
  loaded = checkpoint.load_inference_checkpoint(first)
  rng = np.random.default_rng(5)
  variables = {
    "params": _perturbed(loaded.variables["params"], rng),
    "batch_stats": loaded.variables["batch_stats"],
  }
  config = ml_collections.ConfigDict(
    {"model": loaded.model_config.to_dict(), "preprocess": loaded.preprocess_config.to_dict()}
  )
  second = str(root / "ck1")
  checkpoint.save_inference_checkpoint(second, variables=variables, config=config, step=1)
  return [first, second]


def _perturbed(tree, rng):
  if isinstance(tree, dict):
    return {k: _perturbed(v, rng) for k, v in tree.items()}
  value = np.asarray(tree)
  return (value + 0.3 * value.std() * rng.normal(size=value.shape)).astype(value.dtype)


@pytest.mark.slow
def test_evaluate_labels_max_examples_batch_size_and_histogram_bins(two_checkpoints, tmp_path):
  spec, items = _dataset(tmp_path / "data")
  out = tmp_path / "out"
  run = _run(
    "evaluate", f"--workdir={','.join(two_checkpoints)}", "--labels=alpha,beta",
    f"--datasets={spec}", "--max_examples=3", "--batch_size=2", "--histogram_bins=256",
    f"--output_dir={out}",
  )  # fmt: skip
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads((out / "results.json").read_text())
  assert set(results) == {"alpha", "beta"}
  table = (out / "results.md").read_text().splitlines()
  assert [line.split("|")[1].strip() for line in table[2:]] == ["alpha", "beta"]
  exact_gap = []
  for label, workdir in zip(("alpha", "beta"), two_checkpoints, strict=True):
    metrics = results[label][spec]
    assert metrics["num_scored"] == 3 and metrics["num_pixels"] == 3 * 40 * 48
    assert metrics["auc_method"] == "histogram256"
    scores, labels = _pooled(Predictor.from_checkpoint(workdir), items[:3])
    assert metrics["pixel_f1"] == pytest.approx(skm.f1_score(labels, scores > 0.5), abs=1e-6)
    # 256 equal bins on [0, 1], each bin one tied score: the AUC of the binned scores.
    binned = np.clip(np.floor(scores.astype(np.float64) * 256), 0, 255)
    assert metrics["pixel_auc"] == pytest.approx(skm.roc_auc_score(labels, binned), abs=1e-3)
    exact_gap.append(abs(metrics["pixel_auc"] - skm.roc_auc_score(labels, scores)))
  assert max(exact_gap) > 1e-2  # the random maps are narrow: binning shows, so it was used
  assert results["alpha"][spec]["pixel_auc"] != results["beta"][spec]["pixel_auc"]


@pytest.mark.slow
def test_evaluate_batch_size_reaches_the_evaluator(two_checkpoints, tmp_path):
  error = _one_clean_error(
    _run(
      "evaluate",
      f"--workdir={two_checkpoints[0]}",
      "--datasets=x.lst",
      "--batch_size=0",
      f"--output_dir={tmp_path}",
    )  # fmt: skip
  )
  assert "--batch_size=0" in error


@pytest.mark.slow
def test_evaluate_release_resolution_scores_at_the_checkpoint_input_size(two_checkpoints, tmp_path):
  spec, items = _dataset(tmp_path / "data")
  out = tmp_path / "out"
  run = _run(
    "evaluate", f"--workdir={two_checkpoints[0]}", f"--datasets={spec}", "--resolution=release",
    f"--output_dir={out}",
  )  # fmt: skip
  assert run.returncode == 0, run.stderr[-3000:]
  metrics = json.loads((out / "results.json").read_text())[spec]
  assert metrics["num_pixels"] == len(items) * 64 * 64  # the checkpoint's 64x64, every photo
  # The release's protocol by hand: photo bilinear to 64x64, mask bilinear on 0..255 then > 128.
  resized = [
    (
      np.asarray(Image.fromarray(image).resize((64, 64), Image.BILINEAR)),
      (np.asarray(Image.fromarray(mask * 255).resize((64, 64), Image.BILINEAR)) > 128),
    )
    for image, mask in items
  ]
  scores, labels = _pooled(Predictor.from_checkpoint(two_checkpoints[0]), resized)
  assert metrics["pixel_auc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-6)
  assert metrics["pixel_f1"] == pytest.approx(skm.f1_score(labels, scores > 0.5), abs=1e-6)


# --- sdpal-predict ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def landmark_checkpoint(tmp_path_factory):
  """4 landmarks: the sampled walk differs from the exact one on the 8x8-node graph."""
  return save_tiny_checkpoint(tmp_path_factory.mktemp("predict"), walk_num_landmarks=4)


@pytest.mark.slow
def test_predict_threshold_and_walk_method_flags(landmark_checkpoint, tmp_path):
  rng = np.random.default_rng(31)
  photos = {
    "a": rng.integers(0, 256, (64, 64, 3), np.uint8),
    "b": rng.integers(0, 256, (50, 70, 3), np.uint8),
  }
  for name, photo in photos.items():
    Image.fromarray(photo).save(tmp_path / f"{name}.png")
  out = tmp_path / "out"
  run = _run(
    "predict", f"--checkpoint={landmark_checkpoint}", f"--output_dir={out}", "--threshold=0.3",
    "--walk_method=sampled", tmp_path / "a.png", tmp_path / "b.png",
  )  # fmt: skip
  assert run.returncode == 0, run.stderr[-3000:]  # every photo done: exit status 0
  assert "wrote 2 prediction(s)" in run.stdout and "skipped 0" in run.stdout
  summary = json.loads((out / "summary.json").read_text())
  assert summary["threshold"] == 0.3 and summary["skipped"] == []
  sampled = Predictor.from_checkpoint(landmark_checkpoint, walk_method="sampled")
  exact = Predictor.from_checkpoint(landmark_checkpoint)
  for record in summary["images"]:
    prob = np.load(out / f"{record['stem']}_prob.npy")
    mask = np.asarray(Image.open(out / f"{record['stem']}_mask.png"))
    np.testing.assert_array_equal(mask, np.where(prob > 0.3, 255, 0))
    assert record["tampered_fraction"] == pytest.approx(float(np.mean(prob > 0.3)))
    photo = photos[record["stem"]]
    np.testing.assert_allclose(prob, sampled.predict_image(photo), atol=1e-6)
    assert np.abs(prob - exact.predict_image(photo)).max() > 1e-4  # the flag changed the walk


@pytest.mark.slow
def test_predict_tile_size_and_overlap_flags(landmark_checkpoint, tmp_path):
  photo = np.random.default_rng(32).integers(0, 256, (100, 150, 3), np.uint8)
  Image.fromarray(photo).save(tmp_path / "big.png")
  out = tmp_path / "out"
  run = _run(
    "predict", f"--checkpoint={landmark_checkpoint}", f"--output_dir={out}", "--full_resolution",
    "--tile_size=64", "--tile_overlap=20", "--walk_method=dense", tmp_path / "big.png",
  )  # fmt: skip
  assert run.returncode == 0, run.stderr[-3000:]
  prob = np.load(out / "big_prob.npy")
  assert prob.shape == (100, 150)

  def predictor(**kw):
    return Predictor.from_checkpoint(
      landmark_checkpoint, full_resolution=True, walk_method="dense", **kw
    )

  np.testing.assert_allclose(
    prob, predictor(tile_size=64, tile_overlap=20).predict_image(photo), atol=1e-6
  )
  # ... and not the default overlap (64 / 8 = 8), nor the whole photo at once.
  assert np.abs(prob - predictor(tile_size=64).predict_image(photo)).max() > 1e-4
  assert np.abs(prob - predictor(tile_size=0).predict_image(photo)).max() > 1e-4


# --- the shared error path -------------------------------------------------------------------

RAISES_AN_OS_ERROR = """
import sys
from sdpal_jax import cli
cli.run(lambda argv: open(sys.argv.pop(-1)), lambda: None)
"""


def test_a_file_system_error_is_one_error_line_with_the_traceback_behind_verbosity(tmp_path):
  missing = tmp_path / "no_such_dir" / "file.txt"
  run = subprocess.run(
    [sys.executable, "-c", RAISES_AN_OS_ERROR, str(missing)], capture_output=True, text=True,
    timeout=120,
  )  # fmt: skip
  error = _one_clean_error(run)
  assert str(missing) in error and "No such file or directory" in error
  assert "--verbosity=1 prints the traceback" in error
  verbose = subprocess.run(
    [sys.executable, "-c", RAISES_AN_OS_ERROR, "--verbosity=1", str(missing)],
    capture_output=True, text=True, timeout=120,
  )  # fmt: skip
  assert verbose.returncode == 2 and "Traceback" in verbose.stderr
  assert verbose.stderr.rstrip().splitlines()[-1].startswith("error: ")


@pytest.mark.slow
def test_a_mistyped_config_field_prints_its_message_not_an_escaped_repr(tmp_path):
  error = _one_clean_error(
    _run("train", "--config=tiny", f"--workdir={tmp_path}", "--config.optimizer.learnig_rate=3")
  )
  assert "'learnig_rate'" in error and 'Did you mean "learning_rate"' in error
  assert "\\'" not in error and "\\n" not in error
