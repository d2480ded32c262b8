"""IMDL-BenCo users' files and numbers: test_datasets.json, Tp/Gt naming, image-level
metrics against scikit-learn, per_image.csv, --threshold, the ``benco`` robustness grid."""

import csv
import json
import logging
import math
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from sdpal_jax import evaluate, metrics, perturbations, reporting
from sdpal_jax.datasets import sources


class RedChannelPredictor:
  """Stand-in for inference.Predictor: probability = red channel / 255."""

  def __init__(self):
    self.preprocess_config = types.SimpleNamespace(image_size=(32, 32), normalization="raw")

  def predict_probabilities(self, images):
    return np.asarray(images)[..., 0].astype(np.float32) / 255.0


def _photo_and_mask(seed, size=(20, 24), tampered=True):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 160, (*size, 3), dtype=np.uint8)
  mask = np.zeros(size, np.uint8)
  if tampered:
    top, left = 2 + seed % 5, 3 + seed % 7
    mask[top : top + 8, left : left + 10] = 1
    image[..., 0] = np.where(mask == 1, rng.integers(80, 256, size), image[..., 0])
  return image, mask


def _save(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def _benco_tree(root, size=(20, 24)):
  """IMDL-BenCo's layout: a Tp/+Gt/ folder, a JSON list with relative paths, the index."""
  truth = {}
  for i in range(3):  # CASIA-style names: X.png with X_gt.png
    image, mask = _photo_and_mask(i, size)
    name = f"Tp_D_CND_M_N_ani{i:05d}.png"
    _save(os.path.join(root, "CASIA_mini", "Tp", name), image)
    _save(os.path.join(root, "CASIA_mini", "Gt", name[:-4] + "_gt.png"), mask * 255)
    truth[name] = (image, mask)
  entries = []
  for i in range(1, 4):  # COVERAGE-style names, one authentic photo
    image, mask = _photo_and_mask(10 + i, size, tampered=i != 3)
    if i != 3:
      _save(os.path.join(root, "cov", "image", f"{i}t.png"), image)
      _save(os.path.join(root, "cov", "mask", f"{i}forged.png"), mask * 255)
      entries.append([f"cov/image/{i}t.png", f"cov/mask/{i}forged.png"])
      truth[f"{i}t.png"] = (image, mask)
    else:
      _save(os.path.join(root, "cov", "image", f"{i}.png"), image)
      entries.append([f"cov/image/{i}.png", "Negative"])
      truth[f"{i}.png"] = (image, mask)
  # As IMDL-BenCo's JSON lists: paths relative to where its scripts run (root), not to
  # the list's own folder.
  os.makedirs(os.path.join(root, "lists"))
  with open(os.path.join(root, "lists", "coverage_mini.json"), "w") as f:
    json.dump(entries, f)
  with open(os.path.join(root, "test_datasets.json"), "w") as f:
    json.dump({"CASIA_mini": "CASIA_mini", "coverage_mini": "lists/coverage_mini.json"}, f)
  return truth


def _per_image_reference(truth, names):
  f1, auc = [], []
  for name in names:
    image, mask = truth[name]
    scores = image[..., 0].ravel() / np.float32(255)
    f1.append(skm.f1_score(mask.ravel(), scores > 0.5, zero_division=0))
    auc.append(skm.roc_auc_score(mask.ravel(), scores) if mask.any() else 0.0)
  return float(np.mean(f1)), float(np.mean(auc))


def test_test_datasets_json_evaluates_unchanged_one_dataset_per_key(tmp_path, monkeypatch, caplog):
  truth = _benco_tree(str(tmp_path))
  monkeypatch.chdir(tmp_path)  # IMDL-BenCo runs from the folder its relative paths start at
  out = tmp_path / "eval"
  with caplog.at_level(logging.INFO, logger="sdpal_jax.datasets.sources"):
    results = evaluate.evaluate_datasets(
      [RedChannelPredictor()],
      ["test_datasets.json"],
      evaluate.EvaluationRequest(protocol="image"),
      output_dir=str(out),
      progress=False,
      verbose=False,
    )["model0"]
  assert list(results) == ["CASIA_mini", "coverage_mini"]
  casia, coverage = results["CASIA_mini"], results["coverage_mini"]
  assert casia["num_images"] == 3 and casia["num_skipped"] == 0
  assert (coverage["num_images"], coverage["num_tampered_images"]) == (3, 2)
  f1, auc = _per_image_reference(truth, [n for n in truth if n.startswith("Tp_")])
  assert casia["pixel_f1"] == pytest.approx(f1, abs=1e-6)
  assert casia["pixel_auc"] == pytest.approx(auc, abs=1e-6)
  f1, auc = _per_image_reference(truth, ["1t.png", "2t.png", "3.png"])
  assert coverage["pixel_f1"] == pytest.approx(f1, abs=1e-6)  # the authentic image counts 0
  assert coverage["pixel_auc"] == pytest.approx(auc, abs=1e-6)
  assert any("working directory" in n and "IMDL-BenCo's rule" in n for n in coverage["notes"])
  assert any("paired with Gt/ masks by file name" in n for n in casia["notes"])
  assert "IMDL-BenCo's rule" in caplog.text
  assert "| Model | CASIA_mini AUC | CASIA_mini F1 | coverage_mini AUC" in (
    (out / "results.md").read_text()
  )


def test_relative_paths_fall_back_to_the_json_folder_and_say_so(tmp_path, monkeypatch, caplog):
  truth = _benco_tree(str(tmp_path / "data"))
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  monkeypatch.chdir(elsewhere)
  index = str(tmp_path / "data" / "test_datasets.json")
  expanded = sources.expand_spec(index)
  assert [n for n, _ in expanded] == ["CASIA_mini", "coverage_mini"]
  assert expanded[1][1] == str(tmp_path / "data" / "lists" / "coverage_mini.json")
  # Our own lists: paths relative to the list's folder.
  entries = json.loads((tmp_path / "data" / "lists" / "coverage_mini.json").read_text())
  local = tmp_path / "data" / "lists" / "local.json"
  local.write_text(
    json.dumps([["../" + i, m if m == "Negative" else "../" + m] for i, m in entries])
  )
  with caplog.at_level(logging.INFO, logger="sdpal_jax.datasets.sources"):
    source = sources.open_source(str(local))
  assert [e["name"] for e in source] == ["1t.png", "2t.png", "3.png"]
  assert "from the JSON's folder" in caplog.text and "fallback" in caplog.text
  np.testing.assert_array_equal(next(iter(source))["mask"], truth["1t.png"][1])
  with pytest.raises(sources.SdpalError, match="dataset index"):
    sources.open_source(index)


@pytest.mark.parametrize(
  "expected",
  [
    # COVERAGE: Nt.tif with Nforged.tif (sorted, 10 comes before 2 in both folders)
    {"1t.tif": "1forged.tif", "2t.tif": "2forged.tif", "10t.tif": "10forged.tif"},
    # CASIA v1/v2: X.jpg with X_gt.png, whatever the case of the extension
    {"Sp_D_a.jpg": "Sp_D_a_gt.png", "Tp_S_b.TIF": "Tp_S_b_gt.png"},
    # IMD2020: X.jpg with X_mask.png; Columbia: X.tif with X_edgemask.jpg
    {"x_0.jpg": "x_0_mask.png", "canong3_01.tif": "canong3_01_edgemask.jpg"},
  ],
)
def test_folder_pairs_real_dataset_names_by_stem(tmp_path, expected):
  for photo, mask in expected.items():
    _save(str(tmp_path / "Tp" / photo), np.zeros((4, 4, 3), np.uint8))
    _save(str(tmp_path / "Gt" / mask), np.zeros((4, 4), np.uint8))
  (tmp_path / "Gt" / "Thumbs.db").write_bytes(b"not an image")
  if "1t.tif" in expected:  # COVERAGE's other masks do not confuse it
    _save(str(tmp_path / "Gt" / "1copy.tif"), np.zeros((4, 4), np.uint8))
  notes = []
  pairs = sources.parse_forgery_folder(str(tmp_path), notes)
  assert {os.path.basename(p): os.path.basename(m) for p, m in pairs} == expected
  assert "by file name" in notes[0]


def test_folder_falls_back_to_sorted_order_when_counts_match_and_says_so(tmp_path, caplog):
  # NIST16-like: the masks' names have nothing to do with the photos'.
  for name in ("probe_b.png", "probe_a.png"):
    _save(str(tmp_path / "Tp" / name), np.zeros((4, 4, 3), np.uint8))
  for name in ("mask_2.png", "mask_1.png"):
    _save(str(tmp_path / "Gt" / name), np.zeros((4, 4), np.uint8))
  with caplog.at_level(logging.INFO, logger="sdpal_jax.datasets.sources"):
    pairs = sources.parse_forgery_folder(str(tmp_path))
  assert [(os.path.basename(p), os.path.basename(m)) for p, m in pairs] == [
    ("probe_a.png", "mask_1.png"),
    ("probe_b.png", "mask_2.png"),
  ]
  assert "sorted order" in caplog.text and "ManiDataset" in caplog.text
  # With unequal counts no order can be trusted: the unpaired photo is skipped.
  _save(str(tmp_path / "Tp" / "probe_c.png"), np.zeros((4, 4, 3), np.uint8))
  source = sources.open_source(str(tmp_path))
  assert list(source) == [] and len(source.skipped) == 3
  assert "cannot apply" in source.notes[0]


def test_image_level_metrics_equal_sklearn_for_every_threshold():
  rng = np.random.default_rng(3)
  scores = np.round(rng.uniform(size=60), 2)  # ties on purpose
  labels = rng.uniform(size=60) < 0.4
  for threshold in (0.3, 0.5, 0.7):
    detection = metrics.DetectionMetrics(threshold)
    for s, t in zip(scores, labels, strict=True):
      detection.update(s, t)
    got = detection.result()
    predicted = scores.astype(np.float32) > threshold
    assert got["image_auc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert got["image_f1"] == pytest.approx(skm.f1_score(labels, predicted, zero_division=0))
    assert got["image_accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert got["image_balanced_accuracy"] == pytest.approx(
      skm.balanced_accuracy_score(labels, predicted)
    )
    assert got["image_precision"] == pytest.approx(
      skm.precision_score(labels, predicted, zero_division=0)
    )
    assert got["image_recall"] == pytest.approx(skm.recall_score(labels, predicted))


def test_image_score_rules():
  prob = np.linspace(0, 1, 1000, dtype=np.float32).reshape(25, 40)
  flat = np.sort(prob.ravel())
  assert metrics.image_score_fn("top1")(prob) == pytest.approx(metrics.detection_score(prob))
  assert metrics.image_score_fn("top1")(prob) == pytest.approx(flat[-10:].mean())
  assert metrics.image_score_fn("top5")(prob) == pytest.approx(flat[-50:].mean())
  assert metrics.image_score_fn("max")(prob) == 1.0
  assert metrics.image_score_fn("mean")(prob) == pytest.approx(prob.mean())
  assert metrics.image_score_fn("area", 0.75)(prob) == pytest.approx(np.mean(prob > 0.75))
  for bad in ("median", "top0", "top101", "topx"):
    with pytest.raises(ValueError, match="image score"):
      metrics.image_score_fn(bad)


def _toy_split():
  items = []
  for i in range(6):
    image, mask = _photo_and_mask(i, tampered=i % 3 != 0)
    items.append({"image": image, "mask": mask, "tampered": bool(mask.any()), "name": f"p{i}.png"})
  return items


def test_threshold_and_image_score_reach_pixels_images_and_the_per_image_csv(tmp_path):
  split = _toy_split()
  result = evaluate.evaluate_datasets(
    [RedChannelPredictor()],
    [("toy", split)],
    evaluate.EvaluationRequest(protocol="all", threshold=0.3, image_score="max"),
    output_dir=str(tmp_path),
    progress=False,
    verbose=False,
  )["model0"]["toy"]
  scores = np.concatenate([it["image"][..., 0].ravel() / np.float32(255) for it in split])
  labels = np.concatenate([it["mask"].ravel() for it in split])
  assert result["pixel_f1"] == pytest.approx(skm.f1_score(labels, scores > 0.3), abs=1e-6)
  assert (result["threshold"], result["image_score"]) == (0.3, "max")
  image_scores = [it["image"][..., 0].max() / np.float32(255) for it in split]
  tampered = [it["tampered"] for it in split]
  assert result["image_auc"] == pytest.approx(skm.roc_auc_score(tampered, image_scores))
  assert result["image_f1"] == pytest.approx(skm.f1_score(tampered, np.asarray(image_scores) > 0.3))

  with open(tmp_path / "per_image.csv") as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0]) == reporting.PER_IMAGE_COLUMNS
  assert [r["name"] for r in rows] == [it["name"] for it in split]
  per_image = result["protocols"]["image"]
  assert np.mean([float(r["pixel_f1"]) for r in rows]) == pytest.approx(
    per_image["pixel_f1"], abs=1e-5
  )
  for row, item in zip(rows, split, strict=True):
    probs = item["image"][..., 0].ravel() / np.float32(255)
    assert row["model"] == "model0" and row["dataset"] == "toy"
    assert row["tampered"] == str(int(item["tampered"]))
    assert float(row["image_score"]) == pytest.approx(probs.max(), abs=1e-6)
    assert float(row["pixel_f1"]) == pytest.approx(
      skm.f1_score(item["mask"].ravel(), probs > 0.3, zero_division=0), abs=1e-6
    )
    if item["tampered"]:
      assert float(row["pixel_auc"]) == pytest.approx(
        skm.roc_auc_score(item["mask"].ravel(), probs), abs=1e-6
      )
    else:
      assert row["pixel_auc"] == "" and row["pixel_best_f1"] == ""


