"""Generic forgery sources as tfds builders: a ``.lst`` file, an IMDL-BenCo JSON list, a Tp/Gt folder.

The same formats :mod:`sdpal_jax.datasets.sources` reads without a build step.
Point ``manual_dir`` at a folder holding ``list.lst`` (``forgery_list``),
``list.json`` (``imdl_json``) or ``Tp/`` + ``Gt/`` (+ ``Au/``) (``forgery_folder``);
everything goes to a ``test`` split unless files named ``train.lst`` /
``validation.lst`` / ``test.lst`` (or ``.json``) name the splits.
"""

from __future__ import annotations

import os

from sdpal_jax.datasets import common
from sdpal_jax.datasets.sources import parse_forgery_folder, parse_forgery_list, parse_imdl_json

_SPLITS = ("train", "validation", "test")


def _items_from_pairs(pairs):
  return [common.tampered_item(i, m) if m is not None else common.Item(i) for i, m in pairs]


def _list_items(root: str, extension: str, parse) -> dict[str, list[common.Item]]:
  named = {s: os.path.join(root, s + extension) for s in _SPLITS}
  if any(os.path.exists(p) for p in named.values()):
    return {s: _items_from_pairs(parse(p)) for s, p in named.items() if os.path.exists(p)}
  single = os.path.join(root, "list" + extension)
  return {"test": _items_from_pairs(parse(single))} if os.path.exists(single) else {}


class ForgeryList(common.ForgeryBuilder):
  """Release-style ``.lst`` files (``image,mask`` or ``image,None`` per line)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
manual_dir/list.lst, or manual_dir/{train,validation,test}.lst; lines image_path,mask_path|None
(relative paths are relative to the list file)."""

  def _items(self, root):
    return _list_items(root, ".lst", parse_forgery_list)


class ImdlJson(common.ForgeryBuilder):
  """IMDL-BenCo JSON lists (``[[image, mask or "Negative"], ...]``)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
manual_dir/list.json, or manual_dir/{train,validation,test}.json in IMDL-BenCo's format."""

  def _items(self, root):
    return _list_items(root, ".json", parse_imdl_json)


class ForgeryFolder(common.ForgeryBuilder):
  """IMDL-BenCo's folder layout: ``Tp/`` photos, ``Gt/`` masks by stem, optional ``Au/``."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
manual_dir/Tp/*.jpg (tampered), manual_dir/Gt/<stem>[_gt|_mask].png, optional manual_dir/Au/*.jpg."""

  def _items(self, root):
    return {"test": _items_from_pairs(parse_forgery_folder(root))}
