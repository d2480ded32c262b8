"""Result tables: percentages, best/second-best marks, the four file formats."""

import csv
import io
import json

from sdpal_jax import reporting

RESULTS = {
  "sdpal": {
    "data/casia.lst": {"pixel_auc": 0.9472, "pixel_f1": 0.8505},
    "imd": {"pixel_auc": 0.98, "pixel_f1": 0.91},
  },
  "safire": {
    "data/casia.lst": {"pixel_auc": 0.9423, "pixel_f1": 0.8496},
    "imd": {"pixel_auc": 0.95, "pixel_f1": 0.87},
  },
  "trufor": {
    "data/casia.lst": {"pixel_auc": 0.9365, "pixel_f1": 0.8600},
    "imd": {"pixel_auc": float("nan")},
  },
}


def test_markdown_marks_best_bold_and_second_underlined_in_percent():
  markdown = reporting.to_markdown(reporting.build_table(RESULTS))
  lines = markdown.splitlines()
  assert lines[0] == "| Model | casia AUC | casia F1 | imd AUC | imd F1 |"
  assert lines[2] == "| sdpal | **94.72** | <u>85.05</u> | **98.00** | **91.00** |"
  assert lines[3] == "| safire | <u>94.23</u> | 84.96 | <u>95.00</u> | <u>87.00</u> |"
  assert lines[4] == "| trufor | 93.65 | **86.00** | - | - |"


def test_single_row_has_no_emphasis():
  table = reporting.build_table({"only": RESULTS["sdpal"]})
  assert "**" not in reporting.to_markdown(table)
  assert "\\textbf" not in reporting.to_latex(table)


def test_latex_uses_textbf_underline_and_escapes_names():
  results = {"my_model": RESULTS["sdpal"], "b": RESULTS["safire"], "c": RESULTS["trufor"]}
  latex = reporting.to_latex(reporting.build_table(results))
  assert "\\multicolumn{2}{c}{casia}" in latex
  assert "my\\_model & \\textbf{94.72} & \\underline{85.05}" in latex
  assert latex.startswith("\\begin{tabular}{lcccc}") and latex.rstrip().endswith("\\end{tabular}")


def test_csv_has_plain_percentages():
  rows = list(csv.reader(io.StringIO(reporting.to_csv(reporting.build_table(RESULTS)))))
  assert rows[0] == ["Model", "casia AUC", "casia F1", "imd AUC", "imd F1"]
  assert rows[3] == ["trufor", "93.65", "86.00", "-", "-"]


def test_write_tables_and_json_keep_fractions_and_null_for_nan(tmp_path):
  table = reporting.build_table(RESULTS)
  paths = reporting.write_tables(table, str(tmp_path), "results")
  assert sorted(paths) == ["csv", "md", "tex"]
  assert (tmp_path / "results.md").read_text().startswith("| Model |")
  reporting.write_json(str(tmp_path / "results.json"), RESULTS)
  loaded = json.loads((tmp_path / "results.json").read_text())
  assert loaded["sdpal"]["data/casia.lst"]["pixel_f1"] == 0.8505
  assert loaded["trufor"]["imd"]["pixel_auc"] is None


def test_dataset_labels_are_short():
  assert reporting.dataset_label("/data/lists/CASIAv1.lst") == "CASIAv1"
  assert reporting.dataset_label("/data/coverage/") == "coverage"
  assert reporting.dataset_label("casia_v2:test") == "casia_v2:test"
