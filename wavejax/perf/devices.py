"""The device a measurement ran on, as one label: "<platform>: <model>".

"cpu: AMD EPYC 9B14", "gpu: NVIDIA H200", "tpu: TPU v5 lite". CPUs are named by the processor's
model (JAX calls every CPU "cpu"); accelerators by the vendor's device kind, which JAX
(`device.device_kind`) and PyTorch (`torch.cuda.get_device_name`) spell alike for NVIDIA GPUs.
Two figures are comparable only when their labels are equal (`same_device`).
"""

from __future__ import annotations

import platform

import jax

CPUINFO = "/proc/cpuinfo"


def cpu_model(path: str = CPUINFO) -> str:
  """The processor's model name (Linux /proc/cpuinfo; `platform` elsewhere)."""
  try:
    with open(path, encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown"


def device_label(platform_name: str, kind: str | None = None) -> str:
  """"<platform>: <model>" for a platform ("cpu", "gpu", "tpu"; PyTorch's "cuda" is "gpu") and
  its device kind; a CPU is named by its processor model whatever `kind` says."""
  platform_name = {"cuda": "gpu", "rocm": "gpu"}.get(platform_name, platform_name)
  if platform_name == "cpu":
    return f"cpu: {cpu_model()}"
  return f"{platform_name}: {kind or 'unknown'}"


def jax_device_label(device=None) -> str:
  """The label of a JAX device (the default device when None)."""
  device = device or jax.devices()[0]
  return device_label(device.platform, device.device_kind)


def same_device(a: str | None, b: str | None) -> bool:
  """Whether two labels name the same kind of device (an unknown device matches nothing)."""
  return a is not None and a == b
