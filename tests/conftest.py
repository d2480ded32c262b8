"""Test-wide settings: a private tfds data dir so builds never touch the user's, and the
longest test files first so that two pytest-xdist workers (``-n 2 --dist loadfile``) finish
together instead of one running a long file alone at the end."""

import os
import sys
import tempfile

os.environ.setdefault("TFDS_DATA_DIR", tempfile.mkdtemp(prefix="sdpal_tfds_"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
  # Several workers may share one GPU: none may take JAX's default 75% of its memory up front.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(__file__))

# Files whose tests take minutes on 2 cores (a CI run's --durations, 2026-11-26), longest first.
# Every other file keeps its place after them; the order of tests within a file is unchanged.
LONGEST_FILES_FIRST = (
  "test_train.py",
  "test_multiprocess.py",
  "test_benchmark.py",
  "test_configs.py",
  "test_compilation.py",
  "test_convolution.py",
  "test_notebook.py",
)


def pytest_collection_modifyitems(config, items):
  del config

  def rank(item):
    name = os.path.basename(str(item.path))
    return (
      LONGEST_FILES_FIRST.index(name) if name in LONGEST_FILES_FIRST else len(LONGEST_FILES_FIRST)
    )

  items.sort(key=rank)  # stable: the order within each file and among the rest is kept
