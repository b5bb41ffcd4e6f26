"""Make `configs/` importable as a package from the tests (it is not installed); keep the
command-line tools' compilation cache out of the user's home directory."""

import os
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("WAVEJAX_COMPILATION_CACHE",
                      os.path.join(tempfile.gettempdir(), f"wavejax-test-jax-cache-{os.getuid()}"))
