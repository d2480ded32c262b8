"""The real-dataset builders take each archive as released, quirks included.

Every tree here is generated (random photos, masks whose tampered rows are
distinct per photo, a correction table written as a tiny .xlsx); each quirk
is one the real archive has (see the builders' docstrings).
"""

import logging
import os
import zipfile
from xml.sax.saxutils import escape

import numpy as np
import pytest
import tensorflow_datasets as tfds
from dataset_fixtures import build_from_manual_dir as _build
from PIL import Image

import sdpal_jax.datasets  # noqa: F401 (registers the builders)
from sdpal_jax.datasets import casia

SIZE = (24, 32)  # H, W


def _photo(path, seed, size=SIZE, like=None, region=None):
  """A random photo; with ``like``, a copy of that photo with ``region`` replaced."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  array = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
  if like is not None:
    base = np.asarray(Image.open(like).convert("RGB")).copy()
    base[region] = array[region]
    array = base
  Image.fromarray(array).save(path, **({"quality": 95} if str(path).endswith(".jpg") else {}))
  return path


def _mask(path, rows, size=SIZE, cols=slice(None)):
  """A binary mask (white = tampered) marking ``rows`` x ``cols``."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  mask = np.zeros(size, np.uint8)
  mask[rows, cols] = 255
  Image.fromarray(mask).save(path)
  return path


def _rows(rows, size=SIZE, cols=slice(None)):
  expected = np.zeros(size, np.uint8)
  expected[rows, cols] = 1
  return expected


def _write_xlsx(path, sheets):
  """A minimal .xlsx: ``sheets`` = {name: rows}, a row = list of cell texts (None = empty).

  Texts go to the shared-string table like Excel writes them, except texts
  starting with ``=`` which become a formula cell with that cached value
  (``t="str"``), like the rename commands of the real tables.
  """
  strings, sheet_xml = [], []
  for rows in sheets.values():
    row_xml = []
    for r, row in enumerate(rows, start=1):
      cells = []
      for c, text in enumerate(row):
        if text is None:
          continue
        ref = f"{chr(ord('A') + c)}{r}"
        if text.startswith("="):
          cells.append(f'<c r="{ref}" t="str"><f>CONCAT()</f><v>{escape(text[1:])}</v></c>')
        else:
          strings.append(text)
          cells.append(f'<c r="{ref}" t="s"><v>{len(strings) - 1}</v></c>')
      row_xml.append(f'<row r="{r}">{"".join(cells)}</row>')
    sheet_xml.append(
      '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
      f"<sheetData>{''.join(row_xml)}</sheetData></worksheet>"
    )
  shared = "".join(f"<si><t>{escape(s)}</t></si>" for s in strings)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr(
      "xl/sharedStrings.xml",
      '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">' + shared + "</sst>",
    )
    for i, xml in enumerate(sheet_xml, start=1):
      archive.writestr(f"xl/worksheets/sheet{i}.xml", xml)


def _by_name(examples):
  return {os.path.basename(e["file_name"].decode()): e for e in examples}