def test_benco_preset_is_imdl_bencos_grid_in_its_own_parameters():
  grid = perturbations.parse_perturbations("benco")
  assert [p.name for p in grid] == (
    [f"blur_k:{k}" for k in (3, 7, 11, 15, 19, 23)]
    + [f"noise_var:{v}" for v in (3, 7, 11, 15, 19, 23)]
    + [f"jpeg:{q}" for q in (50, 60, 70, 80, 90, 100)]
  )
  blur = [p for p in grid if p.kind == "blur"]
  np.testing.assert_allclose([p.value for p in blur], [0.8, 1.4, 2.0, 2.6, 3.2, 3.8])
  noise = [p for p in grid if p.kind == "noise"]
  np.testing.assert_allclose(
    [p.value for p in noise], [math.sqrt(v) for v in (3, 7, 11, 15, 19, 23)]
  )
  # a blur_k perturbation is our blur at OpenCV's sigma for that kernel size
  image = _photo_and_mask(0, size=(16, 16))[0]
  np.testing.assert_array_equal(blur[0](image), perturbations.gaussian_blur(image, 0.8))
  assert perturbations.is_perturbation_token("benco")
  assert perturbations.is_perturbation_token("noise_var:3")
  for bad in ("blur_k:4", "blur_k:1"):
    with pytest.raises(perturbations.ConfigError, match="odd integer"):
      perturbations.parse_perturbations(bad)


