"""The release's ImageNet backbone (download, hash, conversion, offline steps) and run-start checks."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import urllib.error

import numpy as np
import orbax.checkpoint as ocp
import pytest

from sdpal_jax import checkpoint, configs, pretrained, train
from sdpal_jax.errors import CheckpointError, ConfigError, SdpalError

needs_torch = pytest.mark.torch


def _torch():
  return pytest.importorskip("torch", reason="the torch extra is not installed")


def _mmcls_resnet18_v1c(torch) -> dict:
  """A state dict with mmcls ``resnet*_v1c`` key names and real ResNet-18 shapes (random values).

  Written from the architecture, not from our converter: deep stem ``stem.{0,1,3,4,6,7}``
  (3x3 convs 3->32->32->64 with their BatchNorms), ``layerL.j.conv{1,2}``/``bn{1,2}``,
  ``downsample.{0,1}`` where the shape changes, and the classifier ``fc``.
  """
  gen = torch.Generator().manual_seed(0)
  state = {}

  def conv(name, cin, cout, k):
    state[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=gen) * 0.05

  def bn(name, c):
    state[f"{name}.weight"] = torch.rand(c, generator=gen) + 0.5
    state[f"{name}.bias"] = torch.randn(c, generator=gen) * 0.1
    state[f"{name}.running_mean"] = torch.randn(c, generator=gen) * 0.1
    state[f"{name}.running_var"] = torch.rand(c, generator=gen) + 0.5
    state[f"{name}.num_batches_tracked"] = torch.tensor(1000)

  for i, (cin, cout) in enumerate(((3, 32), (32, 32), (32, 64))):
    conv(f"stem.{3 * i}", cin, cout, 3)
    bn(f"stem.{3 * i + 1}", cout)
  inplanes = 64
  for stage, planes in enumerate((64, 128, 256, 512), start=1):
    for j in range(2):
      block = f"layer{stage}.{j}"
      conv(f"{block}.conv1", inplanes if j == 0 else planes, planes, 3)
      bn(f"{block}.bn1", planes)
      conv(f"{block}.conv2", planes, planes, 3)
      bn(f"{block}.bn2", planes)
      if j == 0 and (stage > 1 or inplanes != planes):
        conv(f"{block}.downsample.0", inplanes, planes, 1)
        bn(f"{block}.downsample.1", planes)
    inplanes = planes
  state["fc.weight"] = torch.randn(1000, 512, generator=gen) * 0.01
  state["fc.bias"] = torch.zeros(1000)
  return state


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
  """``(path, sha256 prefix, state dict)`` of a saved mmcls-style ResNet-18 v1c file."""
  torch = _torch()
  state = _mmcls_resnet18_v1c(torch)
  directory = tmp_path_factory.mktemp("pth")
  raw = directory / "raw.pth"
  torch.save(state, raw)
  prefix = hashlib.sha256(raw.read_bytes()).hexdigest()[:8]
  path = directory / f"resnet18_v1c-{prefix}.pth"
  raw.rename(path)
  return str(path), prefix, {k: v.numpy() for k, v in state.items()}


def _restored_backbone(output_dir):
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(checkpoint.resolve_backbone(output_dir))


def _assert_converted(output_dir, state):
  backbone = _restored_backbone(output_dir)
  np.testing.assert_array_equal(
    backbone["params"]["stem_0"]["conv"]["kernel"],
    np.transpose(state["stem.0.weight"], (2, 3, 1, 0)),
  )
  np.testing.assert_array_equal(
    backbone["batch_stats"]["layer4_0"]["downsample"]["norm"]["bn"]["var"],
    state["layer4.0.downsample.1.running_var"],
  )


def test_the_release_file_and_its_hash_prefix():
  assert pretrained.URL.endswith("/pretrain/third_party/resnet101_v1c-e67eebb6.pth")
  assert pretrained.FILENAME == "resnet101_v1c-e67eebb6.pth"
  assert pretrained.SHA256_PREFIX == "e67eebb6"


@needs_torch
def test_download_is_hash_checked_converted_and_named_for_init_from(resnet_file, tmp_path):
  path, prefix, state = resnet_file
  served = []

  def fake_urlopen(url, timeout):
    served.append(url)
    with open(path, "rb") as f:
      return io.BytesIO(f.read())

  url = f"https://example.invalid/pretrain/{os.path.basename(path)}"
  lines = []
  out = pretrained.fetch_and_convert(
    str(tmp_path / "out"),
    url=url,
    sha256_prefix=prefix,
    depth=18,
    urlopen=fake_urlopen,
    log=lines.append,
  )
  assert served == [url]
  assert os.path.isfile(os.path.join(out, os.path.basename(path)))
  assert any(f"starts with {prefix}: ok" in line for line in lines)
  _assert_converted(out, state)
  # A rerun reuses the checked download.
  pretrained.fetch_and_convert(
    out, url=url, sha256_prefix=prefix, depth=18, urlopen=None, log=lines.append
  )
  assert "already downloaded" in lines[-3]


@needs_torch
def test_a_local_copy_converts_without_the_network(resnet_file, tmp_path):
  path, prefix, state = resnet_file

  def no_network(*args, **kwargs):
    raise AssertionError("--input must not download")

  out = pretrained.fetch_and_convert(
    str(tmp_path), input_path=path, sha256_prefix=prefix, depth=18, urlopen=no_network
  )
  _assert_converted(out, state)


@needs_torch
def test_a_file_whose_hash_does_not_match_is_refused(resnet_file, tmp_path):
  path, _, _ = resnet_file
  with pytest.raises(SdpalError, match="does not start with 00000000"):
    pretrained.fetch_and_convert(str(tmp_path), input_path=path, sha256_prefix="00000000", depth=18)
  assert not os.path.exists(tmp_path / "backbone")


@needs_torch
def test_no_internet_says_so_and_lists_the_manual_steps(tmp_path):
  _torch()

  def offline(url, timeout):
    raise urllib.error.URLError("[Errno -2] Name or service not known")

  with pytest.raises(SdpalError) as err:
    pretrained.fetch_and_convert(str(tmp_path), urlopen=offline)
  message = str(err.value)
  assert "no internet access" in message and "Name or service not known" in message
  assert pretrained.URL in message
  assert f"--input {tmp_path / pretrained.FILENAME}" in message
  assert f"--config.init_from={tmp_path}" in message


@needs_torch
def test_command_line_without_internet_exits_2_with_the_manual_steps(tmp_path):
  _torch()
  proxy = "http://127.0.0.1:9"  # the discard port: nothing listens, the download fails at once
  env = dict(os.environ, https_proxy=proxy, HTTPS_PROXY=proxy, JAX_PLATFORMS="cpu")
  env.pop("no_proxy", None)
  env.pop("NO_PROXY", None)
  result = subprocess.run(
    [sys.executable, "-m", "sdpal_jax.pretrained", "--output_dir", str(tmp_path)],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 2, result.stderr
  assert "Manual steps" in result.stderr and "--input" in result.stderr
  assert not os.path.exists(tmp_path / pretrained.FILENAME)


def test_a_missing_init_from_fails_before_any_data_is_read(tmp_path, monkeypatch):
  from sdpal_jax import input_pipeline  # noqa: PLC0415

  def no_data(*args, **kwargs):
    raise AssertionError("data was read before init_from was checked")

  monkeypatch.setattr(input_pipeline, "load_split", no_data)
  monkeypatch.setattr(input_pipeline, "train_batches", no_data)
  config = configs.load("tiny")
  missing = tmp_path / "no_backbone_here"
  config.init_from = str(missing)
  with pytest.raises(CheckpointError, match=str(missing)):
    train.validate_config(config)
  with pytest.raises(CheckpointError, match=str(missing)):
    train.train_and_evaluate(config, str(tmp_path / "work"))
  assert not os.path.exists(tmp_path / "work")


def test_matmul_precision_is_applied_before_training_and_checked(tmp_path, monkeypatch):
  """``:gpu`` runs at full float32 ("highest"; GPUs default to TF32), ``:gpu_tf32`` at TF32."""
  import jax  # noqa: PLC0415

  assert configs.load("casia_v2:gpu").matmul_precision == "highest"
  assert configs.load("casia_v2:gpu_tf32").matmul_precision == "tensorfloat32"
  assert configs.load("casia_v2").matmul_precision == "default"

  class StopError(Exception):
    pass

  def stop(config):
    raise StopError(jax.config.jax_default_matmul_precision)

  monkeypatch.setattr(train, "validate_config", stop)
  config = configs.load("tiny")
  try:
    for precision in ("highest", "tensorfloat32"):
      config.matmul_precision = precision
      with pytest.raises(StopError, match=precision):
        train.train_and_evaluate(config, str(tmp_path))
    config.matmul_precision = "fastest-please"
    with pytest.raises(ConfigError, match="matmul_precision='fastest-please'"):
      train.train_and_evaluate(config, str(tmp_path))
  finally:
    jax.config.update("jax_default_matmul_precision", None)
