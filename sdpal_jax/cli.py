"""One wrapper for every command-line entry point (train, evaluate, predict, convert).

``run(main, define_flags)`` gives every command the same behaviour, whether
started as ``python -m sdpal_jax.X`` or as the ``sdpal-X`` console script:

- ``--help`` lists the command's own flags under either name;
- a bad flag or a user error (``SdpalError``, or an ``OSError`` of the file
  system such as a full disk or a missing permission) prints one
  ``error: ...`` line and exits with status 2; with ``--verbosity`` the
  traceback is printed above it; success exits 0 (or the status ``main``
  returns);
- library INFO logging (absl, orbax, TensorFlow) is off unless
  ``--verbosity`` (``-v``) is given, so the console shows the command's own
  progress lines.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from sdpal_jax import configs
from sdpal_jax.errors import SdpalError


def _resolve_config_argument(argv: list[str]) -> list[str]:
  """Turns ``--config NAME[:arg]`` (a packaged config) into its file path for ml_collections."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith("--config="):
      out[i] = "--config=" + configs.resolve(arg[len("--config=") :])
    elif arg == "--config" and i + 1 < len(out):
      out[i + 1] = configs.resolve(out[i + 1])
  return out


def _fail(message: str) -> None:
  print(f"error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever it holds
  sys.exit(2)


def _text(error: BaseException) -> str:
  """The message itself: ``str(KeyError("x"))`` is the repr ``"'x'"`` (quotes, ``\\n``), also
  inside ml_collections' ``AttributeError(KeyError(...))``."""
  while len(error.args) == 1 and isinstance(error.args[0], BaseException):
    error = error.args[0]
  if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
    return error.args[0]
  return str(error)


def _user_error_types() -> tuple[type[BaseException], ...]:
  """Exceptions a user causes (files, disks, checkpoints that do not match), besides SdpalError."""
  types: list[type[BaseException]] = [SdpalError, OSError]
  if "flax" in sys.modules:  # e.g. ScopeParamShapeError: weights of another model
    from flax import errors as flax_errors  # noqa: PLC0415 (datasets.build runs without JAX)

    types.append(flax_errors.FlaxError)
  return tuple(types)


def run(
  main: Callable[[Sequence[str]], int | None],
  define_flags: Callable[[], None],
  *,
  config_flag: bool = False,
) -> None:
  """Defines the flags, parses ``sys.argv`` and runs ``main(argv)``; never returns.

  Args:
    main: receives the positional arguments (``argv[0]`` is the program).
    define_flags: defines the command's absl flags (called once, here).
    config_flag: also define ``--config`` (an ml_collections config file or a
      packaged config name, with ``--config.field=value`` overrides).
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines
  flag_values = flags.FLAGS
  before = set(flag_values)
  define_flags()
  if config_flag and "config" not in flag_values:
    config_flags.DEFINE_config_file(
      "config",
      None,
      "Training config: a packaged name (quickstart, tiny, casia_v2, fantastic_reality, "
      "imd2020, tampcoco) or a path to a .py file, with an optional :argument.",
      lock_config=True,
    )
  # absl's --help lists the flags of the main module (sys.argv[0]): under a console
  # script that is the script, not the module that defined them.
  for name in set(flag_values) - before:
    flag_values.register_flag_by_module(sys.argv[0], flag_values[name])

  def parse(argv: list[str]) -> list[str]:
    try:
      if config_flag:
        argv = _resolve_config_argument(argv)
      return flag_values(argv)
    except flags.Error as e:
      _fail(f"{e} (see --help)")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
      # ml_collections reports a bad --config.field=value override this way.
      _fail(f"bad command-line value: {_text(e)} (see --help)")
    except SdpalError as e:
      _fail(str(e))

  def guarded(argv: Sequence[str]) -> None:
    if not flag_values["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
      std_logging.getLogger().setLevel(std_logging.WARNING)
    verbose = flag_values["verbosity"].present
    try:
      status = main(argv)
    except _user_error_types() as e:
      if verbose:
        traceback.print_exc()
      hint = "" if verbose else " (--verbosity=1 prints the traceback)"
      own = isinstance(e, SdpalError)
      _fail(f"{_text(e)}{hint if not own or e.__cause__ is not None else ''}")
    sys.exit(status or 0)

  app.run(guarded, flags_parser=parse)
