#!/usr/bin/env python3
"""genovae's ``nb`` VAE vs scvi-tools' SCVI on the same counts, in one process.

scvi-tools is an optional dependency; without it this prints why and exits 0.
It does not install beside genovae's pinned pandas 3 (scvi-tools 1.4 needs
pandas < 3); a virtual environment that reuses the system torch works:

    python -m venv --system-site-packages /tmp/scvienv
    /tmp/scvienv/bin/pip install scvi-tools          # adds pandas 2.3 etc. to the venv only
    /tmp/scvienv/bin/python benchmarks/bench_scvi.py --json

Both sides: the same counts (``--n`` samples x ``--genes`` genes), 90 % train /
10 % validation, one hidden layer of 128 units with batch norm and dropout 0.1,
latent 10, negative binomial likelihood with gene-wise dispersion and the
observed library size, Adam lr 1e-3, batch 256, the same epochs, one validation
pass per epoch, the same thread count. genovae gets the log-normalised,
z-scored counts as input (what its preprocess step gives it); SCVI log1p's the
counts itself. After one untimed warm-up epoch of each, runs alternate; figures
are medians over pairs.

Timed: genovae: the ``train_vae`` call from NumPy arrays; SCVI: building the
model and ``model.train`` (data splitting, Lightning trainer, loop). ``*_loop_*``:
the epochs only (genovae ``info["seconds"]``, SCVI from on_train_start to
on_train_end). samples/s = train samples x epochs / seconds.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
import warnings

import _common  # noqa: F401
from _common import dump, machine, median, sync


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="samples, 90 %% train (default 10000)")
    p.add_argument("--genes", type=int, default=2_000)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--latent", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=10, help="epochs per timed run (default 10)")
    p.add_argument("--repeats", type=int, default=3, help="timed pairs (default 3)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default="32", help="genovae's train.precision (SCVI stays float32)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    a = parse(argv)
    try:
        import anndata
        import scvi
    except ImportError as exc:
        msg = (f"bench_scvi skipped: scvi-tools is not installed here ({exc}). It needs pandas < 3, so it "
               f"cannot share genovae's environment; see this file's docstring for a side virtualenv.")
        if a.json:
            import json

            print(json.dumps({"benchmark": "bench_scvi", "skipped": True, "reason": msg}))
        else:
            print(msg)
        return None
    import numpy as np
    import torch
    from lightning.pytorch.callbacks import Callback

    from bench_train import make_data
    from genovae.train import train_vae

    warnings.filterwarnings("ignore")
    for name in ("scvi", "lightning", "lightning.pytorch", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    n_val = a.n // 10
    n_train = a.n - n_val
    cohort = make_data(n_train, n_val, a.genes, "nb", seed=a.seed)
    dev = torch.device(a.device)
    adata = anndata.AnnData(X=np.ascontiguousarray(cohort.target, dtype=np.float32))
    scvi.model.SCVI.setup_anndata(adata)
    scvi.settings.num_threads = a.threads
    scvi.settings.dl_num_workers = 0
    accelerator = "gpu" if dev.type == "cuda" else "cpu"

    class Timer(Callback):
        def on_train_start(self, trainer, pl_module):
            sync(dev)
            self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            sync(dev)
            self.t1 = time.perf_counter()

    def run_scvi(epochs):
        scvi.settings.seed = a.seed
        torch.set_num_threads(a.threads)
        timer = Timer()
        t0 = time.perf_counter()
        model = scvi.model.SCVI(adata, n_hidden=a.hidden, n_latent=a.latent, n_layers=1, dropout_rate=0.1,
                                gene_likelihood="nb", dispersion="gene")
        model.train(max_epochs=epochs, accelerator=accelerator, devices=1, train_size=0.9, validation_size=0.1,
                    batch_size=a.batch_size, early_stopping=False, check_val_every_n_epoch=1,
                    enable_progress_bar=False, enable_checkpointing=False, logger=False,
                    plan_kwargs={"lr": 1e-3}, callbacks=[timer])
        sync(dev)
        total = time.perf_counter() - t0
        return total, timer.t1 - timer.t0

    def run_genovae(epochs):
        t0 = time.perf_counter()
        _, _, info = train_vae(
            cohort,
            model_config=dict(hidden=[a.hidden], latent_dim=a.latent, dropout=0.1, batch_norm=True,
                              likelihood="nb"),
            epochs=epochs, batch_size=a.batch_size, lr=1e-3, kl_warmup_epochs=1, patience=10**6, seed=a.seed,
            device=str(dev), threads=a.threads, progress=io.StringIO(), precision=a.precision,
        )
        assert info["epochs_run"] == epochs
        return time.perf_counter() - t0, info["seconds"]

    run_genovae(1)  # warm-up
    run_scvi(1)
    pairs = []
    for r in range(a.repeats):
        order = ("genovae", "scvi") if r % 2 == 0 else ("scvi", "genovae")
        res = {side: (run_genovae if side == "genovae" else run_scvi)(a.epochs) for side in order}
        sps = {k: n_train * a.epochs / v[0] for k, v in res.items()}
        loop = {k: n_train * a.epochs / v[1] for k, v in res.items()}
        pairs.append({
            "order": list(order),
            "genovae_samples_per_s": round(sps["genovae"], 1),
            "scvi_samples_per_s": round(sps["scvi"], 1),
            "ratio": round(sps["genovae"] / sps["scvi"], 3),
            "genovae_loop_samples_per_s": round(loop["genovae"], 1),
            "scvi_loop_samples_per_s": round(loop["scvi"], 1),
            "ratio_loop": round(loop["genovae"] / loop["scvi"], 3),
        })
        if not a.json:
            print(f"pair {r + 1}/{a.repeats}: {pairs[-1]}", file=sys.stderr)
    out = {
        "benchmark": "bench_scvi",
        "command": f"{os.path.basename(sys.executable)} benchmarks/bench_scvi.py "
                   + " ".join(sys.argv[1:] if argv is None else argv),
        "genovae_samples_per_s": round(median([p["genovae_samples_per_s"] for p in pairs]), 1),
        "scvi_samples_per_s": round(median([p["scvi_samples_per_s"] for p in pairs]), 1),
        "ratio": round(median([p["ratio"] for p in pairs]), 3),
        "genovae_loop_samples_per_s": round(median([p["genovae_loop_samples_per_s"] for p in pairs]), 1),
        "scvi_loop_samples_per_s": round(median([p["scvi_loop_samples_per_s"] for p in pairs]), 1),
        "ratio_loop": round(median([p["ratio_loop"] for p in pairs]), 3),
        "n": a.n,
        "n_train": n_train,
        "genes": a.genes,
        "hidden": [a.hidden],
        "latent": a.latent,
        "batch_size": a.batch_size,
        "epochs": a.epochs,
        "repeats": a.repeats,
        "threads": a.threads,
        "device": str(dev),
        "genovae_precision": a.precision,
        "scvi_tools": scvi.__version__,
        "timed": "genovae: train_vae call; SCVI: model construction + model.train; *_loop_*: epochs only",
        "machine": machine(a.device),
        "pairs": pairs,
    }
    dump(out, a.json)
    return out


if __name__ == "__main__":
    main()
