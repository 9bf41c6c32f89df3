"""Figures for the report (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from . import io  # noqa: E402


def _save(fig, path, dpi):
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)


def _colors(levels):
    cmap = plt.get_cmap("tab10" if len(levels) <= 10 else "tab20")
    return {lvl: cmap(i % cmap.N) for i, lvl in enumerate(levels)}


def loss_curves(histories, selection, path, dpi=120):
    sel = io.read_json(selection)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2.2, 1]})
    offset = 0
    for h in histories:
        df = pd.read_csv(h, sep="\t")
        r = int(df["round"].iloc[0])
        e = df["epoch"] + offset
        ax.plot(e, df["train_loss"], lw=1, label=f"round {r} train")
        ax.plot(e, df["val_loss"], lw=1, ls="--", label=f"round {r} validation")
        ax.axvline(offset + 0.5, color="grey", lw=0.5)
        offset += len(df)
    ax.set_xlabel("epoch (rounds concatenated)")
    ax.set_ylabel("loss (negative ELBO per sample)")
    ax.set_yscale("symlog")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("training and validation loss")
    rounds = pd.DataFrame(sel["rounds"])
    colors = ["tab:green" if p else "tab:red" for p in rounds["passed"]]
    bx.bar(rounds["round"].astype(str), rounds["value"], color=colors)
    bx.axhline(sel["threshold"], color="black", ls="--", lw=1, label=f"threshold {sel['threshold']:g}")
    bx.set_xlabel("round")
    bx.set_ylabel(sel["metric"])
    bx.set_title(f"retrain decision (selected: round {sel['selected_round']})")
    bx.legend(fontsize=8)
    _save(fig, path, dpi)


def _embed_2d(z, seed=0, max_tsne=3000):
    """2-D views of the latent means: PCA, and t-SNE (scikit-learn, no extra dependency)."""
    from sklearn.manifold import TSNE

    views = {}
    if z.shape[1] >= 2:
        pc = PCA(n_components=2, random_state=0).fit(z)
        v = pc.explained_variance_ratio_
        views["PCA of latent means"] = (pc.transform(z), (f"PC1 ({v[0]:.0%})", f"PC2 ({v[1]:.0%})"), None)
        idx = np.arange(len(z))
        if len(z) > max_tsne:
            idx = np.sort(np.random.default_rng(seed).choice(len(z), max_tsne, replace=False))
        if len(idx) >= 5:
            perp = float(min(30.0, max(2.0, (len(idx) - 1) / 3)))
            xy = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(z[idx])
            views["t-SNE of latent means"] = (xy, ("t-SNE 1", "t-SNE 2"), idx)
    else:
        views["latent dimension 1"] = (np.column_stack([z[:, 0], np.zeros(len(z))]), ("z1", ""), None)
    return views


def latent_space(latent, samples, labels, path, dpi=120, condition="condition"):
    """Latent means in 2-D, one row per label column, one column per projection."""
    df = pd.read_csv(latent, sep="\t", dtype={"sample_id": str, "condition": str})
    sheet = pd.read_csv(samples, sep="\t", dtype=str, keep_default_na=False).set_index("sample_id")
    z = df.filter(regex=r"^z\d+$").to_numpy()
    views = _embed_2d(z)
    label_cols = ["condition"] + [c for c in labels if c in sheet.columns and c != condition]
    fig, axes = plt.subplots(
        len(label_cols), len(views), figsize=(6 * len(views), 4.8 * len(label_cols)), squeeze=False
    )
    markers = {"train": "o", "val": "s", "test": "^"}
    for i, col in enumerate(label_cols):
        values = df["condition"] if col == "condition" else sheet.loc[df["sample_id"], col].reset_index(drop=True)
        values = values.astype(str).to_numpy()
        levels = sorted(set(values))
        color = _colors(levels)
        for ax, (title, (xy, (xl, yl), idx)) in zip(axes[i], views.items()):
            sub = np.arange(len(df)) if idx is None else idx
            for lvl in levels:
                for split, mk in markers.items():
                    m = (values[sub] == lvl) & (df["split"].to_numpy()[sub] == split)
                    if m.any():
                        ax.scatter(xy[m, 0], xy[m, 1], c=[color[lvl]], marker=mk, s=22, edgecolor="k",
                                   lw=0.3, label=lvl if split == "train" else None)
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
            name = condition if col == "condition" else col
            ax.set_title(f"{title}, coloured by {name}", fontsize=9)
            if len(levels) <= 20:
                ax.legend(fontsize=7, markerscale=1.2, loc="best")
    fig.suptitle("latent space (marker = split: o train, s validation, ^ test)", fontsize=10)
    _save(fig, path, dpi)


def reconstruction_error(errors, path, dpi=120):
    df = pd.read_csv(errors, sep="\t", dtype={"sample_id": str, "condition": str})
    levels = sorted(df["condition"].unique())
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(levels) + 2), 4))
    data = [df.loc[df["condition"] == lvl, "reconstruction_mse"] for lvl in levels]
    ax.boxplot(data, tick_labels=levels, showfliers=False)
    rng = np.random.default_rng(0)
    for i, lvl in enumerate(levels):
        sub = df[df["condition"] == lvl]
        for split, mk in (("train", "o"), ("val", "s"), ("test", "^")):
            s = sub[sub["split"] == split]
            ax.scatter(i + 1 + rng.uniform(-0.15, 0.15, len(s)), s["reconstruction_mse"], marker=mk, s=14,
                       alpha=0.7, label=split if i == 0 else None)
    ax.set_ylabel("reconstruction MSE (preprocessed space)")
    ax.set_title("per-sample reconstruction error by group")
    ax.legend(fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    _save(fig, path, dpi)


def _label(row):
    for c in ("symbol", "gene_symbol", "description"):
        if c in row and isinstance(row[c], str) and row[c]:
            return f"{row['gene']} {row[c][:18]}"
    return str(row["gene"])


def volcano(risk, path, top_genes=30, dpi=120):
    df = pd.read_csv(risk, sep="\t", dtype={"gene": str}, keep_default_na=False, na_values=[""])
    contrasts = list(dict.fromkeys(df["contrast"]))
    n = len(contrasts)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.6 * rows), squeeze=False)
    for ax, c in zip(axes.flat, contrasts):
        sub = df[df["contrast"] == c]
        y = -np.log10(np.clip(sub["p_value"].astype(float), 1e-300, 1))
        top = (sub["vae_rank"] <= top_genes).to_numpy()
        ax.scatter(sub["log2_fold_change"][~top], y[~top], s=6, c="lightgrey", label="other genes")
        ax.scatter(sub["log2_fold_change"][top], y[top], s=12, c="tab:red", label=f"VAE top {top_genes}")
        for _, row in sub.nsmallest(6, "vae_rank").iterrows():
            ax.annotate(_label(row), (row["log2_fold_change"], -np.log10(max(row["p_value"], 1e-300))),
                        fontsize=6)
        ax.set_title(c, fontsize=10)
        ax.set_xlabel("log2 fold change (classical)")
        ax.set_ylabel("-log10 p (Welch t-test)")
        ax.legend(fontsize=7)
    for ax in axes.flat[n:]:
        ax.axis("off")
    _save(fig, path, dpi)


def risk_heatmap(risk, features, latent, path, top_genes=30, dpi=120):
    df = pd.read_csv(risk, sep="\t", dtype={"gene": str})
    contrasts = list(dict.fromkeys(df["contrast"]))
    per = max(1, top_genes // len(contrasts))
    genes = list(dict.fromkeys(g for c in contrasts for g in df[df["contrast"] == c].nsmallest(per, "vae_rank")["gene"]))
    x = io.read_matrix(features)[genes]
    lat = pd.read_csv(latent, sep="\t", dtype={"sample_id": str, "condition": str}).set_index("sample_id")
    order = lat.sort_values(["condition", "sample_id"]).index
    x = x.loc[order]
    v = x.to_numpy().T
    lim = np.nanpercentile(np.abs(v), 98) or 1.0
    fig, ax = plt.subplots(figsize=(min(16, 3 + 0.08 * len(order)), 2 + 0.2 * len(genes)))
    im = ax.imshow(v, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_yticks(range(len(genes)))
    ax.set_yticklabels(genes, fontsize=6)
    cond = lat.loc[order, "condition"].to_numpy()
    bounds = [0] + [i for i in range(1, len(cond)) if cond[i] != cond[i - 1]] + [len(cond)]
    ax.set_xticks([(a + b) / 2 for a, b in zip(bounds[:-1], bounds[1:])])
    ax.set_xticklabels([cond[a] for a in bounds[:-1]], fontsize=8, rotation=30, ha="right")
    for b in bounds[1:-1]:
        ax.axvline(b - 0.5, color="black", lw=0.8)
    fig.colorbar(im, ax=ax, label="preprocessed value", shrink=0.6)
    ax.set_title(f"top {per} VAE risk genes per contrast, samples grouped by condition", fontsize=9)
    _save(fig, path, dpi)


def make_plots(
    *, histories, selection, latent, errors, risk, features, samples, out, condition="condition", labels=(),
    top_genes=30, dpi=120,
):
    loss_curves(histories, selection, out["loss"], dpi)
    latent_space(latent, samples, labels, out["latent"], dpi, condition=condition)
    reconstruction_error(errors, out["errors"], dpi)
    volcano(risk, out["volcano"], top_genes, dpi)
    risk_heatmap(risk, features, latent, out["heatmap"], top_genes, dpi)
