"""Test-wide settings: a private tfds data dir so builds never touch the user's."""

import os
import sys
import tempfile

os.environ.setdefault("TFDS_DATA_DIR", tempfile.mkdtemp(prefix="sdpal_tfds_"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))