# CASIA v1: (photo as released, its folder, its mask as the ground truth names it, rows).
CASIA_V1 = [
  ("Sp_D_CND_A_pla0005_pla0023_0281.jpg", "Sp", "Sp_D_CND_A_pla0005_pla0023_0281", slice(0, 2)),
  # FileNameCorrection.xlsx: filed as copy-move, is a splice (S -> D).
  ("Sp_S_CRN_A_arc0007_arc0005_0228.jpg", "CM", "Sp_D_CRN_A_arc0007_arc0005_0228", slice(2, 4)),
  # FileNameCorrection.xlsx: wrong target id.
  ("Sp_D_NNN_A_sec0049_sec0049_0117.jpg", "Sp", "Sp_D_NNN_A_sec0049_sec0050_0117", slice(4, 6)),
  # FileNameCorrection.xlsx: S -> D and "." typed for "_" before the id.
  ("Sp_S_NRD_A_ani0040_ani0054.0257.jpg", "CM", "Sp_D_NRD_A_ani0040_ani0054_0257", slice(6, 8)),
  # "." before the id in both names.
  ("Sp_D_NNN_A_ani0099_ani0100.0288.jpg", "Sp", "Sp_D_NNN_A_ani0099_ani0100.0288", slice(8, 10)),
  # Source and target swapped in the mask's name.
  ("Sp_D_NRN_A_ani0001_arc0059_0404.jpg", "Sp", "Sp_D_NRN_A_arc0059_ani0001_0404", slice(10, 12)),
  # Category typo "ant" in the photo's name.
  ("Sp_D_NRN_A_ant0063_nat0065_0443.jpg", "Sp", "Sp_D_NRN_A_nat0063_nat0065_0443", slice(12, 14)),
  # Two copy-moves that differ in the 4th field only: each keeps its own mask.
  ("Sp_S_NNN_R_txt0051_txt0051_0051.jpg", "CM", "Sp_S_NNN_R_txt0051_txt0051_0051", slice(14, 16)),
  ("Sp_S_NNN_C_txt0051_txt0051_0051.jpg", "CM", "Sp_S_NNN_C_txt0051_txt0051_0051", slice(16, 18)),
]
IDENTICAL = "Sp_D_NRN_A_sce0011_cha0011_0542.jpg"
NOTE = (
  "At first, there are 470 copy-move images (CM folder) and 451 spliced images (Sp folder). "
  f'Image file named "{IDENTICAL}" is identical with image "Au_cha_0011.jpg", therefore, '
  "the number of images in splicing groundtruth folder is 461."
)
CASIA_V1_TABLE = [
  ("Sp_S_CRN_A_arc0007_arc0005_0228.jpg", "Sp_D_CRN_A_arc0007_arc0005_0228.jpg"),
  ("Sp_D_NNN_A_sec0049_sec0049_0117.jpg", "Sp_D_NNN_A_sec0049_sec0050_0117.jpg"),
  ("Sp_S_NRD_A_ani0040_ani0054.0257.jpg", "Sp_D_NRD_A_ani0040_ani0054_0257.jpg"),
]


def _casia_v1_tree(root, table=True, layout="released"):
  """CASIA 1.0 + its ground truth; ``layout``: ``released`` (Tp/CM, Tp/Sp) or ``flat`` (Sp/)."""
  data = root / "CASIA 1.0 dataset"
  gt = root / "CASIA 1.0 groundtruth"
  for i, name in enumerate(("Au_cha_0011.jpg", "Au_pla_0005.JPG")):
    _photo(data / "Au" / name, 100 + i)
  for i, (photo, folder, mask, rows) in enumerate(CASIA_V1):
    where = data / "Tp" / folder if layout == "released" else data / "Sp"
    _photo(where / photo, i)
    _mask(gt / ("CM" if mask.startswith("Sp_S") else "Sp") / f"{mask}_gt.png", rows)
  _photo((data / "Tp" / "Sp" if layout == "released" else data / "Sp") / IDENTICAL, 50)
  _mask(gt / "CM" / "Sp_S_CNN_A_pla0052_pla0052_0005_gt.png", slice(0, 1))  # no photo has it
  if table:
    rows = [["Note", "Original file name", "Corrected file name", "Rename command"], []]
    rows += [[None, a, b, f'=ren "{a}" "{b}"'] for a, b in CASIA_V1_TABLE]
    rows += [[], [None, NOTE]]
    _write_xlsx(gt / "FileNameCorrection.xlsx", {"Modify Tp file name": rows})
  return root


def test_casia_v1_pairs_each_misnamed_mask_by_its_rule_and_reports_what_it_cannot_pair(
  tmp_path, caplog
):
  root = _casia_v1_tree(tmp_path / "manual")
  with caplog.at_level(logging.INFO, logger="absl"):
    builder, splits = _build("casia_v1", root, tmp_path / "data")
  test = _by_name(splits["test"])
  assert sorted(test) == sorted(photo for photo, *_ in CASIA_V1)
  for photo, _, _, rows in CASIA_V1:
    np.testing.assert_array_equal(test[photo]["mask"][..., 0], _rows(rows), err_msg=photo)
  assert sorted(_by_name(splits["authentic"])) == ["Au_cha_0011.jpg", "Au_pla_0005.JPG"]
  assert [os.path.basename(p) for p, _ in builder.skipped] == [IDENTICAL]
  reason = builder.skipped[0][1]
  assert "no ground-truth mask" in reason and 'identical with image "Au_cha_0011.jpg"' in reason
  assert "At first" not in reason  # only the note's sentence about this photo
  log = caplog.text
  assert "9 of 10 tampered photos paired with a mask" in log
  assert "3 via the ground truth's correction table" in log
  assert "1 with source and target swapped" in log and "1 by technique, id and a shared" in log
  assert "Sp_S_CNN_A_pla0052_pla0052_0005_gt.png" in log  # the mask no photo claims
  assert (
    "Sp_D_NRN_A_ant0063_nat0065_0443.jpg paired by technique, id and a shared source/target "
    "photo with Sp_D_NRN_A_nat0063_nat0065_0443_gt.png" in log
  )
  assert f"skipped {os.path.join('CASIA 1.0 dataset', 'Tp', 'Sp', IDENTICAL)}: " in log.replace(
    str(root) + os.sep, ""
  )


