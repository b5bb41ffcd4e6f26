"""Memory of a step: XLA's buffer sizes of a compiled executable, and the process's peak RSS.

`xla_memory` is what the executable needs on its device (arguments + outputs - donated aliases +
temporaries; JAX 0.10's `peak_memory_in_bytes` on CPU leaves the temporaries out, so it is not
used). The resident-set probes are host memory, read from /proc (Linux; None elsewhere):
`reset_peak_rss` clears the peak through /proc/self/clear_refs and returns the current RSS,
`peak_rss_growth` the peak since then above it. They are coarse (allocators reuse memory freed by
earlier work) and, for work on an accelerator, say nothing of the device's memory.
"""

from __future__ import annotations

STATUS = "/proc/self/status"
CLEAR_REFS = "/proc/self/clear_refs"


def xla_memory(compiled) -> dict | None:
  """Buffer sizes of an executable in bytes (argument, output, alias, temp) and the `total` it
  needs; None when the backend has no memory analysis."""
  try:
    stats = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except (some backends do not implement it)
    return None
  if stats is None:
    return None
  sizes = {kind: int(getattr(stats, f"{kind}_size_in_bytes"))
           for kind in ("argument", "output", "alias", "temp")}
  sizes["total"] = sizes["argument"] + sizes["output"] - sizes["alias"] + sizes["temp"]
  return sizes


def status_bytes(field: str, path: str = STATUS) -> int | None:
  """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes; None off Linux."""
  try:
    with open(path, encoding="ascii") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024
  except OSError:
    return None
  return None


def reset_peak_rss() -> int | None:
  """Resets this process's peak resident memory (Linux >= 4.0); returns the current RSS, bytes,
  or None where the peak cannot be reset."""
  try:
    with open(CLEAR_REFS, "w", encoding="ascii") as f:
      f.write("5")
  except OSError:
    return None
  return status_bytes("VmRSS")


def peak_rss_growth(baseline: int | None) -> int | None:
  """Peak resident memory since `reset_peak_rss` above what it returned, bytes (>= 0)."""
  peak = status_bytes("VmHWM")
  return None if baseline is None or peak is None else max(peak - baseline, 0)
