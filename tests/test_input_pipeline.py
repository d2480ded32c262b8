"""The training/evaluation pipeline: determinism, process shares, padding, augmentations."""

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import ndimage

from sdpal_jax import augment, data_config, input_pipeline, preprocessing
from sdpal_jax.errors import ConfigError


def _examples(n=10, size=16):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
  masks = np.zeros((n, size, size), np.uint8)
  for i in range(n):
    images[i, 0, 0] = i  # a tag to identify the example
    masks[i, : i + 1, :4] = 1
  return images, masks


def _data_config(**augment_fields):
  c = data_config.default_data_config()
  c.augment.hflip = False
  for k, v in augment_fields.items():
    c.augment[k] = v
  return c


def _batches(images, masks, config, *, start_step=0, steps=3, **kw):
  kw.setdefault("global_batch_size", 4)
  ds = input_pipeline.memory_train_dataset(
    images, masks, config, image_size=images.shape[1:3], seed=7, start_step=start_step, **kw
  )
  return [b for _, b in zip(range(steps), ds.as_numpy_iterator(), strict=False)]


def test_memory_pipeline_resumed_at_step_k_yields_the_same_batches():
  images, masks = _examples()
  config = _data_config(hflip=True, noise_std=3.0, jpeg_prob=0.5, blur_prob=0.5)
  full = _batches(images, masks, config, steps=5)
  resumed = _batches(images, masks, config, start_step=3, steps=2)
  for a, b in zip(full[3:], resumed, strict=True):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["mask"], b["mask"])


def test_memory_pipeline_visits_every_example_once_per_epoch():
  images, masks = _examples(n=8)
  batches = _batches(images, masks, _data_config(), steps=4)  # 16 examples = 2 epochs
  tags = np.concatenate([b["image"][:, 0, 0, 0] for b in batches])
  assert sorted(tags[:8]) == list(range(8))
  assert sorted(tags[8:]) == list(range(8))
  assert list(tags[:8]) != list(tags[8:])  # reshuffled each epoch


def test_process_shares_concatenate_to_the_single_process_batch():
  images, masks = _examples()
  config = _data_config(hflip=True)
  whole = _batches(images, masks, config, process_index=0, process_count=1)
  shares = [_batches(images, masks, config, process_index=p, process_count=2) for p in range(2)]
  for step, batch in enumerate(whole):
    joined = np.concatenate([shares[0][step]["image"], shares[1][step]["image"]])
    np.testing.assert_array_equal(joined, batch["image"])


def test_batch_not_divisible_by_processes_is_a_config_error():
  images, masks = _examples()
  with pytest.raises(ConfigError, match="global_batch_size=5"):
    _batches(images, masks, _data_config(), global_batch_size=5, process_index=0, process_count=2)


def test_hflip_moves_image_and_mask_together():
  images, masks = _examples()
  flipped_count = kept_count = 0
  for batch in _batches(images, masks, _data_config(hflip=True), steps=4):
    for image, mask in zip(batch["image"], batch["mask"], strict=True):
      kept = [k for k in range(10) if np.array_equal(image, images[k])]
      flipped = [k for k in range(10) if np.array_equal(image, images[k][:, ::-1])]
      assert len(kept) + len(flipped) == 1
      if kept:
        np.testing.assert_array_equal(mask, masks[kept[0]])
        kept_count += 1
      else:
        np.testing.assert_array_equal(mask, masks[flipped[0]][:, ::-1])
        flipped_count += 1
  assert flipped_count and kept_count


