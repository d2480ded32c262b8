"""Evaluation sources without a build step: tfds names, ``.lst`` files, IMDL-BenCo JSON, ``Tp/``+``Gt/`` folders.

Every source yields ``{"image": uint8 [H, W, 3], "mask": uint8 [H, W] in {0, 1},
"tampered": bool, "name": str}`` and records unreadable items in ``.skipped``
as ``(path, reason)`` instead of dropping them silently.

Formats:
- ``.lst`` — the SDPAL release's lists: ``image_path,mask_path`` per line, the
  literal ``None`` for an authentic image; relative paths are resolved against
  the list's folder.
- ``.json`` — IMDL-BenCo's ``ManiDataset`` JSON list: ``[[image, mask], ...]``
  with the string ``"Negative"`` for an authentic image.
- a folder with ``Tp/`` (tampered photos) and ``Gt/`` (masks matched by file
  stem, optionally with a ``_gt``/``_mask`` suffix), and optionally ``Au/``
  (authentic photos) — IMDL-BenCo's ``ManiDataset`` folder layout.
- anything else is taken as a registered tfds dataset ``name[/config][:split]``
  (default split ``test``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np

from sdpal_jax.errors import ImageReadError, SdpalError
from sdpal_jax.image_io import IMAGE_EXTENSIONS, load_image, load_mask

_MASK_SUFFIXES = ("", "_gt", "_mask", "-mask", "_forged")


def _resolve(path: str, base: str) -> str:
  return path if os.path.isabs(path) else os.path.join(base, path)


def parse_forgery_list(path: str) -> list[tuple[str, str | None]]:
  """Pairs from a release-style ``.lst`` file; SdpalError names a malformed line."""
  base = os.path.dirname(os.path.abspath(path))
  pairs = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      parts = line.rsplit(",", 1)
      if len(parts) != 2 or not parts[0]:
        raise SdpalError(f"{path}:{number}: expected 'image_path,mask_path|None', got {line!r}.")
      image, mask = (p.strip() for p in parts)
      pairs.append((_resolve(image, base), None if mask == "None" else _resolve(mask, base)))
  return pairs


def parse_imdl_json(path: str) -> list[tuple[str, str | None]]:
  """Pairs from an IMDL-BenCo JSON list (``"Negative"`` = authentic)."""
  base = os.path.dirname(os.path.abspath(path))
  try:
    with open(path) as f:
      entries = json.load(f)
  except json.JSONDecodeError as e:
    raise SdpalError(f"{path}: not valid JSON ({e}).") from e
  pairs = []
  for number, entry in enumerate(entries):
    if not (isinstance(entry, list | tuple) and len(entry) == 2):
      raise SdpalError(
        f"{path}: entry {number} must be [image, mask or 'Negative'], got {entry!r}."
      )
    image, mask = entry
    pairs.append((_resolve(image, base), None if mask == "Negative" else _resolve(mask, base)))
  return pairs


def parse_forgery_folder(path: str) -> list[tuple[str, str | None]]:
  """Pairs from a ``Tp/`` + ``Gt/`` (+ ``Au/``) folder; a tampered photo without mask pairs with ''."""
  tp, gt, au = (os.path.join(path, d) for d in ("Tp", "Gt", "Au"))
  if not os.path.isdir(tp):
    raise SdpalError(f"{path}: expected a folder with Tp/ and Gt/ subfolders.")
  masks = {}
  if os.path.isdir(gt):
    for name in os.listdir(gt):
      masks[os.path.splitext(name)[0]] = os.path.join(gt, name)

  def images(folder):
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))

  pairs: list[tuple[str, str | None]] = []
  for name in images(tp):
    stem = os.path.splitext(name)[0]
    mask = next((masks[stem + s] for s in _MASK_SUFFIXES if stem + s in masks), "")
    pairs.append((os.path.join(tp, name), mask))
  if os.path.isdir(au):
    pairs += [(os.path.join(au, n), None) for n in images(au)]
  if not pairs:
    raise SdpalError(f"{path}: no images found under Tp/ (or Au/).")
  return pairs


class PairSource:
  """Examples from (image, mask or None) file pairs; unreadable pairs go to ``skipped``."""

  def __init__(self, name: str, pairs: list[tuple[str, str | None]]):
    if not pairs:
      raise SdpalError(f"{name}: the source lists no images.")
    self.name = name
    self.pairs = pairs
    self.skipped: list[tuple[str, str]] = []

  def __len__(self) -> int:
    return len(self.pairs)

  def __iter__(self) -> Iterator[dict]:
    self.skipped = []
    for image_path, mask_path in self.pairs:
      try:
        image = load_image(image_path)
        if mask_path is None:
          mask = np.zeros(image.shape[:2], np.uint8)
        elif not mask_path or not os.path.exists(mask_path):
          raise ImageReadError(image_path, f"its mask {mask_path or '(none found)'} is missing")
        else:
          mask = load_mask(mask_path, image_size=image.shape[:2])
      except ImageReadError as e:
        self.skipped.append((e.path, e.reason))
        continue
      yield {
        "image": image,
        "mask": mask,
        "tampered": mask_path is not None,
        "name": os.path.basename(image_path),
      }


class TfdsSource:
  """Examples of a registered tfds dataset split (prepared on first use when it needs no download)."""

  def __init__(self, spec: str, *, data_dir: str | None = None):
    import tensorflow_datasets as tfds  # noqa: PLC0415

    import sdpal_jax.datasets  # noqa: F401, PLC0415 (registers our builders)

    name, _, split = spec.partition(":")
    self.name = spec
    self.split = split or "test"
    try:
      self.builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # tfds raises DatasetNotFoundError and friends
      raise SdpalError(
        f"{spec!r} is not a file, a folder or a registered tfds dataset ({type(e).__name__}: {e})."
      ) from e
    if name.startswith("synthetic_forgery"):
      self.builder.download_and_prepare()
    self.skipped: list[tuple[str, str]] = []
    if self.split not in self.builder.info.splits:
      raise SdpalError(
        f"{spec}: no split {self.split!r}; it has {sorted(self.builder.info.splits)}."
      )

  def __len__(self) -> int:
    return self.builder.info.splits[self.split].num_examples

  def __iter__(self) -> Iterator[dict]:
    import tensorflow_datasets as tfds  # noqa: PLC0415

    for example in tfds.as_numpy(self.builder.as_dataset(split=self.split, shuffle_files=False)):
      yield {
        "image": example["image"],
        "mask": example["mask"][..., 0],
        "tampered": bool(example["tampered"]),
        "name": example["file_name"].decode() if "file_name" in example else "",
      }


def open_source(spec: str, *, data_dir: str | None = None):
  """A SPEC (see the module doc) -> an iterable source with ``.name`` and ``.skipped``."""
  if spec.endswith(".lst") or spec.endswith(".json"):
    if not os.path.isfile(spec):
      raise SdpalError(f"{spec}: no such list file.")
    pairs = parse_forgery_list(spec) if spec.endswith(".lst") else parse_imdl_json(spec)
    return PairSource(spec, pairs)
  if os.path.isdir(spec):
    return PairSource(spec, parse_forgery_folder(spec))
  return TfdsSource(spec, data_dir=data_dir)
