"""synthetic_forgery and the evaluation sources (.lst, IMDL-BenCo JSON, Tp/Gt folder, tfds)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from scipy import ndimage

from sdpal_jax.datasets import sources, synthetic_forgery
from sdpal_jax.errors import SdpalError

RELEASE_SPLIT = os.path.join(
  os.path.dirname(__file__), "..", "..", "shared", "data", "casia_v2_release_split"
)


@pytest.fixture(scope="module")
def tiny_builder():
  builder = tfds.builder("synthetic_forgery/mixed_tiny")
  builder.download_and_prepare()
  return builder


def test_synthetic_build_has_binary_masks_and_all_splits(tiny_builder):
  splits = tiny_builder.info.splits
  assert {k: splits[k].num_examples for k in ("train", "validation", "test")} == {
    "train": 12,
    "validation": 6,
    "test": 6,
  }
  examples = list(tfds.as_numpy(tiny_builder.as_dataset(split="train")))
  for ex in examples:
    assert ex["image"].shape == (64, 64, 3) and ex["image"].dtype == np.uint8
    assert ex["mask"].shape == (64, 64, 1) and set(np.unique(ex["mask"])) <= {0, 1}
    assert bool(ex["tampered"]) == bool(ex["mask"].any())
    assert (ex["manipulation"].decode() == "authentic") == (not ex["tampered"])


@pytest.fixture(scope="module")
def photos():
  from sdpal_jax.image_io import load_image

  return [load_image(p) for p in synthetic_forgery.source_photo_paths()]


def test_bundled_photos_are_found(photos):
  assert len(photos) >= 15


def test_examples_are_deterministic_and_cover_every_manipulation(photos):
  config = synthetic_forgery.SyntheticForgeryConfig(name="t", image_size=48)
  kinds = []
  for index in range(40):
    a = synthetic_forgery.make_example(photos, "train", index, config)
    b = synthetic_forgery.make_example(photos, "train", index, config)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    kinds.append(a[2])
  assert set(kinds) == {"authentic", "splice", "copymove", "removal"}
  assert 0.15 < kinds.count("authentic") / len(kinds) < 0.55


def test_tampered_masks_cover_a_plausible_region(photos):
  config = synthetic_forgery.SyntheticForgeryConfig(name="t", image_size=64, authentic_fraction=0.0)
  fractions = [
    synthetic_forgery.make_example(photos, "test", i, config)[1].mean() for i in range(12)
  ]
  assert all(0.01 < f < 0.35 for f in fractions), fractions


def test_splits_draw_from_disjoint_rows_of_each_photo():
  """A photo whose pixels encode their row: each split's crops only see its own rows."""
  rows = np.repeat(np.arange(400, dtype=np.float64)[:, None], 300, axis=1) / 400 * 255
  photo = np.repeat(rows[..., None], 3, axis=-1).astype(np.uint8)
  for split, (low, high) in synthetic_forgery.SPLIT_ROWS.items():
    for seed in range(5):
      crop = synthetic_forgery._crop(photo, split, 32, np.random.default_rng(seed))
      assert crop.min() >= int(low * 255) - 2 and crop.max() <= int(high * 255) + 2, split