def test_casia_v1_rules_alone_pair_the_correction_tables_renames_identically(tmp_path):
  with_table = _casia_v1_tree(tmp_path / "with")
  without = _casia_v1_tree(tmp_path / "without", table=False)
  pairs = []
  for root in (with_table, without):
    builder = tfds.builder("casia_v1", data_dir=str(tmp_path / "data"))
    items = builder._items(str(root))["test"]
    pairs.append({os.path.basename(i.image): i.mask and os.path.basename(i.mask) for i in items})
  assert pairs[0] == pairs[1]
  assert pairs[1]["Sp_D_NNN_A_sec0049_sec0049_0117.jpg"] == "Sp_D_NNN_A_sec0049_sec0050_0117_gt.png"
  assert pairs[1][IDENTICAL] is None


def test_casia_v1_reads_one_flat_sp_folder_and_prefers_the_ground_truths_modified_tp(tmp_path):
  root = _casia_v1_tree(tmp_path / "flat", layout="flat")
  builder = tfds.builder("casia_v1", data_dir=str(tmp_path / "data"))
  items = builder._items(str(root))
  assert sum(i.mask is not None for i in items["test"]) == len(CASIA_V1)
  # The ground truth author's renamed copy beside the originals: only the copy is used.
  modified = root / "CASIA 1.0 dataset" / "Modified Tp" / "Tp" / "Sp"
  for i, (_, _, mask, _) in enumerate(CASIA_V1):
    _photo(modified / f"{mask}.jpg", i)
  items = builder._items(str(root))["test"]
  assert len(items) == len(CASIA_V1)
  assert all("Modified Tp" in i.image and i.mask for i in items)


def test_casia_v1_turns_back_a_mask_drawn_on_the_upright_photo(tmp_path, caplog):
  root = tmp_path / "manual"
  region = (slice(2, 8), slice(3, 12))  # asymmetric: the wrong quarter turn lands elsewhere
  au = _photo(root / "Au" / "Au_sec_0012.jpg", 1)
  _photo(root / "Au" / "Au_ani_0007.jpg", 2)
  _photo(root / "Sp" / "Sp_D_CNN_A_sec0012_ani0007_0275.jpg", 3, like=au, region=region)
  upright = np.rot90(_rows(region[0], cols=region[1]), -1)  # drawn on the photo turned upright
  os.makedirs(root / "GT", exist_ok=True)
  Image.fromarray(upright * 255).save(root / "GT" / "Sp_D_CNN_A_sec0012_ani0007_0275_gt.png")
  with caplog.at_level(logging.WARNING, logger="absl"):
    _, splits = _build("casia_v1", root, tmp_path / "data")
  (example,) = splits["test"]
  np.testing.assert_array_equal(example["mask"][..., 0], _rows(region[0], cols=region[1]))
  assert (
    "mask Sp_D_CNN_A_sec0012_ani0007_0275_gt.png is 24x32 (WxH), its image "
    "Sp_D_CNN_A_sec0012_ani0007_0275.jpg 32x24: turned back by a quarter turn "
    "counter-clockwise, told by comparing with Au_sec_0012.jpg" in caplog.text
  )
  # Without the authentic photos the turn cannot be told: skipped, saying why.
  k, why = casia.quarter_turn(
    str(root / "Sp" / "Sp_D_CNN_A_sec0012_ani0007_0275.jpg"),
    str(root / "GT" / "Sp_D_CNN_A_sec0012_ani0007_0275_gt.png"),
    {},
  )
  assert k is None and "no authentic photo" in why


