"""evaluate_datasets with a stand-in predictor and in-memory sources; perturbations; the CLI."""

import importlib.util
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from sdpal_jax import baselines, evaluate, metrics, perturbations


class RedChannelPredictor:
  """Stand-in for inference.Predictor: probability = red channel / 255; records input shapes."""

  def __init__(self, image_size=(32, 32), label=None):
    self.preprocess_config = types.SimpleNamespace(image_size=image_size, normalization="raw")
    self.calls = []
    if label:
      self.label = label

  def predict_probabilities(self, images):
    images = np.asarray(images)
    assert images.dtype == np.uint8 and images.ndim == 4
    self.calls.append(images.shape)
    return images[..., 0].astype(np.float32) / 255.0


def _item(seed, size=(24, 28), tampered=True):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 150, (*size, 3), dtype=np.uint8)
  mask = np.zeros(size, np.uint8)
  if tampered:
    mask[4:14, 6:18] = 1
    image[..., 0] = np.where(mask == 1, rng.integers(90, 255, size), image[..., 0])
  return {"image": image, "mask": mask, "tampered": tampered, "name": f"img{seed}.png"}


class ListSource(list):
  """A re-iterable in-memory source with the contract's ``skipped`` list."""

  def __init__(self, items, skipped=()):
    super().__init__(items)
    self.skipped = list(skipped)


def _split(num=5, authentic=(3,), sizes=None):
  return ListSource(
    [_item(i, size=(sizes or {}).get(i, (24, 28)), tampered=i not in authentic) for i in range(num)]
  )


def _pooled_reference(items):
  scores = np.concatenate([it["image"][..., 0].ravel() / np.float32(255) for it in items])
  labels = np.concatenate([it["mask"].ravel() for it in items])
  return scores.astype(np.float32), labels


