"""What every forgery-dataset builder shares: features, mask conventions, skipping bad files.

A builder lists its files as :class:`Item` s per split (``_items``); this base
class turns them into tfds examples::

  image      uint8 [H, W, 3]   (EXIF-rotated, any colour mode or bit depth)
  mask       uint8 [H, W, 1]   in {0, 1}; 1 = tampered; zeros for authentic
  tampered   ClassLabel        authentic | tampered
  file_name  Text              the image's path relative to manual_dir

Unreadable images, missing masks and masks that cannot be matched are skipped
with a warning that names the file and the reason; the build goes on with the
good files and ends with a summary (``builder.skipped`` keeps the list). A
missing or empty ``manual_dir`` stops with the dataset's download instructions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from sdpal_jax.errors import ImageReadError, SdpalError
from sdpal_jax.image_io import IMAGE_EXTENSIONS, load_image, load_mask, mask_from_array

MASK_KINDS = ("binary", "inverted", "green")


@dataclasses.dataclass(frozen=True)
class Item:
  """One photo of a split: its mask (None = authentic) and the mask's convention.

  ``mask_kind``: ``binary`` (white/1 = tampered), ``inverted`` (black =
  tampered, e.g. NIST), ``green`` (colour-coded, green = spliced, Columbia).
  ``missing_reason``: set when a tampered photo has no usable mask; the item
  is then skipped with that reason.
  """

  image: str
  mask: str | None = None
  mask_kind: str = "binary"
  missing_reason: str | None = None


def list_images(folder: str) -> list[str]:
  """Image files directly in ``folder``, sorted; [] if it does not exist."""
  if not os.path.isdir(folder):
    return []
  return sorted(
    os.path.join(folder, n)
    for n in os.listdir(folder)
    if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")
  )


def find_mask(folder: str, names: Iterable[str]) -> str | None:
  """The first of ``names`` (file stems or names) present in ``folder``, any image extension."""
  if not os.path.isdir(folder):
    return None
  present = {n.lower(): n for n in os.listdir(folder)}
  for name in names:
    candidates = [name] if os.path.splitext(name)[1] else [name + e for e in IMAGE_EXTENSIONS]
    for candidate in candidates:
      if candidate.lower() in present:
        return os.path.join(folder, present[candidate.lower()])
  return None


def tampered_item(image: str, mask: str | None, kind: str = "binary") -> Item:
  """An Item for a tampered photo; a missing mask becomes a named skip reason."""
  if not mask:
    return Item(image, None, kind, missing_reason="no ground-truth mask found for it")
  return Item(image, mask, kind)


def hash_split(name: str, fractions: dict[str, float], salt: str = "") -> str:
  """A deterministic split for ``name`` from the SHA-1 of its file name (stable across machines)."""
  value = int(hashlib.sha1((salt + os.path.basename(name)).encode()).hexdigest()[:8], 16) / 2**32
  total = 0.0
  for split, fraction in fractions.items():
    total += fraction
    if value < total:
      return split
  return list(fractions)[-1]


def read_mask(item: Item, image_shape: tuple[int, int], size_policy: str) -> np.ndarray:
  """The {0, 1} mask ``[H, W]`` of ``item`` under its convention."""
  if item.mask is None:
    return np.zeros(image_shape, np.uint8)
  if not os.path.exists(item.mask):
    raise ImageReadError(item.image, f"its mask {item.mask} is missing")
  if item.mask_kind == "green":
    try:
      with Image.open(item.mask) as f:
        rgb = np.asarray(f.convert("RGB")).astype(int)
    except Exception as e:  # PIL raises many types for bad files
      raise ImageReadError(item.mask, f"cannot read mask ({type(e).__name__}: {e})") from e
    green = (rgb[..., 1] > 127) & (rgb[..., 0] < 128) & (rgb[..., 2] < 128)
    return mask_from_array(
      green.astype(np.uint8) * 255, name=item.mask, image_size=image_shape, size_policy=size_policy
    )
  return load_mask(
    item.mask,
    image_size=image_shape,
    inverted=item.mask_kind == "inverted",
    size_policy=size_policy,
  )


class ForgeryBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the manual-download forgery builders (subclasses define ``_items``)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the dataset in manual_dir."
  # What to do with a mask whose size differs from its photo: resize it (nearest) or skip.
  MASK_SIZE_POLICY = "resize"
  HOMEPAGE = ""
  CITATION = ""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
          "mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
          "tampered": tfds.features.ClassLabel(names=["authentic", "tampered"]),
          "file_name": tfds.features.Text(),
        }
      ),
      supervised_keys=("image", "mask"),
      homepage=self.HOMEPAGE,
      citation=self.CITATION,
    )

  def _items(self, root: str) -> dict[str, list[Item]]:
    raise NotImplementedError

  def _manual_root(self, dl_manager) -> str:
    try:
      root = os.fspath(dl_manager.manual_dir)
    except (AssertionError, FileNotFoundError, ValueError) as e:
      root = None
      reason = str(e).splitlines()[0]
    else:
      reason = "it does not exist or is empty"
      if os.path.isdir(root) and os.listdir(root):
        return root
    raise SdpalError(
      f"{self.name}: manual_dir {root or ''} is not usable ({reason}).\n"
      f"Download instructions:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )

  def _split_generators(self, dl_manager):
    root = self._manual_root(dl_manager)
    items = self._items(root)
    if not any(items.values()):
      raise SdpalError(
        f"{self.name}: found no images in {root}. Expected layout:\n"
        f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    self.skipped: list[tuple[str, str]] = []
    return {
      split: self._generate_examples(root, split_items)
      for split, split_items in items.items()
      if split_items
    }

  def _generate_examples(self, root: str, items: list[Item]):
    skipped = 0
    for item in items:
      name = os.path.relpath(item.image, root)
      try:
        if item.missing_reason:
          raise ImageReadError(item.image, item.missing_reason)
        image = load_image(item.image)
        mask = read_mask(item, image.shape[:2], self.MASK_SIZE_POLICY)
      except ImageReadError as e:
        skipped += 1
        self.skipped.append((e.path, e.reason))
        logging.warning("%s: skipped %s: %s", self.name, e.path, e.reason)
        continue
      yield (
        name,
        {
          "image": image,
          "mask": mask[..., None],
          "tampered": int(item.mask is not None),
          "file_name": name,
        },
      )
    if skipped:
      logging.warning(
        "%s: %d of %d files skipped (see the warnings above).", self.name, skipped, len(items)
      )


# Masks whose aspect ratio is within this of their photo's are rescaled copies of the
# photo's grid (e.g. COVERAGE 55/56/95, CASIA v2 masks a few pixels off); larger
# differences mean the mask was drawn on another crop or orientation of the photo.
MASK_ASPECT_TOLERANCE = 0.02


def image_size(path: str) -> tuple[int, int] | None:
  """(H, W) of an image as ``load_image`` / ``load_mask`` return it (EXIF orientation applied).

  Read from the file header only; None when the file cannot be opened (the
  build then reports it when it reads the file).
  """
  try:
    with Image.open(path) as f:
      width, height = f.size
      orientation = f.getexif().get(0x0112, 1)
  except Exception:  # PIL raises many types for bad files
    return None
  if orientation in (5, 6, 7, 8):  # rotated by 90 degrees on display
    width, height = height, width
  return height, width


def screen_mask_sizes(
  name: str, items: list[Item], tolerance: float = MASK_ASPECT_TOLERANCE
) -> list[Item]:
  """``items`` with the masks whose size differs from their photo's resolved, each logged.

  A mask with the photo's aspect ratio (within ``tolerance``) is a rescaled
  copy: kept, and resized to the photo with nearest neighbour when read (one
  warning line naming both files and sizes). Any other size mismatch means the
  mask belongs to another crop or orientation of the photo, where resizing
  would misplace the region: the photo is skipped with a reason that names both
  sizes. Only file headers are read.
  """
  screened = []
  for item in items:
    if item.mask is None or item.missing_reason:
      screened.append(item)
      continue
    image, mask = image_size(item.image), image_size(item.mask)
    if image is None or mask is None or image == mask:
      screened.append(item)
      continue
    (height, width), (mask_height, mask_width) = image, mask
    sizes = (
      f"mask {os.path.basename(item.mask)} is {mask_width}x{mask_height} (WxH) but its image "
      f"{os.path.basename(item.image)} is {width}x{height}"
    )
    mismatch = abs((mask_width * height) / (mask_height * width) - 1.0)
    if mismatch <= tolerance:
      logging.warning(
        "%s: %s: same aspect ratio, the mask is resized to the image (nearest neighbour).",
        name,
        sizes,
      )
      screened.append(item)
    else:
      screened.append(
        dataclasses.replace(
          item,
          missing_reason=(
            f"{sizes}: the aspect ratios differ by {mismatch:.0%}, so the mask is not a "
            "rescaled copy of the image and resizing it would misplace the region"
          ),
        )
      )
  return screened


def prepare_tolerating_concurrent_build(
  builder: tfds.core.DatasetBuilder,
  name: str,
  data_dir: str | None,
  download_config: tfds.download.DownloadConfig | None = None,
) -> tfds.core.DatasetBuilder:
  """``builder.download_and_prepare``; another process finishing the same build first is fine.

  Two runs, two test workers or two ``datasets.build`` commands sharing a
  data directory may build the same version at once: tfds writes each copy
  into its own ``incomplete.*`` folder, and the second to finish finds the
  version already in place (``FileExistsError`` on the rename; tfds removes
  its own copy). A builder's examples are a pure function of its config and
  inputs, so the copy in place holds the same data. Returns a builder that
  reads the prepared version.
  """
  try:
    builder.download_and_prepare(download_config=download_config)
  except FileExistsError:
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      raise
    logging.info("%s: built by another process at the same time; using that copy.", name)
  return builder
