"""Building a registered tfds builder from a generated fixture tree, shared by dataset tests."""

from __future__ import annotations

import tensorflow_datasets as tfds

import sdpal_jax.datasets  # noqa: F401 (registers the builders)


def build_from_manual_dir(name: str, manual_dir, data_dir):
  """``(builder, {split: [numpy examples]})`` after preparing ``name`` from ``manual_dir``."""
  builder = tfds.builder(name, data_dir=str(data_dir))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  splits = {
    split: list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
    for split in builder.info.splits
  }
  return builder, splits
