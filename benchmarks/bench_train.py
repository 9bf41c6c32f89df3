#!/usr/bin/env python3
"""Training throughput: genovae's training code vs a minimal hand-written loop.

Both sides train the same VAE (same layers, likelihood, ELBO with the same KL
weight), on the same preloaded data, with the same batch size, epochs, Adam
(fused where PyTorch has it, on both sides), thread count, precision and
``torch.use_deterministic_algorithms`` setting, in this one process. Runs
alternate (project, reference, reference, project, ...) so that a noisy machine
affects both alike; the ratio is the median over pairs of per-pair ratios.

What is timed, on both sides, per run: from the samples x genes float32 NumPy
arrays and the split to a trained model, i.e. copying the train and validation
splits into tensors on the device, building the model and optimizer, and
``epochs`` epochs of [a shuffled pass over the train split in mini-batches
(forward, ELBO, backward, Adam step) + one validation pass (latent means,
batches of 4096)], with one host read of the epoch's losses. The project side is
``genovae.train.train_vae`` (early-stopping bookkeeping, per-epoch history,
tqdm progress to a buffer, no checkpoint file) with a patience larger than the
epochs, so both run every epoch. ``*_loop_samples_per_s`` time the epochs only
(genovae: ``info["seconds"]``). samples/s = train samples x epochs / seconds;
``*_per_cpu_s`` divide by the process's CPU time instead of wall time, which
other jobs on a shared machine disturb less.

    python benchmarks/bench_train.py --json
    python benchmarks/bench_train.py --device cuda --precision bf16 --threads 4 --json
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time

import numpy as np

import _common  # noqa: F401  (puts workflow/lib on sys.path)
from _common import dump, machine, median, sync

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from genovae.dataset import Cohort  # noqa: E402
from genovae.train import PRECISIONS, resolve_precision, train_vae  # noqa: E402

EVAL_BATCH = 4096


# ----------------------------------------------------------------- data
def make_data(n_train, n_val, genes, likelihood, seed=0):
    """A low-rank cohort: z-scored float32 inputs, and counts for the nb likelihood."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    rank = 10
    z = rng.standard_normal((n, rank), dtype=np.float32)
    w = rng.standard_normal((rank, genes), dtype=np.float32) / math.sqrt(rank)
    x = z @ w
    x += 0.5 * rng.standard_normal((n, genes), dtype=np.float32)
    if likelihood == "nb":
        rate = np.exp(np.clip(x, -4, 4)) * rng.lognormal(1.0, 1.0, size=genes).astype(np.float32)
        counts = rng.poisson(rate).astype(np.float32)
        target = counts
        x = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    else:
        target = None
    x -= x.mean(0)
    x /= x.std(0) + 1e-6
    x = np.ascontiguousarray(x, dtype=np.float32)
    if target is None:
        target = x
    library = target.sum(1).astype(np.float32) if likelihood == "nb" else np.ones(n, np.float32)
    split = np.array(["train"] * n_train + ["val"] * n_val)
    return Cohort(
        sample_ids=np.array([f"s{i}" for i in range(n)]),
        split=split,
        condition=np.array(["a", "b"] * (n // 2) + ["a"] * (n % 2)),
        x=x,
        target=target,
        library=library,
        library_all=library.astype(np.float64),
        genes=[f"g{j}" for j in range(genes)],
    )


# ------------------------------------------------------------ reference
class RefVAE(nn.Module):
    """The same network as genovae.model.VAE, written out plainly."""

    def __init__(self, genes, hidden, latent, dropout, likelihood):
        super().__init__()

        def block(sizes):
            layers = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
            return nn.Sequential(*layers)

        self.likelihood = likelihood
        self.enc = block([genes, *hidden])
        self.mu = nn.Linear(hidden[-1], latent)
        self.lv = nn.Linear(hidden[-1], latent)
        self.dec = block([latent, *hidden[::-1]])
        self.out = nn.Linear(hidden[0], genes)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(genes))
        else:
            self.log_theta = nn.Parameter(torch.full((genes,), math.log(10.0)))

    def forward(self, x, target, lib, beta, sample=True):
        h = self.enc(x)
        mu, lv = self.mu(h).float(), self.lv(h).clamp(-12.0, 8.0).float()
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * lv) if sample else mu
        out = self.out(self.dec(z)).float()
        if self.likelihood == "gaussian":
            ls = self.log_scale.clamp(-7.0, 5.0)
            ll = -0.5 * ((target - out) * torch.exp(-ls)).pow(2) - ls - 0.5 * math.log(2 * math.pi)
        else:
            m = torch.exp(F.log_softmax(out, -1)) * lib.unsqueeze(-1)
            th = torch.exp(self.log_theta.clamp(-10.0, 12.0))
            lth = torch.log(th + m + 1e-8)
            ll = (th * (torch.log(th + 1e-8) - lth) + target * (torch.log(m + 1e-8) - lth)
                  + torch.lgamma(target + th) - torch.lgamma(th) - torch.lgamma(target + 1.0))
        kl = 0.5 * (mu.pow(2) + lv.exp() - 1.0 - lv)
        return (-ll.sum(-1) + beta * kl.sum(-1)).mean()


