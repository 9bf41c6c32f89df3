"""Interpretable latent factors (``analysis.loadings``): which genes each latent dimension moves.

For every latent dimension ``k`` and gene ``g`` the loading is the decoder's average
marginal effect: the change of the decoded log expression (log2 units, at one common
library size) when dimension ``k`` moves by one cohort standard deviation, by central
differences ``(decode(z + s_k e_k) - decode(z - s_k e_k)) / 2`` averaged over the cohort's
latent means (up to ``max_points`` of them, seeded). For a linear decoder it is the
decoder's weight times ``s_k``; for the VAE's non-linear decoder it is the Jacobian
averaged where the samples are, rather than at one point.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def latent_loadings(model, cohort, transform, mu=None, max_points=256, seed=0, block=128):
    """(genes x dimensions) average change of decoded log2 expression per cohort SD of each dimension."""
    from .evaluate import encode
    from .risk import decoded_log

    if mu is None:
        mu = encode(model, cohort.inputs())[0]
    mu = np.asarray(mu, np.float64)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(mu), size=min(max_points, len(mu)), replace=False))
    points = mu[rows]
    sd = mu.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    lib_all = np.full(len(points), float(np.median(cohort.library_all)))
    lib = np.full(len(points), float(np.median(cohort.library)), dtype=np.float32)
    to_log2 = np.log2(transform.log_base)
    k = mu.shape[1]
    out = np.zeros((len(cohort.genes), k))
    for j in range(k):
        step = np.zeros(k)
        step[j] = sd[j]
        total = np.zeros(len(cohort.genes))
        for i in range(0, len(points), block):
            z = points[i : i + block]
            la, lb = lib_all[i : i + block], lib[i : i + block]
            total += (decoded_log(model, transform, z + step, la, lb)
                      - decoded_log(model, transform, z - step, la, lb)).sum(axis=0) / 2
        out[:, j] = total / len(points) * to_log2
    return out


def loadings_table(loadings, genes, annotation=None):
    """Long table: dimension, gene, loading, rank within the dimension (by |loading|), annotation columns."""
    k = loadings.shape[1]
    parts = []
    for j in range(k):
        order = np.argsort(-np.abs(loadings[:, j]), kind="stable")
        rank = np.empty(len(genes), int)
        rank[order] = np.arange(1, len(genes) + 1)
        parts.append(pd.DataFrame({"dimension": f"z{j + 1}", "gene": genes, "loading": loadings[:, j],
                                   "rank": rank}).sort_values("rank"))
    table = pd.concat(parts, ignore_index=True)
    if annotation is not None and annotation.shape[1] > 0:
        ann = annotation.drop(columns=[c for c in annotation.columns if c in table.columns], errors="ignore")
        table = table.merge(ann, left_on="gene", right_index=True, how="left")
    return table


def loadings_job(sm, _log=None):
    """Rule ``loadings``'s step from a job's ``snakemake`` object (also run by rule apply_model)."""
    from .apply import model_files

    loadings_step(**model_files(sm), genes=sm.input.genes, out_table=sm.output.loadings,
                  out_plot=sm.output.loadings_plot, threads=sm.threads, **sm.params.loadings)


def loadings_step(*, model, features, split, matrix, transform, genes, out_table, out_plot, seed=0, top=8,
                  dpi=120, threads=1):
    """Rule ``loadings``: latent_loadings.tsv and a figure of each dimension's top genes."""
    from . import io
    from .apply import _load

    vae, _, t, cohort = _load(model, features, split, matrix, transform, threads)
    annotation = io.read_gene_table(genes, na="none").set_index("gene")
    table = loadings_table(latent_loadings(vae, cohort, t, seed=seed), cohort.genes, annotation)
    io.write_tsv(out_table, table)
    loadings_plot(table, out_plot, top=top, dpi=dpi)
    return table


def loadings_plot(table, path, top=8, dpi=120):
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import io
    from .annotation import gene_label

    ann_cols = [c for c in table.columns if c not in ("dimension", "gene", "loading", "rank")]
    dims = list(dict.fromkeys(table["dimension"]))
    cols = min(len(dims), 4)
    rows = math.ceil(len(dims) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 0.28 * top * rows + 1.0 * rows), squeeze=False)
    for ax, d in zip(axes.flat, dims):
        sub = table[table["dimension"] == d].nsmallest(top, "rank").iloc[::-1]
        labels = [gene_label(r["gene"], r[ann_cols], max_len=26) for _, r in sub.iterrows()]
        colours = ["tab:red" if v > 0 else "tab:blue" for v in sub["loading"]]
        ax.barh(range(len(sub)), sub["loading"], color=colours)
        ax.set_yticks(range(len(sub)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_title(d, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    for ax in axes.flat[len(dims):]:
        ax.axis("off")
    fig.supxlabel("log2 change of decoded expression per latent SD", fontsize=8)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