def test_casia_v1_rule_four_pairs_only_where_the_leftover_mask_is_unambiguous(tmp_path):
  photo = str(_photo(tmp_path / "Sp_D_NRN_A_ant0063_nat0065_0443.jpg", 0))
  masks = {  # two leftover masks share id, technique and nat0065 with the photo
    "Sp_D_NRN_A_nat0063_nat0065_0443": "a_gt.png",
    "Sp_D_NRN_A_pla0001_nat0065_0443": "b_gt.png",
  }
  (item,) = casia.pair_tampered("casia_v1", [photo], masks, casia.CorrectionTable())
  assert item.mask is None and "no ground-truth mask" in item.missing_reason


def test_casia_v2_applies_its_file_name_corrections_and_resolves_mask_sizes(tmp_path, caplog):
  root = tmp_path / "manual"
  data, gt = root / "CASIA2.0_revised", root / "Gt"  # SunnyHaze's corrected release: Gt/
  _photo(data / "Au" / "Au_ani_00001.jpg", 0)
  photos = {
    # The photo keeps its original name; the ground truth and the table use the corrected one.
    "Tp_S_NRN_M_N_cha00085_ani10104_10029.tif": ("Tp_D_NRN_M_N_cha00085_ani10104_10029", 1),
    "Tp_D_CRN_S_N_nat00033_cha00086_11502.jpg": ("Tp_D_CRN_S_N_nat00033_cha00086_11502", 2),
    # A mask at twice the photo's resolution: resized, logged.
    "Tp_S_NNN_S_N_pla20095_pla20095_02347.tif": ("Tp_S_NNN_S_N_pla20095_pla20095_02347", 3),
    # A transposed mask whose authentic photos are not there: skipped, saying why.
    "Tp_D_CNN_M_N_sec00011_cha00085_11227.jpg": ("Tp_D_CNN_M_N_sec00011_cha00085_11227", 4),
  }
  for i, (photo, (mask, rows)) in enumerate(photos.items()):
    _photo(data / "Tp" / photo, 10 + i)
    if "02347" in photo:
      _mask(gt / f"{mask}_gt.png", slice(2 * rows, 2 * rows + 4), size=(48, 64))
    elif "11227" in photo:
      _mask(gt / f"{mask}_gt.png", slice(rows, rows + 2), size=SIZE[::-1])
    else:
      _mask(gt / f"{mask}_gt.png", slice(rows, rows + 2))
  before, after = (
    "Tp_S_NRN_M_N_cha00085_ani10104_10029.tif",
    "Tp_D_NRN_M_N_cha00085_ani10104_10029.tif",
  )
  _write_xlsx(
    root / "Notes" / "fileNamesCorrection.xlsx",
    {
      "Incorrect file names": [
        [None, "Original file name", "Correct file name", "Note", "Command"],
        [],
        ["1", before, after, "S -> D", f'=ren "{before}" "{after}"'],
      ],
      "Duplicate images": [["Duplicate images"], [], ["Au_ani_10140.jpg", "Au_ani_20016.jpg"]],
    },
  )
  with caplog.at_level(logging.INFO, logger="absl"):
    builder, splits = _build("casia_v2", root, tmp_path / "data")
  examples = _by_name(e for split in splits.values() for e in split)
  assert sorted(examples) == sorted([p for p in photos if "11227" not in p] + ["Au_ani_00001.jpg"])
  for photo, (_, rows) in photos.items():
    if "11227" not in photo:
      np.testing.assert_array_equal(
        examples[photo]["mask"][..., 0], _rows(slice(rows, rows + 2)), err_msg=photo
      )
  assert "Tp_S_NRN_M_N_cha00085_ani10104_10029.tif paired via the ground truth's correction" in (
    caplog.text
  )
  assert (
    "mask Tp_S_NNN_S_N_pla20095_pla20095_02347_gt.png is 64x48 (WxH) but its image "
    "Tp_S_NNN_S_N_pla20095_pla20095_02347.tif is 32x24: same aspect ratio, the mask is resized"
    in caplog.text
  )
  ((skipped, reason),) = builder.skipped
  assert skipped.endswith("Tp_D_CNN_M_N_sec00011_cha00085_11227.jpg")
  assert "is 24x32 (WxH), its image" in reason and "no authentic photo" in reason