def test_benco_grid_writes_one_robustness_table_per_kind(tmp_path):
  split = _toy_split()[:2]
  result = evaluate.evaluate_datasets(
    [RedChannelPredictor()],
    [("toy", split)],
    evaluate.EvaluationRequest(perturbations=["benco"]),
    output_dir=str(tmp_path),
    progress=False,
    verbose=False,
  )["model0"]["toy"]
  assert len(result["robustness"]) == 18 and "noise_var:23" in result["robustness"]
  for kind in ("blur", "noise", "jpeg"):
    assert (tmp_path / f"robustness_{kind}.md").exists()
  table = (tmp_path / "robustness_blur.md").read_text()
  assert "model0 blur_k:3" in table and "model0 blur_k:23" in table
  with open(tmp_path / "per_image.csv") as f:
    conditions = {row["perturbation"] for row in csv.DictReader(f)}
  assert len(conditions) == 19 and "clean" in conditions


def test_step_argument_is_checked_and_labels_rows_dir_at_step():
  assert evaluate.parse_step("all") == "all" and evaluate.parse_step("7") == 7
  assert evaluate.parse_step(None) is None
  for bad in ("last", "-1"):
    with pytest.raises(evaluate.ConfigError, match="--step"):
      evaluate.parse_step(bad)
  predictor = RedChannelPredictor()
  runs = evaluate.checkpoint_runs(["/ckpt/run", predictor], ["run", "given"], 7)
  assert [(label, step) for label, _, step in runs] == [("run@7", 7), ("given", None)]
  with pytest.raises(evaluate.ConfigError, match="--threshold"):
    evaluate.EvaluationRequest(threshold=1.5)
  with pytest.raises(evaluate.ConfigError, match="--image_score"):
    evaluate.EvaluationRequest(image_score="median")


