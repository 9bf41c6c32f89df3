"""What each job asks a scheduler for: memory and time sized from measurements and the cohort.

The figures are the true peaks (``<log>.job.json``, the job's own peak RSS) of every rule on
a TCGA-sized cohort (benchmarks/bench_scale.py: 11,000 samples x 20,000 genes, 839 MB as
float32, 10,000 genes modelled) and on the demo, written as ``base + ratio x matrix``:

* the data rules (collect, preprocess, export_h5ad) hold the whole matrix a few times:
  peaks 1.5x (collect), 1.9x (preprocess) and 2.3x (export_h5ad) its float32 size;
* the model rules (train, evaluate, latent, test_metrics, risk_genes, predict, loadings,
  generate) hold the modelled genes: peaks 2.5-3.0x the float32 size of samples x genes
  modelled, plus 300-450 MB for the interpreter, torch and scikit-learn (requested: 800 MB;
  2 GB for train, whose CUDA context on a GPU node alone takes 1-1.5 GB);
* the light rules (decide, select_model, summarize, provenance, risk_table, overview,
  run_config) peak at 0.1-0.4 GB whatever the cohort.

A request is the model's figure times :data:`MARGIN`, rounded up to 100 MB, times the
attempt (a retry after an out-of-memory kill asks for twice, then three times as much).
Times are generous (a job cut off by its time limit costs a retry, a long request only
queue time) but no longer a flat hour for a job of seconds.
"""

from __future__ import annotations

import math
import os

#: rules that hold the modelled genes and load torch (train apart)
MODEL_RULES = ("evaluate", "latent", "test_metrics", "risk_genes", "predict", "loadings", "generate", "apply_new",
               "apply_model")
#: MB = base + ratio x float32 MB of the matrix the rule holds ("all": every collected gene;
#: "modelled": the genes the model reads)
MEMORY = {
    "collect": (150, 1.6, "all"),
    "preprocess": (150, 2.0, "all"),
    "export_h5ad": (150, 2.4, "all"),
    # a CUDA context alone costs 1-1.5 GB of host memory on a GPU node
    "train": (2000, 3.0, "modelled"),
    **{rule: (800, 3.0, "modelled") for rule in MODEL_RULES},
    "plots": (350, 1.5, "modelled"),
}
#: a sparse cohort (genovae.sparse): the data rules hold its CSR (data + indices) instead, a few
#: times: MB = base + ratio x CSR MB (benchmarks/bench_atlas.py, 200,000 x 20,000 at 5 % non-zero)
SPARSE_MEMORY = {"collect": (300, 2.5), "preprocess": (300, 2.6), "export_h5ad": (300, 2.6)}
#: rules whose peak does not grow with the cohort (0.1-0.4 GB measured)
LIGHT_MB = 500
MARGIN = 1.3
#: the request when the cohort's size cannot be known before it is collected (a URL, GEO)
UNKNOWN_MB = 4000

#: minutes: light rules, and data/model rules as base + per GB of the matrix they hold
LIGHT_MINUTES = 15
MINUTES = {"all": (30, 20), "modelled": (60, 30)}


def matrix_mb(n_samples, n_genes):
    """float32 MB of a samples x genes matrix."""
    return n_samples * n_genes * 4 / 1e6


def mem_mb(rule, shape, n_modelled=None, attempt=1, sparse_mb=None):
    """The memory request (MB) of a job of ``rule`` for a cohort of ``shape`` (samples, genes;
    None when unknown) of which ``n_modelled`` genes are modelled; ``sparse_mb``: the CSR size
    of a sparse cohort (:func:`estimated_sparse_mb`), which sizes the data rules."""
    if rule not in MEMORY:
        return LIGHT_MB * int(attempt)
    if shape is None and not (sparse_mb and rule in SPARSE_MEMORY):
        return UNKNOWN_MB * int(attempt)
    base, ratio, held = MEMORY[rule]
    if sparse_mb and rule in SPARSE_MEMORY:
        (base, ratio), size = SPARSE_MEMORY[rule], float(sparse_mb)
    else:
        n, g = shape
        size = matrix_mb(n, g if held == "all" else min(g, n_modelled or g))
    need = (base + ratio * size) * MARGIN
    return max(LIGHT_MB, int(math.ceil(need / 100.0)) * 100) * int(attempt)


def runtime_min(rule, shape, n_modelled=None, attempt=1, sparse_mb=None):
    """The time request (minutes) of a job of ``rule`` (a sparse cohort's data rules: by its CSR)."""
    if rule not in MEMORY:
        return LIGHT_MINUTES * int(attempt)
    held = MEMORY[rule][2]
    base, per_gb = MINUTES[held]
    if sparse_mb and rule in SPARSE_MEMORY:
        return int(math.ceil(base + per_gb * float(sparse_mb) / 1000.0)) * int(attempt)
    if shape is None:
        return 60 * int(attempt) if held == "all" else 120 * int(attempt)
    n, g = shape
    size = matrix_mb(n, g if held == "all" else min(g, n_modelled or g))
    return int(math.ceil(base + per_gb * size / 1000.0)) * int(attempt)