def test_coverage_resizes_rescaled_masks_skips_masks_of_another_crop_and_logs_both(
  tmp_path, caplog
):
  root = tmp_path / "manual"
  for n in (1, 55, 57):
    _photo(root / "image" / f"{n}.tif", n)
    _photo(root / "image" / f"{n}t.tif", 100 + n)
    _mask(root / "mask" / f"{n}copy.tif", slice(20, 22))
    _mask(root / "mask" / f"{n}paste.tif", slice(0, 24))
  _mask(root / "mask" / "1forged.tif", slice(3, 7))
  _mask(root / "mask" / "55forged.tif", slice(6, 12), size=(36, 48))  # 1.5x: same aspect ratio
  _mask(root / "mask" / "57forged.tif", slice(3, 7), size=(24, 40))  # another crop (wider)
  with caplog.at_level(logging.WARNING, logger="absl"):
    builder, splits = _build("coverage", root, tmp_path / "data")
  test = _by_name(splits["test"])
  assert sorted(test) == ["1t.tif", "55t.tif"] and len(splits["authentic"]) == 3
  np.testing.assert_array_equal(test["1t.tif"]["mask"][..., 0], _rows(slice(3, 7)))
  np.testing.assert_array_equal(test["55t.tif"]["mask"][..., 0], _rows(slice(4, 8)))
  assert (
    "coverage: mask 55forged.tif is 48x36 (WxH) but its image 55t.tif is 32x24: same aspect "
    "ratio, the mask is resized to the image (nearest neighbour)." in caplog.text
  )
  ((skipped, reason),) = builder.skipped
  assert os.path.basename(skipped) == "57t.tif"
  assert reason.startswith("mask 57forged.tif is 40x24 (WxH) but its image 57t.tif is 32x24")
  assert f"{os.path.join('image', '57t.tif')}: {reason}" in caplog.text


def test_columbia_reads_nested_folders_and_only_the_edgemask_of_each_photo(tmp_path):
  root = tmp_path / "manual"
  splc = root / "4cam_splc"
  _photo(splc / "4cam_splc" / "canong3_canonxt_sub_01.tif", 0)  # nested one level deeper
  _photo(splc / "4cam_splc" / "nikond70_kodakdcs330_sub_26.tif", 1)
  for stem, rows in (
    ("canong3_canonxt_sub_01", slice(2, 6)),
    ("nikond70_kodakdcs330_sub_26", slice(9, 15)),
  ):
    rgb = np.zeros((*SIZE, 3), np.uint8)
    rgb[...] = (200, 0, 0)  # the host photo's region
    rgb[rows] = (0, 200, 0)  # the spliced-in region
    rgb[rows.stop] = (0, 255, 0)  # brighter near the boundary
    os.makedirs(splc / "edgemask", exist_ok=True)
    Image.fromarray(rgb).save(splc / "edgemask" / f"{stem}_edgemask.jpg", quality=95, subsampling=0)
  _mask(splc / "edgemask" / "canong3_canonxt_sub_01_edgemask_3.jpg", slice(0, 24))  # a variant
  _photo(root / "4cam_auth" / "4cam_auth" / "canong3_02_sub_01.tif", 2)
  _photo(root / "4cam_auth" / "4cam_auth" / "nikond70_05_sub_03.bmp", 3)
  _, splits = _build("columbia", root, tmp_path / "data")
  test = _by_name(splits["test"])
  np.testing.assert_array_equal(
    test["canong3_canonxt_sub_01.tif"]["mask"][..., 0], _rows(slice(2, 7))
  )
  np.testing.assert_array_equal(
    test["nikond70_kodakdcs330_sub_26.tif"]["mask"][..., 0], _rows(slice(9, 16))
  )
  assert sorted(_by_name(splits["authentic"])) == [
    "canong3_02_sub_01.tif",
    "nikond70_05_sub_03.bmp",
  ]