@pytest.mark.slow
def test_cli_every_step_at_full_resolution_on_imdl_benco_files(tmp_path, monkeypatch):
  import jax  # noqa: PLC0415
  from model_fixtures import save_tiny_checkpoint  # noqa: PLC0415

  from sdpal_jax import checkpoint  # noqa: PLC0415
  from sdpal_jax.models import build_model, init_model  # noqa: PLC0415

  workdir = save_tiny_checkpoint(tmp_path / "run")
  config = checkpoint.read_config(workdir)
  variables = init_model(build_model(config.model), jax.random.key(1), (1, 64, 64, 3))
  checkpoint.save_inference_checkpoint(workdir, variables=variables, config=config, step=2)
  _benco_tree(str(tmp_path / "data"), size=(72, 80))  # 2x2 tiles of 64 at full resolution
  out = tmp_path / "eval"
  command = [
    sys.executable, "-m", "sdpal_jax.evaluate", f"--workdir={workdir}", "--step=all",
    "--datasets=test_datasets.json", f"--output_dir={out}", "--threshold=0.4",
    "--image_score=max", "--full_resolution", "--tile_size=64", "--perturb", "blur_k:3",
  ]  # fmt: skip
  completed = subprocess.run(
    command, capture_output=True, text=True, timeout=600, cwd=tmp_path / "data"
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = json.loads((out / "results.json").read_text())
  assert list(results) == ["run@1", "run@2"]
  assert set(results["run@1"]) == {"CASIA_mini", "coverage_mini"}
  assert results["run@1"]["CASIA_mini"]["threshold"] == 0.4
  assert list(results["run@2"]["coverage_mini"]["robustness"]) == ["blur_k:3"]
  # two different networks (random weights of seeds 0 and 1): different maps
  assert results["run@1"]["CASIA_mini"]["pixel_auc"] != results["run@2"]["CASIA_mini"]["pixel_auc"]
  rows = (out / "results.md").read_text().splitlines()
  assert [r.split(" | ")[0] for r in rows[2:]] == ["| run@1", "| run@2"]
  with open(out / "per_image.csv") as f:
    per_image = list(csv.DictReader(f))
  assert len(per_image) == 2 * 6 * 2  # steps x images x (clean, blur_k:3)
