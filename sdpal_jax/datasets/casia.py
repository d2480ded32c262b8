"""CASIA v1.0 and v2.0 (Dong, Wang & Tan, ChinaSIP 2013) with the community ground truth.

CASIA ships no masks; the field uses those of Pham et al., "Hybrid
Image-Retrieval Method for Image-Splicing Validation", Symmetry 11(1), 2019
(github.com/namtpham/casia1groundtruth and casia2groundtruth): one
``<image stem>_gt.png`` per tampered photo, white = tampered. Tampered file
names start with ``Tp_`` (v2) or ``Sp_``/``CM`` folders (v1), authentic ones
with ``Au_``.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow_datasets as tfds

from sdpal_jax.datasets import common
from sdpal_jax.errors import SdpalError

_CITATION = """@inproceedings{dong2013casia, title={CASIA image tampering detection evaluation
database}, author={Dong, Jing and Wang, Wei and Tan, Tieniu}, booktitle={ChinaSIP}, year={2013}}"""


def _gt_folder(root: str, names: tuple[str, ...]) -> str:
  for name in names:
    if os.path.isdir(os.path.join(root, name)):
      return os.path.join(root, name)
  return os.path.join(root, names[0])


def _masks_by_stem(folder: str) -> dict[str, str]:
  """``{image stem: mask path}`` for every ``*_gt.*`` below ``folder`` (any sub-folder)."""
  found = {}
  for directory, _, files in os.walk(folder):
    for name in files:
      stem, ext = os.path.splitext(name)
      if stem.endswith("_gt") and ext.lower() in common.IMAGE_EXTENSIONS:
        found[stem[: -len("_gt")]] = os.path.join(directory, name)
  return found


class CasiaV1(common.ForgeryBuilder):
  """CASIA v1.0: 921 tampered photos (``Tp/Sp``, ``Tp/CM``) and 800 authentic ones (``Au``).

  Splits as commonly used (e.g. CAT-Net, TruFor, IMDL-BenCo): ``test`` = the
  tampered photos with masks (CASIA v1 is a test set); ``authentic`` = ``Au``.
  """

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put CASIA 1.0 and its community ground truth (github.com/namtpham/casia1groundtruth) in manual_dir:
  manual_dir/CASIA 1.0 dataset/Au/*.jpg
  manual_dir/CASIA 1.0 dataset/Modified Tp/Tp/{CM,Sp}/*.jpg   (or .../Tp/{CM,Sp})
  manual_dir/CASIA 1.0 groundtruth/{CM,Sp}/*_gt.png
"""
  HOMEPAGE = "https://github.com/namtpham/casia1groundtruth"
  CITATION = _CITATION

  def _items(self, root):
    masks = _masks_by_stem(_gt_folder(root, ("CASIA 1.0 groundtruth", "groundtruth", "GT")))
    tampered, authentic = [], []
    for directory, _, files in sorted(os.walk(root)):
      if "groundtruth" in directory.lower():
        continue
      for name in sorted(files):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in common.IMAGE_EXTENSIONS:
          continue
        path = os.path.join(directory, name)
        if name.startswith("Au"):
          authentic.append(common.Item(path))
        elif name.startswith("Sp") or os.path.basename(directory) in ("CM", "Sp"):
          tampered.append(common.tampered_item(path, masks.get(stem)))
    return {"test": tampered, "authentic": authentic}


@dataclasses.dataclass
class CasiaV2Config(tfds.core.BuilderConfig):
  """``split_lists``: take train/validation from the release's ``.lst`` files."""

  split_lists: bool = False


class CasiaV2(common.ForgeryBuilder):
  """CASIA v2.0: 5,123 tampered (``Tp``) and 7,491 authentic (``Au``) photos.

  Configs:
  - ``default``: ``train`` / ``validation`` = 90% / 10% of all photos by a
    hash of the file name (stable, no list needed).
  - ``release_split``: the SDPAL release's exact split (11,294 / 1,255). Put
    its ``CASIA_v2_train.lst`` and ``CASIA_v2_valid.lst`` (GCLion/SDPAL
    ``data/lst``) in manual_dir; their lines (``image_path,mask_path`` or
    ``image_path,None``, paths from the authors' machine) are matched to your
    copy by file name.
  """

  BUILDER_CONFIGS = [
    CasiaV2Config(name="default", description="90/10 split by file-name hash."),
    CasiaV2Config(name="release_split", split_lists=True, description="The release's .lst split."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put CASIA 2.0 (revised) and its ground truth (github.com/namtpham/casia2groundtruth) in manual_dir:
  manual_dir/CASIA2.0_revised/Au/*.jpg
  manual_dir/CASIA2.0_revised/Tp/*.{jpg,tif}
  manual_dir/CASIA 2 Groundtruth/*_gt.png
For the release_split config also: manual_dir/CASIA_v2_train.lst, manual_dir/CASIA_v2_valid.lst
"""
  HOMEPAGE = "https://github.com/namtpham/casia2groundtruth"
  CITATION = _CITATION

  def _photos(self, root):
    masks = _masks_by_stem(_gt_folder(root, ("CASIA 2 Groundtruth", "CASIA2 Groundtruth", "GT")))
    photos = {}
    for directory, _, files in sorted(os.walk(root)):
      if "groundtruth" in directory.lower():
        continue
      for name in sorted(files):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in common.IMAGE_EXTENSIONS:
          continue
        path = os.path.join(directory, name)
        if name.startswith("Au"):
          photos[name] = common.Item(path)
        elif name.startswith("Tp"):
          photos[name] = common.tampered_item(path, masks.get(stem))
    return photos

  def _items(self, root):
    photos = self._photos(root)
    if not self.builder_config.split_lists:
      splits = {"train": [], "validation": []}
      for name, item in photos.items():
        splits[common.hash_split(name, {"train": 0.9, "validation": 0.1})].append(item)
      return splits
    from sdpal_jax.datasets.sources import parse_forgery_list  # noqa: PLC0415

    splits = {}
    for split, list_name in (("train", "CASIA_v2_train.lst"), ("validation", "CASIA_v2_valid.lst")):
      list_path = os.path.join(root, list_name)
      if not os.path.exists(list_path):
        raise SdpalError(
          f"casia_v2/release_split: {list_path} is missing (copy it from the release)."
        )
      chosen = []
      for image, _ in parse_forgery_list(list_path):
        name = os.path.basename(image)
        if name in photos:
          chosen.append(photos[name])
        else:
          chosen.append(
            common.Item(image, None, missing_reason=f"listed in {list_name}, not in manual_dir")
          )
      splits[split] = chosen
    return splits
