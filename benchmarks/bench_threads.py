#!/usr/bin/env python3
"""Training threads: samples/s with 1 and 2 (or more) CPU threads, on an idle machine and under load.

genovae's ``train.threads: auto`` picks the thread count from the size of one training step;
this benchmark is the measurement behind its rule (``genovae.resources.auto_threads``). Each run
is a fresh process (``--one``) that trains ``genovae.train.train_vae`` with ``model.hidden: auto``
for a few epochs on a low-rank cohort (benchmarks/bench_train.py's ``make_data``) and reports
training samples/s of its epochs (``info["seconds"]``). Runs alternate between thread counts, so
a noisy machine affects both alike; the ratio is the median over pairs of per-pair ratios.
"Loaded" runs beside ``--load`` busy processes (pure-Python loops, one per core by default: what
other users' jobs do to a shared node).

    python benchmarks/bench_threads.py --json            # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (puts workflow/lib on sys.path)
from _common import machine, median

#: (name, training samples, genes, batch size): a small cohort (the demo's scale), a bulk
#: cohort, a single-cell one with the default batch, and with a large batch
CASES = [
    ("demo", 60, 2000, 32),
    ("bulk", 400, 2000, 32),
    ("cells", 4000, 2000, 128),
    ("cells_big_batch", 4000, 2000, 1024),
]


def one(n_train, genes, batch, threads, epochs):
    import torch

    from bench_train import make_data
    from genovae.train import train_vae

    torch.set_num_threads(threads)
    cohort = make_data(n_train, max(8, n_train // 5), genes, "gaussian")
    _, _, info = train_vae(cohort, model_config={"hidden": "auto", "latent_dim": 10}, epochs=epochs,
                           batch_size=batch, patience=10 ** 6, kl_warmup_epochs=0, threads=threads, device="cpu")
    return n_train * info["epochs_run"] / info["seconds"]


def run_one(case, threads, epochs):
    _, n, g, b = case
    out = subprocess.run([sys.executable, __file__, "--one", str(n), str(g), str(b), str(threads), str(epochs)],
                         capture_output=True, text=True, check=True, cwd=os.path.dirname(__file__))
    return float(out.stdout.strip().splitlines()[-1])


def hogs(n):
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=5, type=int, metavar=("N", "GENES", "BATCH", "THREADS", "EPOCHS"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--load", type=int, default=os.cpu_count(), help="busy processes beside the loaded runs")
    ap.add_argument("--seconds", type=float, default=4.0, help="about this long per run (sets the epochs)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.one:
        n, g, b, t, e = a.one
        print(one(n, g, b, t, e))
        return
    results = {"machine": machine(), "load_processes": a.load, "cases": []}
    for case in CASES:
        name, n, g, b = case
        # epochs for ~a.seconds at 1 thread, idle (from a 2-epoch probe)
        rate = run_one(case, 1, 2)
        epochs = max(2, int(a.seconds * rate / n))
        row = {"case": name, "n_train": n, "genes": g, "batch_size": b, "epochs": epochs}
        for label, load in (("idle", 0), ("loaded", a.load)):
            procs = hogs(load)
            try:
                time.sleep(0.5 if load else 0)
                runs = {t: [] for t in a.threads}
                for p in range(a.pairs):
                    order = a.threads if p % 2 == 0 else a.threads[::-1]
                    for t in order:
                        runs[t].append(run_one(case, t, epochs))
            finally:
                for p_ in procs:
                    p_.kill()
                    p_.wait()
            base = a.threads[0]
            row[label] = {
                f"samples_per_s_{t}_threads": median(runs[t]) for t in a.threads
            } | {
                f"ratio_{t}_vs_{base}": median([x / y for x, y in zip(runs[t], runs[base])]) for t in a.threads[1:]
            }
        results["cases"].append(row)
        print(json.dumps(row), flush=True)
    if a.json:
        out = Path(__file__).parent / "runs" / "bench_threads.json"
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"written {out}")


if __name__ == "__main__":
    main()