def reference_train(cohort, a, dev):
    """Minimal loop: preloaded tensors, index batching, no DataLoader. Returns (total s, loop s, CPU s)."""
    c_start = time.process_time()
    t_start = time.perf_counter()
    torch.set_num_threads(a.threads)
    if a.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # as genovae does; needed on CUDA
    torch.use_deterministic_algorithms(bool(a.deterministic))
    torch.manual_seed(a.seed)
    tr, va = cohort.split == "train", cohort.split == "val"
    to = lambda arr, m: torch.as_tensor(np.ascontiguousarray(arr[m]), device=dev)  # noqa: E731
    x_tr, x_va = to(cohort.x, tr), to(cohort.x, va)
    nb = a.likelihood == "nb"
    t_tr, t_va = (to(cohort.target, tr), to(cohort.target, va)) if nb else (x_tr, x_va)
    l_tr, l_va = to(cohort.library, tr), to(cohort.library, va)
    model = RefVAE(x_tr.shape[1], a.hidden, a.latent, a.dropout, a.likelihood).to(dev)
    try:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    amp = PRECISIONS[a.precision]
    scaler = torch.amp.GradScaler(dev.type) if a.precision == "16-mixed" else None
    n = x_tr.shape[0]
    sync(dev)
    t_loop = time.perf_counter()
    for epoch in range(1, a.epochs + 1):
        beta = min(1.0, epoch / a.kl_warmup)
        model.train()
        perm = torch.randperm(n, device=dev)
        for i in range(0, n, a.batch_size):
            idx = perm[i : i + a.batch_size]
            xb = x_tr[idx]
            tb = t_tr[idx] if nb else xb
            with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                loss = model(xb, tb, l_tr[idx], beta)
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
        model.eval()
        tot = torch.zeros((), device=dev)
        with torch.no_grad(), torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            for i in range(0, x_va.shape[0], EVAL_BATCH):
                s = slice(i, i + EVAL_BATCH)
                tot += model(x_va[s], t_va[s], l_va[s], 1.0, sample=False) * x_va[s].shape[0]
        float(tot)  # the epoch's validation loss, read once
    sync(dev)
    t_end = time.perf_counter()
    return t_end - t_start, t_end - t_loop, time.process_time() - c_start


def project_train(cohort, a, dev):
    c0 = time.process_time()
    t0 = time.perf_counter()
    model, history, info = train_vae(
        cohort,
        model_config=dict(hidden=a.hidden, latent_dim=a.latent, dropout=a.dropout, batch_norm=True,
                          likelihood=a.likelihood),
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=1e-3,
        kl_warmup_epochs=a.kl_warmup,
        patience=10**6,
        seed=a.seed,
        device=str(dev),
        threads=a.threads,
        deterministic=bool(a.deterministic),
        progress=io.StringIO(),
        checkpoint=None,
        precision=a.precision,
    )
    total = time.perf_counter() - t0  # train_vae returns the model on the CPU: synchronised
    assert info["epochs_run"] == a.epochs, info
    return total, info["seconds"], time.process_time() - c0


