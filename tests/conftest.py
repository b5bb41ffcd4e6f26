"""Make `configs/` importable as a package from the tests (it is not installed)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
