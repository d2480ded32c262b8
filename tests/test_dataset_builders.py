"""Each real-dataset builder builds from a generated tree in its dataset's layout and mask convention."""

import hashlib
import logging
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from dataset_fixtures import build_from_manual_dir as _build
from PIL import Image

import sdpal_jax.datasets  # noqa: F401 (registers the builders)
from sdpal_jax.errors import SdpalError

SIZE = (24, 32)  # H, W


def _photo(path, seed, size=SIZE, mode="RGB"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  array = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
  image = Image.fromarray(array)
  if mode != "RGB":
    image = image.convert(mode)
  image.save(path)


def _mask(path, rows, size=SIZE, inverted=False, colour=None):
  """A mask marking ``rows`` (a slice) as tampered, in the dataset's convention."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  mask = np.zeros(size, np.uint8)
  mask[rows] = 255
  if inverted:
    mask = 255 - mask
  if colour is not None:  # colour-coded: tampered rows in ``colour``, the rest red
    rgb = np.zeros((*size, 3), np.uint8)
    rgb[...] = (255, 0, 0)
    rgb[rows] = colour
    Image.fromarray(rgb).save(path, quality=95)
    return
  Image.fromarray(mask).save(path)


def _check_rows_tampered(example, rows):
  expected = np.zeros(example["mask"].shape[:2], np.uint8)
  expected[rows] = 1
  np.testing.assert_array_equal(example["mask"][..., 0], expected)
  assert example["tampered"] == 1


def test_casia_v1_pairs_tampered_photos_with_community_gt(tmp_path):
  root = tmp_path / "manual"
  data = root / "CASIA 1.0 dataset"
  _photo(data / "Au" / "Au_ani_0001.jpg", 0)
  _photo(data / "Modified Tp" / "Tp" / "Sp" / "Sp_D_NRN_A_ani0001_ani0002_0001.jpg", 1)
  _photo(data / "Modified Tp" / "Tp" / "CM" / "Sp_S_CND_A_pla0005_pla0005_0001.jpg", 2)
  _mask(
    root / "CASIA 1.0 groundtruth" / "Sp" / "Sp_D_NRN_A_ani0001_ani0002_0001_gt.png", slice(0, 5)
  )
  _mask(
    root / "CASIA 1.0 groundtruth" / "CM" / "Sp_S_CND_A_pla0005_pla0005_0001_gt.png", slice(3, 9)
  )
  _, splits = _build("casia_v1", root, tmp_path / "data")
  assert len(splits["test"]) == 2 and len(splits["authentic"]) == 1
  by_name = {e["file_name"].decode().split("/")[-1]: e for e in splits["test"]}
  _check_rows_tampered(by_name["Sp_D_NRN_A_ani0001_ani0002_0001.jpg"], slice(0, 5))
  assert splits["authentic"][0]["mask"].sum() == 0 and splits["authentic"][0]["tampered"] == 0


@pytest.fixture(scope="module")
def casia_v2_tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("casia_v2")
  data = root / "CASIA2.0_revised"
  names = []
  for i in range(6):
    name = f"Au_arc_{i:05d}.jpg"
    _photo(data / "Au" / name, i)
    names.append((name, None))
  for i in range(6):
    stem = f"Tp_D_CNN_M_N_art{i:05d}_arc{i:05d}_{10000 + i}"
    _photo(data / "Tp" / f"{stem}.jpg", 10 + i)
    _mask(root / "CASIA 2 Groundtruth" / f"{stem}_gt.png", slice(i, i + 4))
    names.append((f"{stem}.jpg", f"{stem}_gt.png"))
  return root, names


def test_casia_v2_default_split_covers_every_photo_once(casia_v2_tree, tmp_path):
  root, names = casia_v2_tree
  _, splits = _build("casia_v2", root, tmp_path / "data")
  seen = [e["file_name"].decode().split("/")[-1] for s in splits.values() for e in s]
  assert sorted(seen) == sorted(n for n, _ in names)
  assert sum(int(e["tampered"]) for s in splits.values() for e in s) == 6
  # 90/10 by the file name's SHA-1: its first 8 hex digits as a fraction of 2^32, below 0.9.
  for split, examples in splits.items():
    for example in examples:
      name = example["file_name"].decode().split("/")[-1]
      value = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 2**32
      assert split == ("train" if value < 0.9 else "validation"), name


def test_casia_v2_release_split_follows_the_release_lists_by_file_name(casia_v2_tree, tmp_path):
  root, names = casia_v2_tree
  release = "/work/shared/data/casia_v2_release_split"
  shared = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "casia_v2_release_split"
  )
  lists = next((d for d in (shared, release) if os.path.isdir(d)), None)
  if lists is None:
    pytest.skip("the release's CASIA v2 lists (../shared/data/casia_v2_release_split) are not here")
  # Lists in the release's format (authors' absolute paths) that name some of our photos.
  with open(os.path.join(lists, "CASIA_v2_train.lst")) as f:
    release_train = [line.strip() for line in f if line.strip()]
  assert len(release_train) == 11_294
  tampered = [n for n, m in names if m]
  au = [n for n, m in names if not m]
  (root / "CASIA_v2_train.lst").write_text(
    "\n".join([release_train[0]] + [f"/data/x/Tp/{n},/data/x/gt/{n}_gt.png" for n in tampered[:4]]
              + [f"/data/x/Au/{n},None" for n in au[:3]]) + "\n"
  )  # fmt: skip
  (root / "CASIA_v2_valid.lst").write_text(
    "\n".join([f"/data/x/Tp/{n},/data/x/gt/{n}_gt.png" for n in tampered[4:]]) + "\n"
  )
  try:
    builder, splits = _build("casia_v2/release_split", root, tmp_path / "data")
  finally:
    os.remove(root / "CASIA_v2_train.lst")
    os.remove(root / "CASIA_v2_valid.lst")
  assert len(splits["train"]) == 7 and len(splits["validation"]) == 2
  # The release's first line names a photo our tree lacks: skipped by name, not silently.
  assert any(os.path.basename(release_train[0].split(",")[0]) in p for p, _ in builder.skipped)


def test_columbia_reads_green_as_the_spliced_region_of_colour_masks(tmp_path):
  root = tmp_path / "manual"
  _photo(root / "4cam_splc" / "canong3_canonxt_sub_01.tif", 0)
  _mask(
    root / "4cam_splc" / "edgemask" / "canong3_canonxt_sub_01_edgemask.jpg",
    slice(4, 12),
    colour=(0, 255, 0),
  )
  _photo(root / "4cam_auth" / "canong3_02_sub_01.tif", 1)
  _, splits = _build("columbia", root, tmp_path / "data")
  _check_rows_tampered(splits["test"][0], slice(4, 12))
  assert len(splits["authentic"]) == 1


def test_coverage_uses_the_forged_mask_of_each_tampered_photo(tmp_path):
  root = tmp_path / "manual"
  for n in (1, 2):
    _photo(root / "image" / f"{n}.tif", n)
    _photo(root / "image" / f"{n}t.tif", 10 + n)
    _mask(root / "mask" / f"{n}forged.tif", slice(n, n + 3))
    _mask(root / "mask" / f"{n}copy.tif", slice(20, 22))
  _, splits = _build("coverage", root, tmp_path / "data")
  assert len(splits["test"]) == 2 and len(splits["authentic"]) == 2
  by_name = {e["file_name"].decode(): e for e in splits["test"]}
  _check_rows_tampered(by_name[os.path.join("image", "2t.tif")], slice(2, 5))


def test_nist16_masks_are_read_inverted_from_the_reference_csv(tmp_path):
  root = tmp_path / "manual"
  rows = ["TaskID|ProbeFileID|ProbeFileName|ProbeMaskFileName|IsTarget"]
  for i in range(4):
    _photo(root / "probe" / f"p{i}.jpg", i)
    _mask(root / "mask" / f"p{i}.png", slice(i, i + 2), inverted=True)
    rows.append(f"manipulation|p{i}|probe/p{i}.jpg|mask/p{i}.png|Y")
  _photo(root / "probe" / "world.jpg", 9)
  rows.append("manipulation|world|probe/world.jpg||N")
  (root / "reference" / "manipulation").mkdir(parents=True)
  (root / "reference" / "manipulation" / "NC2016-manipulation-ref.csv").write_text("\n".join(rows))
  _, splits = _build("nist16", root, tmp_path / "data")
  examples = {e["file_name"].decode(): e for s in splits.values() for e in s}
  assert len(examples) == 5
  _check_rows_tampered(examples[os.path.join("probe", "p3.jpg")], slice(3, 5))
  assert examples[os.path.join("probe", "world.jpg")]["tampered"] == 0


def _imd2020_layout(root):
  """Five IMD2020 folders, each a photo, its original and the photo's mask."""
  for i in range(5):
    folder = root / f"{i:04d}_src"
    _photo(folder / f"id{i}_orig.jpg", i)
    _photo(folder / f"id{i}_0.jpg", 10 + i)
    _mask(folder / f"id{i}_0_mask.png", slice(0, i + 1))
  return root


def test_imd2020_keeps_each_photo_with_its_original_and_mask(tmp_path):
  root = _imd2020_layout(tmp_path / "manual")
  _, splits = _build("imd2020", root, tmp_path / "data")
  examples = {e["file_name"].decode(): e for s in splits.values() for e in s}
  assert len(examples) == 10
  _check_rows_tampered(examples[os.path.join("0002_src", "id2_0.jpg")], slice(0, 3))
  for split in splits.values():  # a photo and its original land in the same split
    ids = {name.split("/")[-1].split("_")[0] for name in (e["file_name"].decode() for e in split)}
    for other in splits.values():
      if other is not split:
        assert not ids & {
          n.decode().split("/")[-1].split("_")[0] for n in (e["file_name"] for e in other)
        }


def test_imd2020_tampered_config_leaves_the_originals_out_of_the_same_splits(tmp_path):
  root = _imd2020_layout(tmp_path / "manual")
  _, every = _build("imd2020", root, tmp_path / "data")
  _, tampered = _build("imd2020/tampered", root, tmp_path / "data")
  for split, examples in every.items():
    names = {e["file_name"].decode() for e in examples if e["tampered"] == 1}
    assert {e["file_name"].decode() for e in tampered[split]} == names, split
  assert all(e["tampered"] == 1 for s in tampered.values() for e in s)
  assert sum(len(s) for s in tampered.values()) == 5


def test_fantastic_reality_cocoglide_and_realistic_tampering_layouts(tmp_path):
  fr = tmp_path / "fr"
  for i in range(3):
    _photo(fr / "ColorFakeImages" / f"f{i}.jpg", i)
    _mask(fr / "masks" / f"f{i}.png", slice(0, 2 + i))
    _photo(fr / "ColorRealImages" / f"r{i}.jpg", 10 + i)
  _, splits = _build("fantastic_reality", fr, tmp_path / "data")
  assert sum(len(s) for s in splits.values()) == 6

  glide = tmp_path / "glide"
  _photo(glide / "fake" / "glide_inpainting_val2017_1_up.png", 0)
  _mask(glide / "mask" / "glide_inpainting_val2017_1_mask.png", slice(5, 9))
  _photo(glide / "real" / "glide_inpainting_val2017_1_orig.png", 1)
  _, splits = _build("cocoglide", glide, tmp_path / "data")
  fake = next(e for e in splits["test"] if e["tampered"])
  _check_rows_tampered(fake, slice(5, 9))

  korus = tmp_path / "korus"
  _photo(korus / "Canon_60D" / "tampered-realistic" / "r0001.TIF", 0)
  _mask(korus / "Canon_60D" / "ground-truth" / "r0001.PNG", slice(2, 6))
  _photo(korus / "Canon_60D" / "pristine" / "r0001.TIF", 1)
  _, splits = _build("realistic_tampering", korus, tmp_path / "data")
  assert len(splits["test"]) == 2
  _check_rows_tampered(next(e for e in splits["test"] if e["tampered"]), slice(2, 6))


def test_tampcoco_subsets_read_catnet_lists_or_folders(tmp_path):
  root = tmp_path / "manual"
  lines = []
  for i in range(4):
    _photo(root / "sp_images" / f"{i}.jpg", i)
    _mask(root / "sp_masks" / f"{i}.png", slice(i, i + 2))
    lines.append(f"sp_images/{i}.jpg,sp_masks/{i}.png")
    _photo(root / "cm_images" / f"{i}.jpg", 10 + i)
    _mask(root / "cm_masks" / f"{i}.png", slice(0, 3))
  (root / "sp_COCO_list.txt").write_text("\n".join(lines))
  _, sp = _build("tampcoco/sp", root, tmp_path / "data")
  _, cm = _build("tampcoco/cm", root, tmp_path / "data")
  assert sum(len(s) for s in sp.values()) == 4 and sum(len(s) for s in cm.values()) == 4
  assert all(e["tampered"] == 1 for s in cm.values() for e in s)


def test_bad_files_are_skipped_by_name_and_odd_formats_are_read(tmp_path, caplog):
  root = tmp_path / "manual"
  good = [f"g{i}" for i in range(2)]
  for i, stem in enumerate(good):
    _photo(root / "Tp" / f"{stem}.png", i)
    _mask(root / "Gt" / f"{stem}.png", slice(0, 4))
  (root / "Tp" / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
  _mask(root / "Gt" / "corrupt.png", slice(0, 4))
  _photo(root / "Tp" / "no_mask.png", 5)
  _photo(root / "Tp" / "cmyk.jpg", 6, mode="CMYK")
  _mask(root / "Gt" / "cmyk.png", slice(0, 4))
  sixteen = (np.random.default_rng(7).integers(0, 65535, SIZE)).astype(np.uint16)
  Image.fromarray(sixteen).save(root / "Tp" / "deep.tif")
  _mask(root / "Gt" / "deep.png", slice(0, 4))
  _photo(root / "Tp" / "small_mask.png", 8)
  _mask(root / "Gt" / "small_mask.png", slice(0, 2), size=(12, 16))  # another size: resized
  rotated = Image.fromarray(np.zeros((*SIZE, 3), np.uint8))
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees on display
  rotated.save(root / "Tp" / "exif.jpg", exif=exif)
  _mask(root / "Gt" / "exif.png", slice(0, 4), size=(SIZE[1], SIZE[0]))
  with caplog.at_level(logging.WARNING):
    builder, splits = _build("forgery_folder", root, tmp_path / "data")
  names = {e["file_name"].decode(): e for e in splits["test"]}
  assert set(names) == {os.path.join("Tp", n) for n in
                        ("g0.png", "g1.png", "cmyk.jpg", "deep.tif", "small_mask.png", "exif.jpg")}  # fmt: skip
  assert names[os.path.join("Tp", "exif.jpg")]["image"].shape == (SIZE[1], SIZE[0], 3)
  assert names[os.path.join("Tp", "small_mask.png")]["mask"].shape[:2] == SIZE
  skipped = {os.path.basename(p): reason for p, reason in builder.skipped}
  assert set(skipped) == {"corrupt.jpg", "no_mask.png"}
  assert "corrupt.jpg" in caplog.text and "no_mask.png" in caplog.text


def test_missing_manual_dir_stops_with_the_download_instructions(tmp_path):
  builder = tfds.builder("columbia", data_dir=str(tmp_path / "data"))
  with pytest.raises(SdpalError, match="4cam_splc/edgemask"):
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "nowhere"))
    )
  (tmp_path / "empty").mkdir()
  with pytest.raises(SdpalError, match="Download instructions"):
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "empty"))
    )
