"""tools/source_disjoint_split.py: no CASIA source photo on both sides of the split."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import source_disjoint_split as split  # noqa: E402


def test_source_photos_are_read_from_casia_v1_and_v2_names():
  assert split.source_photos("Tp/Sp/Sp_D_CND_A_pla0005_pla0023_0281.jpg") == ("pla0005", "pla0023")
  assert split.source_photos("Sp_S_NRD_A_ani0040_ani0054.0257.jpg") == ("ani0040", "ani0054")
  assert split.source_photos("Sp_S_NNN_C_txt0002_txt0002_0002.jpg") == ("txt0002",)
  assert split.source_photos("Tp_D_CRN_S_N_cha00063_art00014_11818.jpg") == ("art00014", "cha00063")
  assert split.source_photos("Au_ani_0001.jpg") == ()


def test_chains_of_shared_photos_form_one_group_and_stay_on_one_side():
  names = [
    "Sp_D_A_aaa0001_bbb0001_0001",  # a-b
    "Sp_D_A_bbb0001_ccc0001_0002",  # b-c: joins the first through b
    "Sp_D_A_ddd0001_eee0001_0003",  # d-e: alone
    "Sp_D_A_ccc0001_fff0001_0004",  # c-f: joins the first two through c
    "Sp_S_A_ggg0001_ggg0001_0005",  # copy-move of g: alone
  ]
  groups = split.group_by_shared_photos(names)
  assert groups[0] == groups[1] == groups[3]
  assert len({groups[0], groups[2], groups[4]}) == 3
  for seed in range(10):
    sides = split.assign_sides(groups, test_fraction=0.3, seed=seed)
    assert sides[0] == sides[1] == sides[3]
    train = {
      p for n, s in zip(names, sides, strict=True) if s == "train" for p in split.source_photos(n)
    }
    test = {
      p for n, s in zip(names, sides, strict=True) if s == "test" for p in split.source_photos(n)
    }
    assert not train & test and test


def test_test_side_takes_about_the_asked_fraction_of_many_small_groups():
  names = [
    f"Sp_D_A_x{i:04d}_y{i:04d}_{i:04d}".replace("x", "xxa").replace("y", "yya") for i in range(200)
  ]
  sides = split.assign_sides(split.group_by_shared_photos(names), test_fraction=0.3, seed=0)
  assert sides.count("test") == 60
