r"""The ImageNet backbone the release trains from, downloaded, checked and converted.

  python -m sdpal_jax.pretrained --output_dir DIR
  # offline: convert a copy fetched elsewhere
  python -m sdpal_jax.pretrained --output_dir DIR --input resnet101_v1c-e67eebb6.pth

then train with ``--config.init_from=DIR`` (the command prints it).

Which file: the release's ``FakeLocator`` asks for a pretrained ResNet-101
with the deep stem (``sdpal.py`` L316-321: ``'type': 'resnet101'``,
``'pretrained': True``, ``'use_stem': True``), so ``BuildResNet`` appends
``stem`` to the type and loads ``model_urls['resnet101stem']`` with
``model_zoo.load_url`` (``resnet.py`` L23 and L261-276, then
``load_state_dict(..., strict=False)``): OpenMMLab's
``resnet101_v1c-e67eebb6.pth``.

Its check: by the naming convention that ``torch.hub`` documents for
``load_state_dict_from_url(check_hash=True)`` and that OpenMMLab's
``publish_model.py`` tools follow (``sha256sum`` of the file, first 8 hex
digits appended to the name), ``e67eebb6`` is the start of the file's
SHA-256. The release itself never checks it (``load_url``'s
``check_hash`` defaults to False) and loads non-strictly, so a file whose
keys did not match would silently leave the backbone random; here every key
and shape is checked by ``sdpal_jax.torch_import``.

The downloaded ``.pth`` stays in ``--output_dir`` (a rerun reuses it when its
hash matches); the converted backbone is ``--output_dir/backbone``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

from absl import flags

from sdpal_jax import cli
from sdpal_jax.convert import convert_backbone
from sdpal_jax.errors import SdpalError

URL = "https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth"
FILENAME = URL.rsplit("/", 1)[-1]
SHA256_PREFIX = "e67eebb6"
DEPTH = 101
_CHUNK = 1 << 20


def sha256_of(path: str) -> str:
  """The SHA-256 hex digest of a file."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


def check_hash(path: str, prefix: str) -> None:
  """Raises SdpalError unless the file's SHA-256 starts with ``prefix``."""
  digest = sha256_of(path)
  if not digest.startswith(prefix):
    raise SdpalError(
      f"{path}: SHA-256 {digest} does not start with {prefix} (the hash in the file name): "
      "the file is damaged or not the release's. Download it again, or pass --nocheck_hash "
      "to convert it anyway."
    )


def manual_steps(output_dir: str, reason: str) -> str:
  """What to do by hand when this machine cannot download the file."""
  target = os.path.join(os.path.abspath(output_dir), FILENAME)
  return (
    f"cannot download {URL} ({reason}): this machine seems to have no internet access.\n"
    "Manual steps:\n"
    f"  1. on a machine with internet access, download {URL}\n"
    f"     (e.g. curl -LO {URL}); its SHA-256 starts with {SHA256_PREFIX};\n"
    f"  2. copy it here, e.g. to {target};\n"
    f"  3. convert it: python -m sdpal_jax.pretrained --output_dir "
    f"{os.path.abspath(output_dir)} --input {target};\n"
    f"  4. train with --config.init_from={os.path.abspath(output_dir)}"
  )


def download(
  url: str,
  destination: str,
  *,
  urlopen: Callable = urllib.request.urlopen,
  timeout: float = 60.0,
) -> str:
  """Streams ``url`` to ``destination`` (via a ``.part`` file); URL/network errors propagate."""
  partial = destination + ".part"
  with urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
    shutil.copyfileobj(response, out, _CHUNK)
  os.replace(partial, destination)
  return destination


def fetch_and_convert(
  output_dir: str,
  *,
  input_path: str | None = None,
  sha256_prefix: str | None = SHA256_PREFIX,
  url: str = URL,
  depth: int = DEPTH,
  urlopen: Callable = urllib.request.urlopen,
  log: Callable[[str], None] = print,
) -> str:
  """Downloads (unless ``input_path``), checks and converts the backbone; returns ``output_dir``.

  Args:
    output_dir: where the ``.pth`` (when downloaded) and ``backbone/`` go.
    input_path: a local copy of the file: no download.
    sha256_prefix: the expected start of the file's SHA-256, or None to skip the check.
    url, depth, urlopen: the file, its ResNet depth and the opener (tests replace them).
    log: progress lines.

  Raises:
    SdpalError: no internet (with the manual steps), a hash mismatch, no torch, or a
      file whose keys or shapes do not match the backbone.
  """
  if importlib.util.find_spec("torch") is None:
    raise SdpalError(
      "reading the PyTorch file needs the torch extra: pip install 'sdpal_jax[torch]'."
    )
  output_dir = os.path.abspath(output_dir)
  os.makedirs(output_dir, exist_ok=True)
  if input_path is None:
    path = os.path.join(output_dir, url.rsplit("/", 1)[-1])
    reuse = os.path.isfile(path) and (
      sha256_prefix is None or sha256_of(path).startswith(sha256_prefix)
    )
    if reuse:
      log(f"using {path} (already downloaded)")
    else:
      log(f"downloading {url} -> {path}")
      try:
        download(url, path, urlopen=urlopen)
      except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise SdpalError(manual_steps(output_dir, str(reason))) from e
  else:
    path = os.path.abspath(input_path)
    if not os.path.isfile(path):
      raise SdpalError(f"--input {path}: no such file.")
  if sha256_prefix is not None:
    check_hash(path, sha256_prefix)
    log(f"SHA-256 of {os.path.basename(path)} starts with {sha256_prefix}: ok")
  written = convert_backbone(path, output_dir, depth=depth, deep_stem=True)
  log(f"wrote {written}")
  return output_dir


def _define_flags() -> None:
  flags.DEFINE_string("output_dir", None, "Directory for the .pth and the converted backbone/.")
  flags.DEFINE_string(
    "input", None, f"A local copy of {FILENAME} (no download), e.g. fetched on another machine."
  )
  flags.DEFINE_bool(
    "check_hash", True, f"Check that the file's SHA-256 starts with {SHA256_PREFIX}."
  )
  flags.mark_flag_as_required("output_dir")


def main(argv: Sequence[str]) -> int:
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise SdpalError(f"unexpected arguments {list(argv[1:])}; see --help.")
  out = fetch_and_convert(
    FLAGS.output_dir,
    input_path=FLAGS.input,
    sha256_prefix=SHA256_PREFIX if FLAGS.check_hash else None,
  )
  print(f"train from it with --config.init_from={out}")
  return 0


def run_main() -> None:
  """Console entry point (``python -m sdpal_jax.pretrained``)."""
  cli.run(main, _define_flags)


if __name__ == "__main__":
  run_main()