def test_nist16_pairs_probes_with_masks_of_other_numbers_through_the_reference(tmp_path):
  root = tmp_path / "manual"
  base = root / "NC2016_Test0613"  # manual_dir holds the unpacked folder
  header = (
    "TaskID|ProbeFileID|ProbeFileName|ProbeMaskFileName|DonorFileID|DonorFileName|"
    "DonorMaskFileName|IsTarget|ProbePostProcessed|DonorPostProcessed|ManipulationQuality|"
    "IsManipulationTypeRemoval|IsManipulationTypeSplice|IsManipulationTypeCopyClone|Collection|"
    "BaseFileName|Lighting|IsControl|CorrespondingControlFileName|SemanticConsistency"
  )
  rows = [header]
  for i, (probe, mask) in enumerate((("0128", "3942"), ("0130", "6409"), ("0674", "4907"))):
    _photo(base / "probe" / f"NC2016_{probe}.jpg", i)
    inverted = 255 - _rows(slice(i * 4, i * 4 + 3)) * 255
    os.makedirs(base / "reference" / "manipulation" / "mask", exist_ok=True)
    Image.fromarray(inverted).save(
      base / "reference" / "manipulation" / "mask" / f"NC2016_{mask}.png"
    )
    rows.append(
      f"Manipulation|NC2016_{probe}|probe/NC2016_{probe}.jpg|"
      f"reference/manipulation/mask/NC2016_{mask}.png||||Y|none||simple|N|Y|N|Nimble-SCI|"
      "world/NC2016_3272.jpg|same|N|probe/NC2016_7105.jpg|"
    )
  _photo(base / "probe" / "NC2016_7105.jpg", 9)
  rows.append("Manipulation|NC2016_7105|probe/NC2016_7105.jpg|||||N|none|||N|N|N|Nimble-SCI|||Y||")
  (base / "reference" / "manipulation" / "NC2016-manipulation-ref.csv").write_text("\n".join(rows))
  _, splits = _build("nist16", root, tmp_path / "data")
  examples = _by_name(e for split in splits.values() for e in split)
  assert len(examples) == 4 and examples["NC2016_7105.jpg"]["tampered"] == 0
  for i, probe in enumerate(("0128", "0130", "0674")):
    np.testing.assert_array_equal(
      examples[f"NC2016_{probe}.jpg"]["mask"][..., 0], _rows(slice(i * 4, i * 4 + 3))
    )


def test_imd2020_reads_both_naming_schemes_and_keeps_each_folder_in_one_split(tmp_path):
  root = tmp_path / "manual"
  photos = {  # folder -> (original, [(manipulated, rows)])
    "1a1ogs": ("1a1ogs_orig.jpg", [("c8tf5mq_0.png", slice(0, 3)), ("c8tf6aa_1.jpg", slice(3, 5))]),
    "1a3oag": ("1a3oag_orig.jpg", [("c8tt7fg_0.jpg", slice(5, 9))]),
    "z41": ("00109_orig.jpg", [("00109_fake.jpg", slice(9, 14))]),
  }
  for f, (folder, (original, manipulated)) in enumerate(photos.items()):
    _photo(root / folder / original, f)
    for i, (name, rows) in enumerate(manipulated):
      _photo(root / folder / name, 10 * f + i + 1)
      _mask(root / folder / f"{os.path.splitext(name)[0]}_mask.png", rows)
  _, splits = _build("imd2020", root, tmp_path / "data")
  examples = _by_name(e for split in splits.values() for e in split)
  assert len(examples) == 7
  for _, manipulated in photos.values():
    for name, rows in manipulated:
      np.testing.assert_array_equal(examples[name]["mask"][..., 0], _rows(rows), err_msg=name)
  folders = {}
  for split, split_examples in splits.items():
    for e in split_examples:
      folders.setdefault(os.path.dirname(e["file_name"].decode()), set()).add(split)
  assert sorted(folders) == sorted(photos) and all(len(s) == 1 for s in folders.values())


@pytest.mark.parametrize("rows", [[], [["Original file name", "Corrected file name"]]])
def test_casia_correction_table_without_renames_changes_nothing(tmp_path, rows):
  _write_xlsx(tmp_path / "t.xlsx", {"Sheet1": rows})
  table = casia.read_correction_table(str(tmp_path / "t.xlsx"))
  assert table.corrections == {} and table.sources == []
