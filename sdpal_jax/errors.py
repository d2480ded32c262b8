"""The one exception type for errors a user can cause.

Every message names the file, field or value at fault and what to do about it.
Internal invariants stay ``assert`` statements.
"""

from __future__ import annotations


class SdpalError(Exception):
  """A problem with the user's input, files or configuration."""


class ImageReadError(SdpalError):
  """An image or mask file that cannot be read or is unusable.

  Attributes:
    path: the offending file.
    reason: a short human-readable reason.
  """

  def __init__(self, path: str, reason: str):
    self.path = str(path)
    self.reason = reason
    super().__init__(f"{self.path}: {reason}")


class ConfigError(SdpalError):
  """A configuration value that is missing, unknown or out of range."""


class CheckpointError(SdpalError):
  """A checkpoint directory or file that cannot be used."""
