"""PyTorch state dicts -> Flax variables: the SDPAL release and ImageNet ResNets.

Files are read with ``torch.load(..., weights_only=True)``: tensors and plain
containers only, never arbitrary pickled objects. The expected tree comes from
``jax.eval_shape`` on our model, so every key and shape is checked; unknown,
missing and mis-shaped keys are reported together in one ``CheckpointError``.

Key layouts (facts about the public files, not code from them):
- the release's ``FakeLocator``: ``mscc.backbone_net.*`` (ResNet, deep stem as
  ``stem.{0,1,3,4,6,7}``), ``mscc.bottleneck{1,2,3}``, ``mscc.bottleneck_fusion``,
  ``fuse_conv``, ``diff_attn.to_{q1,k1,q2,k2,v}``, ``diff_attn.unify``,
  ``conv_refine.refine.{0,1,3,4}``, ``unet.{inc,down1-3,up1-3,outc}``; it also
  builds ``mscc.decoder.*``, which its forward pass never uses (ignored here);
- torchvision ResNets: ``conv1``/``bn1`` stem, ``layerL.j.convK``/``bnK``,
  ``downsample.{0,1}``, ``fc`` (ignored);
- mmcls ``resnet*_v1c``: deep stem ``stem.{0,1,3,4,6,7}``, optionally under a
  ``backbone.`` prefix, ``head.*`` (ignored).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from sdpal_jax.errors import CheckpointError
from sdpal_jax.models import ResNet, build_model

IGNORED_RELEASE_PREFIXES = ("mscc.decoder.",)
IGNORED_SUFFIXES = ("num_batches_tracked",)


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a ``.pth`` state dict safely; returns float32 NumPy arrays by key."""
  import torch  # noqa: PLC0415 (optional dependency)

  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except FileNotFoundError as e:
    raise CheckpointError(f"{path}: no such file.") from e
  except Exception as e:  # weights_only refusals, corrupt zips, ...
    raise CheckpointError(
      f"{path}: not a loadable PyTorch state dict ({type(e).__name__}: {e}). Only tensors and "
      "plain containers are accepted (torch.load(weights_only=True))."
    ) from e
  for wrapper in ("state_dict", "model"):
    if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
      obj = obj[wrapper]
  if not isinstance(obj, dict) or not obj:
    raise CheckpointError(f"{path}: expected a non-empty state dict, got {type(obj).__name__}.")
  out = {}
  for key, value in obj.items():
    if not isinstance(value, torch.Tensor):
      raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor.")
    name = key[len("module.") :] if key.startswith("module.") else key
    out[name] = value.detach().cpu().numpy()
  return out


# --- flax module path -> torch layer names --------------------------------------------------


def _backbone_layer(path: tuple[str, ...], prefix: str) -> tuple[str, str]:
  """(conv, bn) torch prefixes of a backbone ConvBN path like ('stem_1',) or ('layer2_0','conv1')."""
  head = path[0]
  if head.startswith("stem_"):
    i = int(head.split("_")[1])
    return f"{prefix}stem.{3 * i}", f"{prefix}stem.{3 * i + 1}"
  if head == "stem":
    return f"{prefix}conv1", f"{prefix}bn1"
  match = re.fullmatch(r"layer(\d)_(\d+)", head)
  assert match, path
  block = f"{prefix}layer{match.group(1)}.{match.group(2)}"
  if path[1] == "downsample":
    return f"{block}.downsample.0", f"{block}.downsample.1"
  k = path[1][len("conv") :]
  return f"{block}.conv{k}", f"{block}.bn{k}"


def _double_conv(prefix: str, which: str) -> tuple[str, str]:
  i = 0 if which == "conv1" else 3
  return f"{prefix}.double_conv.{i}", f"{prefix}.double_conv.{i + 1}"


def _release_layer(path: tuple[str, ...]) -> tuple[str, str | None]:
  """(conv or linear prefix, bn prefix or None) in the release for a Flax module path."""
  top = path[0]
  if top == "backbone":
    return _backbone_layer(path[1:], "mscc.backbone_net.")
  if top == "mopc":
    name = "mscc.bottleneck_fusion" if path[1] == "fusion" else f"mscc.bottleneck{path[1][-1]}"
    return f"{name}.0", f"{name}.1"
  if top == "moap":
    return "fuse_conv.0", "fuse_conv.1"
  if top == "dpal":
    if path[1].startswith("refine"):
      i = 0 if path[1] == "refine1" else 3
      return f"conv_refine.refine.{i}", f"conv_refine.refine.{i + 1}"
    return f"diff_attn.{path[1]}", None
  if top == "decoder":
    block = path[1]
    if block == "outc":
      return "unet.outc.conv", None
    if block == "inc":
      return _double_conv("unet.inc", path[2])
    if block.startswith("down"):
      return _double_conv(f"unet.{block}.maxpool_conv.1", path[2])
    return _double_conv(f"unet.{block}.conv", path[2])
  raise AssertionError(path)


