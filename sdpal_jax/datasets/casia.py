"""CASIA v1.0 and v2.0 (Dong, Wang & Tan, ChinaSIP 2013) with the community ground truth.

CASIA ships no masks; the field uses those of Pham et al., "Hybrid
Image-Retrieval Method for Image-Splicing Validation", Symmetry 11(1), 2019
(github.com/namtpham/casia1groundtruth and .../casia2groundtruth): one
``<image stem>_gt.png`` per tampered photo, white = tampered. File names
follow the convention their READMEs write down: ``Au_<cat>_<n>`` authentic;
``Sp_<D|S>_<tech>_<src>_<tgt>_<id>`` (v1) and ``Tp_<D|S>_<tech>_<src>_<tgt>_<id>``
(v2) tampered, D = region from a different photo (splicing), S = from the same
one (copy-move), ``src`` / ``tgt`` the authentic photos used, ``id`` the
tampered photo's number.

The ground truth's mask names do not all follow the tampered photos' names
(both READMEs: "the authors made mistakes in naming the files"). Each tampered
photo is paired with a mask by these rules, in order, each mask used once:

1. the correction table the ground truth ships (CASIA v1:
   ``CASIA 1.0 groundtruth/FileNameCorrection.xlsx``; CASIA v2:
   ``Notes/fileNamesCorrection.xlsx``; any ``.xlsx`` in manual_dir whose sheet
   has an "Original file name" and a "Correct(ed) file name" column): the photo
   is looked up under its corrected name. The table renames photos filed as
   copy-move that are splices and the reverse (``Sp_S`` <-> ``Sp_D``, 29 in v1,
   99 in v2), a wrong source or target id (v1: ``..._sec0049_sec0049_0117`` ->
   ``..._sec0049_sec0050_0117``) and a ``.`` typed for the ``_`` before the id
   (v1: ``Sp_S_NRD_A_ani0040_ani0054.0257``);
2. the same name, compared without case and with ``.`` and ``_`` before the id
   equal (v1 ships ``Sp_D_NNN_A_ani0099_ani0100.0288`` with a mask of that name);
3. the same name with source and target swapped: in CASIA v1 the masks of 72
   splices name the two photos the other way round (``Sp_D_NNN_A_nat0019_
   cha0039_0320.jpg`` has ``Sp_D_NNN_A_cha0039_nat0019_0320_gt.png``; 69 of
   them are the ``NRN`` splices numbered 0404 to 0545);
4. the one mask left over with the same technique code and id that shares the
   source or the target photo, D/S aside (v1: the category typo
   ``Sp_D_NRN_A_ant0063_nat0065_0443.jpg`` -- "ant" is no CASIA category --
   has ``Sp_D_NRN_A_nat0063_nat0065_0443_gt.png``; without the table this rule
   also recovers the table's renames).

A tampered photo that still has no mask is skipped by name, with the
correction table's note about it if it has one: CASIA v1's
``Sp_D_NRN_A_sce0011_cha0011_0542.jpg`` is, the table notes, the same picture
as ``Au_cha_0011.jpg`` and has no ground truth (MVSS-Net's ``data/CASIAv1.txt``
lists the other 920; SunnyHaze/IML-Dataset-Corrections recommends dropping
it). Masks no photo claims are listed in the build log (warning). What each
rule paired is logged at INFO: counts, and every pair found by rules 1, 3 and 4.

Masks drawn on the photo turned upright (width and height swapped) are turned
back, see :class:`_CasiaBuilder`; other masks of another size than their photo
are handled by :func:`common.screen_mask_sizes` (CASIA v2: 17 masks of another
size are listed by SunnyHaze/IML-Dataset-Corrections, 5 of them transposed).
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile
from collections import Counter
from xml.etree import ElementTree

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from sdpal_jax.datasets import common
from sdpal_jax.datasets.sources import parse_forgery_list
from sdpal_jax.errors import ImageReadError, SdpalError
from sdpal_jax.image_io import load_image, load_mask

_CITATION = """@inproceedings{dong2013casia, title={CASIA image tampering detection evaluation
database}, author={Dong, Jing and Wang, Wei and Tan, Tieniu}, booktitle={ChinaSIP}, year={2013}}"""

# Sp_D_CND_A_pla0005_pla0023_0281 (v1), Tp_D_CRN_S_N_cha00063_art00014_11818 (v2).
_NAME = re.compile(
  r"(?P<kind>Sp|Tp)_(?P<ds>[DS])_(?P<tech>.+?)_(?P<src>[a-z]{3}\d+)_(?P<tgt>[a-z]{3}\d+)"
  r"[._](?P<id>\d+)",
  re.IGNORECASE,
)
_XLSX = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_RULES = {
  "name": "by name",
  "table": "via the ground truth's correction table",
  "swapped": "with source and target swapped",
  "shared": "by technique, id and a shared source/target photo",
}


# --- the correction table: .xlsx read with zipfile + ElementTree (an .xlsx is a zip of XML) ---


def _column(reference: str, position: int) -> int:
  """0-based column of a cell reference like ``B14`` (its position when there is none)."""
  letters = re.match(r"[A-Z]*", reference or "").group()
  if not letters:
    return position
  index = 0
  for letter in letters:
    index = index * 26 + ord(letter) - ord("A") + 1
  return index - 1


def read_xlsx(path: str) -> list[list[dict[int, str]]]:
  """Every sheet of an .xlsx as rows of ``{column: text}`` (formulas give their cached value)."""
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    shared = []
    if "xl/sharedStrings.xml" in names:
      root = ElementTree.fromstring(archive.read("xl/sharedStrings.xml"))
      shared = [
        "".join(t.text or "" for t in si.iter(_XLSX + "t")) for si in root.iter(_XLSX + "si")
      ]
    sheets = sorted(
      (n for n in names if re.fullmatch(r"xl/worksheets/sheet\d+\.xml", n)),
      key=lambda n: int(re.findall(r"\d+", n)[-1]),
    )
    workbook = []
    for sheet in sheets:
      rows = []
      for row in ElementTree.fromstring(archive.read(sheet)).iter(_XLSX + "row"):
        cells = {}
        for position, cell in enumerate(row.iter(_XLSX + "c")):
          kind = cell.get("t")
          if kind == "inlineStr":
            text = "".join(t.text or "" for t in cell.iter(_XLSX + "t"))
          else:
            value = cell.find(_XLSX + "v")
            if value is None or value.text is None:
              continue
            text = shared[int(value.text)] if kind == "s" else value.text
          if text.strip():
            cells[_column(cell.get("r"), position)] = text.strip()
        rows.append(cells)
      workbook.append(rows)
  return workbook


def _is_image_name(text: str) -> bool:
  return " " not in text and text.lower().endswith(common.IMAGE_EXTENSIONS)


@dataclasses.dataclass
class CorrectionTable:
  """File-name corrections (``{original name: corrected name}``) and the free-text notes."""

  corrections: dict[str, str] = dataclasses.field(default_factory=dict)
  notes: list[str] = dataclasses.field(default_factory=list)
  sources: list[str] = dataclasses.field(default_factory=list)


def read_correction_table(path: str, table: CorrectionTable | None = None) -> CorrectionTable:
  """The rows of ``path`` under an "Original file name" / "Correct(ed) file name" header.

  Other cells of more than three words (e.g. "Image file named ... is identical
  with image ...") are kept as notes.
  """
  table = table or CorrectionTable()
  found = False
  for rows in read_xlsx(path):
    columns = None
    for cells in rows:
      lowered = {c: t.lower() for c, t in cells.items()}
      if columns is None:
        original = [c for c, t in lowered.items() if t.startswith("original")]
        corrected = [c for c, t in lowered.items() if t.startswith("correct")]
        if original and corrected:
          columns = (original[0], corrected[0])
          continue
      if columns:
        before, after = cells.get(columns[0], ""), cells.get(columns[1], "")
        if _is_image_name(before) and _is_image_name(after):
          table.corrections[before] = after
          found = True
          continue
      table.notes.extend(t for t in cells.values() if len(t.split()) > 3)
  if found:
    table.sources.append(path)
  return table


def _correction_tables(name: str, root: str) -> CorrectionTable:
  table = CorrectionTable()
  for directory, _, files in sorted(os.walk(root)):
    for file in sorted(files):
      if file.lower().endswith(".xlsx") and not file.startswith(("~$", ".")):
        path = os.path.join(directory, file)
        try:
          read_correction_table(path, table)
        except (zipfile.BadZipFile, ElementTree.ParseError, KeyError, ValueError, IndexError) as e:
          logging.warning("%s: cannot read %s (%s); its corrections are not used.", name, path, e)
  for source in table.sources:
    logging.info("%s: file-name corrections from %s", name, source)
  return table


# --- finding the photos and masks and pairing them ---


def _key(stem: str, swapped: bool = False) -> str:
  """``stem`` normalised for comparison: lower case, ``.`` before the id read as ``_``."""
  match = _NAME.fullmatch(stem)
  if not match:
    return stem.lower()
  source, target = (match["tgt"], match["src"]) if swapped else (match["src"], match["tgt"])
  parts = (match["kind"], match["ds"], match["tech"], source, target, match["id"])
  return "_".join(parts).lower()


def _scan(name: str, root: str, prefix: str):
  """(authentic photos, tampered photos, ``{mask stem: mask path}``) anywhere below ``root``.

  Masks are the ``*_gt.*`` images; tampered photos start with ``prefix_``,
  authentic ones with ``Au_``. When a ``Modified Tp`` folder exists (the ground
  truth author's renamed copy of the tampered photos), tampered photos are taken
  from it only, so the original and the renamed copy are not both used.
  """
  authentic, tampered, masks = [], [], {}
  for directory, _, files in sorted(os.walk(root)):
    for file in sorted(files):
      stem, ext = os.path.splitext(file)
      if ext.lower() not in common.IMAGE_EXTENSIONS or file.startswith("."):
        continue
      path = os.path.join(directory, file)
      if stem.lower().endswith("_gt"):
        if stem[:-3] in masks:
          logging.warning(
            "%s: %s and %s both name one mask; using the first.", name, masks[stem[:-3]], path
          )
          continue
        masks[stem[:-3]] = path
      elif file.startswith("Au_"):
        authentic.append(path)
      elif file.lower().startswith(prefix.lower() + "_"):
        tampered.append(path)
  modified = [
    p for p in tampered if "modified tp" in os.path.relpath(p, root).lower().split(os.sep)
  ]
  if modified and len(modified) < len(tampered):
    logging.info(
      "%s: using the %d tampered photos of 'Modified Tp'; %d others ignored.",
      name,
      len(modified),
      len(tampered) - len(modified),
    )
    tampered = modified
  return authentic, tampered, masks


def pair_tampered(name: str, photos: list[str], masks: dict[str, str], table: CorrectionTable):
  """``[common.Item]`` for ``photos``, each with its mask under the module's rules (see its doc)."""
  by_key = {}
  for stem, path in masks.items():
    by_key.setdefault(_key(stem), path)
  free = set(by_key)
  found: dict[str, tuple[str, str]] = {}  # photo -> (mask key, rule)

  def claim(photo, key, rule):
    if key in free:
      free.discard(key)
      found[photo] = (key, rule)
      return True
    return False

  for photo in photos:  # rules 1 and 2
    file = os.path.basename(photo)
    corrected = table.corrections.get(file)
    if corrected and claim(photo, _key(os.path.splitext(corrected)[0]), "table"):
      continue
    claim(photo, _key(os.path.splitext(file)[0]), "name")
  for photo in photos:  # rule 3
    if photo not in found:
      claim(photo, _key(os.path.splitext(os.path.basename(photo))[0], swapped=True), "swapped")

  def signature(stem):
    match = _NAME.fullmatch(stem)
    if not match:
      return None
    return (match["kind"].lower(), match["tech"].lower(), match["id"]), {
      match["src"].lower(),
      match["tgt"].lower(),
    }

  fits = {}  # rule 4: only where the photo fits one mask and that mask fits this photo only
  left = {key: signature(key) for key in sorted(free)}
  for photo in photos:
    mine = None if photo in found else signature(os.path.splitext(os.path.basename(photo))[0])
    if mine is not None:
      fits[photo] = [
        k for k, theirs in left.items() if theirs and theirs[0] == mine[0] and theirs[1] & mine[1]
      ]
  fitted = Counter(k for keys in fits.values() for k in keys)
  for photo, keys in fits.items():
    if len(keys) == 1 and fitted[keys[0]] == 1:
      claim(photo, keys[0], "shared")

  items = []
  for photo in photos:
    if photo in found:
      key, rule = found[photo]
      items.append(common.Item(photo, by_key[key]))
      if rule != "name":
        logging.info(
          "%s: %s paired %s with %s",
          name,
          os.path.basename(photo),
          _RULES[rule],
          os.path.basename(by_key[key]),
        )
      continue
    file = os.path.basename(photo)
    notes = [
      sentence.strip()
      for note in table.notes
      for sentence in re.split(r"(?<=\.)\s+(?=[A-Z])", note)
      if file.lower() in sentence.lower()
    ]
    reason = "no ground-truth mask found for it" + (
      f"; the correction table notes: {' / '.join(notes)}" if notes else ""
    )
    items.append(common.Item(photo, None, missing_reason=reason))
  counts = Counter(rule for _, rule in found.values())
  logging.info(
    "%s: %d of %d tampered photos paired with a mask (%s).",
    name,
    len(found),
    len(photos),
    ", ".join(f"{counts[r]} {_RULES[r]}" for r in _RULES if counts[r]) or "none",
  )
  unused = sorted(by_key[k] for k in free)
  if unused:
    logging.warning(
      "%s: %d ground-truth masks match no tampered photo: %s",
      name,
      len(unused),
      ", ".join(os.path.basename(p) for p in unused),
    )
  return items


# --- masks drawn on the photo turned upright ---


def _authentic_sources(photo: str, authentic: dict[str, str]) -> list[str]:
  """The authentic photos named in a tampered photo's name (``sec0012`` -> ``Au_sec_0012.*``)."""
  match = _NAME.fullmatch(os.path.splitext(os.path.basename(photo))[0])
  if not match:
    return []
  found = []
  for part in (match["tgt"], match["src"]):
    name = f"au_{part[:3]}_{part[3:]}".lower()
    if name in authentic and authentic[name] not in found:
      found.append(authentic[name])
  return found


def quarter_turn(photo: str, mask: str, authentic: dict[str, str]) -> tuple[int | None, str]:
  """(k, how) with ``np.rot90(mask, k)`` the mask of ``photo``; k None when it cannot be told.

  For a mask whose width and height are the photo's swapped. The tampered
  photo differs from the authentic photo it was made from (named in its file
  name, looked up in ``authentic``: ``{lower-case stem: path}``) inside the
  tampered region and hardly outside; the quarter turn under which that holds
  clearly (mean difference inside minus outside above 10 and more than twice
  the other turn's) is the one.
  """
  sources = _authentic_sources(photo, authentic)
  if not sources:
    return None, "no authentic photo named in its file name is in manual_dir to tell the turn"
  try:
    image = load_image(photo).astype(np.int16)
    region = load_mask(mask).astype(bool)
  except ImageReadError as e:
    return None, e.reason
  best = None
  for source in sources:
    try:
      original = load_image(source).astype(np.int16)
    except ImageReadError:
      continue
    if original.shape != image.shape:
      continue
    difference = np.abs(image - original).max(axis=-1)
    scores = {}
    for k in (1, 3):
      turned = np.rot90(region, k)
      if turned.any() and not turned.all():
        scores[k] = float(difference[turned].mean() - difference[~turned].mean())
    if len(scores) == 2:
      k = max(scores, key=scores.get)
      if scores[k] > max(10.0, 2 * scores[4 - k]) and (best is None or scores[k] > best[1]):
        best = (k, scores[k], source)
  if best is None:
    return None, "comparing it with " + ", ".join(map(os.path.basename, sources)) + " was not clear"
  turn = "counter-clockwise" if best[0] == 1 else "clockwise"
  return best[0], f"a quarter turn {turn}, told by comparing with {os.path.basename(best[2])}"


class _CasiaBuilder(common.ForgeryBuilder):
  """Pairs the tampered photos with the ground truth; turns masks drawn on the upright photo.

  CASIA keeps some photos sideways (e.g. ``Au_sec_0012.jpg``), and the ground
  truth has some of their masks drawn on the photo turned upright: width and
  height swapped (CASIA v1: ``Sp_D_CNN_A_sec0012_ani0007_0275``; CASIA v2: 5
  listed by SunnyHaze/IML-Dataset-Corrections). Such a mask is turned back by
  the quarter turn :func:`quarter_turn` finds, and logged; resizing it would
  scramble it. Other size mismatches: :func:`common.screen_mask_sizes`.
  """

  def _tampered_items(self, root: str, prefix: str):
    authentic, photos, masks = _scan(self.name, root, prefix)
    tampered = pair_tampered(self.name, photos, masks, _correction_tables(self.name, root))
    by_stem = {os.path.splitext(os.path.basename(p))[0].lower(): p for p in authentic}
    self._turns: dict[str, tuple[int, str]] = {}  # file_name -> (quarter turns, mask)
    checked = []
    for item in tampered:
      image = common.image_size(item.image) if item.mask else None
      mask = common.image_size(item.mask) if item.mask else None
      if image is None or mask is None or image == mask or image != mask[::-1]:
        checked.append(item)
        continue
      k, how = quarter_turn(item.image, item.mask, by_stem)
      sizes = (
        f"mask {os.path.basename(item.mask)} is {mask[1]}x{mask[0]} (WxH), its image "
        f"{os.path.basename(item.image)} {image[1]}x{image[0]}"
      )
      if k is None:
        reason = f"{sizes}: drawn on the photo turned sideways, and {how}"
        checked.append(dataclasses.replace(item, missing_reason=reason))
      else:
        logging.warning("%s: %s: turned back by %s.", self.name, sizes, how)
        self._turns[os.path.relpath(item.image, root)] = (k, item.mask)
        checked.append(item)
    turned = {os.path.join(root, name) for name in self._turns}
    screened = iter(
      common.screen_mask_sizes(self.name, [i for i in checked if i.image not in turned])
    )
    tampered = [i if i.image in turned else next(screened) for i in checked]
    return [common.Item(p) for p in authentic], tampered

  def _generate_examples(self, root, items):
    for key, example in super()._generate_examples(root, items):
      if example["file_name"] in self._turns:
        k, mask = self._turns[example["file_name"]]
        example["mask"] = np.ascontiguousarray(np.rot90(load_mask(mask), k))[..., None]
      yield key, example


class CasiaV1(_CasiaBuilder):
  """CASIA v1.0: 921 tampered photos, 920 with a ground-truth mask, and 800 authentic ones.

  Splits as commonly used (e.g. MVSS-Net's ``data/CASIAv1.txt``: 920 + 800;
  CAT-Net, IMDL-BenCo): ``test`` = the tampered photos with masks (CASIA v1 is
  a test set); ``authentic`` = ``Au``.
  """

  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put CASIA 1.0 and its community ground truth (github.com/namtpham/casia1groundtruth, unzip
"CASIA 1.0 groundtruth.zip" as it is) in manual_dir; folder names do not matter, file names do:
  manual_dir/CASIA 1.0 dataset/Au/Au_*.jpg                      (800)
  manual_dir/CASIA 1.0 dataset/Tp/{CM,Sp}/Sp_*.jpg              (470 + 451 as released,
      or one flat Sp/ folder of all 921; the ground truth's renamed copy "Modified Tp/" is used
      instead of the originals when present)
  manual_dir/CASIA 1.0 groundtruth/{CM,Sp}/*_gt.png             (459 + 461)
  manual_dir/CASIA 1.0 groundtruth/FileNameCorrection.xlsx      (its renames are applied)
"""
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "First release.",
    "1.1.0": "The real ground truth's misnamed masks paired by rule and its correction table "
    "(920 of 921 tampered photos, was 814); masks drawn on the upright photo turned back.",
  }
  HOMEPAGE = "https://github.com/namtpham/casia1groundtruth"
  CITATION = _CITATION

  def _items(self, root):
    authentic, tampered = self._tampered_items(root, "Sp")
    return {"test": tampered, "authentic": authentic}


@dataclasses.dataclass
class CasiaV2Config(tfds.core.BuilderConfig):
  """``split_lists``: take train/validation from the release's ``.lst`` files."""

  split_lists: bool = False


class CasiaV2(_CasiaBuilder):
  """CASIA v2.0: 5,123 tampered (``Tp``) and 7,491 authentic (``Au``) photos.

  Tampered photos are paired with the ground truth as described in the module
  doc (``Notes/fileNamesCorrection.xlsx`` of namtpham/casia2groundtruth, if
  copied into manual_dir, renames photos of the release from before 2021-04-20;
  its revised 2022 release already carries the corrected names). Masks of
  another size: see :func:`common.screen_mask_sizes`; SunnyHaze's corrected
  ground truth (github.com/SunnyHaze/CASIA2.0-Corrected-Groundtruth, folder
  ``Gt/``) fixes them and is read the same way.

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
Put CASIA 2.0 and its ground truth (github.com/namtpham/casia2groundtruth, unzip
CASIA2.0_Groundtruth.zip as it is) in manual_dir; folder names do not matter, file names do:
  manual_dir/CASIA2.0_revised/Au/Au_*.jpg
  manual_dir/CASIA2.0_revised/Tp/Tp_*.{jpg,tif}
  manual_dir/CASIA 2 Groundtruth/*_gt.png          (or SunnyHaze's corrected Gt/*_gt.png)
  manual_dir/Notes/fileNamesCorrection.xlsx        (optional: renames photos of the original release)
For the release_split config also: manual_dir/CASIA_v2_train.lst, manual_dir/CASIA_v2_valid.lst
"""
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "First release.",
    "1.1.0": "Masks found in any folder (e.g. Gt/), paired by rule and the correction table; "
    "masks of another size turned back, resized or skipped by rule, each logged.",
  }
  HOMEPAGE = "https://github.com/namtpham/casia2groundtruth"
  CITATION = _CITATION

  def _photos(self, root):
    authentic, tampered = self._tampered_items(root, "Tp")
    items = authentic + tampered
    return {os.path.basename(item.image): item for item in items}

  def _items(self, root):
    photos = self._photos(root)
    if not self.builder_config.split_lists:
      splits = {"train": [], "validation": []}
      for name, item in photos.items():
        splits[common.hash_split(name, {"train": 0.9, "validation": 0.1})].append(item)
      return splits
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
