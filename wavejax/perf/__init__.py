"""What the benchmark measures with: FLOPs of a jaxpr, the memory of a compiled step, timings.

* `flops`: the useful FLOPs of a traced function (`jaxpr_flops`: matrix products and
  convolutions, loop bodies times their length) and XLA's own estimate (`xla_cost_flops`).
* `memory`: the buffers of a compiled executable (`xla_memory`) and the process's peak resident
  memory around a piece of work (`reset_peak_rss`, `peak_rss_growth`; Linux).
* `timing`: median wall time of a blocking call (`median_seconds`), a jitted function compiled
  and timed on its own (`compile_timed`), and the matmul peak of a device (`matmul_peak`).
* `devices`: the name every measurement carries ("cpu: <model>", "gpu: NVIDIA H200"), so that
  figures of different devices are never set against each other.

Nothing here prints or depends on PyTorch; `experiments/benchmark.py` is the command over it.
"""

from wavejax.perf.devices import cpu_model, device_label, jax_device_label, same_device
from wavejax.perf.flops import function_flops, jaxpr_flops, xla_cost_flops
from wavejax.perf.memory import peak_rss_growth, reset_peak_rss, xla_memory
from wavejax.perf.timing import blocking, compile_timed, matmul_peak, median_seconds

__all__ = [
    "blocking", "compile_timed", "cpu_model", "device_label", "function_flops", "jax_device_label",
    "jaxpr_flops", "matmul_peak", "median_seconds", "peak_rss_growth", "reset_peak_rss",
    "same_device", "xla_cost_flops", "xla_memory",
]
