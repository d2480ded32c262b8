r"""Converts PyTorch weights into sdpal_jax checkpoints.

  # the release's FakeLocator state dict -> a directory predict/evaluate accept
  python tools/convert_torch_checkpoint.py --input FILE.pth --output_dir DIR

  # an ImageNet ResNet (torchvision resnetXX or mmcls resnetXX_v1c) -> backbone init for training
  python tools/convert_torch_checkpoint.py --kind backbone --depth 101 --deep_stem \
      --input resnet101_v1c.pth --output_dir DIR      # writes DIR/backbone (orbax PyTree)

The release checkpoint carries the release's preprocessing: raw 0..255 pixels,
resized to 256x256, and its fixed 256x256 output (resized back to each photo's
size by ``predict``).
"""

from __future__ import annotations

import argparse
import os
import sys

import ml_collections

from sdpal_jax import checkpoint, model_config
from sdpal_jax.errors import SdpalError

BACKBONE_ITEM = "backbone"


def convert_release(input_path: str, output_dir: str) -> str:
  """Release state dict -> checkpoint directory (config.json + checkpoints/0/model)."""
  from sdpal_jax import torch_import  # noqa: PLC0415

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
  import orbax.checkpoint as ocp  # noqa: PLC0415

  from sdpal_jax import torch_import  # noqa: PLC0415

  state_dict = torch_import.load_torch_state_dict(input_path)
  variables = torch_import.convert_resnet_state_dict(
    state_dict, depth=depth, deep_stem=deep_stem, source=input_path
  )
  path = os.path.abspath(os.path.join(output_dir, BACKBONE_ITEM))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, variables, force=True)
  return path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--input", required=True, help="PyTorch .pth state dict")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--kind", choices=["release", "backbone"], default="release")
  parser.add_argument("--depth", type=int, default=101, help="ResNet depth (backbone kind)")
  parser.add_argument(
    "--deep_stem",
    action=argparse.BooleanOptionalAction,
    default=True,
    help="v1c deep stem (mmcls *_v1c files); --no-deep_stem for torchvision files",
  )
  args = parser.parse_args(argv)
  try:
    if args.kind == "release":
      out = convert_release(args.input, args.output_dir)
    else:
      out = convert_backbone(
        args.input, args.output_dir, depth=args.depth, deep_stem=args.deep_stem
      )
  except ImportError as e:
    print(
      f"error: conversion needs the torch extra (pip install -e '.[torch]'): {e}", file=sys.stderr
    )
    return 2
  except SdpalError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