def _discs_on_grey(size=80):
  """A flat grey photo with three flat discs (radius 8, 10, 13) away from the border."""
  image = np.full((size, size, 3), 110, np.uint8)
  yy, xx = np.mgrid[:size, :size]
  discs = []
  for (cy, cx, r), colour in zip(
    ((20, 20, 8), (22, 56, 10), (56, 40, 13)), (30, 200, 250), strict=True
  ):
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    image[disc] = (colour, 255 - colour, colour // 2)
    discs.append(disc)
  return image, discs


def test_object_regions_follow_the_object_borders_of_the_photo():
  image, discs = _discs_on_grey()
  # Segmentation smooths the photo first (sigma 0.8): a border may move by two or three pixels.
  near_any = ndimage.binary_dilation(np.any(discs, axis=0), iterations=3)
  for seed in range(8):
    region = synthetic_forgery._object_mask(image, np.random.default_rng(seed))
    assert region.any()
    # Every region pixel lies on a disc, and a disc it touches is taken nearly whole.
    assert near_any[region].all(), seed
    for disc in discs:
      if (region & disc).any():
        assert (region & disc).sum() >= 0.9 * disc.sum(), seed


def test_thin_or_missing_segments_fall_back_to_a_solid_blob():
  flat = np.full((64, 64, 3), 90, np.uint8)  # one segment, touching the border: no object
  region = synthetic_forgery._object_mask(flat, np.random.default_rng(0))
  assert 0.02 < region.mean() < 0.35
  assert ndimage.binary_erosion(region, iterations=2).sum() > 0.4 * region.sum()


def test_moved_content_keeps_its_region_inside_the_frame_and_moves():
  image, discs = _discs_on_grey()
  for seed in range(10):
    content, alpha = synthetic_forgery._warp(image, discs[0], np.random.default_rng(seed))
    assert content.shape == image.shape and alpha.shape == discs[0].shape
    area = alpha.sum() / discs[0].sum()
    assert 0.3 < area < 2.4, (seed, area)  # rescaled by 0.6-1.5x (area 0.36-2.25)
    # What lies under the moved region is the disc's colour (not black padding).
    inner = ndimage.binary_erosion(alpha > 0.5, iterations=2)
    if inner.any():
      np.testing.assert_allclose(content[inner].mean(0), image[discs[0]].mean(0), atol=12)


def test_copy_move_masks_the_destination_where_the_photo_changed(photos):
  config = synthetic_forgery.SyntheticForgeryConfig(
    name="t", image_size=64, authentic_fraction=0.0, manipulations=("copymove",)
  )
  for index in range(6):
    image, mask, kind = synthetic_forgery.make_example(photos, "train", index, config)
    assert kind == "copymove" and 0.005 < mask.mean() < 0.4


def _photo_folder(root, count=24):
  """Noise-textured photos of mixed sizes (some nested), one corrupt file, one too small."""
  rng = np.random.default_rng(0)
  for i in range(count):
    h, w = (int(v) for v in rng.integers(70, 140, 2))
    smooth = ndimage.gaussian_filter(rng.normal(128, 60, (h, w, 3)), (3, 3, 0))
    folder = os.path.join(root, "nested" if i % 3 == 0 else "")
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(np.clip(smooth, 0, 255).astype(np.uint8)).save(
      os.path.join(folder, f"photo_{i:02d}.jpg"), quality=90
    )
  with open(os.path.join(root, "broken.jpg"), "wb") as f:
    f.write(b"\xff\xd8\xff not a photo")
  Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(os.path.join(root, "tiny.png"))


def _photos_config(**overrides):
  fields = dict(
    name="photos_test", photos_from_manual_dir=True, image_size=64, num_train=6,
    num_validation=3, num_test=3,
  )  # fmt: skip
  fields.update(overrides)
  return synthetic_forgery.SyntheticForgeryConfig(**fields)


def test_photos_from_a_folder_build_every_split_from_its_own_photos(tmp_path, caplog):
  _photo_folder(str(tmp_path / "photos"))
  builder = synthetic_forgery.SyntheticForgery(
    config=_photos_config(), data_dir=str(tmp_path / "data")
  )
  with caplog.at_level("WARNING"):
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "photos"))
    )
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
    "train": 6, "validation": 3, "test": 3,
  }  # fmt: skip
  log = caplog.text
  assert "broken.jpg" in log and "tiny.png" in log and "smaller than the 64-pixel" in log
  for ex in tfds.as_numpy(builder.as_dataset(split="train")):
    assert ex["image"].shape == (64, 64, 3) and ex["mask"].shape == (64, 64, 1)
  # Which split each photo feeds is a function of its relative path alone.
  names = [f"nested/photo_{i:02d}.jpg" if i % 3 == 0 else f"photo_{i:02d}.jpg" for i in range(24)]
  by_split = {s: [n for n in names if synthetic_forgery.photo_split(n) == s] for s in ("train", "validation", "test")}  # fmt: skip
  assert sum(map(len, by_split.values())) == 24 and all(by_split.values())
  assert synthetic_forgery.photo_split("a/b.jpg") == synthetic_forgery.photo_split("a/b.jpg")


def test_photos_config_without_enough_photos_names_the_missing_split(tmp_path):
  _photo_folder(str(tmp_path / "photos"), count=1)
  builder = synthetic_forgery.SyntheticForgery(
    config=_photos_config(), data_dir=str(tmp_path / "data")
  )
  with pytest.raises(SdpalError, match=r"no usable photo for the .* split") as raised:
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "photos"))
    )
  assert "--manual_dir MY_PHOTOS" in str(raised.value)


