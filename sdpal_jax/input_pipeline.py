"""Batches for training and evaluation, from a tfds builder or any evaluation source.

Two training pipelines, both ``tf.data`` with the augmentations of
:mod:`sdpal_jax.augment` and both yielding each process its own share of every
global batch:

- ``pipeline="memory"`` (default) holds the split in host memory (resized to
  ``preprocess.image_size``, or at native size for the ``random_crop`` policy). The
  examples of step ``k`` and their augmentations are a pure function of
  ``(seed, k)`` (a stateless permutation per epoch), so a run resumed at step
  ``k`` sees exactly the batches an uninterrupted run sees.
- ``pipeline="stream"`` reads and decodes as it goes (for splits that do not
  fit in memory): each process reads its own part of the files
  (``tfds.even_splits``), shuffles with a buffer and repeats. A resumed run
  re-seeds the shuffle with the start step: statistically equivalent to, not
  bit-identical with, an uninterrupted run.

Both bring examples to the training size the same way: the ``resize`` policy
resizes photo and mask to ``preprocess.image_size`` (:func:`resize_example`),
then, with ``data.crop_size``, a random crop of that size is taken
(``random_crop`` policy: from the photo at its own size).

Validation and evaluation do not batch here: ``sdpal_jax.evaluator`` scores
every example of a split at the resolution it is asked for.
"""

from __future__ import annotations

import atexit
import functools
import os
import weakref
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from sdpal_jax import augment, preprocessing
from sdpal_jax.data_config import PIPELINES, RESIZE_POLICIES
from sdpal_jax.datasets.sources import PairSource, TfdsSource, dataset_spec, open_source
from sdpal_jax.errors import ConfigError, ImageReadError, SdpalError
from sdpal_jax.image_io import load_image, load_mask


