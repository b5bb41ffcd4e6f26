"""The skeleton of every command (`python -m wavejax.main`, `wavejax.predict`, `wavejax.export`,
`wavejax.data`, `experiments.*`): `cli.run(main, "prog")`.

Bad input is reported as ONE line on stderr, `<prog>: error: <what and what to do>`, and exit
status 1. Errors from the library are `WavejaxError`s with one-line messages; the ones that arise
before or outside it are turned into such a line here: flag values absl rejects, config overrides
that ml_collections rejects (an unknown field is an AttributeError, a bad config arg a ConfigError
raised while flags are parsed, a missing config file an OSError), usage mistakes and file system
errors (a read-only workdir, a file where a folder belongs). A run stopped by SIGTERM or SIGINT
(`errors.Preempted`) prints `<prog>: <message>` and exits 128 + the signal.
"""

from __future__ import annotations

import ast
import sys
import warnings
from typing import NoReturn

from absl import app, flags

from wavejax import errors, runtime

# What reading a config flag (the file, its arg and the --config.x overrides) can raise.
CONFIG_ERRORS = (errors.WavejaxError, AttributeError, KeyError, ValueError, TypeError, OSError)


def fail(prog: str, message: str) -> NoReturn:
  print(f"{prog}: error: {message}", file=sys.stderr)
  sys.exit(1)


def describe_config_error(error: BaseException) -> str:
  if isinstance(error, (AttributeError, KeyError)):
    return (f"--config: no field {_unquoted(error)}; check the spelling against "
            "wavejax/config/ and the model's section in wavejax/config/models.py")
  if isinstance(error, OSError):
    return f"--config: {errors.one_line(error)}; pass an existing configs/<model>.py"
  return errors.one_line(error)


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
      fail(prog, f"{errors.one_line(e)} (--helpfull lists the flags)")
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
  return (f"{errors.one_line(error)}; check the path, its permissions and free space, or choose "
          "another --workdir / cache_dir")


def run(main, prog: str) -> NoReturn:
  """Runs `main(argv) -> exit status` as command `prog`: flags are parsed with one-line errors,
  library logs are quietened, and a `WavejaxError` or `OSError` out of `main` becomes the
  command's one `error:` line and exit status."""

  def guarded(argv) -> int:
    runtime.quiet_library_logs()
    try:
      return main(argv) or 0
    except errors.Preempted as e:
      print(f"{prog}: {e}", file=sys.stderr)
      return e.exit_code
    except (errors.WavejaxError, OSError) as e:
      # Work the error cut short (an aborted checkpoint write) may leave coroutines that are
      # never awaited; their warnings at exit would follow, and bury, the one error line.
      warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited",
                              category=RuntimeWarning)
      return error_status(prog, e)

  app.run(guarded, flags_parser=flags_parser(prog))
