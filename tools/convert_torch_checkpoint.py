"""Kept for existing scripts: the converter is ``sdpal_jax.convert`` (``sdpal-convert``)."""

from sdpal_jax.convert import convert_backbone, convert_release, run_main  # noqa: F401

if __name__ == "__main__":
  run_main()
