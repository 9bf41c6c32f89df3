"""Helpers shared by the benchmarks: import path, machine description, statistics."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIB = REPO / "workflow" / "lib"
if str(LIB) not in sys.path:
    sys.path.insert(0, str(LIB))


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(device="cpu"):
    import torch

    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host_cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "n/a")(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def median(xs):
    return float(statistics.median(xs)) if xs else float("nan")


def dump(obj, as_json):
    if as_json:
        print(json.dumps(obj, indent=2))
    else:
        for k, v in obj.items():
            if not isinstance(v, (list, dict)):
                print(f"{k:>28}: {v}")


def sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
