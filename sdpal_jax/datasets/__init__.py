"""tfds builders for forgery datasets; importing this package registers them.

Real datasets (manual download, see each builder's MANUAL_DOWNLOAD_INSTRUCTIONS):
``casia_v1``, ``casia_v2`` (configs ``default``, ``release_split``), ``columbia``,
``coverage``, ``nist16``, ``imd2020``, ``fantastic_reality``, ``tampcoco`` (configs
``sp``, ``cm``, ``bcm``, ``bcmc``), ``cocoglide``, ``realistic_tampering``; generic
sources ``forgery_list``, ``imdl_json``, ``forgery_folder``; and the locally generated
``synthetic_forgery``.

Build a real one from its download with ``python -m sdpal_jax.datasets.build NAME
--manual_dir DIR`` (``sdpal_jax.datasets.build``; ``tfds build`` needs Apache Beam).
"""

from sdpal_jax.datasets import (  # noqa: F401 (importing registers the builders)
  casia,
  cocoglide,
  columbia,
  coverage,
  fantastic_reality,
  generic,
  imd2020,
  nist16,
  realistic_tampering,
  synthetic_forgery,
  tampcoco,
)