def test_random_resized_crop_keeps_the_mask_binary_and_aligned():
  image = np.zeros((40, 60, 3), np.uint8)
  mask = np.zeros((40, 60), np.uint8)
  image[10:30, 20:40] = 255
  mask[10:30, 20:40] = 1
  interior = 0
  for s in range(10):
    out_image, out_mask = augment.random_resized_crop(
      tf.constant(image), tf.constant(mask), tf.constant([s, 1]), (16, 16), (0.3, 1.0)
    )
    out_image, out_mask = out_image.numpy(), out_mask.numpy()
    assert out_image.shape == (16, 16, 3) and out_mask.shape == (16, 16)
    assert set(np.unique(out_mask)) <= {0, 1}
    # The white square and the mask agree away from the square's resampled border: inside
    # the mask (eroded by a pixel) the photo is white, outside it (dilated) black.
    inside = ndimage.binary_erosion(out_mask == 1)
    outside = ~ndimage.binary_dilation(out_mask == 1)
    assert np.all(out_image[inside][:, 0] > 200) and np.all(out_image[outside][:, 0] < 55), s
    interior += int(inside.sum())
  assert interior > 50  # the check above saw enough of the square


def test_jpeg_recompression_matches_pil_at_the_same_quality_roughly():
  rng = np.random.default_rng(1)
  image = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
  ours = augment.jpeg_recompress(tf.constant(image), tf.constant([0, 0]), (50, 50)).numpy()
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=50)
  pil = np.asarray(Image.open(buffer))
  assert np.abs(ours.astype(int) - image).mean() > 5  # it really re-compressed
  assert np.abs(ours.astype(int) - pil).mean() < 3


def test_gaussian_blur_preserves_constant_images_and_smooths_noise():
  flat = np.full((20, 20, 3), 77, np.uint8)
  np.testing.assert_array_equal(augment.gaussian_blur(tf.constant(flat), 1.0).numpy(), flat)
  noise = (np.random.default_rng(2).random((20, 20, 3)) * 255).astype(np.uint8)
  blurred = augment.gaussian_blur(tf.constant(noise), 1.5).numpy()
  assert blurred.std() < 0.5 * noise.std()


def test_invalid_augmentation_values_are_named():
  c = _data_config(jpeg_prob=1.5)
  with pytest.raises(ConfigError, match="data.augment.jpeg_prob"):
    input_pipeline.validate_data_config(c)
  c = _data_config(crop_scale=(0.0, 1.0))
  with pytest.raises(ConfigError, match="crop_scale"):
    input_pipeline.validate_data_config(c)
  c = data_config.default_data_config()
  c.pipeline = "disk"
  with pytest.raises(ConfigError, match="data.pipeline='disk'"):
    input_pipeline.validate_data_config(c)


def test_stream_pipeline_reads_files_skips_broken_ones_and_crops_at_native_size(tmp_path):
  """resize_policy=random_crop: each crop is a window of a photo at its own size (never of the
  broken file) with the same window of its mask."""
  sources = _write_derivable_folder(tmp_path)
  c = data_config.default_data_config()
  c.dataset = str(tmp_path)
  c.pipeline = "stream"
  c.resize_policy = "random_crop"
  c.shuffle_buffer = 8
  c.augment.hflip = False
  batches = input_pipeline.train_batches(
    c, image_size=(16, 16), global_batch_size=4, seed=0, normalization="raw"
  )
  places = set()
  for _, batch in zip(range(3), batches, strict=False):
    assert batch["image"].shape == (4, 16, 16, 3)
    assert batch["mask"].shape == (4, 16, 16)
    for image, mask in zip(batch["image"].astype(np.uint8), batch["mask"], strict=True):
      where = _find_window(image, sources)
      assert where is not None, "the crop is not a window of a photo at its native size"
      np.testing.assert_array_equal(mask, image[..., 0] > 128)  # the same window of its mask
      places.add(where)
  assert len(places) > 4