def _torch_key(flax_key: tuple[str, ...], layer_fn) -> str:
  """Torch state-dict key for one flattened Flax variable key (collection first)."""
  collection, *path, leaf = flax_key
  # ConvBN: (..., 'conv', kernel|bias) or (..., 'norm', 'bn', scale|bias|mean|var)
  if "norm" in path:
    module = tuple(path[: path.index("norm")])
    _, bn = layer_fn(module)
    return f"{bn}.{ {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}[leaf] }"
  if path and path[-1] == "conv":
    module = tuple(path[:-1])
  else:
    module = tuple(path)
  conv, _ = layer_fn(module)
  return f"{conv}.{'weight' if leaf == 'kernel' else 'bias'}"


def _to_flax(value: np.ndarray, leaf: str) -> np.ndarray:
  if leaf == "kernel" and value.ndim == 4:  # OIHW -> HWIO
    return np.transpose(value, (2, 3, 1, 0))
  return value


def _convert(
  state_dict: dict[str, np.ndarray],
  expected: dict[str, Any],
  layer_fn,
  *,
  ignored_prefixes: tuple[str, ...] = (),
  source: str,
) -> dict[str, Any]:
  """Fills the flattened ``expected`` tree (ShapeDtypeStructs) from ``state_dict``."""
  flat = traverse_util.flatten_dict(expected)
  used, missing, misshaped, out = set(), [], [], {}
  for key, spec in flat.items():
    torch_key = _torch_key(key, layer_fn)
    if torch_key not in state_dict:
      missing.append(torch_key)
      continue
    value = _to_flax(np.asarray(state_dict[torch_key], np.float32), key[-1])
    used.add(torch_key)
    if value.shape != tuple(spec.shape):
      misshaped.append(
        f"{torch_key}: file {value.shape} vs model {tuple(spec.shape)} (Flax layout)"
      )
      continue
    out[key] = value
  unknown = sorted(
    k
    for k in state_dict
    if k not in used and not k.endswith(IGNORED_SUFFIXES) and not k.startswith(ignored_prefixes)
  )
  if missing or misshaped or unknown:
    lines = [f"{source}: the state dict does not match the model."]
    for title, items in (("missing", missing), ("mis-shaped", misshaped), ("unknown", unknown)):
      if items:
        lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:50]))
        if len(items) > 50:
          lines.append(f"    ... and {len(items) - 50} more")
    raise CheckpointError("\n".join(lines))
  return traverse_util.unflatten_dict(out)


def _expected_variables(model, image_shape=(1, 64, 64, 3)):
  shapes = jax.eval_shape(
    lambda: model.init(
      {"params": jax.random.key(0), "walk": jax.random.key(1)},
      jnp.zeros(image_shape, jnp.float32),
      train=False,
    )
  )
  return {"params": shapes["params"], "batch_stats": shapes["batch_stats"]}


def convert_release_state_dict(
  state_dict: dict[str, np.ndarray],
  model_config: ml_collections.ConfigDict,
  *,
  source: str = "state dict",
) -> dict[str, Any]:
  """The release's ``FakeLocator`` state dict -> ``{"params", "batch_stats"}`` (NumPy)."""
  expected = _expected_variables(build_model(model_config))
  return _convert(
    state_dict, expected, _release_layer, ignored_prefixes=IGNORED_RELEASE_PREFIXES, source=source
  )


def convert_resnet_state_dict(
  state_dict: dict[str, np.ndarray],
  *,
  depth: int,
  deep_stem: bool,
  stem_channels: int = 64,
  base_channels: int = 64,
  source: str = "state dict",
) -> dict[str, Any]:
  """An ImageNet ResNet (torchvision or mmcls v1c) -> backbone ``{"params", "batch_stats"}``."""
  prefix = "backbone." if any(k.startswith("backbone.") for k in state_dict) else ""
  state_dict = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
  head_prefixes = ("fc.", "head.", "neck.")
  model = ResNet(depth, deep_stem, stem_channels, base_channels, output_stride=32)
  shapes = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  )
  expected = {"params": shapes["params"], "batch_stats": shapes["batch_stats"]}
  return _convert(
    state_dict,
    expected,
    lambda path: _backbone_layer(path, ""),
    ignored_prefixes=head_prefixes,
    source=source,
  )


def merge_backbone_variables(variables: dict[str, Any], backbone: dict[str, Any]) -> dict[str, Any]:
  """Returns ``variables`` with its ``backbone`` subtrees replaced by ``backbone``'s (shapes checked)."""
  out = {}
  for collection in ("params", "batch_stats"):
    tree = dict(variables[collection])
    current = traverse_util.flatten_dict(tree["backbone"])
    new = traverse_util.flatten_dict(backbone[collection])
    if set(current) != set(new):
      diff = sorted(set(current) ^ set(new))[:10]
      raise CheckpointError(f"backbone weights do not match the model's backbone: {diff} ...")
    for key, value in new.items():
      if tuple(np.shape(value)) != tuple(np.shape(current[key])):
        raise CheckpointError(
          f"backbone weight {'/'.join(key)} has shape {np.shape(value)}, model expects "
          f"{np.shape(current[key])}."
        )
    tree["backbone"] = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in new.items()})
    out[collection] = tree
  return out
