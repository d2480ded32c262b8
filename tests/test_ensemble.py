"""Ensembles of checkpoints (the mean of their maps) and flip-averaged prediction."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from model_fixtures import run_packager, save_tiny_checkpoint

from sdpal_jax import checkpoint, packaged_model
from sdpal_jax.errors import CheckpointError, SdpalError
from sdpal_jax.inference import EnsemblePredictor, Predictor


def _photos(n=2, h=48, w=80, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory):
  """An ensemble of two tiny random networks (different seeds) under members/."""
  root = tmp_path_factory.mktemp("ensemble")
  for name, seed in (("a", 0), ("b", 1)):
    save_tiny_checkpoint(root / "members" / name, image_size=(64, 64), seed=seed)
  checkpoint.write_ensemble(str(root), ["members/a", "members/b"])
  return str(root)


def test_ensemble_predicts_the_mean_of_its_members_maps(ensemble_dir):
  ensemble = Predictor.from_checkpoint(ensemble_dir)
  assert isinstance(ensemble, EnsemblePredictor) and len(ensemble.members) == 2
  photos = _photos()
  maps = [
    Predictor.from_checkpoint(os.path.join(ensemble_dir, "members", name)).predict_probabilities(
      photos
    )
    for name in ("a", "b")
  ]
  assert not np.allclose(maps[0], maps[1], atol=1e-3)  # two different networks
  mean = ensemble.predict_probabilities(photos)
  assert mean.shape == (2, 48, 80) and mean.dtype == np.float32
  np.testing.assert_allclose(mean, (maps[0] + maps[1]) / 2, atol=1e-6)
  np.testing.assert_allclose(ensemble.predict_image(photos[1]), mean[1], atol=1e-6)
  assert ensemble.checkpoint == ensemble_dir and ensemble.step is None


def test_flip_average_is_the_mean_with_the_mirrored_map_of_the_mirrored_photo(ensemble_dir):
  member = os.path.join(ensemble_dir, "members", "a")
  plain = Predictor.from_checkpoint(member)
  flipped = Predictor.from_checkpoint(member, flip_average=True)
  photos = _photos(seed=3)
  mirrored = plain.predict_probabilities(np.ascontiguousarray(photos[:, :, ::-1]))[:, :, ::-1]
  expected = (plain.predict_probabilities(photos) + mirrored) / 2
  np.testing.assert_allclose(flipped.predict_probabilities(photos), expected, atol=1e-6)
  # A symmetric photo's averaged map is symmetric.
  half = photos[0, :, :40]
  symmetric = np.concatenate([half, half[:, ::-1]], axis=1)
  averaged = flipped.predict_image(symmetric)
  np.testing.assert_allclose(averaged, averaged[:, ::-1], atol=1e-6)
  # Every member of an ensemble takes the option.
  assert Predictor.from_checkpoint(ensemble_dir, flip_average=True).flip_average


def test_an_ensemble_has_no_step_to_pick(ensemble_dir):
  with pytest.raises(CheckpointError, match="ensemble of checkpoints.*no step 5"):
    Predictor.from_checkpoint(ensemble_dir, step=5)
  with pytest.raises(CheckpointError, match="is an ensemble of 2 checkpoints"):
    checkpoint.load_inference_checkpoint(ensemble_dir)
  with pytest.raises(CheckpointError, match="is an ensemble of checkpoints"):
    checkpoint.read_config(ensemble_dir)
  from sdpal_jax.evaluate import checkpoint_runs  # noqa: PLC0415 (TensorFlow)

  with pytest.raises(SdpalError, match="it has no steps; leave --step out"):
    checkpoint_runs([ensemble_dir], ["e"], "all")


@pytest.mark.parametrize(
  "content,message",
  [
    ("{not json", "cannot read the ensemble"),
    ('{"combine": "max", "members": ["members/a"]}', 'expected {"combine": "mean_probability"'),
    ('{"combine": "mean_probability", "members": []}', "non-empty list"),
    (
      '{"combine": "mean_probability", "members": ["members/c"]}',
      "'members/c' is not a checkpoint",
    ),
    ('{"combine": "mean_probability", "members": ["../a"]}', "must be a folder inside"),
  ],
)
def test_a_broken_ensemble_file_is_named_with_its_problem(tmp_path, ensemble_dir, content, message):
  broken = tmp_path / "broken"
  shutil.copytree(ensemble_dir, broken)
  (broken / checkpoint.ENSEMBLE_FILE).write_text(content)
  with pytest.raises(CheckpointError, match=message) as raised:
    Predictor.from_checkpoint(str(broken))
  assert checkpoint.ENSEMBLE_FILE in str(raised.value)


def test_members_that_see_photos_differently_are_refused(tmp_path):
  save_tiny_checkpoint(tmp_path / "members" / "a", image_size=(64, 64))
  save_tiny_checkpoint(tmp_path / "members" / "b", image_size=(96, 96))
  checkpoint.write_ensemble(str(tmp_path), ["members/a", "members/b"])
  with pytest.raises(CheckpointError, match="would not be of the same input"):
    Predictor.from_checkpoint(str(tmp_path))


def _packaged_member(directory, seed) -> str:
  """A tiny checkpoint with the provenance a packaged model carries."""
  save_tiny_checkpoint(directory, image_size=(64, 64), seed=seed)
  loaded = checkpoint.load_inference_checkpoint(str(directory))
  provenance = {
    "command": f"python -m sdpal_jax.train --config tiny --seed {seed}",
    "commit": "abc1234",
    "dataset": "synthetic_forgery/mixed_tiny",
    "dataset_version": "2.0.0",
    "step": 1,
    "checksum_sha256": packaged_model.variables_checksum(loaded.variables),
  }
  (directory / packaged_model.PROVENANCE_FILE).write_text(json.dumps(provenance))
  return str(directory)


@pytest.mark.slow
def test_packaging_an_ensemble_keeps_each_members_provenance_and_replaces_the_old_model(tmp_path):
  members = {
    "first": _packaged_member(tmp_path / "p1", 0),
    "second": _packaged_member(tmp_path / "p2", 1),
  }
  output = tmp_path / "model"
  output.mkdir()
  (output / "stale.txt").write_text("the previous model")
  provenance = packaged_model.package_ensemble(members, str(output))
  assert not (output / "stale.txt").exists()  # replaced whole, not merged
  assert not os.path.exists(str(output) + ".partial")
  assert json.loads((output / checkpoint.ENSEMBLE_FILE).read_text())["members"] == [
    "members/first",
    "members/second",
  ]
  entry = provenance["ensemble"]["members"]["second"]
  assert entry["command"].endswith("--seed 1") and entry["folder"] == "members/second"
  assert packaged_model.read_provenance(str(output / "members" / "first"))["commit"] == "abc1234"
  assert provenance == packaged_model.read_provenance(str(output))
  assert provenance["recorded"]["scores"]["num_scored"] == 150
  assert provenance["size_bytes"] == sum(
    os.path.getsize(os.path.join(folder, name))
    for folder, _, names in os.walk(output)
    for name in names
    if name != packaged_model.PROVENANCE_FILE or folder != str(output)
  )
  # The recorded scores are those of the mean map of the stored members.
  ensemble = Predictor.from_checkpoint(str(output))
  rescored = packaged_model.score_generated_split(ensemble, protocol="dataset")
  assert rescored["pixel_auc"] == pytest.approx(provenance["recorded"]["scores"]["pixel_auc"])
  assert (
    packaged_model.prediction_resolution(packaged_model.prediction_config(str(output)))
    == "resized to 64x64"
  )


def test_packaging_an_ensemble_of_a_folder_that_is_not_a_packaged_model_fails_first(tmp_path):
  plain = save_tiny_checkpoint(tmp_path / "plain", image_size=(64, 64))
  output = tmp_path / "model"
  output.mkdir()
  (output / "kept.txt").write_text("the previous model")
  with pytest.raises(SdpalError, match="no provenance file"):
    packaged_model.package_ensemble({"a": plain}, str(output))
  assert (output / "kept.txt").exists()
  with pytest.raises(SdpalError, match="plain folder name"):
    packaged_model.package_ensemble({"../x": plain}, str(output))


def test_the_packager_refuses_members_mixed_with_other_requests(tmp_path):
  both = run_packager(
    "--output_dir", str(tmp_path / "o"), "--members", "a=x", "--workdir", "w", cwd=tmp_path
  )
  assert both.returncode != 0 and "--members packages an ensemble on its own" in both.stderr
  assert "Traceback" not in both.stderr
  repeated = run_packager("--output_dir", str(tmp_path / "o"), "--members", "a=x,a=y", cwd=tmp_path)
  assert repeated.returncode != 0 and "distinct NAME=DIR" in repeated.stderr


def test_evaluation_requests_open_flip_averaged_predictors(ensemble_dir):
  from sdpal_jax.evaluate import EvaluationRequest  # noqa: PLC0415 (TensorFlow)

  assert EvaluationRequest(flip_average=True).open_predictor(ensemble_dir, None).flip_average
  assert not EvaluationRequest().open_predictor(ensemble_dir, None).flip_average


def test_predict_command_takes_an_ensemble_and_flip_average(tmp_path, ensemble_dir):
  from PIL import Image  # noqa: PLC0415

  Image.fromarray(_photos(1)[0]).save(tmp_path / "photo.png")
  out = subprocess.run(
    [
      sys.executable, "-m", "sdpal_jax.predict", "--checkpoint", ensemble_dir, "--flip_average",
      "--output_dir", str(tmp_path / "out"), str(tmp_path / "photo.png"),
    ],
    capture_output=True, text=True, timeout=600, cwd=tmp_path,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-2000:]
  expected = Predictor.from_checkpoint(ensemble_dir, flip_average=True).predict_image(
    np.asarray(Image.open(tmp_path / "photo.png"))
  )
  np.testing.assert_allclose(np.load(tmp_path / "out" / "photo_prob.npy"), expected, atol=1e-5)