@pytest.mark.slow
def test_memory_batches_shard_over_eight_devices_by_process_local_rows():
  script = textwrap.dedent(
    """
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from sdpal_jax import data_config, input_pipeline
    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    masks = (rng.random((20, 8, 8)) > 0.5).astype(np.uint8)
    c = data_config.default_data_config()
    batch = next(input_pipeline.train_batches(
      c, image_size=(8, 8), global_batch_size=16, seed=0, normalization="raw",
      examples=(images, masks)))
    sharding = NamedSharding(Mesh(np.asarray(jax.devices()), ("data",)), PartitionSpec("data"))
    sharded = input_pipeline.shard_batch(batch, sharding)
    shards = sharded["image"].addressable_shards
    assert len(shards) == 8 and all(s.data.shape == (2, 8, 8, 3) for s in shards)
    for s in shards:
      np.testing.assert_array_equal(np.asarray(s.data), batch["image"][s.index])
    print("OK")
    """
  )
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  result = subprocess.run(
    [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "OK" in result.stdout


def _write_derivable_folder(root, n=4, size=(40, 48)):
  """Tp/Gt pairs whose mask is the image's red channel > 128, plus one unreadable photo."""
  os.makedirs(root / "Tp")
  os.makedirs(root / "Gt")
  rng = np.random.default_rng(11)
  sources = {}
  for i in range(n):
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    image[0, 0] = (i, 0, 0)  # no two files share a pixel pattern
    Image.fromarray(image).save(root / "Tp" / f"im{i}.png")
    Image.fromarray(((image[..., 0] > 128) * 255).astype(np.uint8)).save(root / "Gt" / f"im{i}.png")
    sources[f"im{i}"] = image
  (root / "Tp" / "broken.png").write_bytes(b"not a png")
  Image.fromarray(np.zeros(size, np.uint8)).save(root / "Gt" / "broken.png")
  return sources


def _find_window(crop, images):
  """(name, top, left) of the only place ``crop`` occurs in ``images``, or None."""
  found = []
  for name, image in images.items():
    windows = np.lib.stride_tricks.sliding_window_view(image, crop.shape)[..., 0, :, :, :]
    hits = np.argwhere(np.all(windows == crop, axis=(-3, -2, -1)))
    found += [(name, int(top), int(left)) for top, left in hits]
  return found[0] if len(found) == 1 else None


def _stream_examples(root, *, image_size, crop_size, seed, steps=4, resize_policy="resize"):
  c = data_config.default_data_config()
  c.dataset = str(root)
  c.pipeline = "stream"
  c.resize_policy = resize_policy
  c.crop_size = crop_size
  c.shuffle_buffer = 8
  c.augment.hflip = False
  batches = input_pipeline.train_batches(
    c, image_size=image_size, global_batch_size=4, seed=seed, normalization="raw"
  )
  examples = []
  for _, batch in zip(range(steps), batches, strict=False):
    examples += list(zip(batch["image"].astype(np.uint8), batch["mask"], strict=True))
  return examples


@pytest.mark.parametrize("image_size", [(40, 48), (32, 36)])
def test_stream_pipeline_resizes_to_the_image_size_then_random_crops(tmp_path, image_size, caplog):
  """With a crop size the stream pipeline resizes to preprocess.image_size (as load_split does)
  and then takes a random crop: each crop is a window of the resized photo, its mask the same
  window of the resized mask, and the window moves between steps and seeds."""
  sources = _write_derivable_folder(tmp_path)
  resized = {k: preprocessing.resize_image(v, image_size) for k, v in sources.items()}
  masks = {
    k: preprocessing.resize_mask((v[..., 0] > 128).astype(np.uint8), image_size)
    for k, v in sources.items()
  }
  caplog.set_level("WARNING")
  windows = []
  for seed in (0, 1):
    for image, mask in _stream_examples(
      tmp_path, image_size=image_size, crop_size=(16, 16), seed=seed
    ):
      assert image.shape == (16, 16, 3) and mask.shape == (16, 16)
      where = _find_window(image, resized)
      assert where is not None, "the crop is not a window of the photo at preprocess.image_size"
      name, top, left = where
      np.testing.assert_array_equal(mask, masks[name][top : top + 16, left : left + 16])
      if tuple(image_size) == sources[name].shape[:2]:  # no resampling: mask = red > 128
        np.testing.assert_array_equal(mask, image[..., 0] > 128)
      windows.append((seed, name, top, left))
  assert len({(top, left) for _, _, top, left in windows}) > 4  # the crop moves
  per_seed = [[w[1:] for w in windows if w[0] == s] for s in (0, 1)]
  assert per_seed[0] != per_seed[1]
  assert "broken" not in {w[1] for w in windows}
  assert any("broken.png" in r.getMessage() for r in caplog.records), "the broken file is not named"
