"""Evaluation sources without a build step: tfds names, ``.lst`` files, IMDL-BenCo JSON, ``Tp/``+``Gt/`` folders.

Every source yields ``{"image": uint8 [H, W, 3], "mask": uint8 [H, W] in {0, 1},
"tampered": bool, "name": str}`` and records unreadable items in ``.skipped``
as ``(path, reason)`` instead of dropping them silently; ``.notes`` says which
path or pairing rule was applied (also logged, and kept in ``results.json``).

Formats (IMDL-BenCo: Ma et al., NeurIPS 2024 D&B, package ``imdlbenco``):
- ``.lst`` — the SDPAL release's lists: ``image_path,mask_path`` per line, the
  literal ``None`` for an authentic image; relative paths are resolved against
  the list's folder.
- ``.json`` list — IMDL-BenCo's ``JsonDataset``
  (``IMDLBenCo/datasets/iml_datasets.py``): ``[[image, mask], ...]`` with the
  string ``"Negative"`` for an authentic image. IMDL-BenCo opens relative paths
  from the working directory; so do we when that finds the files, else from
  the JSON's own folder (the rule that finds more of the listed photos wins,
  the working directory on a tie).
- ``.json`` object — IMDL-BenCo's ``test_datasets.json``
  (``IMDLBenCo/statics/dataset_json/test_datasets.json``, read by
  ``IMDLBenCo/training_scripts/test.py``): ``{name: path}``, each path a JSON
  list or a ``Tp/``+``Gt/`` folder. ``expand_spec`` turns it into one dataset
  per entry, named by its key (relative paths: working directory, then the
  JSON's folder, as for lists).
- a folder with ``Tp/`` (tampered photos) and ``Gt/`` (masks), and optionally
  ``Au/`` (authentic photos; our addition) — IMDL-BenCo's ``ManiDataset``
  layout. IMDL-BenCo pairs the i-th file of sorted ``Tp/`` with the i-th of
  sorted ``Gt/``; we pair by file name first (``pair_by_stem``: the real
  datasets' naming, e.g. CASIA ``X.jpg`` / ``X_gt.png``, COVERAGE ``1t.tif`` /
  ``1forged.tif``, IMD2020 ``X.jpg`` / ``X_mask.png``, Columbia
  ``X.tif`` / ``X_edgemask.jpg``) and fall back to sorted order when some
  photo has no mask by name but the counts match (e.g. NIST16's unrelated
  probe / mask names), as IMDL-BenCo does; with neither, an unpaired photo is
  skipped as "mask missing". Only image files count in ``Gt/``.
- anything else is taken as a registered tfds dataset ``name[/config][:split]``
  (default split ``test``); the split may be sliced or combined as tfds allows
  (``test[:50]``, ``test[:10%]``, ``test+validation``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

import sdpal_jax.datasets  # noqa: F401 (registers the builders TfdsSource opens)
from sdpal_jax.datasets import common
from sdpal_jax.errors import ImageReadError, SdpalError
from sdpal_jax.image_io import IMAGE_EXTENSIONS, load_image, load_mask

# Mask-name suffixes after a photo's stem, tried in this order (case-insensitive).
_MASK_SUFFIXES = ("", "_gt", "_mask", "-mask", "_gt_mask", "_forged", "forged", "_edgemask")
_COVERAGE_TAMPERED = re.compile(r"(\d+)t")  # COVERAGE: 1t.tif is the forgery of 1forged.tif

_log = logging.getLogger(__name__)


def _note(notes: list[str] | None, message: str, *, warn: bool = False) -> None:
  (_log.warning if warn else _log.info)("%s", message)
  if notes is not None:
    notes.append(message)


def _resolve(path: str, base: str) -> str:
  return path if os.path.isabs(path) else os.path.join(base, path)


def resolve_relative(
  paths: list[str], list_path: str, notes: list[str] | None = None
) -> tuple[str, str]:
  """(base folder, rule) for the relative ``paths`` of the JSON file ``list_path``.

  IMDL-BenCo's rule first: relative to the working directory. Our fallback:
  relative to the JSON's folder. The rule under which more of ``paths`` exist
  wins (the working directory on a tie); which one is logged and noted.
  """
  cwd = os.getcwd()
  folder = os.path.dirname(os.path.abspath(list_path))
  relative = [p for p in paths if not os.path.isabs(p)]
  if not relative:
    return folder, "absolute"
  if os.path.realpath(cwd) == os.path.realpath(folder):
    _note(notes, f"{list_path}: relative paths resolved from its folder (= the working directory).")
    return folder, "cwd"
  from_cwd = sum(os.path.exists(os.path.join(cwd, p)) for p in relative)
  from_folder = sum(os.path.exists(os.path.join(folder, p)) for p in relative)
  if from_cwd >= from_folder and from_cwd:
    _note(
      notes,
      f"{list_path}: relative paths resolved from the working directory {cwd} (IMDL-BenCo's "
      f"rule): {from_cwd} of {len(relative)} found.",
    )
    return cwd, "cwd"
  if from_folder:
    _note(
      notes,
      f"{list_path}: relative paths resolved from the JSON's folder {folder} (fallback: "
      f"{from_cwd} of {len(relative)} exist from the working directory {cwd}, "
      f"{from_folder} from the folder).",
      warn=True,
    )
    return folder, "folder"
  _note(
    notes,
    f"{list_path}: none of {len(relative)} relative paths exists from the working directory "
    f"{cwd} or from the JSON's folder {folder}; using the working directory (IMDL-BenCo's rule).",
    warn=True,
  )
  return cwd, "cwd"


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


def _load_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise SdpalError(f"{path}: not valid JSON ({e}).") from e


def parse_imdl_json(path: str, notes: list[str] | None = None) -> list[tuple[str, str | None]]:
  """Pairs from an IMDL-BenCo JSON list (``"Negative"`` = authentic); see ``resolve_relative``."""
  entries = _load_json(path)
  if isinstance(entries, dict):
    raise SdpalError(
      f"{path}: a dataset index ({{name: path}}, IMDL-BenCo's test_datasets.json) with "
      f"{len(entries)} entries ({', '.join(list(entries)[:5])}), not one dataset: pass it to "
      "sdpal-evaluate --datasets, which evaluates each entry, or pick one entry's path."
    )
  if not isinstance(entries, list):
    raise SdpalError(f"{path}: expected a JSON list [[image, mask or 'Negative'], ...].")
  for number, entry in enumerate(entries):
    if not (
      isinstance(entry, list | tuple) and len(entry) == 2 and all(isinstance(e, str) for e in entry)
    ):
      raise SdpalError(
        f"{path}: entry {number} must be [image, mask or 'Negative'], got {entry!r}."
      )
  base, _ = resolve_relative([image for image, _ in entries], path, notes)
  return [
    (_resolve(image, base), None if mask == "Negative" else _resolve(mask, base))
    for image, mask in entries
  ]


def expand_spec(spec: str, notes: list[str] | None = None) -> list[tuple[str, str]]:
  """``[(name, SPEC)]``: one per entry of an IMDL-BenCo ``{name: path}`` JSON, else ``[(spec, spec)]``.

  Relative entry paths are resolved from the working directory (IMDL-BenCo's
  ``test.py``) when they exist there, else from the JSON's folder (logged).
  """
  if not (spec.endswith(".json") and os.path.isfile(spec)):
    return [(spec, spec)]
  index = _load_json(spec)
  if not isinstance(index, dict):
    return [(spec, spec)]
  if not index:
    raise SdpalError(f"{spec}: the dataset index is empty.")
  folder = os.path.dirname(os.path.abspath(spec))
  expanded = []
  for name, path in index.items():
    if not isinstance(path, str):
      raise SdpalError(f"{spec}: entry {name!r} must be a path (a JSON list or a Tp/+Gt/ folder).")
    if not os.path.isabs(path) and not os.path.exists(path):
      if os.path.exists(os.path.join(folder, path)):
        _note(
          notes,
          f"{spec}: {name!r} -> {path!r} resolved from the JSON's folder {folder} (fallback; "
          f"not found from the working directory {os.getcwd()}).",
          warn=True,
        )
        path = os.path.join(folder, path)
      else:
        _note(notes, f"{spec}: {name!r} -> {path!r} exists neither from the working directory "
              f"nor from {folder}.", warn=True)  # fmt: skip
    elif not os.path.isabs(path):
      _note(notes, f"{spec}: {name!r} -> {path!r} resolved from the working directory "
            "(IMDL-BenCo's rule).")  # fmt: skip
    expanded.append((str(name), path))
  return expanded


def _image_files(folder: str) -> list[str]:
  return sorted(
    n for n in os.listdir(folder)
    if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, n))
  )  # fmt: skip


def _photo_keys(stem: str) -> list[str]:
  keys = [stem.lower()]
  coverage = _COVERAGE_TAMPERED.fullmatch(stem.lower())
  if coverage:
    keys.append(coverage.group(1))
  return keys


def pair_by_stem(photos: list[str], masks: list[str]) -> dict[str, str]:
  """``{photo file: mask file}`` for the photos whose mask is found by name.

  A mask matches a photo when its stem is a key of the photo plus one of
  ``_MASK_SUFFIXES`` ("", ``_gt``, ``_mask``, ``-mask``, ``_gt_mask``,
  ``_forged``, ``forged``, ``_edgemask``; case-insensitive, first suffix
  wins); the keys of a photo are its stem and, for COVERAGE's ``<N>t``, ``<N>``.
  """
  by_stem: dict[str, str] = {}
  for mask in masks:
    by_stem.setdefault(os.path.splitext(mask)[0].lower(), mask)
  found = {}
  for photo in photos:
    for key in _photo_keys(os.path.splitext(photo)[0]):
      match = next((by_stem[key + s] for s in _MASK_SUFFIXES if key + s in by_stem), None)
      if match is not None:
        found[photo] = match
        break
  return found


def parse_forgery_folder(path: str, notes: list[str] | None = None) -> list[tuple[str, str | None]]:
  """Pairs from a ``Tp/`` + ``Gt/`` (+ ``Au/``) folder; a photo without mask pairs with ''.

  Pairing rules in the module docstring: by name first, sorted order (IMDL-BenCo's
  ``ManiDataset``) when names leave photos unpaired and the counts match.
  """
  tp, gt, au = (os.path.join(path, d) for d in ("Tp", "Gt", "Au"))
  if not os.path.isdir(tp):
    raise SdpalError(f"{path}: expected a folder with Tp/ and Gt/ subfolders.")
  photos = _image_files(tp)
  masks = _image_files(gt) if os.path.isdir(gt) else []
  by_name = pair_by_stem(photos, masks)
  pairs: list[tuple[str, str | None]] = []
  if len(by_name) == len(photos):
    assigned = by_name
    in_order = dict(zip(photos, masks, strict=False)) if len(masks) == len(photos) else {}
    differ = sum(in_order.get(p) != m for p, m in by_name.items()) if in_order else 0
    if photos:
      _note(
        notes,
        f"{path}: {len(photos)} Tp/ photos paired with Gt/ masks by file name"
        + (
          f" (IMDL-BenCo's sorted-order pairing would pair {differ} of them differently)."
          if differ
          else "."
        ),
        warn=bool(differ),
      )
  elif len(masks) == len(photos):
    assigned = dict(zip(photos, masks, strict=True))
    _note(
      notes,
      f"{path}: {len(photos) - len(by_name)} of {len(photos)} Tp/ photos have no Gt/ mask by "
      f"name; Tp/ and Gt/ hold {len(photos)} files each, so they are paired in sorted order "
      "(IMDL-BenCo's ManiDataset rule).",
      warn=True,
    )
  else:
    assigned = by_name
    _note(
      notes,
      f"{path}: {len(photos) - len(by_name)} of {len(photos)} Tp/ photos have no Gt/ mask by "
      f"name and Gt/ holds {len(masks)} masks, so sorted-order pairing cannot apply: "
      "those photos are skipped (mask missing).",
      warn=True,
    )
  for photo in photos:
    mask = assigned.get(photo)
    pairs.append((os.path.join(tp, photo), os.path.join(gt, mask) if mask else ""))
  if os.path.isdir(au):
    pairs += [(os.path.join(au, n), None) for n in _image_files(au)]
  if not pairs:
    raise SdpalError(f"{path}: no images found under Tp/ (or Au/).")
  return pairs


class PairSource:
  """Examples from (image, mask or None) file pairs; unreadable pairs go to ``skipped``."""

  def __init__(
    self, name: str, pairs: list[tuple[str, str | None]], notes: list[str] | None = None
  ):
    if not pairs:
      raise SdpalError(f"{name}: the source lists no images.")
    self.name = name
    self.pairs = pairs
    self.notes = list(notes or [])
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
  """Examples of a registered tfds dataset split (prepared on first use when it needs no download).

  The split is anything tfds accepts: ``test``, ``test[:50]``, ``test[:10%]``,
  ``test+validation``.
  """

  def __init__(self, spec: str, *, data_dir: str | None = None):
    name, _, split = spec.partition(":")
    self.name = spec
    self.split = split or "test"
    self.notes: list[str] = []
    try:
      self.builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # tfds raises DatasetNotFoundError and friends
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
      raise SdpalError(
        f"{spec!r} is not a file, a folder or a registered tfds dataset "
        f"({type(e).__name__}: {first_line})."
      ) from e
    if name.startswith("synthetic_forgery"):
      self.builder = common.prepare_tolerating_concurrent_build(self.builder, name, data_dir)
    self.skipped: list[tuple[str, str]] = []
    if not self.builder.is_prepared():
      raise SdpalError(not_built_message(self.builder, name, data_dir))
    try:
      self.num_examples = self.builder.info.splits[self.split].num_examples
    except (KeyError, ValueError, AssertionError) as e:
      raise SdpalError(
        f"{spec}: split {self.split!r} is not one of {sorted(self.builder.info.splits)} or a "
        f"tfds slice of them (e.g. test[:50], test[:10%], test+validation): {e}"
      ) from e

  def __len__(self) -> int:
    return self.num_examples

  def __iter__(self) -> Iterator[dict]:
    for example in tfds.as_numpy(self.builder.as_dataset(split=self.split, shuffle_files=False)):
      yield {
        "image": example["image"],
        "mask": example["mask"][..., 0],
        "tampered": bool(example["tampered"]),
        "name": example["file_name"].decode() if "file_name" in example else "",
      }


def not_built_message(builder, name: str, data_dir: str | None = None) -> str:
  """What to run to build an unprepared tfds dataset, with the builder's manual layout."""
  manual = getattr(type(builder), "MANUAL_DOWNLOAD_INSTRUCTIONS", "") or ""
  where = f" --data_dir {data_dir}" if data_dir else ""
  text = (
    f"{name} is not built (nothing in {builder.data_dir}). Build it once with\n"
    f"  python -m sdpal_jax.datasets.build {name} --manual_dir DIR{where}\n"
    "(`tfds build` needs Apache Beam, which this package does not install), or evaluate "
    "the files directly: a Tp/+Gt/ folder, a .lst or an IMDL-BenCo .json list."
  )
  if manual.strip():
    text += "\nDIR must hold:\n" + manual.rstrip()
  return text


def dataset_spec(dataset: str, split: str) -> str:
  """``config.data.dataset`` + a split -> a SPEC: tfds names get ``:split``, files and folders not."""
  if dataset.endswith((".lst", ".json")) or ":" in dataset or os.path.isdir(dataset):
    return dataset
  return f"{dataset}:{split}"


def open_source(spec: str, *, data_dir: str | None = None):
  """A SPEC (see the module doc) -> an iterable source with ``.name``, ``.skipped``, ``.notes``."""
  notes: list[str] = []
  if spec.endswith(".lst") or spec.endswith(".json"):
    if not os.path.isfile(spec):
      raise SdpalError(f"{spec}: no such list file.")
    if spec.endswith(".lst"):
      return PairSource(spec, parse_forgery_list(spec))
    return PairSource(spec, parse_imdl_json(spec, notes), notes)
  if os.path.isdir(spec):
    return PairSource(spec, parse_forgery_folder(spec, notes), notes)
  return TfdsSource(spec, data_dir=data_dir)
