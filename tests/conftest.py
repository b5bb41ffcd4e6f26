"""Make `configs/`, `experiments/` and `helpers` importable from every test folder; keep the
command-line tools' compilation cache out of the user's home directory."""

import os
import pathlib
import sys
import tempfile

TESTS = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS.parent), str(TESTS)]  # configs/, experiments/ and helpers
# The front-end's "auto" takes the static rule instead of timing formulations (tests/models/
# test_choice.py turns the measurement on where it tests it).
os.environ.setdefault("WAVEJAX_AUTOTUNE", "off")
os.environ.setdefault("WAVEJAX_COMPILATION_CACHE",
                      os.path.join(tempfile.gettempdir(), f"wavejax-test-jax-cache-{os.getuid()}"))
