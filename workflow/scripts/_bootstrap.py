"""Make workflow/lib importable from rule scripts and expose the rule runner."""

import sys
from pathlib import Path

_LIB = str(Path(__file__).resolve().parent.parent / "lib")
if _LIB not in sys.path:
    sys.path.insert(0, _LIB)

from genovae.runner import run_rule, run_steps  # noqa: E402,F401
