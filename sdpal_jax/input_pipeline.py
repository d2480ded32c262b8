"""Batches for training and evaluation, from a tfds builder or any evaluation source.

This first pipeline holds a split in host memory at the training size (the
synthetic sets and the paper's datasets at 256x256 are 0.1-2 GB), which makes
the order of training examples a pure function of ``(seed, step)``: a run
resumed at step k sees exactly the batches an uninterrupted run sees, and each
of P processes takes its own 1/P slice of every global batch. Streaming
decoders for splits that do not fit in memory are future work (see the data
issue).
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import ml_collections
import numpy as np

from sdpal_jax import preprocessing
from sdpal_jax.datasets.sources import open_source
from sdpal_jax.errors import ConfigError, SdpalError

RESIZE_POLICIES = ("resize", "random_crop")


def default_data_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.dataset = "synthetic_forgery/mixed"  # tfds name, .lst, .json or Tp/Gt folder
  c.train_split = "train"
  c.eval_split = "validation"
  c.data_dir = None  # tfds data dir (None: tfds default)
  c.resize_policy = "resize"  # "resize" (the release) or "random_crop" at native resolution
  c.hflip = True
  c.noise_std = 0.0  # Gaussian noise (0..255 units) added to training images
  c.max_examples = None  # cap per split (quick experiments)
  return c


def _spec(data_config, split: str) -> str:
  dataset = data_config.dataset
  if dataset.endswith((".lst", ".json")) or ":" in dataset:
    return dataset
  import os  # noqa: PLC0415

  return dataset if os.path.isdir(dataset) else f"{dataset}:{split}"


def _fit(image, mask, size, policy, rng):
  """Resizes (or crops at native resolution) one example to ``size``."""
  if policy == "resize" or rng is None:
    return preprocessing.resize_image(image, size), preprocessing.resize_mask(mask, size)
  h, w = image.shape[:2]
  ph, pw = max(0, size[0] - h), max(0, size[1] - w)
  if ph or pw:
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
    mask = np.pad(mask, ((0, ph), (0, pw)))
  y = int(rng.integers(0, image.shape[0] - size[0] + 1))
  x = int(rng.integers(0, image.shape[1] - size[1] + 1))
  return image[y : y + size[0], x : x + size[1]], mask[y : y + size[0], x : x + size[1]]


def load_split(data_config, split: str, image_size, *, seed: int = 0, train: bool = False):
  """A whole split as ``(images uint8 [N,H,W,3], masks uint8 [N,H,W], skipped)``."""
  if data_config.resize_policy not in RESIZE_POLICIES:
    raise ConfigError(
      f"data.resize_policy={data_config.resize_policy!r}; expected one of {RESIZE_POLICIES}."
    )
  source = open_source(_spec(data_config, split), data_dir=data_config.data_dir)
  rng = (
    np.random.default_rng(seed) if train and data_config.resize_policy == "random_crop" else None
  )
  images, masks = [], []
  for example in source:
    image, mask = _fit(
      example["image"], example["mask"], image_size, data_config.resize_policy, rng
    )
    images.append(image)
    masks.append(mask)
    if data_config.max_examples and len(images) >= data_config.max_examples:
      break
  if not images:
    raise SdpalError(f"{source.name}: no readable examples (skipped: {source.skipped[:5]}).")
  return np.stack(images), np.stack(masks), list(source.skipped)


def train_batches(
  images: np.ndarray,
  masks: np.ndarray,
  *,
  global_batch_size: int,
  seed: int,
  start_step: int = 0,
  normalization: str = "raw",
  hflip: bool = False,
  noise_std: float = 0.0,
  process_index: int | None = None,
  process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless per-process training batches; batch ``k`` depends only on ``(seed, k)``.

  Yields ``{"image": float32 [b, H, W, 3] normalised, "mask": float32 [b, H, W]}``
  with ``b = global_batch_size / process_count``.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ConfigError(
      f"global_batch_size={global_batch_size} is not divisible by the {process_count} processes."
    )
  n = len(images)
  local = global_batch_size // process_count
  step = start_step
  while True:
    order_rng = np.random.default_rng([seed, step])
    # Epoch-free sampling without replacement inside a batch; every step is independent.
    index = order_rng.choice(n, size=global_batch_size, replace=n < global_batch_size)
    mine = index[process_index * local : (process_index + 1) * local]
    image = images[mine].astype(np.float32)
    mask = masks[mine].astype(np.float32)
    aug_rng = np.random.default_rng([seed, step, 1, process_index])
    if hflip:
      flip = aug_rng.random(local) < 0.5
      image[flip] = image[flip, :, ::-1]
      mask[flip] = mask[flip, :, ::-1]
    if noise_std:
      image = np.clip(image + aug_rng.normal(0, noise_std, image.shape), 0, 255)
    yield {"image": preprocessing.normalize_images(image, normalization), "mask": mask}
    step += 1


def eval_batches(images, masks, *, batch_size: int, normalization: str = "raw"):
  """Every example once; the last batch is padded and flagged by ``valid`` [b] (bool)."""
  n = len(images)
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    pad = batch_size - (stop - start)
    image = np.concatenate([images[start:stop], np.zeros((pad, *images.shape[1:]), images.dtype)])
    mask = np.concatenate([masks[start:stop], np.zeros((pad, *masks.shape[1:]), masks.dtype)])
    valid = np.arange(batch_size) < stop - start
    yield {
      "image": preprocessing.normalize_images(image, normalization),
      "mask": mask.astype(np.float32),
      "valid": valid,
    }


def shard_batch(batch: dict[str, np.ndarray], sharding: jax.sharding.NamedSharding) -> dict:
  """Per-process numpy batch -> global ``jax.Array``s sharded on the batch axis."""
  return {
    k: jax.make_array_from_process_local_data(sharding, np.ascontiguousarray(v))
    for k, v in batch.items()
  }