def _fixture_tree(root):
  """Tp/Gt/Au folder with one good pair, one missing mask, one corrupt photo, one authentic."""
  for folder in ("Tp", "Gt", "Au"):
    os.makedirs(os.path.join(root, folder), exist_ok=True)
  rng = np.random.default_rng(0)
  photo = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
  mask = np.zeros((24, 32), np.uint8)
  mask[4:14, 8:20] = 255  # even-aligned: nearest 2x upsampling restores it exactly
  Image.fromarray(photo).save(os.path.join(root, "Tp", "a.png"))
  Image.fromarray(mask[::2, ::2]).save(os.path.join(root, "Gt", "a_gt.png"))  # another size
  Image.fromarray(photo).save(os.path.join(root, "Tp", "b.png"))  # no mask
  with open(os.path.join(root, "Tp", "c.jpg"), "wb") as f:
    f.write(b"\xff\xd8\xff not really")
  Image.fromarray(photo).save(os.path.join(root, "Au", "d.png"))
  return mask > 0


def test_folder_source_pairs_masks_and_reports_bad_files_by_name(tmp_path):
  expected = _fixture_tree(str(tmp_path))
  source = sources.open_source(str(tmp_path))
  examples = list(source)
  assert [e["name"] for e in examples] == ["a.png", "d.png"]
  assert examples[0]["mask"].shape == (24, 32)
  np.testing.assert_array_equal(examples[0]["mask"].astype(bool), expected)
  assert not examples[1]["mask"].any() and not examples[1]["tampered"]
  assert sorted(os.path.basename(p) for p, _ in source.skipped) == ["b.png", "c.jpg"]


def test_lst_and_json_sources_give_the_same_examples_as_the_folder(tmp_path):
  _fixture_tree(str(tmp_path))
  (tmp_path / "list.lst").write_text("Tp/a.png,Gt/a_gt.png\n\nAu/d.png,None\n")
  (tmp_path / "list.json").write_text(
    json.dumps([["Tp/a.png", "Gt/a_gt.png"], ["Au/d.png", "Negative"]])
  )
  folder = list(sources.open_source(str(tmp_path)))
  for spec in ("list.lst", "list.json"):
    got = list(sources.open_source(str(tmp_path / spec)))
    assert [e["name"] for e in got] == [e["name"] for e in folder]
    for a, b in zip(got, folder, strict=True):
      np.testing.assert_array_equal(a["mask"], b["mask"])


def test_malformed_list_line_and_unknown_spec_are_named(tmp_path):
  bad = tmp_path / "bad.lst"
  bad.write_text("a.png,None\nonly_one_field\n")
  with pytest.raises(SdpalError, match="bad.lst:2"):
    sources.parse_forgery_list(str(bad))
  with pytest.raises(SdpalError, match="no_such_dataset"):
    sources.open_source("no_such_dataset:test")
  os.makedirs(tmp_path / "empty")
  with pytest.raises(SdpalError, match="Tp/"):
    sources.open_source(str(tmp_path / "empty"))


def test_tfds_spec_source_reads_the_synthetic_split(tiny_builder):
  del tiny_builder
  source = sources.open_source("synthetic_forgery/mixed_tiny:test")
  examples = list(source)
  assert len(examples) == len(source) == 6
  assert examples[0]["mask"].ndim == 2


@pytest.mark.parametrize("how", ["open_source", "build_command"])
def test_two_processes_generating_the_same_split_at_once_both_read_it(tmp_path, how):
  # Two runs, two test workers or two build commands sharing a data directory: the second
  # to finish its build found the first's version in place and failed (FileExistsError on
  # tfds' rename).
  script = {
    "open_source": (
      "import sys; from sdpal_jax.datasets import sources; "
      "source = sources.open_source('synthetic_forgery/mixed_tiny:test', data_dir=sys.argv[1]); "
      "print(len(list(source)))"
    ),
    "build_command": (
      "import sys; from sdpal_jax.datasets import build; "
      "print(build.build('synthetic_forgery/mixed_tiny', data_dir=sys.argv[1])['test'])"
    ),
  }[how]
  data_dir = str(tmp_path / "data")
  runs = [
    subprocess.Popen(
      [sys.executable, "-c", script, data_dir],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for _ in range(2)
  ]
  for run in runs:
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-2000:]
    assert out.split()[-1] == "6"
  versions = os.listdir(os.path.join(data_dir, "synthetic_forgery", "mixed_tiny"))
  assert versions == ["2.0.0"]  # no incomplete.* copy left behind


