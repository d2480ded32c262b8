r"""Converts PyTorch weights into sdpal_jax checkpoints (needs the ``torch`` extra).

  # the release's FakeLocator state dict -> a directory predict/evaluate accept
  sdpal-convert --input FILE.pth --output_dir DIR
  #   (also: python -m sdpal_jax.convert ..., python tools/convert_torch_checkpoint.py ...)

  # an ImageNet ResNet (mmcls resnetXX_v1c, or torchvision resnetXX with --nodeep_stem)
  # -> backbone init for training: writes DIR/backbone (orbax PyTree); train with
  # --config.init_from=DIR
  sdpal-convert --kind backbone --depth 101 --input resnet101_v1c.pth --output_dir DIR

The release checkpoint carries the release's preprocessing: raw 0..255 pixels,
resized to 256x256, and its fixed 256x256 output (resized back to each photo's
size by ``predict``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections
import orbax.checkpoint as ocp
from absl import flags

from sdpal_jax import checkpoint, cli, model_config, torch_import
from sdpal_jax.errors import SdpalError

BACKBONE_ITEM = checkpoint.BACKBONE_ITEM


def convert_release(input_path: str, output_dir: str) -> str:
  """Release state dict -> checkpoint directory (config.json + checkpoints/0/model)."""
  state_dict = torch_import.load_torch_state_dict(input_path)
  config = ml_collections.ConfigDict()
  config.model = model_config.release_model_config()
  config.preprocess = model_config.default_preprocess_config()
  config.preprocess.image_size = (256, 256)
  config.preprocess.normalization = "raw"
  config.source = {"kind": "release", "file": os.path.abspath(input_path)}
  variables = torch_import.convert_release_state_dict(state_dict, config.model, source=input_path)
  return checkpoint.save_inference_checkpoint(
    output_dir, variables=variables, config=config, step=0
  )


def convert_backbone(input_path: str, output_dir: str, *, depth: int, deep_stem: bool) -> str:
  """ImageNet ResNet -> ``output_dir/backbone`` (orbax PyTree of {"params","batch_stats"})."""
  state_dict = torch_import.load_torch_state_dict(input_path)
  variables = torch_import.convert_resnet_state_dict(
    state_dict, depth=depth, deep_stem=deep_stem, source=input_path
  )
  path = os.path.abspath(os.path.join(output_dir, BACKBONE_ITEM))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, variables, force=True)
  return path


def _define_flags() -> None:
  flags.DEFINE_string("input", None, "PyTorch .pth state dict.")
  flags.DEFINE_string("output_dir", None, "Directory to write (created).")
  flags.DEFINE_enum("kind", "release", ["release", "backbone"], "What the file holds.")
  flags.DEFINE_integer("depth", 101, "ResNet depth (--kind=backbone).")
  flags.DEFINE_bool(
    "deep_stem", True, "v1c deep stem (mmcls *_v1c files); --nodeep_stem for torchvision files."
  )
  flags.mark_flags_as_required(["input", "output_dir"])


def main(argv: Sequence[str]) -> int:
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise SdpalError(f"unexpected arguments {list(argv[1:])}; see --help.")
  try:
    if FLAGS.kind == "release":
      out = convert_release(FLAGS.input, FLAGS.output_dir)
    else:
      out = convert_backbone(
        FLAGS.input, FLAGS.output_dir, depth=FLAGS.depth, deep_stem=FLAGS.deep_stem
      )
  except ImportError as e:
    raise SdpalError(
      f"conversion needs the torch extra (pip install 'sdpal_jax[torch]'): {e}"
    ) from e
  print(f"wrote {out}")
  if FLAGS.kind == "backbone":
    print(f"train from it with --config.init_from={os.path.abspath(FLAGS.output_dir)}")
  return 0


def run_main() -> None:
  """Console entry point (``sdpal-convert``)."""
  cli.run(main, _define_flags)


if __name__ == "__main__":
  run_main()