def validate_data_config(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first invalid ``config.data`` field."""
  if c.resize_policy not in RESIZE_POLICIES:
    raise ConfigError(f"data.resize_policy={c.resize_policy!r}; expected one of {RESIZE_POLICIES}.")
  if c.pipeline not in PIPELINES:
    raise ConfigError(f"data.pipeline={c.pipeline!r}; expected one of {PIPELINES}.")
  a = c.augment
  for name in ("jpeg_prob", "blur_prob"):
    if not 0 <= a[name] <= 1:
      raise ConfigError(f"data.augment.{name}={a[name]!r}; expected a probability in [0, 1].")
  lo, hi = a.crop_scale
  if not 0 < lo <= hi <= 1:
    raise ConfigError(f"data.augment.crop_scale={tuple(a.crop_scale)}; expected 0 < lo <= hi <= 1.")
  lo, hi = a.jpeg_quality
  if not 1 <= lo <= hi <= 100:
    raise ConfigError(
      f"data.augment.jpeg_quality={tuple(a.jpeg_quality)}; expected 1 <= lo <= hi <= 100."
    )
  if c.crop_size is not None and (len(c.crop_size) != 2 or min(c.crop_size) <= 0):
    raise ConfigError(f"data.crop_size={c.crop_size!r}; expected None or (H, W) > 0.")
  if a.noise_std < 0 or min(a.blur_sigma) <= 0:
    raise ConfigError("data.augment.noise_std must be >= 0 and blur_sigma > 0.")


def resize_example(
  image: np.ndarray, mask: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
  """The ``resize`` policy for both pipelines: photo and mask to ``size`` (H, W) as the release.

  PIL bilinear for the photo, bilinear then ``> 128`` for the mask
  (``sdpal_jax.preprocessing``); a crop to ``data.crop_size`` comes after.
  """
  return preprocessing.resize_image(image, size), preprocessing.resize_mask(mask, size)


def load_split(
  data_config, split: str, image_size, *, native: bool = False
) -> tuple[np.ndarray | list[np.ndarray], np.ndarray | list[np.ndarray], list[tuple[str, str]]]:
  """A whole split in memory as ``(images, masks, skipped)``.

  Images uint8 ``[N, H, W, 3]`` and masks uint8 ``[N, H, W]`` resized to
  ``image_size`` (PIL bilinear as the release; masks bilinear then > 128), or,
  with ``native=True``, lists of arrays at each file's own size. ``skipped``
  lists ``(path, reason)`` for unreadable items.
  """
  source = open_source(dataset_spec(data_config.dataset, split), data_dir=data_config.data_dir)
  images, masks = [], []
  for example in source:
    image, mask = example["image"], example["mask"]
    if not native:
      image, mask = resize_example(image, mask, image_size)
    images.append(image)
    masks.append(mask)
    if data_config.max_examples and len(images) >= data_config.max_examples:
      break
  if not images:
    raise SdpalError(f"{source.name}: no readable examples (skipped: {source.skipped[:5]}).")
  if native:
    return images, masks, list(source.skipped)
  return np.stack(images), np.stack(masks), list(source.skipped)


def _process_share(global_batch_size: int, process_index, process_count) -> tuple[int, int, int]:
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ConfigError(
      f"global_batch_size={global_batch_size} is not divisible by the {process_count} processes."
    )
  return process_index, process_count, global_batch_size // process_count


def _fit_to_size(image, mask, seed, size, data_config):
  """Brings one example to ``size``: random resized crop, random crop or as is."""
  if tuple(data_config.augment.crop_scale) != (1.0, 1.0):
    return image, mask  # augment_example's random resized crop produces ``size``
  if data_config.resize_policy == "random_crop" or data_config.crop_size is not None:
    shape = tf.shape(image)
    pad_h, pad_w = tf.maximum(0, size[0] - shape[0]), tf.maximum(0, size[1] - shape[1])
    stacked = tf.concat([image, mask[..., None]], axis=-1)
    stacked = tf.pad(stacked, [[0, pad_h], [0, pad_w], [0, 0]])
    stacked = tf.image.stateless_random_crop(stacked, [*size, 4], seed)
    return stacked[..., :3], stacked[..., 3]
  return image, mask


def _example_seed(seed: int, global_index) -> tf.Tensor:
  return tf.stack([tf.constant(seed, tf.int64), tf.cast(global_index, tf.int64)])


def _batched(ds: tf.data.Dataset, local_batch: int) -> tf.data.Dataset:
  ds = ds.batch(local_batch, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = max(1, os.cpu_count() or 1)
  return ds.with_options(options).prefetch(2)


def memory_train_dataset(
  images,
  masks,
  data_config: ml_collections.ConfigDict,
  *,
  image_size: tuple[int, int],
  global_batch_size: int,
  seed: int,
  start_step: int = 0,
  process_index: int | None = None,
  process_count: int | None = None,
) -> tf.data.Dataset:
  """Endless per-process uint8 batches from in-memory examples; step ``k`` = f(seed, k).

  Global example ``g = k * global_batch_size + j`` is item ``perm_e(g mod N)``
  of epoch ``e = g // N`` (``tf.random.experimental.index_shuffle``), so every
  epoch visits each example once; process ``p`` takes ``j`` in its slice.

  Yields ``{"image": uint8 [b, H, W, 3], "mask": uint8 [b, H, W]}``.
  """
  process_index, _, local = _process_share(global_batch_size, process_index, process_count)
  n = len(images)

  def fetch(index):
    return images[int(index)], masks[int(index)]

  def example(global_index):
    epoch = global_index // n
    item = tf.random.experimental.index_shuffle(
      global_index % n, tf.stack([tf.constant(seed, tf.int64), epoch]), n - 1
    )
    image, mask = tf.numpy_function(fetch, [item], (tf.uint8, tf.uint8), stateful=False)
    image = tf.ensure_shape(image, [None, None, 3])
    mask = tf.ensure_shape(mask, [None, None])
    example_seed = _example_seed(seed, global_index)
    fit_seed, aug_seed = tf.unstack(tf.random.experimental.stateless_split(example_seed, 2))
    image, mask = _fit_to_size(image, mask, fit_seed, image_size, data_config)
    image, mask = augment.augment_example(image, mask, aug_seed, data_config.augment, image_size)
    return {"image": image, "mask": mask}

  indices = tf.data.Dataset.range(start_step, 2**62).flat_map(
    lambda step: tf.data.Dataset.range(
      step * global_batch_size + process_index * local,
      step * global_batch_size + (process_index + 1) * local,
    )
  )
  return _batched(indices.map(example, num_parallel_calls=tf.data.AUTOTUNE), local)


def _read_pair(image_path: bytes, mask_path: bytes):
  """(image, mask, ok) for a file pair; unreadable pairs give ok=False and are logged."""
  image_path, mask_path = image_path.decode(), mask_path.decode()
  try:
    image = load_image(image_path)
    if not mask_path:
      mask = np.zeros(image.shape[:2], np.uint8)
    elif not os.path.exists(mask_path):
      raise ImageReadError(image_path, f"its mask {mask_path} is missing")
    else:
      mask = load_mask(mask_path, image_size=image.shape[:2])
  except ImageReadError as e:
    logging.warning("skipped %s: %s", e.path, e.reason)
    return np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.uint8), False
  return image, mask, True


def stream_train_dataset(
  data_config: ml_collections.ConfigDict,
  *,
  image_size: tuple[int, int],
  resize_to: tuple[int, int] | None = None,
  global_batch_size: int,
  seed: int,
  start_step: int = 0,
  process_index: int | None = None,
  process_count: int | None = None,
) -> tf.data.Dataset:
  """Endless per-process uint8 batches decoded on the fly (see the module doc).

  ``image_size``: the size of the yielded examples (``data.crop_size`` when
  set). ``resize_to``: the size the ``resize`` policy brings every photo and
  mask to before the random crop to ``image_size`` (default ``image_size``,
  i.e. no crop), as ``load_split`` does for the memory pipeline; both use
  :func:`resize_example`.
  """
  resize_to = tuple(int(s) for s in (resize_to or image_size))
  process_index, process_count, local = _process_share(
    global_batch_size, process_index, process_count
  )
  source = open_source(
    dataset_spec(data_config.dataset, data_config.train_split), data_dir=data_config.data_dir
  )
  shuffle_seed = seed * 1_000_003 + start_step
  if isinstance(source, TfdsSource):
    share = tfds.even_splits(source.split, n=process_count)[process_index]
    ds = source.builder.as_dataset(
      split=share,
      shuffle_files=True,
      read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed),
    )
    ds = ds.map(lambda e: {"image": e["image"], "mask": e["mask"][..., 0]})
  else:
    assert isinstance(source, PairSource)
    pairs = source.pairs[process_index::process_count]
    paths = tf.data.Dataset.from_tensor_slices(([p for p, _ in pairs], [m or "" for _, m in pairs]))

    def read(image_path, mask_path):
      image, mask, ok = tf.numpy_function(
        _read_pair, [image_path, mask_path], (tf.uint8, tf.uint8, tf.bool), stateful=False
      )
      return {
        "image": tf.ensure_shape(image, [None, None, 3]),
        "mask": tf.ensure_shape(mask, [None, None]),
        "ok": ok,
      }

    ds = paths.shuffle(len(pairs), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE).filter(lambda e: e["ok"])
    ds = ds.map(lambda e: {"image": e["image"], "mask": e["mask"]})
  if data_config.max_examples:
    ds = ds.take(int(data_config.max_examples))
  ds = ds.repeat().shuffle(int(data_config.shuffle_buffer), seed=shuffle_seed)
  needs_resize = data_config.resize_policy == "resize"

  def resize(image, mask):
    return resize_example(image, mask, resize_to)

  def example(index, e):
    image, mask = e["image"], e["mask"]
    if needs_resize:  # as load_split; the crop to ``image_size`` follows in _fit_to_size
      image, mask = tf.numpy_function(resize, [image, mask], (tf.uint8, tf.uint8), stateful=False)
      image = tf.ensure_shape(image, [*resize_to, 3])
      mask = tf.ensure_shape(mask, list(resize_to))
    example_seed = _example_seed(shuffle_seed, index * process_count + process_index)
    fit_seed, aug_seed = tf.unstack(tf.random.experimental.stateless_split(example_seed, 2))
    image, mask = _fit_to_size(image, mask, fit_seed, image_size, data_config)
    image, mask = augment.augment_example(image, mask, aug_seed, data_config.augment, image_size)
    return {"image": image, "mask": mask}

  ds = ds.enumerate().map(example, num_parallel_calls=tf.data.AUTOTUNE)
  return _batched(ds, local)


# Generators of ``train_batches`` that may still hold a tf.data iterator.
_OPEN_GENERATORS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_generators() -> None:
  """Releases the tf.data iterators of abandoned generators before the interpreter finalizes.

  Both pipelines call Python (``tf.numpy_function``: decoding, in-memory fetches) from
  tf.data's own threads, and destroying an iterator waits for the calls in flight. Left
  to the interpreter's final clean-up, that wait never ends: a thread that asks for the
  GIL once finalization has begun is stopped instead of served. Closed here, while those
  threads can still finish, a script that stops iterating exits normally.
  """
  for generator in list(_OPEN_GENERATORS):
    try:
      generator.close()
    except ValueError:  # being iterated by another thread at this moment
      pass


def _close_at_exit(generator_function):
  """Registers each generator ``generator_function`` returns with ``_close_open_generators``."""

  @functools.wraps(generator_function)
  def start(*args, **kwargs):
    generator = generator_function(*args, **kwargs)
    _OPEN_GENERATORS.add(generator)
    return generator

  return start


@_close_at_exit
def train_batches(
  data_config: ml_collections.ConfigDict,
  *,
  image_size: tuple[int, int],
  global_batch_size: int,
  seed: int,
  normalization: str,
  start_step: int = 0,
  examples: tuple | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless per-process training batches, normalised for the network.

  The iterator may be abandoned before its end: it is closed at exit at the latest
  (``_close_at_exit``).

  Args:
    examples: ``(images, masks)`` from :func:`load_split` for the memory
      pipeline (loaded here when None); ignored by the stream pipeline.

  Yields:
    ``{"image": float32 [b, H, W, 3] normalised, "mask": float32 [b, H, W]}``
    with ``b = global_batch_size / process_count``.
  """
  validate_data_config(data_config)
  image_size = tuple(int(s) for s in image_size)
  train_size = tuple(int(s) for s in data_config.crop_size or image_size)
  common = dict(
    image_size=train_size,
    global_batch_size=global_batch_size,
    seed=seed,
    start_step=start_step,
    process_index=process_index,
    process_count=process_count,
  )
  if data_config.pipeline == "stream":
    ds = stream_train_dataset(data_config, resize_to=image_size, **common)
  else:
    if examples is None:
      native = data_config.resize_policy == "random_crop"
      images, masks, _ = load_split(data_config, data_config.train_split, image_size, native=native)
    else:
      images, masks = examples
    ds = memory_train_dataset(images, masks, data_config, **common)
  for batch in ds.as_numpy_iterator():
    yield {
      "image": preprocessing.normalize_images(batch["image"].astype(np.float32), normalization),
      "mask": batch["mask"].astype(np.float32),
    }


def shard_batch(batch: dict[str, np.ndarray], sharding: jax.sharding.NamedSharding) -> dict:
  """Per-process numpy batch -> global ``jax.Array``s sharded on the batch axis."""
  return {
    k: jax.make_array_from_process_local_data(sharding, np.ascontiguousarray(v))
    for k, v in batch.items()
  }