@pytest.mark.skipif(
  not os.path.isdir(RELEASE_SPLIT), reason="../shared/data is not beside the checkout"
)
def test_release_lists_parse_with_authentic_and_tampered_entries():
  pairs = sources.parse_forgery_list(os.path.join(RELEASE_SPLIT, "CASIA_v2_valid.lst"))
  assert len(pairs) == 1255
  assert any(m is None for _, m in pairs) and any(m and m.endswith("_gt.png") for _, m in pairs)


def test_unbuilt_tfds_dataset_says_how_to_build_it(tmp_path):
  with pytest.raises(SdpalError, match="coverage is not built") as raised:
    sources.open_source("coverage:test", data_dir=str(tmp_path))
  message = str(raised.value)
  assert "python -m sdpal_jax.datasets.build coverage --manual_dir DIR" in message
  assert "mask/{N}forged.tif" in message  # the builder's own manual layout
  assert "no split" not in message


def test_tfds_split_slices_work_in_specs(tiny_builder):
  del tiny_builder
  name = "synthetic_forgery/mixed_tiny"
  for split, count in (("test[:2]", 2), ("test[:50%]", 3), ("test+validation", 12)):
    source = sources.open_source(f"{name}:{split}")
    assert len(source) == len(list(source)) == count, split
  with pytest.raises(SdpalError, match="split 'nope' is not one of"):
    sources.open_source(f"{name}:nope")


def test_build_command_prepares_a_dataset_and_names_missing_files(tmp_path):
  from sdpal_jax.datasets import build

  splits = build.build("synthetic_forgery/mixed_tiny", data_dir=str(tmp_path / "data"))
  assert splits == {"train": 12, "validation": 6, "test": 6}
  source = sources.open_source(
    "synthetic_forgery/mixed_tiny:test[:1]", data_dir=str(tmp_path / "data")
  )
  assert len(list(source)) == 1
  with pytest.raises(SdpalError, match="coverage: ") as raised:
    build.build("coverage", manual_dir=str(tmp_path / "none"), data_dir=str(tmp_path / "data"))
  assert "{N}forged.tif" in str(raised.value)
  assert "coverage" in build.our_builders() and "forgery_builder" not in build.our_builders()


def test_uniform_position_spreads_tampered_pixels_to_the_frame_edges():
  """By default tampered pixels crowd the middle; uniform_position leaves no such prior."""
  photos = [synthetic_forgery.load_image(p) for p in synthetic_forgery.source_photo_paths()]
  border = np.ones((64, 64), bool)
  border[8:-8, 8:-8] = False
  middle = np.zeros((64, 64), bool)
  middle[16:48, 16:48] = True
  ratios = {}
  for anywhere in (False, True):
    config = synthetic_forgery.SyntheticForgeryConfig(
      name="t", image_size=64, authentic_fraction=0.0, uniform_position=anywhere
    )
    masks = [synthetic_forgery.make_example(photos, "train", i, config)[1] for i in range(120)]
    frequency = np.mean([m[..., 0] for m in masks], axis=0)
    assert all(m.any() for m in masks)
    ratios[anywhere] = frequency[border].mean() / frequency[middle].mean()
  assert ratios[False] < 0.3 and ratios[True] > 0.6, ratios


def _median_residual(image: np.ndarray, where: np.ndarray) -> float:
  """Median absolute Laplacian-difference residual (all channels) inside ``where``."""
  kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)[..., None]
  return float(np.median(np.abs(ndimage.convolve(image.astype(np.float32), kernel))[where]))


def test_balanced_traces_put_noise_back_into_removed_regions():
  """Diffusion fill leaves a removed region smoother than its surroundings; balanced_traces
  gives most of them noise like the surroundings', so "smooth" stops meaning "tampered"."""
  photos = [synthetic_forgery.load_image(p) for p in synthetic_forgery.source_photo_paths()]
  medians = {}
  for balanced in (False, True):
    config = synthetic_forgery.SyntheticForgeryConfig(
      name="t", image_size=64, authentic_fraction=0.0, manipulations=("removal",),
      balanced_traces=balanced,
    )  # fmt: skip
    ratios = []
    for i in range(40):
      image, mask, _ = synthetic_forgery.make_example(photos, "train", i, config)
      region = mask[..., 0] > 0
      inside = ndimage.binary_erosion(region, iterations=2)
      around = ndimage.binary_dilation(region, iterations=6) & ~region
      ratios.append(_median_residual(image, inside) / max(_median_residual(image, around), 0.5))
    medians[balanced] = np.median(ratios)
  assert medians[False] < 0.45 and medians[True] > 0.6, medians