#: bytes of a stored matrix per float32 value, roughly, by file type (text is ~8-10 characters a
#: value; compressed text and Parquet a few bytes)
BYTES_PER_VALUE = {".tsv": 9.0, ".csv": 9.0, ".txt": 9.0, ".gz": 3.0, ".parquet": 3.0, ".h5ad": 4.0, ".h5": 4.0}


def estimated_shape(manifest=None, simulate=None, expression=None):
    """(samples, genes) of the cohort as far as it is known before collect has run.

    ``manifest``: collect's manifest (a dict with ``shape_after``), the exact answer once it
    exists; ``simulate``: the simulate section (n_samples, n_genes); ``expression``: a local
    path, whose size gives the number of values: returned as (values, 1), so that the model
    rules, which cannot tell how many of its genes are modelled, are sized on all of them (the
    safe side). None when nothing tells.
    """
    if manifest and manifest.get("shape_after"):
        n, g = manifest["shape_after"]
        return int(n), int(g)
    if simulate:
        return int(simulate["n_samples"]), int(simulate["n_genes"])
    if expression and os.path.isfile(expression):
        suffix = os.path.splitext(expression)[1].lower()
        values = os.path.getsize(expression) / BYTES_PER_VALUE.get(suffix, 4.0)
        return max(1, int(values)), 1
    return None


def estimated_sparse_mb(manifest=None, expression=None):
    """The CSR MB of a sparse cohort, or None: collect's manifest (``sparse.csr_mb``) once it exists;
    before, an ``.h5ad`` file's size (its X as stored: CSR bytes for a sparse X, the dense bytes
    otherwise, which then over-asks until collect has run)."""
    if manifest is not None:
        return (manifest.get("sparse") or {}).get("csr_mb")
    if expression and str(expression).lower().endswith(".h5ad") and os.path.isfile(expression):
        return os.path.getsize(expression) / 1e6
    return None


# ------------------------------------------------------------------ job layout
#: ``resources.job_layout: auto``: fewer, fatter jobs (``merged``) for a cohort of at most this
#: many values. Each job spends 1.5-3 s starting Python and importing torch and scikit-learn, more
#: than its work on a cohort of this size: on the demo (83 x 2,308) the nine apply jobs' work is
#: 3.6 s in one process against 10.8 s of wall time as nine jobs on 2 cores, and a round's
#: evaluation 0.7 s against a 3 s job (BENCHMARKS.md, the demo). Above it, the steps' work grows with
#: the cohort, and one job per step lets a cluster run them side by side and Snakemake rerun only
#: the step whose settings changed.
MERGED_MAX_VALUES = 20_000_000


def merged_jobs(setting, shape):
    """True for the merged job layout (each round's training job also evaluates it; rule apply_model
    applies the selected model in one job), False for one job per step: ``resources.job_layout``
    (merged, per_step), or under ``auto`` from ``shape``, the cohort's (samples, genes) as known
    before collect (:func:`estimated_shape` without the manifest, so that the layout stays the same
    from one run to the next; None, unknown: one job per step)."""
    if setting != "auto":
        return setting == "merged"
    return shape is not None and shape[0] * shape[1] <= MERGED_MAX_VALUES


# ------------------------------------------------------------------ threads
#: ``train.threads: auto``: a job's CPU threads from the size of one training step
#: (batch_size x genes modelled), measured by benchmarks/bench_threads.py: below this a second
#: thread costs more in synchronisation than it computes
AUTO_THREADS_MIN_STEP = 2_000_000
#: the most threads ``auto`` asks for (Snakemake scales it down to --cores, SLURM grants it as
#: cpus-per-task)
AUTO_THREADS_MAX = 2


def auto_threads(batch_size, n_top_genes):
    """CPU threads of the training and apply jobs under ``train.threads: auto``.

    One thread unless a training step is large (``batch_size x n_top_genes`` of at least
    :data:`AUTO_THREADS_MIN_STEP`), then :data:`AUTO_THREADS_MAX`. Measured on 2 cores
    (BENCHMARKS.md, "Threads"): for small steps a second thread makes training slower even on an
    idle machine, and 3-12x slower under load, where one-thread jobs also run side by side. From
    the config alone, so that the same config gives the same thread count, hence the same float
    results, wherever it runs.
    """
    if int(batch_size) * int(n_top_genes) >= AUTO_THREADS_MIN_STEP:
        return AUTO_THREADS_MAX
    return 1
