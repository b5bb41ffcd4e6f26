"""How the command-line tools report bad input: one line on stderr and exit status 1.

Errors from the library are `WavejaxError`s with one-line messages. The ones that arise before
or outside it are turned into such a line here: flag values absl rejects, config overrides that
ml_collections rejects (an unknown field is an AttributeError, a bad config arg a ConfigError
raised while flags are parsed, a missing config file an OSError), usage mistakes and file system
errors (a read-only workdir, a file where a folder belongs).
"""

from __future__ import annotations

import ast
import sys
from typing import NoReturn

from absl import flags

from wavejax import errors

# What reading a config flag (the file, its arg and the --config.x overrides) can raise.
CONFIG_ERRORS = (errors.WavejaxError, AttributeError, KeyError, ValueError, TypeError, OSError)


def fail(prog: str, message: str) -> NoReturn:
  print(f"{prog}: error: {message}", file=sys.stderr)
  sys.exit(1)


def one_line(error: BaseException) -> str:
  """The error's message on one line (multi-line messages joined)."""
  if isinstance(error, OSError) and error.filename:
    return f"{error.filename}: {error.strerror or error}"
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return " ".join(lines) or type(error).__name__


def describe_config_error(error: BaseException) -> str:
  if isinstance(error, (AttributeError, KeyError)):
    return (f"--config: no field {_unquoted(error)}; check the spelling against "
            "wavejax/config.py and the model's configs/<model>.py")
  if isinstance(error, OSError):
    return f"--config: {one_line(error)}; pass an existing configs/<model>.py"
  return one_line(error)


def _unquoted(error: BaseException) -> str:
  """ml_collections wraps a KeyError's repr in an AttributeError: `'\\'x\\'\\nDid you mean...'`."""
  text = str(error)
  for _ in range(3):
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
      try:
        text = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        break
  text = " ".join(line.strip() for line in str(text).splitlines() if line.strip())
  return repr(text) if text.isidentifier() else text


def flags_parser(prog: str):
  """An `app.run(..., flags_parser=...)` that fails with one line instead of a traceback or the
  whole help text."""

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      fail(prog, f"{one_line(e)} (--helpfull lists the flags)")
    except CONFIG_ERRORS as e:
      fail(prog, describe_config_error(e))

  return parse


def config_value(flag, prog: str):
  """`flag.value` of a config flag (overrides are applied when it is first read)."""
  try:
    value = flag.value
    if value is not None:
      getattr(value, "model", None)  # a file that failed to load raises on first use
    return value
  except CONFIG_ERRORS as e:
    fail(prog, describe_config_error(e))


def error_status(prog: str, error: errors.WavejaxError | OSError) -> int:
  """Prints a library or file system error as the tool's one `error:` line; returns the exit
  status (1, or a stopped run's 128 + signal)."""
  message = os_error_message(error) if isinstance(error, OSError) else str(error)
  print(f"{prog}: error: {message}", file=sys.stderr)
  return getattr(error, "exit_code", 1)


def os_error_message(error: OSError) -> str:
  return (f"{one_line(error)}; check the path, its permissions and free space, or choose another "
          "--workdir / cache_dir")
