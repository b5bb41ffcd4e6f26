"""Errors raised on bad input.

Every error a user can cause (a wrong path, a malformed label file, an unreadable wav, a bad config
field) is a subclass of `WavejaxError` whose message is one line naming the file or field and what
to
do about it. The CLI prints that line and exits non-zero.
"""


class WavejaxError(Exception):
  """Base class of every error caused by the user's input or configuration."""


class ConfigError(WavejaxError):
  """A config field has an invalid value."""


class DatasetError(WavejaxError):
  """A dataset root does not have the expected layout or content."""


class LabelFileError(DatasetError):
  """A label file cannot be read or parsed."""


class MissingAudioError(DatasetError):
  """A labelled utterance has no audio file on disk."""


class AudioError(WavejaxError):
  """An audio file cannot be decoded into a usable waveform."""


class WriteError(WavejaxError):
  """A file or folder cannot be written (permissions, a file where a folder belongs, no space)."""

  @classmethod
  def from_os_error(cls, path, error: OSError) -> "WriteError":
    return cls(f"{error.filename or path}: cannot write ({error.strerror or error}); check its "
               "permissions and free space, or choose another --workdir / cache_dir")


class ResultsError(WavejaxError):
  """A results file (predictions, per-fold results, a summary) is missing, damaged or
  inconsistent."""


class ExportError(WavejaxError):
  """A model cannot be exported in the chosen format, or an export cannot be read back."""


class CheckpointError(WavejaxError):
  """A checkpoint directory cannot be used to resume."""


class TrainingError(WavejaxError):
  """Training cannot continue (e.g. the loss became NaN or infinite)."""


class Preempted(WavejaxError):
  """Training stopped on SIGTERM or SIGINT after saving its checkpoint; rerunning resumes it.

  `exit_code` is the shell's convention for a process ended by that signal (128 + signal number:
  143 for SIGTERM, 130 for SIGINT), so schedulers that requeue preempted jobs recognise it.
  """

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = int(signum)

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


class LockError(WavejaxError):
  """A workdir or fold is in use by another live process (its lock file names it)."""


class SweepError(WavejaxError):
  """A grid shard (`--shard=I/N`, a launcher's array variables) or a sweep option is invalid."""


def one_line(error: BaseException) -> str:
  """The error's message on one line (multi-line messages joined)."""
  if isinstance(error, OSError) and error.filename:
    return f"{error.filename}: {error.strerror or error}"
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return " ".join(lines) or type(error).__name__
