"""The model packaged with the library: its files, its recipe and its recorded numbers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from model_fixtures import run_packager

from sdpal_jax import checkpoint, configs, errors, model_config, packaged_model
from sdpal_jax.image_io import load_image
from sdpal_jax.inference import EnsemblePredictor, Predictor

PROVENANCE = packaged_model.read_provenance()
# The packaged model is an ensemble: the mean map of networks each packaged with its own recipe.
MEMBER_DIRS = checkpoint.ensemble_members(checkpoint.DEFAULT_MODEL_DIR)
MEMBERS = {os.path.basename(d): packaged_model.read_provenance(d) for d in MEMBER_DIRS}


@pytest.fixture(scope="module")
def predictor() -> EnsemblePredictor:
  return Predictor.from_checkpoint()


def test_packaged_model_is_the_default_checkpoint_and_matches_its_checksums(predictor):
  assert checkpoint.resolve_directory("default") == checkpoint.DEFAULT_MODEL_DIR
  assert isinstance(predictor, EnsemblePredictor)
  assert [m.checkpoint for m in predictor.members] == MEMBER_DIRS and len(MEMBER_DIRS) == 2
  checksums = [packaged_model.variables_checksum(m.variables) for m in predictor.members]
  assert checksums == [MEMBERS[os.path.basename(d)]["checksum_sha256"] for d in MEMBER_DIRS]
  listed = PROVENANCE["ensemble"]["members"]
  assert [listed[name]["checksum_sha256"] for name in listed] == checksums
  assert hashlib.sha256("".join(checksums).encode()).hexdigest() == PROVENANCE["checksum_sha256"]
  # Each member is stored under its provenance's "storage" (the smallest plan that changes no
  # probability by more than MAX_STORAGE_ERROR), float32 at load.
  # Photos above 512 px a side go through in 512 px tiles unless the caller says otherwise.
  assert predictor.full_resolution and predictor.tile_size == 512
  for member in predictor.members:
    assert MEMBERS[os.path.basename(member.checkpoint)]["storage"] in packaged_model.STORAGE_PLANS
    leaves = [np.asarray(x) for x in jax.tree.leaves(member.variables)]
    assert all(x.dtype == np.float32 for x in leaves if np.issubdtype(x.dtype, np.floating))
  size = sum(
    os.path.getsize(os.path.join(folder, name))
    for folder, _, names in os.walk(checkpoint.DEFAULT_MODEL_DIR)
    for name in names
    if os.path.join(folder, name)
    != os.path.join(checkpoint.DEFAULT_MODEL_DIR, packaged_model.PROVENANCE_FILE)
  )
  assert size == PROVENANCE["size_bytes"] < 16 * 2**20


@pytest.mark.parametrize("member_dir", MEMBER_DIRS, ids=os.path.basename)
def test_each_packaged_member_names_its_recipe(member_dir):
  provenance = MEMBERS[os.path.basename(member_dir)]
  for key in ("command", "commit", "dataset", "dataset_version", "step", "hardware"):
    assert provenance[key], key
  assert provenance["config"] in provenance["command"]
  # The ensemble's provenance repeats each member's recipe as the member's own file says it.
  listed = PROVENANCE["ensemble"]["members"][os.path.basename(member_dir)]
  assert {f: provenance[f] for f in packaged_model.MEMBER_FIELDS} == {
    f: listed[f] for f in packaged_model.MEMBER_FIELDS
  }
  recipe = configs.load(provenance["config"])
  stored = checkpoint.read_config(member_dir)
  # The packaged config still describes the network and data the weights came from
  # (model fields added since it was written read as their defaults, as build_model does).
  stored_model = {**model_config.default_model_config().to_dict(), **stored.model.to_dict()}
  assert recipe.model.to_dict() == stored_model
  assert recipe.preprocess.to_dict() == stored.preprocess.to_dict()
  assert stored.data.dataset == provenance["dataset"]
  assert (
    stored.data.dataset == recipe.data.dataset
    or f"--config.data.dataset={stored.data.dataset}" in provenance["command"]
  )
  assert provenance["storage_max_probability_change"] <= packaged_model.MAX_STORAGE_ERROR


@pytest.mark.slow
def test_packaged_model_scores_the_generated_test_split_as_recorded(predictor):
  recorded = PROVENANCE["recorded"]["scores"]
  scores = packaged_model.score_generated_split(predictor, protocol="dataset")
  # Same weights, same images: only floating-point summation order may differ between CPUs.
  assert scores["num_scored"] == recorded["num_scored"] == 150
  assert scores["pixel_auc"] == pytest.approx(recorded["pixel_auc"], abs=2e-3)
  assert scores["pixel_f1"] == pytest.approx(recorded["pixel_f1"], abs=5e-3)
  assert recorded["pixel_auc"] > 0.75  # far from chance on its own kind of data


@pytest.mark.slow
def test_default_model_recipe_trains_with_the_current_code(tmp_path):
  from sdpal_jax import train  # noqa: PLC0415 (TensorFlow)

  (recipe,) = {provenance["config"] for provenance in MEMBERS.values()}  # every member's
  config = configs.load(recipe)
  config.data.dataset = "synthetic_forgery/mixed_tiny"
  if config.data.crop_size is not None:  # mixed_tiny's photos are 64 px
    config.data.crop_size = (64, 64)
  config.global_batch_size = 2
  config.num_train_steps = 2
  config.optimizer.warmup_steps = 1
  config.log_every_steps = 1
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  train.train_and_evaluate(config, str(tmp_path))
  trained = Predictor.from_checkpoint(str(tmp_path))
  shapes = jax.tree.map(np.shape, trained.variables)
  for member in Predictor.from_checkpoint().members:
    assert shapes == jax.tree.map(np.shape, member.variables)


@pytest.mark.slow
def test_predict_with_only_a_photo_uses_the_packaged_model_and_a_default_folder(tmp_path):
  import skimage  # noqa: PLC0415

  photo = os.path.join(os.path.dirname(skimage.__file__), "data", "astronaut.png")
  result = subprocess.run(
    [sys.executable, "-m", "sdpal_jax.predict", photo],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=tmp_path,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  out = tmp_path / "sdpal_predictions"
  prob = np.load(out / "astronaut_prob.npy")
  assert prob.shape == (512, 512) and np.isfinite(prob).all()
  summary = json.loads((out / "summary.json").read_text())
  score = summary["images"][0]["score"]
  assert 0.0 <= score <= 1.0
  assert (out / "astronaut_mask.png").is_file()
  # One line per photo says what was found and where the overlay is.
  assert f"astronaut.png: score {score:.2f}" in result.stdout
  assert os.path.join("sdpal_predictions", "astronaut_overlay.png") in result.stdout


def test_to_storage_narrows_only_floating_arrays_of_at_least_the_plan_size():
  variables = {
    "params": {"big": np.ones((4, 4), np.float32), "small": np.ones(3, np.float32)},
    "batch_stats": {"count": np.arange(20, dtype=np.int32)},
  }
  mixed = packaged_model.to_storage(variables, float16_from=16)
  assert mixed["params"]["big"].dtype == np.float16
  assert mixed["params"]["small"].dtype == np.float32
  assert mixed["batch_stats"]["count"].dtype == np.int32
  every = packaged_model.to_storage(variables, float16_from=0)
  assert every["params"]["small"].dtype == np.float16
  exact = packaged_model.to_storage(variables, float16_from=None)
  assert {x.dtype for x in jax.tree.leaves(exact)} == {np.dtype(np.float32), np.dtype(np.int32)}


@pytest.mark.slow
def test_package_model_stores_the_smallest_plan_within_the_error_bound(tmp_path, monkeypatch):
  from tests.model_fixtures import save_tiny_checkpoint  # noqa: PLC0415

  workdir = save_tiny_checkpoint(tmp_path / "work", image_size=None)
  config = checkpoint.read_config(workdir)
  config.data = {"dataset": packaged_model.RECORD_DATASET}
  config.num_train_steps = 1
  checkpoint.write_config(workdir, config)
  trained = checkpoint.load_inference_checkpoint(workdir)

  def package(name, **kwargs):
    return packaged_model.package_model(
      workdir, str(tmp_path / name), command="python -m sdpal_jax.train --config tiny", commit="abc",
      **kwargs,
    )  # fmt: skip

  first = package("first", tile_size=96)
  assert checkpoint.read_config(str(tmp_path / "first")).preprocess.tile_size == 96
  plans = list(packaged_model.STORAGE_PLANS)
  tried = list(first["storage_max_probability_change_by_plan"])
  assert tried == plans[: plans.index(first["storage"]) + 1]
  assert first["storage_max_probability_change"] <= packaged_model.MAX_STORAGE_ERROR
  stored = checkpoint.load_inference_checkpoint(str(tmp_path / "first"))
  assert packaged_model.variables_checksum(stored.variables) == first["checksum_sha256"]
  assert first["recorded"]["scores"]["num_images"] == 150
  # A bound only exact storage meets: every plan is tried and float32 is kept, bit for bit.
  monkeypatch.setattr(packaged_model, "MAX_STORAGE_ERROR", 0.0)
  exact = package("exact")
  assert exact["storage"] == "float32"
  assert list(exact["storage_max_probability_change_by_plan"]) == plans
  assert exact["checksum_sha256"] == packaged_model.variables_checksum(trained.variables)
  assert json.loads((tmp_path / "exact" / packaged_model.PROVENANCE_FILE).read_text()) == exact
  assert checkpoint.read_config(str(tmp_path / "exact")).preprocess.tile_size is None


REAL_DATA_RESULTS = os.path.join(
  os.path.dirname(__file__), "..", "docs", "results", "real_data", "default_model", "results.json"
)


def test_packaged_real_data_scores_are_the_summary_of_its_published_results():
  # docs/results/real_data/default_model/results.json is sdpal-evaluate's output for the
  # packaged files; provenance.json must say the same, as the packager would write it.
  with open(REAL_DATA_RESULTS) as f:
    results = json.load(f)
  recorded = PROVENANCE["real_data"]
  summary = packaged_model.real_data_summary(results, recorded["command"], recorded.get("note"))
  assert summary == recorded
  assert summary["scores"]["casia_v1:test"]["num_scored"] == 920
  assert summary["scores"]["coverage:test"]["num_scored"] == 94


def test_prediction_resolution_follows_the_checkpoint_config():
  packaged = packaged_model.prediction_config(checkpoint.DEFAULT_MODEL_DIR)
  assert packaged_model.prediction_resolution(packaged) == packaged_model.NATIVE
  quickstart = configs.load("quickstart")
  assert packaged_model.prediction_resolution(quickstart) == "resized to 128x128"


def test_real_data_summary_names_the_dataset_scored_without_every_protocol():
  with open(REAL_DATA_RESULTS) as f:
    results = json.load(f)
  del results["coverage:test"]["protocols"]["best"]
  with pytest.raises(
    errors.SdpalError, match=r"coverage:test has no 'best' protocol.*--protocol all"
  ):
    packaged_model.real_data_summary(results, "sdpal-evaluate ...")
  with pytest.raises(errors.SdpalError, match="no dataset"):
    packaged_model.real_data_summary({}, "sdpal-evaluate ...")


def test_packager_records_real_data_scores_in_an_already_packaged_model(tmp_path):
  packaged = tmp_path / "model"
  packaged.mkdir()
  shutil.copy(os.path.join(checkpoint.DEFAULT_MODEL_DIR, checkpoint.ENSEMBLE_FILE), packaged)
  for member in MEMBER_DIRS:  # the configs say how the ensemble sees photos; no weights needed
    relative = os.path.relpath(member, checkpoint.DEFAULT_MODEL_DIR)
    os.makedirs(packaged / relative)
    shutil.copy(os.path.join(member, checkpoint.CONFIG_FILE), packaged / relative)
  stale = {**PROVENANCE, "real_data": {"command": "an older model's scores"}}
  (packaged / packaged_model.PROVENANCE_FILE).write_text(json.dumps(stale))
  results = json.loads(open(REAL_DATA_RESULTS).read())
  results["casia_v1:test"]["protocols"]["dataset"]["pixel_auc"] = 0.75
  (tmp_path / "results.json").write_text(json.dumps(results))
  command = "sdpal-evaluate --workdir default --protocol all"
  out = run_packager(
    "--output_dir", str(packaged), "--real_data", str(tmp_path / "results.json"),
    "--real_data_command", command, cwd=tmp_path,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-2000:]
  written = packaged_model.read_provenance(str(packaged))
  assert written["real_data"]["command"] == command
  assert written["real_data"]["resolution"] == packaged_model.NATIVE  # its config: native size
  assert written["real_data"]["scores"]["casia_v1:test"]["dataset_protocol"]["pixel_auc"] == 0.75
  assert {k: v for k, v in written.items() if k != "real_data"} == {
    k: v for k, v in PROVENANCE.items() if k != "real_data"
  }
  assert not list(packaged.glob("*.tmp"))


def test_packager_refuses_incomplete_requests_with_a_message(tmp_path):
  nothing = run_packager("--output_dir", str(tmp_path), cwd=tmp_path)
  assert (
    nothing.returncode != 0 and "--workdir" in nothing.stderr and "Traceback" not in nothing.stderr
  )
  no_command = run_packager(
    "--output_dir", str(tmp_path), "--real_data", REAL_DATA_RESULTS, cwd=tmp_path
  )  # fmt: skip
  assert no_command.returncode != 0 and "--real_data_command" in no_command.stderr
  not_packaged = run_packager(
    "--output_dir", str(tmp_path), "--real_data", REAL_DATA_RESULTS,
    "--real_data_command", "sdpal-evaluate", cwd=tmp_path,
  )  # fmt: skip
  assert not_packaged.returncode != 0 and "no provenance file" in not_packaged.stderr
  half = run_packager(
    "--output_dir", str(tmp_path / "out"), "--workdir", str(tmp_path), cwd=tmp_path
  )  # fmt: skip
  assert half.returncode != 0 and "--command and --commit" in half.stderr


@pytest.mark.parametrize(
  "large_name,small_name",
  [("mixed_large", "mixed_small"), ("mixed_large_unwarped", "mixed_small_unwarped")],
)
def test_large_configs_hold_out_the_same_validation_and_test_images_as_small_ones(
  large_name, small_name
):
  from sdpal_jax.datasets import synthetic_forgery  # noqa: PLC0415 (tfds)

  by_name = {c.name: c for c in synthetic_forgery.SyntheticForgery.BUILDER_CONFIGS}
  large, small = by_name[large_name], by_name[small_name]
  assert large.num_train > 6 * small.num_train
  photos = [load_image(p) for p in synthetic_forgery.source_photo_paths()]
  for split, index in (("validation", 0), ("test", 149)):
    a = synthetic_forgery.make_example(photos, split, index, large)
    b = synthetic_forgery.make_example(photos, split, index, small)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.slow
def test_evaluate_takes_the_packaged_model_as_workdir_default(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "sdpal_jax.evaluate",
      "--workdir",
      "default",
      "--datasets",
      "synthetic_forgery/mixed_tiny:test",
      "--output_dir",
      str(tmp_path),
    ],  # fmt: skip
    capture_output=True,
    text=True,
    timeout=600,
    cwd=tmp_path,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  scores = json.loads((tmp_path / "results.json").read_text())["synthetic_forgery/mixed_tiny:test"]
  assert scores["num_scored"] == 6 and 0.0 <= scores["pixel_auc"] <= 1.0
