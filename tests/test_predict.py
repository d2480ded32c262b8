"""Inference and the predict CLI on photos of any size and colour mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from model_fixtures import save_tiny_checkpoint
from PIL import Image

from sdpal_jax import figures, image_io, inference, metrics, predict, preprocessing, reporting
from sdpal_jax.errors import CheckpointError, SdpalError
from sdpal_jax.inference import Predictor


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
  return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), image_size=(64, 64))


@pytest.fixture(scope="module")
def predictor(checkpoint_dir):
  return Predictor.from_checkpoint(checkpoint_dir)


def _photo(h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _odd_inputs(folder):
  """One file per awkward case a user will meet; returns {name: (path, expected (H, W))}."""
  rgb = _photo(50, 70)
  cases = {}

  def save(name, image, size=(50, 70), **kw):
    path = os.path.join(folder, name)
    image.save(path, **kw)
    cases[name] = (path, size)

  save("grey.png", Image.fromarray(rgb[..., 0]))
  save("rgba.png", Image.fromarray(np.dstack([rgb, np.full((50, 70), 128, np.uint8)])))
  save("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"))
  save("deep16.png", Image.fromarray(rgb[..., 1].astype(np.uint16) * 257))
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90° on display: the photo is 70 high and 50 wide
  save("rotated.jpg", Image.fromarray(rgb), size=(70, 50), exif=exif)
  save("palette.gif", Image.fromarray(rgb).convert("P"))
  return cases


def _hand_pipeline(predictor, photo):
  """The documented inference path, step by step with PIL and NumPy: bilinear resize to the
  checkpoint's 64x64, ImageNet normalisation by hand, the network, sigmoid, bilinear resize back."""
  h, w = photo.shape[:2]
  small = np.asarray(Image.fromarray(photo).resize((64, 64), Image.BILINEAR), np.float32)
  x = (small - np.float32([123.675, 116.28, 103.53])) / np.float32([58.395, 57.12, 57.375])
  logits = np.asarray(predictor.model.apply(predictor.variables, x[None], train=False))[0]
  prob = (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
  back = Image.fromarray(prob, mode="F").resize((w, h), Image.BILINEAR)
  return np.clip(np.asarray(back, np.float32), 0, 1)


@pytest.mark.slow
def test_probabilities_come_back_at_each_photo_size(predictor):
  for h, w in [(64, 64), (40, 90), (121, 33)]:
    photo = _photo(h, w, seed=h)
    prob = predictor.predict_probabilities(photo[None])
    assert prob.shape == (1, h, w) and prob.dtype == np.float32
    np.testing.assert_allclose(prob[0], _hand_pipeline(predictor, photo), atol=2e-5)


def test_full_resolution_feeds_the_photo_at_its_own_size(checkpoint_dir):
  full = Predictor.from_checkpoint(checkpoint_dir, full_resolution=True)
  assert full.input_size((72, 88)) == (72, 88)
  assert full.predict_image(_photo(72, 88)).shape == (72, 88)


def test_a_model_trained_at_the_photos_own_scale_always_sees_photos_at_their_own_size(tmp_path):
  native = Predictor.from_checkpoint(save_tiny_checkpoint(tmp_path, image_size=None))
  assert native.full_resolution and native.model_config.walk.method == "sampled"
  assert native.input_size((72, 88)) == (72, 88)
  assert native.predict_image(_photo(72, 88)).shape == (72, 88)


@pytest.mark.slow
def test_full_resolution_uses_the_sampled_walk_unless_told_otherwise(checkpoint_dir):
  full = Predictor.from_checkpoint(checkpoint_dir, full_resolution=True)
  assert full.model_config.walk.method == "sampled"
  chosen = Predictor.from_checkpoint(checkpoint_dir, full_resolution=True, walk_method="blocked")
  assert chosen.model_config.walk.method == "blocked"
  resized = Predictor.from_checkpoint(checkpoint_dir)
  assert resized.model_config.walk.method != "sampled"
  # Below num_landmarks graph nodes the sampled walk is the exact one.
  image = _photo(64, 64, seed=4)
  np.testing.assert_allclose(full.predict_image(image), chosen.predict_image(image), atol=1e-5)


@pytest.mark.slow
def test_walk_method_override_gives_the_same_map(checkpoint_dir, predictor):
  blocked = Predictor.from_checkpoint(checkpoint_dir, walk_method="blocked")
  image = _photo(64, 64, seed=3)
  np.testing.assert_allclose(
    blocked.predict_image(image), predictor.predict_image(image), atol=1e-5
  )


def test_predictor_rejects_non_uint8_and_wrong_shapes(predictor):
  with pytest.raises(SdpalError, match="uint8"):
    predictor.predict_probabilities(np.zeros((1, 8, 8, 3), np.float32))
  with pytest.raises(SdpalError, match="shape"):
    predictor.predict_probabilities(np.zeros((8, 8, 3), np.uint8))


def test_missing_checkpoint_is_a_named_error(tmp_path):
  with pytest.raises(CheckpointError, match="no such checkpoint"):
    Predictor.from_checkpoint(str(tmp_path / "missing"))


def test_odd_colour_modes_and_exif_are_predicted_at_display_size(predictor, tmp_path):
  cases = _odd_inputs(str(tmp_path))
  out = tmp_path / "out"
  summary = predict.predict_files(predictor, [p for p, _ in cases.values()], str(out))
  assert summary["skipped"] == []
  for name, (_, size) in cases.items():
    stem = os.path.splitext(name)[0]
    prob = np.load(out / f"{stem}_prob.npy")
    assert prob.shape == size, name
    mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
    assert mask.shape == size and set(np.unique(mask)) <= {0, 255}
    assert np.asarray(Image.open(out / f"{stem}_overlay.png")).shape == (*size, 3)
  on_disk = json.loads((out / "summary.json").read_text())
  assert [r["stem"] for r in on_disk["images"]] == [os.path.splitext(n)[0] for n in cases]
  for record in on_disk["images"]:
    prob = np.load(out / f"{record['stem']}_prob.npy")
    top = np.sort(prob.ravel())[::-1][: max(1, round(prob.size / 100))]
    assert record["score"] == pytest.approx(float(top.mean()), abs=1e-6)  # mean of the top 1%
    assert record["max_probability"] == pytest.approx(float(prob.max()))
    assert record["tampered_fraction"] == pytest.approx(float(np.mean(prob > 0.5)))


def test_unreadable_file_is_skipped_by_name_and_the_rest_still_done(predictor, tmp_path):
  good = tmp_path / "good.png"
  Image.fromarray(_photo(30, 40)).save(good)
  truncated = tmp_path / "truncated.jpg"
  Image.fromarray(_photo(30, 40)).save(truncated)
  truncated.write_bytes(truncated.read_bytes()[:200])
  fake = tmp_path / "notes.png"
  fake.write_text("not an image")
  summary = predict.predict_files(
    predictor, [str(truncated), str(good), str(fake)], str(tmp_path / "o")
  )
  assert [r["stem"] for r in summary["images"]] == ["good"]
  assert [os.path.basename(s["file"]) for s in summary["skipped"]] == ["truncated.jpg", "notes.png"]


def test_same_stem_in_two_folders_gets_distinct_outputs(predictor, tmp_path):
  for folder in ("a", "b"):
    os.makedirs(tmp_path / folder)
    Image.fromarray(_photo(20, 20)).save(tmp_path / folder / "x.png")
  summary = predict.predict_files(
    predictor, [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png")], str(tmp_path / "o")
  )
  assert [r["stem"] for r in summary["images"]] == ["x", "x_2"]


def test_collect_images_reports_missing_paths_and_empty_folders(tmp_path):
  os.makedirs(tmp_path / "empty")
  Image.fromarray(_photo(8, 8)).save(tmp_path / "one.png")
  paths, problems = predict.collect_images(
    [str(tmp_path / "one.png"), str(tmp_path / "empty"), str(tmp_path / "nope.jpg")]
  )
  assert paths == [str(tmp_path / "one.png")]
  assert [os.path.basename(p) for p, _ in problems] == ["empty", "nope.jpg"]


def test_unique_names_suffixes_repeats_and_never_collides():
  assert reporting.unique_names(["x", "y", "x", "x"]) == ["x", "y", "x_2", "x_3"]
  assert reporting.unique_names(["a", "a", "a_2"]) == ["a", "a_2", "a_2_2"]
  assert reporting.unique_names(["a_2", "a", "a"]) == ["a_2", "a", "a_3"]
  assert reporting.unique_names([]) == []


@pytest.mark.parametrize("extension", image_io.IMAGE_EXTENSIONS)
def test_every_listed_extension_is_collected_and_decoded(tmp_path, extension):
  photo = _photo(12, 10)
  name = "photo" + extension.upper()  # upper-case names count too
  Image.fromarray(photo).save(tmp_path / name, format=Image.registered_extensions()[extension])
  Image.fromarray(photo).save(tmp_path / "notes.txt", format="PNG")  # not an image name
  paths, problems = predict.collect_images([str(tmp_path)])
  assert (paths, problems) == ([str(tmp_path / name)], [])
  decoded = image_io.load_image(paths[0])
  assert decoded.shape == (12, 10, 3) and decoded.dtype == np.uint8


def test_predict_writes_the_shared_overlay_and_detection_score(predictor, tmp_path):
  photo = _photo(24, 30)
  Image.fromarray(photo).save(tmp_path / "p.png")
  summary = predict.predict_files(predictor, [str(tmp_path / "p.png")], str(tmp_path / "o"))
  prob = np.load(tmp_path / "o" / "p_prob.npy")
  assert summary["images"][0]["score"] == pytest.approx(metrics.detection_score(prob))
  written = np.asarray(Image.open(tmp_path / "o" / "p_overlay.png"))
  np.testing.assert_array_equal(written, figures.overlay(photo, prob))


def test_predict_and_figures_import_without_matplotlib():
  """``figures.overlay`` is shared with predict: matplotlib loads only when a plot is drawn."""
  code = "import sys, sdpal_jax.predict, sdpal_jax.figures; print('matplotlib' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_cli_exit_status_says_whether_files_were_skipped(checkpoint_dir, tmp_path):
  Image.fromarray(_photo(32, 32)).save(tmp_path / "ok.png")
  (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
  out = tmp_path / "out"
  cmd = [
    sys.executable,
    "-m",
    "sdpal_jax.predict",
    "--checkpoint",
    checkpoint_dir,
    "--output_dir",
    str(out),
  ]
  run = subprocess.run([*cmd, str(tmp_path)], capture_output=True, text=True, timeout=600)
  assert run.returncode == 1, run.stderr
  assert "broken.jpg" in run.stderr
  assert (out / "ok_prob.npy").exists()
  everything = subprocess.run([*cmd, str(tmp_path / "ok.png")], capture_output=True, text=True)
  assert everything.returncode == 0, everything.stderr[-2000:]
  nothing = subprocess.run([*cmd, str(tmp_path / "broken.jpg")], capture_output=True, text=True)
  assert nothing.returncode == 2 and "broken.jpg" in nothing.stderr
  # With no --checkpoint the packaged model predicts (tests/test_packaged_model.py): same statuses.
  packaged_out = tmp_path / "packaged"
  no_checkpoint = subprocess.run(
    [*cmd[:3], "--output_dir", str(packaged_out), str(tmp_path)], capture_output=True, text=True
  )
  assert no_checkpoint.returncode == 1 and "broken.jpg" in no_checkpoint.stderr
  assert (packaged_out / "ok_prob.npy").exists()
  assert "Traceback" not in no_checkpoint.stderr


def test_tiles_cover_the_image_and_blend_weights_sum_to_one_where_tiles_meet():
  from sdpal_jax.inference import tile_starts, tile_weights  # noqa: PLC0415

  starts = tile_starts(300, 128, 32)
  assert starts[0] == 0 and starts[-1] == 300 - 128
  assert all(b - a <= 128 - 32 for a, b in zip(starts, starts[1:], strict=False))
  ramp = tile_weights(128, 32)[64]  # a row through the middle, where the column weight is 1
  # Two tiles 96 apart overlap by 32 pixels; their weights there add up to 1.
  np.testing.assert_allclose(ramp[96:] + ramp[:32], 1.0, atol=1e-6)


class PixelwiseForward:
  """Stand-in for ``Predictor._apply``: each output pixel is a fixed function of that input
  pixel alone, so a correct tiling reproduces the whole-image map exactly and a tile taken
  from or written to the wrong place does not. Records the input shapes it was given."""

  def __init__(self):
    self.shapes = []

  def __call__(self, variables, x):
    del variables
    x = np.asarray(x, np.float64)
    self.shapes.append(x.shape)
    z = 0.9 * x[..., 0] - 0.5 * x[..., 1] + 0.2 * x[..., 2]
    return (1 / (1 + np.exp(-z))).astype(np.float32)


@pytest.mark.parametrize("size", [(150, 200), (50, 200)])
def test_tiles_blend_back_into_the_whole_image_map(checkpoint_dir, size):
  """150x200 in 64-pixel tiles with 16 overlap: tile rows start at 0, 48, 86 and columns at
  0, 48, 96, 136 (the last ones flush with the border); 50 high is padded to one tile row."""
  image = _photo(*size, seed=11)
  tiled = Predictor.from_checkpoint(
    checkpoint_dir, full_resolution=True, tile_size=64, tile_overlap=16
  )
  tiled.__dict__["_apply"] = forward = PixelwiseForward()
  got = tiled.predict_image(image)
  rows = 3 if size[0] == 150 else 1
  assert forward.shapes == [(1, 64, 64, 3)] * (rows * 4)  # it did predict tile by tile
  x = preprocessing.normalize_images(image[None], "imagenet")
  whole = forward(None, x)[0]
  assert got.shape == size
  np.testing.assert_allclose(got, whole, rtol=0, atol=1e-6)


def test_tiled_real_model_equals_each_tile_predicted_alone_where_only_it_covers(checkpoint_dir):
  """With the real network: where a single tile covers a pixel, the blend is that tile's map."""
  image = _photo(150, 200, seed=12)
  tiled = Predictor.from_checkpoint(
    checkpoint_dir, full_resolution=True, tile_size=64, tile_overlap=16
  ).predict_image(image)
  alone = Predictor.from_checkpoint(checkpoint_dir, full_resolution=True, tile_size=0)
  first = alone.predict_image(image[0:64, 0:64])  # rows 0..47, columns 0..47: only this tile
  np.testing.assert_allclose(tiled[0:48, 0:48], first[0:48, 0:48], atol=1e-6)
  last = alone.predict_image(image[86:150, 136:200])  # rows 112.., columns 160..: only this one
  np.testing.assert_allclose(tiled[112:150, 160:200], last[26:64, 24:64], atol=1e-6)
  middle = alone.predict_image(image[48:112, 48:112])  # rows 64..85, columns 64..95
  np.testing.assert_allclose(tiled[64:86, 64:96], middle[16:38, 16:48], atol=1e-6)


@pytest.mark.slow
def test_photo_within_one_tile_is_predicted_whole(checkpoint_dir):
  image = _photo(96, 120, seed=13)
  whole = Predictor.from_checkpoint(checkpoint_dir, full_resolution=True, tile_size=0)
  one_tile = Predictor.from_checkpoint(checkpoint_dir, full_resolution=True, tile_size=128)
  one_tile.__dict__["_apply"] = forward = PixelwiseForward()
  one_tile.predict_image(image)
  assert forward.shapes == [(1, 96, 120, 3)]  # not padded up to a 128 tile
  np.testing.assert_allclose(
    Predictor.from_checkpoint(checkpoint_dir, full_resolution=True, tile_size=128).predict_image(
      image
    ),
    whole.predict_image(image),
    atol=1e-6,
  )


def test_a_photo_below_the_networks_minimum_is_mirrored_out_and_cropped_back(checkpoint_dir):
  """At full resolution a 40x50 thumbnail (the network needs 64 px a side) still gets its map."""
  predictor = Predictor.from_checkpoint(checkpoint_dir, full_resolution=True, tile_size=0)
  image = _photo(40, 50, seed=15)
  predictor.__dict__["_apply"] = forward = PixelwiseForward()
  got = predictor.predict_image(image)
  assert forward.shapes == [(1, 64, 64, 3)] and got.shape == (40, 50)
  x = preprocessing.normalize_images(image[None], "imagenet")
  np.testing.assert_allclose(got, forward(None, x)[0], atol=1e-6)  # the photo's own pixels


def test_the_checkpoint_sets_the_default_tile_size(tmp_path):
  """preprocess.tile_size stored with the weights is the tile size unless the caller gives one."""
  directory = save_tiny_checkpoint(tmp_path / "ckpt", image_size=None, tile_size=64)
  image = _photo(100, 120, seed=14)
  tiled = Predictor.from_checkpoint(directory)
  assert tiled.full_resolution and tiled.tile_size == 64 and tiled.tile_overlap == 8
  tiled.__dict__["_apply"] = forward = PixelwiseForward()
  tiled.predict_image(image)
  assert forward.shapes and set(forward.shapes) == {(1, 64, 64, 3)}
  assert Predictor.from_checkpoint(directory, tile_size=0).tile_size == 0
  plain = save_tiny_checkpoint(tmp_path / "plain", image_size=None)
  assert Predictor.from_checkpoint(plain).tile_size == inference.DEFAULT_TILE_SIZE == 2048


def test_bad_tile_overlap_is_a_named_error(checkpoint_dir):
  with pytest.raises(SdpalError, match="tile_overlap=40"):
    Predictor.from_checkpoint(checkpoint_dir, full_resolution=True, tile_size=64, tile_overlap=40)


MULTI_DEVICE = """
import sys, numpy as np, jax
from sdpal_jax.inference import Predictor
assert jax.device_count() == 8
images = np.load(sys.argv[2])
predictor = Predictor.from_checkpoint(sys.argv[1])
np.save(sys.argv[3], predictor.predict_probabilities(images))
"""


@pytest.mark.slow
def test_predictions_split_over_eight_devices_equal_one_device(tmp_path):
  path = save_tiny_checkpoint(tmp_path)
  images = np.random.default_rng(0).integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
  np.save(tmp_path / "images.npy", images)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  run = subprocess.run(
    [sys.executable, "-c", MULTI_DEVICE, path, str(tmp_path / "images.npy"), str(tmp_path / "p.npy")],
    env=env, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert run.returncode == 0, run.stderr[-3000:]
  single = Predictor.from_checkpoint(path).predict_probabilities(images)
  np.testing.assert_allclose(np.load(tmp_path / "p.npy"), single, atol=1e-5)
