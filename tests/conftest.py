"""Make `configs/`, `experiments/` and `helpers` importable from every test folder; keep the
command-line tools' compilation cache out of the user's home directory; give the tests marked
`float32` float32 products on every backend."""

import os
import pathlib
import sys
import tempfile

import jax
import pytest

TESTS = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS.parent), str(TESTS)]  # configs/, experiments/ and helpers
# The front-end's "auto" takes the static rule instead of timing formulations (tests/models/
# test_choice.py turns the measurement on where it tests it).
os.environ.setdefault("WAVEJAX_AUTOTUNE", "off")
os.environ.setdefault("WAVEJAX_COMPILATION_CACHE",
                      os.path.join(tempfile.gettempdir(), f"wavejax-test-jax-cache-{os.getuid()}"))


@pytest.fixture(autouse=True)
def _float32_products(request):
  """Highest-precision products for tests marked `float32` (on a CPU they are float32 anyway)."""
  if request.node.get_closest_marker("float32") is None:
    yield
    return
  with jax.default_matmul_precision("highest"):
    yield