# ------------------------------------------------------------------ main
def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="train samples (default 10000)")
    p.add_argument("--n-val", type=int, default=None, help="validation samples (default n/10)")
    p.add_argument("--genes", type=int, default=5_000)
    p.add_argument("--hidden", default="256,128")
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--likelihood", default="gaussian", choices=["gaussian", "nb"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3, help="epochs per timed run (default 3)")
    p.add_argument("--repeats", type=int, default=5, help="timed (project, reference) pairs (default 5)")
    p.add_argument("--kl-warmup", type=int, default=1,
                   help="KL warm-up epochs (1: genovae's early-stopping bookkeeping runs every epoch)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="32", help="32, bf16 or 16-mixed")
    p.add_argument("--deterministic", type=int, default=1, choices=[0, 1],
                   help="torch.use_deterministic_algorithms on both sides (genovae's default: 1)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    a.hidden = [int(h) for h in str(a.hidden).split(",") if h]
    a.n_val = a.n_val if a.n_val is not None else max(2, a.n // 10)
    a.precision = resolve_precision(a.precision)
    return a


def main(argv=None):
    a = parse(argv)
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_train: --device cuda but no CUDA device is usable")
    cohort = make_data(a.n, a.n_val, a.genes, a.likelihood, seed=a.seed)
    # warm-up (untimed): allocator, kernels, thread pools of both sides
    warm = argparse.Namespace(**{**vars(a), "epochs": 1})
    project_train(cohort, warm, dev)
    reference_train(cohort, warm, dev)
    pairs = []
    for r in range(a.repeats):
        order = ("project", "reference") if r % 2 == 0 else ("reference", "project")
        res = {}
        for side in order:
            fn = project_train if side == "project" else reference_train
            res[side] = fn(cohort, a, dev)
        sps = {k: a.n * a.epochs / v[0] for k, v in res.items()}
        loop = {k: a.n * a.epochs / v[1] for k, v in res.items()}
        cpu = {k: a.n * a.epochs / v[2] for k, v in res.items()}
        pairs.append({
            "order": list(order),
            "project_samples_per_s": round(sps["project"], 1),
            "reference_samples_per_s": round(sps["reference"], 1),
            "ratio": round(sps["project"] / sps["reference"], 4),
            "project_loop_samples_per_s": round(loop["project"], 1),
            "reference_loop_samples_per_s": round(loop["reference"], 1),
            "ratio_loop": round(loop["project"] / loop["reference"], 4),
            "project_samples_per_cpu_s": round(cpu["project"], 1),
            "reference_samples_per_cpu_s": round(cpu["reference"], 1),
            "ratio_cpu": round(cpu["project"] / cpu["reference"], 4),
        })
        if not a.json:
            print(f"pair {r + 1}/{a.repeats}: {pairs[-1]}", file=sys.stderr)
    out = {
        "benchmark": "bench_train",
        "command": "python benchmarks/bench_train.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "project_samples_per_s": round(median([p["project_samples_per_s"] for p in pairs]), 1),
        "reference_samples_per_s": round(median([p["reference_samples_per_s"] for p in pairs]), 1),
        "ratio": round(median([p["ratio"] for p in pairs]), 4),
        "ratio_min": round(min(p["ratio"] for p in pairs), 4),
        "ratio_max": round(max(p["ratio"] for p in pairs), 4),
        "project_loop_samples_per_s": round(median([p["project_loop_samples_per_s"] for p in pairs]), 1),
        "reference_loop_samples_per_s": round(median([p["reference_loop_samples_per_s"] for p in pairs]), 1),
        "ratio_loop": round(median([p["ratio_loop"] for p in pairs]), 4),
        "project_samples_per_cpu_s": round(median([p["project_samples_per_cpu_s"] for p in pairs]), 1),
        "reference_samples_per_cpu_s": round(median([p["reference_samples_per_cpu_s"] for p in pairs]), 1),
        "ratio_cpu": round(median([p["ratio_cpu"] for p in pairs]), 4),
        "n": a.n,
        "n_val": a.n_val,
        "genes": a.genes,
        "hidden": a.hidden,
        "latent": a.latent,
        "dropout": a.dropout,
        "batch_norm": True,
        "likelihood": a.likelihood,
        "batch_size": a.batch_size,
        "epochs": a.epochs,
        "repeats": a.repeats,
        "threads": a.threads,
        "device": str(dev),
        "precision": a.precision,
        "deterministic": bool(a.deterministic),
        "optimizer": "Adam lr=1e-3, fused=True (both sides)",
        "timed": "whole call from NumPy arrays (split -> device tensors, model, optimizer, epochs of "
                 "train pass + validation pass); *_loop_* = epochs only; *_per_cpu_s = per second of the "
                 "process's CPU time (less sensitive to other load on a shared machine)",
        "machine": machine(a.device),
        "pairs": pairs,
    }
    dump(out, a.json)
    return out


if __name__ == "__main__":
    main()
