r"""Builds this package's tfds datasets: ``python -m sdpal_jax.datasets.build``.

  python -m sdpal_jax.datasets.build NAME[/CONFIG] [NAME...] --manual_dir DIR \
      [--data_dir DIR] [--overwrite]

e.g. ``python -m sdpal_jax.datasets.build casia_v1 --manual_dir ~/data/CASIA1``.
It does what ``tfds build --imports sdpal_jax.datasets NAME --manual_dir DIR``
would, without Apache Beam: tensorflow-datasets' ``tfds`` command imports its
``convert_format`` sub-command, which needs the ``apache_beam`` module, at
start-up, so in an install without Beam (ours: Beam is large and none of our
builders uses it) every ``tfds`` sub-command stops with ``ModuleNotFoundError:
No module named 'apache_beam'``. With Beam installed, that ``tfds build`` line
works as well.

Each NAME is built with ``tfds.builder(NAME, data_dir=...).download_and_prepare(
download_config=tfds.download.DownloadConfig(manual_dir=DIR))``: the files are
read from ``--manual_dir`` (each builder's ``MANUAL_DOWNLOAD_INSTRUCTIONS``
says where each file must go; they are printed when a file is missing) and
the prepared dataset goes to ``--data_dir`` (default: tfds',
``~/tensorflow_datasets``), from where ``sdpal-evaluate --datasets NAME:test``
and ``config.data.dataset`` read it. A dataset already built is kept unless
``--overwrite``.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow_datasets as tfds
from absl import flags

import sdpal_jax.datasets  # noqa: F401 (registers the builders)
from sdpal_jax import cli
from sdpal_jax.datasets import common
from sdpal_jax.errors import SdpalError


def our_builders() -> list[str]:
  """The tfds names this package registers (importing ``sdpal_jax.datasets``)."""
  classes = {}
  for name in tfds.list_builders(with_community_datasets=False):
    if name.startswith("_"):
      continue
    try:
      cls = tfds.builder_cls(name)
    except Exception:  # noqa: BLE001 (a name tfds itself cannot parse)
      continue
    if cls.__module__.startswith("sdpal_jax."):
      classes[name] = cls
  # A base class (e.g. common.ForgeryBuilder) has subclasses among them: not buildable.
  return sorted(
    name
    for name, cls in classes.items()
    if not any(other is not cls and issubclass(other, cls) for other in classes.values())
  )


def build(
  name: str,
  *,
  manual_dir: str | None = None,
  data_dir: str | None = None,
  overwrite: bool = False,
) -> dict[str, int]:
  """Prepares tfds dataset ``name`` (``NAME[/CONFIG]``); returns ``{split: examples}``."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises DatasetNotFoundError and friends
    raise SdpalError(
      f"{name}: not a buildable tfds dataset ({str(e).strip().splitlines()[0]}); this package's: "
      f"{', '.join(our_builders())}."
    ) from e
  mode = (
    tfds.download.GenerateMode.FORCE_REDOWNLOAD
    if overwrite
    else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
  )
  config = tfds.download.DownloadConfig(manual_dir=manual_dir, download_mode=mode)
  try:
    builder = common.prepare_tolerating_concurrent_build(builder, name, data_dir, config)
  except SdpalError:
    raise
  except Exception as e:  # a builder's missing-file error, tfds' missing manual_dir, ...
    instructions = getattr(type(builder), "MANUAL_DOWNLOAD_INSTRUCTIONS", "") or ""
    where = f"\n--manual_dir must hold:\n{instructions.rstrip()}" if instructions.strip() else ""
    raise SdpalError(f"{name}: build failed ({type(e).__name__}: {e}){where}") from e
  return {split: info.num_examples for split, info in builder.info.splits.items()}


def _define_flags() -> None:
  flags.DEFINE_string("manual_dir", None, "Folder with the dataset's downloaded files.")
  flags.DEFINE_string("data_dir", None, "Where tfds datasets live (default ~/tensorflow_datasets).")
  flags.DEFINE_bool("overwrite", False, "Rebuild even if the dataset is already prepared.")


def main(argv: Sequence[str]) -> int:
  names = list(argv[1:])
  if not names:
    raise SdpalError(
      "no dataset named: python -m sdpal_jax.datasets.build NAME[/CONFIG] --manual_dir DIR; "
      f"NAME one of {', '.join(our_builders())}."
    )
  flag_values = flags.FLAGS
  for name in names:
    splits = build(
      name,
      manual_dir=flag_values.manual_dir,
      data_dir=flag_values.data_dir,
      overwrite=flag_values.overwrite,
    )
    counts = ", ".join(f"{split} {count}" for split, count in sorted(splits.items()))
    print(f"built {name}: {counts}")
  return 0


def run_main() -> None:
  """Command-line entry point."""
  cli.run(main, _define_flags)


if __name__ == "__main__":
  run_main()