def test_unwarped_regions_are_moved_by_whole_pixels_without_resampling():
  """transform=False moves a region by whole pixels: its pixels are the source's, unresampled."""
  rng = np.random.default_rng(3)
  photo = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  region = np.zeros((64, 64), bool)
  region[10:30, 12:28] = True
  for seed in range(10):
    content, alpha = synthetic_forgery._warp(
      photo, region, np.random.default_rng(seed), transform=False
    )
    moved = alpha > 0.5
    assert moved.sum() == region.sum()
    ys, xs = np.nonzero(moved)
    dy, dx = ys.min() - 10, xs.min() - 12
    assert (dy, dx) != (0, 0)
    np.testing.assert_array_equal(content[moved], photo[np.roll(moved, (-dy, -dx), (0, 1))])


def test_unwarped_fraction_leaves_other_configs_unchanged_and_moves_about_that_share(
  monkeypatch,
):
  photos = [synthetic_forgery.load_image(p) for p in synthetic_forgery.source_photo_paths()]

  def config(**kwargs):
    return synthetic_forgery.SyntheticForgeryConfig(
      name="t", image_size=64, authentic_fraction=0.0, **kwargs
    )

  # Unset, nothing extra is drawn: builds of the existing configs stay as they were.
  for i in range(3):
    a = synthetic_forgery.make_example(photos, "train", i, config())
    b = synthetic_forgery.make_example(photos, "train", i, config(unwarped_fraction=0.0))
    np.testing.assert_array_equal(a[0], b[0])
  transforms = []
  warp = synthetic_forgery._warp

  def recording_warp(*args):
    transforms.append(args[-1])
    return warp(*args)

  monkeypatch.setattr(synthetic_forgery, "_warp", recording_warp)
  half = config(manipulations=("splice", "copymove"), unwarped_fraction=0.5)
  for i in range(80):
    synthetic_forgery.make_example(photos, "train", i, half)
  assert len(transforms) == 80 and 0.35 < 1 - np.mean(transforms) < 0.65
  built = synthetic_forgery.SyntheticForgery.builder_configs["mixed_large_unwarped"]
  assert built.unwarped_fraction == 0.5 and built.num_train == 16000


def test_photos_large_unwarped_is_the_packaged_data_recipe_on_manual_dir_photos():
  configs = synthetic_forgery.SyntheticForgery.builder_configs
  bundled, manual = configs["mixed_large_unwarped"], configs["photos_large_unwarped"]
  differing = {
    f.name
    for f in dataclasses.fields(synthetic_forgery.SyntheticForgeryConfig)
    if getattr(bundled, f.name) != getattr(manual, f.name)
  }
  # Whole photos go to one split there, so it holds out more validation and test images.
  assert differing == {
    "name",
    "description",
    "photos_from_manual_dir",
    "num_validation",
    "num_test",
  }
  assert manual.photos_from_manual_dir and manual.num_train == 16000


def test_noise_level_and_defocus_decoy():
  rng = np.random.default_rng(0)
  region = np.pad(np.ones((20, 20), bool), 22)
  for std in (2.0, 4.0, 8.0):
    noisy = np.clip(128 + rng.normal(0, std, (64, 64, 3)), 0, 255).astype(np.uint8)
    assert synthetic_forgery._noise_level(noisy, region) == pytest.approx(std, rel=0.1)
  photo = np.clip(128 + rng.normal(0, 6, (64, 64, 3)), 0, 255).astype(np.uint8)
  decoy = synthetic_forgery._defocus_decoy(photo, np.random.default_rng(1))
  blurred = np.any(decoy != photo, axis=-1)
  # A blob is blurred (smoother inside), the rest of the photo is untouched.
  assert 0.01 < blurred.mean() < 0.5
  inside = ndimage.binary_erosion(blurred, iterations=2)
  assert _median_residual(decoy, inside) < 0.6 * _median_residual(photo, inside)
