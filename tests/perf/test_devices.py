"""wavejax.perf.devices: one label per device, equal only for the same kind of device."""

import jax

from wavejax import perf
from wavejax.perf import devices


def test_cpu_model_reads_the_model_name(tmp_path):
  info = tmp_path / "cpuinfo"
  info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\n")
  assert devices.cpu_model(str(info)) == "AMD EPYC 9B14"
  assert devices.cpu_model(str(tmp_path / "absent"))  # falls back to platform, never empty


def test_labels_name_the_platform_and_model():
  assert perf.device_label("gpu", "NVIDIA H200") == "gpu: NVIDIA H200"
  assert perf.device_label("cuda", "NVIDIA H200") == "gpu: NVIDIA H200"  # PyTorch's name
  assert perf.device_label("tpu", "TPU v5 lite") == "tpu: TPU v5 lite"
  # JAX calls every CPU "cpu": the label names the processor instead.
  assert perf.device_label("cpu", "cpu") == f"cpu: {devices.cpu_model()}"
  assert perf.jax_device_label(jax.devices("cpu")[0]) == f"cpu: {devices.cpu_model()}"


def test_same_device():
  cpu = perf.device_label("cpu")
  assert perf.same_device(cpu, perf.device_label("cpu", "anything"))
  assert not perf.same_device(cpu, "gpu: NVIDIA H200")
  assert not perf.same_device("gpu: NVIDIA H200", "gpu: NVIDIA A100")
  assert not perf.same_device(None, None)
