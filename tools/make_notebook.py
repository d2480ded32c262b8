"""Writes notebooks/sdpal_colab.ipynb from the cells below.

Edit the notebook here, then run ``python tools/make_notebook.py``; the suite
(tests/test_notebook.py) executes the written notebook headless on CPU.
"""

import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
  new_markdown_cell("""# SDPAL in JAX on a Colab TPU

Train SDPAL (multi-order correlation features, a random walk over the pixel-affinity graph,
differential attention) on all 8 TPU cores, evaluate it with the paper's pixel F1/AUC and look at
its predictions.

1. *Runtime → Change runtime type → TPU* (v2-8 or newer).
2. Run the cells in order. By default the model trains on `synthetic_forgery`, a forgery set
   generated locally from photos bundled with scikit-image/scikit-learn/matplotlib (no download).
   To use your own data, put it on Google Drive as a `Tp/` + `Gt/` folder or a release-style `.lst`
   file and set `DRIVE_DATASET` below.

The test suite runs this notebook headless on CPU with `SDPAL_NOTEBOOK_SMOKE=1`, which switches to
a tiny config; its installation cell installs the test's own checkout (`SDPAL_REPO_DIR`) with
`SDPAL_PIP_ARGS` (e.g. `--no-deps`) through the same code path as on Colab."""),
  new_code_cell("""import os
import sys

SMOKE = os.environ.get("SDPAL_NOTEBOOK_SMOKE") == "1"
# The repository to install from (your fork, a branch: REPO_URL = "URL", REPO_BRANCH = "name").
REPO_URL = os.environ.get("SDPAL_REPO_URL", "https://github.com/sdpal-jax/sdpal_jax")
REPO_BRANCH = os.environ.get("SDPAL_REPO_BRANCH", "")  # "" = the default branch
# Where it is cloned; an existing checkout there is installed as it is.
REPO_DIR = os.environ.get("SDPAL_REPO_DIR", "/content/sdpal_jax")
PIP_ARGS = os.environ.get("SDPAL_PIP_ARGS", "").split()  # extra `pip install` arguments
WORKDIR = os.environ.get("SDPAL_WORKDIR", "/content/sdpal_workdir")
DRIVE_DATASET = ""  # e.g. "/content/drive/MyDrive/forgeries" (a Tp/+Gt/ folder or a .lst file)
CONFIG = "tiny" if SMOKE else "quickstart"
CONFIG_ARG = None if SMOKE else "tpu"
print(f"config {CONFIG}:{CONFIG_ARG}, workdir {WORKDIR}")"""),
  new_markdown_cell(
    "## Install\nClones `REPO_URL` into `REPO_DIR` (unless a checkout is already there) and "
    "installs it with its dependencies (a few minutes; Colab's TPU runtime already has JAX for "
    "its TPU)."
  ),
  new_code_cell("""import subprocess

if not os.path.isdir(REPO_DIR):
  branch = ["--branch", REPO_BRANCH] if REPO_BRANCH else []
  subprocess.run(["git", "clone", "--depth", "1", *branch, REPO_URL, REPO_DIR], check=True)
install = [sys.executable, "-m", "pip", "install", "-q", *PIP_ARGS, "-e", REPO_DIR]
subprocess.run(install, check=True)
# A running kernel reads new .pth files only when it restarts: import from the checkout now.
if REPO_DIR not in sys.path:
  sys.path.insert(0, REPO_DIR)
print("installed sdpal_jax from", REPO_DIR, "with", " ".join(install[3:]))"""),
  new_markdown_cell(
    "## Devices\nOn a TPU runtime this lists 8 TPU cores; the batch is split across all of them."
  ),
  new_code_cell("""import jax

print(jax.devices())
print("devices:", jax.device_count(), "processes:", jax.process_count())"""),
  new_markdown_cell(
    "## Data and config\nOptionally mount Google Drive and point the config at your own dataset."
  ),
  new_code_cell("""from sdpal_jax import configs

config = configs.load(CONFIG if CONFIG_ARG is None else f"{CONFIG}:{CONFIG_ARG}")
if DRIVE_DATASET:
  from google.colab import drive

  drive.mount("/content/drive")
  config.data.dataset = DRIVE_DATASET
if SMOKE:
  config.num_train_steps = 2
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.global_batch_size = max(2, jax.device_count())
config.global_batch_size -= config.global_batch_size % jax.device_count()
print(config.data.dataset, config.preprocess.image_size, "batch", config.global_batch_size)"""),
  new_markdown_cell("""## Train
Builds the dataset on first use, trains with checkpoints in `WORKDIR` (rerunning resumes from the
latest) and keeps the best checkpoint by validation F1. Progress and metrics also go to TensorBoard:
`%load_ext tensorboard` then `%tensorboard --logdir $WORKDIR`."""),
  new_code_cell("""from sdpal_jax import train

result = train.train_and_evaluate(config, WORKDIR)
validation = result["eval"]["validation"]
print("step", result["step"], "validation", {k: round(float(validation[k]), 4) for k in ("pixel_f1", "pixel_auc")})"""),
  new_markdown_cell(
    "## Evaluate\nThe paper's dataset protocol (pixel F1 at 0.5, pooled AUC) on the test split, with ROC/PR curves."
  ),
  new_code_cell("""test_split = config.data.dataset if os.path.exists(config.data.dataset) else f"{config.data.dataset}:test"
eval_dir = os.path.join(WORKDIR, "evaluation")
subprocess.run(
  [sys.executable, "-m", "sdpal_jax.evaluate", "--workdir", WORKDIR, "--datasets", test_split,
   "--output_dir", eval_dir, "--figures", "--num_examples", "2"],
  check=True,
)
print(open(os.path.join(eval_dir, "results.md")).read())"""),
  new_markdown_cell(
    "## Predictions\nImage, ground truth and predicted probability for a few test images."
  ),
  new_code_cell("""import matplotlib

if SMOKE:
  matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sdpal_jax.datasets.sources import open_source
from sdpal_jax.inference import Predictor

predictor = Predictor.from_checkpoint(WORKDIR)
examples = [e for _, e in zip(range(3), open_source(test_split), strict=False)]
fig, axes = plt.subplots(len(examples), 3, figsize=(9, 3 * len(examples)), squeeze=False)
for row, example in zip(axes, examples, strict=True):
  prob = predictor.predict_image(example["image"])
  for ax, picture, title in zip(row, (example["image"], example["mask"], prob), ("image", "ground truth", "probability"), strict=True):
    ax.imshow(picture, cmap=None if picture.ndim == 3 else "magma", vmin=0, vmax=1 if picture.ndim == 2 else None)
    ax.set_title(title)
    ax.axis("off")
fig.tight_layout()
fig.savefig(os.path.join(WORKDIR, "predictions.png"))
plt.show()"""),
]
nb = new_notebook(
  cells=cells,
  metadata={
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "accelerator": "TPU",
    "colab": {"provenance": []},
  },
)
nbformat.write(nb, pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "sdpal_colab.ipynb")