def test_dataset_protocol_matches_sklearn_and_writes_every_file(tmp_path):
  split = _split()
  results = evaluate.evaluate_datasets(
    [RedChannelPredictor()], [("toy", split)], output_dir=str(tmp_path), progress=False
  )
  scores, labels = _pooled_reference(split)
  assert set(results) == {"model0"}
  assert set(results["model0"]) == {"toy"}
  toy = results["model0"]["toy"]
  assert toy["protocol"] == "dataset"
  assert toy["pixel_f1"] == pytest.approx(skm.f1_score(labels, scores > 0.5), abs=1e-6)
  assert toy["pixel_auc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-6)
  assert toy["num_images"] == 5 and toy["num_tampered_images"] == 4
  assert toy["timing"]["images"] == 5
  for name in ("results.json", "results.md", "results.csv", "results.tex"):
    assert (tmp_path / name).exists(), name
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["toy"]["pixel_f1"] == pytest.approx(toy["pixel_f1"])
  assert f"{100 * toy['pixel_auc']:.2f}" in (tmp_path / "results.md").read_text()


def test_several_checkpoints_give_label_keyed_results_and_one_row_each(tmp_path):
  results = evaluate.evaluate_datasets(
    [RedChannelPredictor(), RedChannelPredictor()],
    [("a", _split(3)), ("b", _split(2, authentic=()))],
    labels=["first", "second"],
    output_dir=str(tmp_path),
    progress=False,
  )
  assert set(results) == {"first", "second"}
  assert set(results["first"]) == {"a", "b"}
  markdown = (tmp_path / "results.md").read_text().splitlines()
  assert markdown[0] == "| Model | a AUC | a F1 | b AUC | b F1 |"
  assert [line.split(" | ")[0] for line in markdown[2:]] == ["| first", "| second"]


def test_unreadable_items_are_skipped_and_listed():
  split = _split(3)
  broken = dict(_item(10))
  broken["mask"] = np.zeros((5, 5), np.uint8)
  broken["name"] = "bad.png"
  split.append(broken)
  split.skipped.append(("/data/missing.png", "file not found"))
  (result,) = evaluate.evaluate_datasets(
    [RedChannelPredictor()], [("toy", split)], progress=False, verbose=False
  ).values()
  paths = [s["path"] for s in result["toy"]["skipped"]]
  assert paths == ["bad.png", "/data/missing.png"]
  assert "differs from image size" in result["toy"]["skipped"][0]["reason"]
  assert result["toy"]["num_images"] == 3


def test_split_without_tampered_pixel_warns_and_gives_defined_numbers():
  split = _split(3, authentic=(0, 1, 2))
  with pytest.warns(metrics.MetricWarning, match="toy: .*pixel_auc set to 0.5"):
    (result,) = evaluate.evaluate_datasets(
      [RedChannelPredictor()], [("toy", split)], progress=False, verbose=False
    ).values()
  assert result["toy"]["pixel_auc"] == 0.5
  # No tampered pixel anywhere: TP = 0, so F1 is 0 whenever any pixel is predicted tampered
  # (the red channel of these authentic images reaches 0.5 nowhere: then the release's
  # convention gives precision 1, recall 1 and F1 1).
  predicted_any = any((it["image"][..., 0] / np.float32(255) > 0.5).any() for it in split)
  assert result["toy"]["pixel_f1"] == (0.0 if predicted_any else 1.0)
  assert any("pixel_auc set to 0.5" in w for w in result["toy"]["warnings"])


def test_release_resolution_scores_at_the_checkpoint_input_size():
  predictor = RedChannelPredictor(image_size=(16, 16))
  split = _split(2, authentic=())
  (result,) = evaluate.evaluate_datasets(
    [predictor],
    [("toy", split)],
    evaluate.EvaluationRequest(resolution="release"),
    progress=False,
    verbose=False,
  ).values()
  assert predictor.calls == [(1, 16, 16, 3)] * 2
  assert result["toy"]["num_pixels"] == 2 * 16 * 16


def test_batches_group_consecutive_images_of_equal_size():
  predictor = RedChannelPredictor()
  split = _split(5, authentic=(), sizes={2: (20, 20)})
  evaluate.evaluate_datasets(
    [predictor],
    [("toy", split)],
    evaluate.EvaluationRequest(batch_size=3),
    progress=False,
    verbose=False,
  )
  assert [c[:3] for c in predictor.calls] == [(2, 24, 28), (1, 20, 20), (2, 24, 28)]


def test_max_examples_limits_items_per_dataset():
  (result,) = evaluate.evaluate_datasets(
    [RedChannelPredictor()],
    [("toy", _split(5))],
    evaluate.EvaluationRequest(max_examples=2),
    progress=False,
    verbose=False,
  ).values()
  assert result["toy"]["num_images"] == 2


def test_protocol_all_reports_every_protocol_and_writes_one_table_each(tmp_path):
  split = _split()
  result = evaluate.evaluate_datasets(
    [RedChannelPredictor()],
    [("toy", split)],
    evaluate.EvaluationRequest(protocol="all"),
    output_dir=str(tmp_path),
    progress=False,
  )["model0"]["toy"]
  assert set(result["protocols"]) == {"dataset", "image", "best"}
  assert result["pixel_f1"] == result["protocols"]["dataset"]["pixel_f1"]
  per_image = np.mean(
    [
      skm.f1_score(it["mask"].ravel(), it["image"][..., 0].ravel() / 255.0 > 0.5, zero_division=0)
      for it in split
    ]
  )
  assert result["protocols"]["image"]["pixel_f1"] == pytest.approx(per_image, abs=1e-6)
  for protocol in ("dataset", "image", "best"):
    assert (tmp_path / f"results_{protocol}.md").exists()


def test_robustness_scores_every_perturbation_and_writes_a_table_per_kind(tmp_path):
  split = _split(3)
  result = evaluate.evaluate_datasets(
    [RedChannelPredictor()],
    [("toy", split)],
    evaluate.EvaluationRequest(perturbations=["jpeg:50 blur:1,2"]),
    output_dir=str(tmp_path),
    progress=False,
  )["model0"]["toy"]
  assert list(result["robustness"]) == ["jpeg:50", "blur:1", "blur:2"]
  assert result["robustness"]["blur:2"]["pixel_auc"] != result["pixel_auc"]
  table = (tmp_path / "robustness_blur.md").read_text().splitlines()
  assert [line.split(" | ")[0] for line in table[2:]] == [
    "| model0 clean",
    "| model0 blur:1",
    "| model0 blur:2",
  ]
  assert (tmp_path / "robustness_jpeg.csv").exists()


def test_figures_are_written_next_to_the_tables(tmp_path):
  evaluate.evaluate_datasets(
    [RedChannelPredictor(label="toy-model")],
    [("data/toy.lst", _split(3))],
    evaluate.EvaluationRequest(protocol="image", figures=True, num_examples=2),
    output_dir=str(tmp_path),
    progress=False,
    verbose=False,
  )
  figure_dir = tmp_path / "figures"
  for name in ("toy_roc.png", "toy_pr.png", "toy-model_toy_examples.png"):
    with Image.open(figure_dir / name) as png:
      assert png.size[0] > 100


def test_bad_arguments_raise_config_errors_naming_the_flag():
  with pytest.raises(evaluate.ConfigError, match="--protocol"):
    evaluate.EvaluationRequest(protocol="pooled")
  with pytest.raises(evaluate.ConfigError, match="--labels"):
    evaluate.evaluate_datasets([RedChannelPredictor()], [("t", _split(1))], labels=["a", "b"])
  predictor = RedChannelPredictor(image_size=None)
  with pytest.raises(evaluate.ConfigError, match="--resolution=native"):
    evaluate.evaluate_datasets(
      [predictor],
      [("t", _split(1))],
      evaluate.EvaluationRequest(resolution="release"),
      progress=False,
    )


def test_perturbations_keep_size_and_dtype_and_are_reproducible():
  image = _item(0, size=(30, 40))["image"]
  for p in perturbations.parse_perturbations("jpeg:30 blur:1.5 noise:5 resize:0.5"):
    out = p(image, key="x.png")
    assert out.shape == image.shape and out.dtype == np.uint8, p.name
    assert np.any(out != image), p.name
  noise = perturbations.Perturbation("noise", 5)
  np.testing.assert_array_equal(noise(image, key="a"), noise(image, key="a"))
  assert np.abs(noise(image, key="a").astype(int) - image).mean() == pytest.approx(
    5 * 0.8, rel=0.25
  )
  with pytest.raises(perturbations.ConfigError, match="KIND:V1"):
    perturbations.parse_perturbations("sharpen:1")


def test_cli_reports_a_missing_checkpoint_without_a_traceback(tmp_path):
  completed = subprocess.run(
    [
      sys.executable,
      "-m",
      "sdpal_jax.evaluate",
      f"--workdir={tmp_path / 'nope'}",
      "--datasets=x.lst",
    ],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert completed.returncode == 2
  assert "error:" in completed.stderr and "nope" in completed.stderr
  assert "Traceback" not in completed.stderr


def _end_to_end_ready():
  """True once the model, the predictor and the dataset sources exist (other engineers' files)."""
  try:
    if importlib.util.find_spec("sdpal_jax.datasets.sources") is None:
      return False
    models = importlib.import_module("sdpal_jax.models")
    importlib.import_module("sdpal_jax.inference")
  except Exception:  # noqa: BLE001 (a half-written module means "not ready yet")
    return False
  return hasattr(models, "build_model")


@pytest.mark.skipif(
  not _end_to_end_ready(),
  reason="needs sdpal_jax.inference, sdpal_jax.datasets.sources and sdpal_jax.models.build_model",
)
@pytest.mark.slow
def test_cli_end_to_end_on_a_tiny_random_checkpoint_and_a_lst_source(tmp_path):
  import jax  # noqa: PLC0415

  from sdpal_jax import checkpoint, model_config, models  # noqa: PLC0415

  config = model_config.default_model_config()
  config.backbone_depth = 18
  config.feature_channels = 32
  config.attention_heads = 4
  config.decoder_channels = (8, 8, 8, 8)
  preprocess = model_config.default_preprocess_config()
  preprocess.image_size = (64, 64)
  model = models.build_model(config)
  variables = models.init_model(model, jax.random.key(0), image_shape=(1, 64, 64, 3))
  import ml_collections  # noqa: PLC0415

  whole = ml_collections.ConfigDict({"model": config.to_dict(), "preprocess": preprocess.to_dict()})
  workdir = tmp_path / "run"
  checkpoint.save_inference_checkpoint(str(workdir), variables=variables, config=whole, step=1)

  lines = []
  for i in range(3):
    item = _item(i, size=(48, 56), tampered=i != 2)
    image_path = tmp_path / f"im{i}.png"
    Image.fromarray(item["image"]).save(image_path)
    if item["tampered"]:
      mask_path = tmp_path / f"im{i}_gt.png"
      Image.fromarray(item["mask"] * 255).save(mask_path)
      lines.append(f"{image_path},{mask_path}")
    else:
      lines.append(f"{image_path},None")
  lst = tmp_path / "toy.lst"
  lst.write_text("\n".join(lines) + "\n")

  out = tmp_path / "eval"
  command = [
    sys.executable, "-m", "sdpal_jax.evaluate", f"--workdir={workdir}", f"--datasets={lst}",
    f"--output_dir={out}", "--protocol=all", "--perturb", "jpeg:70", "blur:1", "--figures",
    "--num_examples=2",
  ]  # fmt: skip
  completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert "| Model |" in completed.stdout
  results = json.loads((out / "results.json").read_text())
  toy = results[str(lst)]
  assert np.isfinite(toy["pixel_f1"]) and np.isfinite(toy["pixel_auc"])
  assert toy["num_scored"] == 3 and toy["num_skipped"] == 0
  assert toy["num_images"] == 3
  assert list(toy["robustness"]) == ["jpeg:70", "blur:1"]
  assert set(toy["protocols"]) == {"dataset", "image", "best"}
  assert os.path.exists(out / "figures" / "toy_roc.png")


def test_a_split_with_nothing_scored_is_an_error_naming_the_files():
  broken = dict(_item(0))
  broken["mask"] = np.zeros((5, 5), np.uint8)
  broken["name"] = "bad.png"
  split = ListSource([broken], skipped=[("/data/missing.png", "file not found")])
  with pytest.raises(evaluate.EvaluationError, match="no image could be scored") as raised:
    evaluate.evaluate_datasets(
      [RedChannelPredictor()], [("toy", split)], progress=False, verbose=False
    )
  assert "bad.png" in str(raised.value) and "/data/missing.png" in str(raised.value)
  with pytest.raises(evaluate.EvaluationError, match="it is empty"):
    evaluate.evaluate_datasets(
      [RedChannelPredictor()], [("empty", ListSource([]))], progress=False, verbose=False
    )


def test_a_partly_unreadable_split_reports_scored_and_skipped_in_json_and_table(tmp_path):
  split = _split(3)
  split.skipped += [("/data/a.png", "file not found"), ("/data/b.png", "truncated")]
  (result,) = evaluate.evaluate_datasets(
    [RedChannelPredictor()], [("toy", split)], output_dir=str(tmp_path), progress=False
  ).values()
  assert (result["toy"]["num_scored"], result["toy"]["num_skipped"]) == (3, 2)
  saved = json.loads((tmp_path / "results.json").read_text())
  assert (saved["toy"]["num_scored"], saved["toy"]["num_skipped"]) == (3, 2)
  assert "toy (3/5 scored) AUC" in (tmp_path / "results.md").read_text()


def _unreadable_list(tmp_path):
  lines = []
  for i in range(2):
    image = tmp_path / f"broken{i}.png"
    image.write_bytes(b"not a png at all")
    lines.append(f"{image},None")
  lines.append(f"{tmp_path / 'missing.png'},None")
  lst = tmp_path / "unreadable.lst"
  lst.write_text("\n".join(lines) + "\n")
  return lst


@pytest.mark.slow
def test_cli_refuses_to_print_numbers_for_an_unreadable_split(tmp_path):
  from model_fixtures import save_tiny_checkpoint  # noqa: PLC0415

  workdir = save_tiny_checkpoint(tmp_path / "ckpt")
  out = tmp_path / "eval"
  completed = subprocess.run(
    [sys.executable, "-m", "sdpal_jax.evaluate", f"--workdir={workdir}",
     f"--datasets={_unreadable_list(tmp_path)}", f"--output_dir={out}"],
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert completed.returncode == 2, completed.stderr[-2000:]
  assert "no image could be scored" in completed.stderr
  assert "broken0.png" in completed.stderr and "missing.png" in completed.stderr
  assert "Traceback" not in completed.stderr
  assert "| Model |" not in completed.stdout
  assert not (out / "results.json").exists()


def _centred_and_cornered_items(size=(40, 60)):
  """One photo forged in its middle, one in a corner."""
  image = np.full((*size, 3), 128, np.uint8)
  middle = np.zeros(size, np.uint8)
  middle[15:25, 22:38] = 1
  corner = np.zeros(size, np.uint8)
  corner[:8, :10] = 1
  return (
    {"image": image, "mask": middle, "tampered": True, "name": "middle.png"},
    {"image": image, "mask": corner, "tampered": True, "name": "corner.png"},
  )


def test_centre_prior_is_one_in_the_middle_and_zero_in_the_corners_for_any_aspect():
  for height, width in ((5, 5), (40, 60), (61, 13)):
    prior = baselines.centre_prior(height, width)
    assert prior.shape == (height, width) and prior.dtype == np.float32
    assert prior.min() >= 0.0 and prior.max() <= 1.0
    assert prior[height // 2, width // 2] == prior.max() > 0.9
    assert prior[0, 0] == prior.min() < 0.25
    np.testing.assert_allclose(prior, prior[::-1, ::-1], atol=1e-6)


def test_centre_baseline_ranks_a_middle_forgery_first_and_a_corner_forgery_last():
  middle, corner = _centred_and_cornered_items()
  results = evaluate.evaluate_datasets(
    baselines.make_baselines(["centre"]),
    [("middle", ListSource([middle])), ("corner", ListSource([corner]))],
    progress=False,
    verbose=False,
  )
  assert set(results) == {"centre_prior"}
  assert results["centre_prior"]["middle"]["pixel_auc"] > 0.99
  assert results["centre_prior"]["corner"]["pixel_auc"] < 0.1


def test_unknown_baseline_is_a_config_error_naming_the_choices():
  with pytest.raises(evaluate.ConfigError, match="unknown.*'middle'.*expected one of: centre"):
    baselines.make_baselines(["middle"])


def test_cli_scores_a_baseline_beside_no_checkpoint_and_needs_somewhere_to_write(tmp_path):
  folder = tmp_path / "data"
  (folder / "Tp").mkdir(parents=True)
  (folder / "Gt").mkdir()
  for item in _centred_and_cornered_items():
    Image.fromarray(item["image"]).save(folder / "Tp" / item["name"])
    Image.fromarray(item["mask"] * 255).save(folder / "Gt" / item["name"])
  command = [
    sys.executable,
    "-m",
    "sdpal_jax.evaluate",
    "--baselines=centre",
    f"--datasets={folder}",
  ]
  out = tmp_path / "eval"
  completed = subprocess.run(
    [*command, f"--output_dir={out}"], capture_output=True, text=True, timeout=300
  )
  assert completed.returncode == 0, completed.stderr[-2000:]
  saved = json.loads((out / "results.json").read_text())
  (scores,) = saved.values()
  assert scores["num_scored"] == 2 and 0.0 < scores["pixel_auc"] < 1.0
  assert "| centre_prior |" in (out / "results.md").read_text()

  without_output = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert without_output.returncode == 2
  assert "needs --output_dir" in without_output.stderr
  nothing = subprocess.run(command[:3] + command[4:], capture_output=True, text=True, timeout=300)
  assert nothing.returncode == 2 and "--workdir" in nothing.stderr
  assert "Traceback" not in without_output.stderr + nothing.stderr
