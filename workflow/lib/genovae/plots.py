"""Figures for the report (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from . import io  # noqa: E402
from .annotation import gene_label  # noqa: E402
from .loop import METRICS  # noqa: E402

#: one fixed colour, marker and legend name per split, used in every figure
SPLITS = {
    "train": ("#1f77b4", "o", "train"),
    "val": ("#ff7f0e", "s", "validation"),
    "test": ("#2ca02c", "^", "test"),
}
OTHER_SPLIT = ("#7f7f7f", "D", None)
#: annotation columns holding a gene symbol, in order of preference (matched case-insensitively)
FDR_LEVEL = 0.05
#: genes labelled by name in each volcano panel (the best VAE ranks)
VOLCANO_LABELS = 10
#: adjustText iterations per panel (it stops earlier once no label overlaps)
LABEL_ITERATIONS = 150


def _save(fig, path, dpi):
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)


def _colors(levels):
    cmap = plt.get_cmap("tab10" if len(levels) <= 10 else "tab20")
    return {lvl: cmap(i % cmap.N) for i, lvl in enumerate(levels)}


def _split_style(split):
    return SPLITS.get(split, OTHER_SPLIT[:2] + (str(split),))


def _unique_labels(genes, labels):
    """Append the gene id to labels that more than one gene shares."""
    counts = pd.Series(labels).value_counts()
    return [f"{lab} ({g})" if counts[lab] > 1 and lab != str(g) else lab for g, lab in zip(genes, labels)]


# ------------------------------------------------------------------ training


def _loss_axis(ax, series):
    """Log scale when all losses are positive and span a decade, linear otherwise; clip early spikes."""
    allv = np.concatenate([s[np.isfinite(s)] for s in series]) if series else np.array([])
    if allv.size == 0:
        return ""
    lo, hi = float(allv.min()), float(allv.max())
    if lo > 0 and hi / lo >= 10:
        ax.set_yscale("log")
        return ""
    # the first epochs of a round can be far above the rest: keep them from flattening the curves
    late = [s[min(5, len(s) // 5):] for s in series]
    late = np.concatenate([s[np.isfinite(s)] for s in late])
    top = float(late.max()) if late.size else hi
    if hi - lo > 3 * (top - lo) > 0:
        ax.set_ylim(lo - 0.05 * (top - lo), top + 0.15 * (top - lo))
        return f" (axis clipped: early epochs reach {hi:.4g})"
    return ""


def _decision_panel(bx, sel):
    rounds = pd.DataFrame(sel["rounds"])
    metric, thr = sel["metric"], float(sel["threshold"])
    r = rounds["round"].astype(int).to_numpy()
    v = pd.to_numeric(rounds["value"], errors="coerce").to_numpy(float)
    passed = rounds["passed"].astype(bool).to_numpy()
    ok = np.isfinite(v)
    vals = np.append(v[ok], thr)
    span = float(vals.max() - vals.min()) or max(abs(thr) * 0.05, 1e-3)
    lo, hi = vals.min() - 0.3 * span, vals.max() + 0.35 * span
    bx.set_ylim(lo, hi)
    direction = METRICS.get(metric)
    if direction is not None:
        # the passing side of the threshold, lightly shaded
        bx.axhspan(lo if direction == "min" else thr, thr if direction == "min" else hi, color="tab:green", alpha=0.07)
    bx.axhline(thr, color="black", ls="--", lw=1)
    colors = np.where(passed, "tab:green", "tab:red")
    bx.vlines(r[ok], thr, v[ok], colors=colors[ok], lw=2)
    bx.scatter(r[ok], v[ok], c=list(colors[ok]), s=55, zorder=3, edgecolor="black", lw=0.5)
    for ri, vi in zip(r[ok], v[ok]):
        above = vi >= thr
        bx.annotate(f"{vi:.4g}", (ri, vi), xytext=(7, 6 if above else -6), textcoords="offset points",
                    va="bottom" if above else "top", fontsize=8)
    for ri in r[~ok]:
        bx.scatter([ri], [lo], marker="x", c="tab:red", s=40, clip_on=False, zorder=3)
        bx.annotate("n/a", (ri, lo), xytext=(6, 4), textcoords="offset points", fontsize=8, color="tab:red")
    chosen = sel.get("selected_round")
    if chosen is not None and int(chosen) in set(r[ok]):
        vc = v[ok][r[ok] == int(chosen)][0]
        bx.scatter([chosen], [vc], s=260, facecolor="none", edgecolor="black", lw=1.5, zorder=4)
    bx.set_xticks(r)
    bx.set_xlim(r.min() - 0.6, r.max() + 0.9)
    bx.ticklabel_format(axis="y", useOffset=False, style="plain")
    bx.set_xlabel("round")
    bx.set_ylabel(metric)
    if direction is not None:
        note = "lower is better ↓" if direction == "min" else "higher is better ↑"
        bx.text(0.02, 0.98, note, transform=bx.transAxes, ha="left", va="top", fontsize=8, style="italic")
    handles = [
        Line2D([], [], marker="o", ls="", color="tab:green", markeredgecolor="black", label="passed"),
        Line2D([], [], marker="o", ls="", color="tab:red", markeredgecolor="black", label="failed"),
        Line2D([], [], marker="o", ls="", markersize=13, markerfacecolor="none", color="black", label="selected"),
        # in the legend, not on the line, where the rounds' stems and the legend would cross the label
        Line2D([], [], ls="--", lw=1, color="black", label=f"threshold {thr:.4g}"),
    ]
    bx.legend(handles=handles, fontsize=7, loc="upper right", labelspacing=1.0, borderpad=0.8)
    title = "retrain decision" + (f" (selected: round {chosen})" if chosen is not None else "")
    bx.set_title(title, fontsize=10)


def loss_curves(histories, selection, path, dpi=120):
    sel = io.read_json(selection)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.3), gridspec_kw={"width_ratios": [2.1, 1]})
    frames = [pd.read_csv(h, sep="\t") for h in histories]
    frames = sorted((df for df in frames if len(df)), key=lambda df: int(df["round"].iloc[0]))
    color = _colors([int(df["round"].iloc[0]) for df in frames])
    info = sel.get("train_info") or {}
    offset, series, handles = 0, [], []
    for df in frames:
        r = int(df["round"].iloc[0])
        e = df["epoch"].to_numpy() + offset
        tr, va = df["train_loss"].to_numpy(float), df["val_loss"].to_numpy(float)
        ax.plot(e, tr, lw=1, color=color[r])
        ax.plot(e, va, lw=1.2, ls="--", color=color[r])
        series += [tr, va]
        handles.append(Line2D([], [], color=color[r], lw=2, label=f"round {r}"))
        if offset:
            ax.axvline(offset + 0.5, color="grey", lw=0.5)
        if r == sel.get("selected_round") and info.get("round") == r and info.get("best_epoch") in set(df["epoch"]):
            best = df.loc[df["epoch"] == info["best_epoch"]].iloc[0]
            ax.scatter([best["epoch"] + offset], [best["val_loss"]], marker="*", s=140, color="gold",
                       edgecolor="black", lw=0.6, zorder=4)
            handles.append(Line2D([], [], marker="*", ls="", markersize=11, color="gold", markeredgecolor="black",
                                  label="best epoch (selected)"))
        offset += len(df)
    clipped = _loss_axis(ax, series)
    handles += [Line2D([], [], color="black", lw=1, label="train"),
                Line2D([], [], color="black", lw=1.2, ls="--", label="validation")]
    ax.set_xlabel("epoch (rounds concatenated)")
    ax.set_ylabel("loss (negative ELBO per sample)")
    ax.legend(handles=handles, fontsize=7, ncol=2, loc="upper right")
    ax.set_title("training and validation loss" + clipped, fontsize=10)
    ax.grid(True, which="major", axis="y", lw=0.4, alpha=0.5)
    _decision_panel(bx, sel)
    _save(fig, path, dpi)


# ------------------------------------------------------------------ latent space


def _embed_2d(z, seed=0, max_tsne=3000):
    """2-D views of the latent means: PCA, and t-SNE (scikit-learn, no extra dependency)."""
    from sklearn.decomposition import PCA
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
            title = "t-SNE of latent means" + (f" ({len(idx)} of {len(z)} samples)" if len(idx) < len(z) else "")
            views[title] = (xy, ("t-SNE 1", "t-SNE 2"), idx)
    else:
        jitter = np.random.default_rng(seed).uniform(-0.3, 0.3, len(z))
        views["latent dimension 1 (vertical jitter only)"] = (np.column_stack([z[:, 0], jitter]), ("z1", ""), None)
    return views


def latent_space(latent, samples, labels, path, dpi=120, condition="condition"):
    """Latent means in 2-D, one row per label column, one column per projection."""
    df = io.read_latent(latent, na="none")
    sheet = io.read_sample_sheet(samples, na="none").set_index("sample_id")
    z = df.filter(regex=r"^z\d+$").to_numpy(float)
    views = _embed_2d(z)
    label_cols = ["condition"] + [c for c in dict.fromkeys(labels) if c in sheet.columns and c != condition]
    fig, axes = plt.subplots(
        len(label_cols), len(views), figsize=(6.2 * len(views), 4.8 * len(label_cols)), squeeze=False
    )
    splits = df["split"].astype(str).to_numpy()
    present = set(splits)
    split_order = [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))
    split_handles = [
        Line2D([], [], marker=_split_style(s)[1], ls="", color="white", markeredgecolor="black", markersize=6,
               label=_split_style(s)[2])
        for s in split_order
    ]
    order = np.random.default_rng(0).permutation(len(df))  # no group is always drawn on top
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    for i, col in enumerate(label_cols):
        raw = df["condition"] if col == "condition" else sheet.loc[df["sample_id"], col].reset_index(drop=True)
        values = raw.astype(str).str.strip().replace({"": "NA", "nan": "NA"}).to_numpy()
        numeric = pd.to_numeric(pd.Series(values).replace("NA", np.nan), errors="coerce").to_numpy(float)
        # a numeric label with many values (age, a score): one colour scale instead of categories
        known = values != "NA"
        continuous = col != "condition" and known.any() and np.isfinite(numeric[known]).all()
        continuous = continuous and len(set(values[known])) > 10
        levels = sorted(set(values) - {"NA"}) + (["NA"] if "NA" in values else [])
        color = _colors(levels)
        if "NA" in color:
            color["NA"] = (0.75, 0.75, 0.75, 1.0)
        name = condition if col == "condition" else col
        for ax, (title, (xy, (xl, yl), idx)) in zip(axes[i], views.items()):
            sub = order if idx is None else idx[np.random.default_rng(0).permutation(len(idx))]
            pos = {s: k for k, s in enumerate(idx)} if idx is not None else None
            mappable = None
            for split in split_order:
                rows = sub[splits[sub] == split]
                if not len(rows):
                    continue
                at = rows if pos is None else np.array([pos[k] for k in rows], int)
                _, mk, _ = _split_style(split)
                kw = dict(marker=mk, s=24, edgecolor="black", lw=0.3)
                if continuous:
                    mappable = ax.scatter(xy[at, 0], xy[at, 1], c=numeric[rows], cmap=cmap,
                                          vmin=np.nanmin(numeric), vmax=np.nanmax(numeric), **kw)
                else:
                    ax.scatter(xy[at, 0], xy[at, 1], c=[color[v] for v in values[rows]], **kw)
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
            if title.startswith("t-SNE"):
                ax.set_xticks([])  # t-SNE coordinates carry no units
                ax.set_yticks([])
            elif yl == "":
                ax.set_yticks([])  # jitter only
            if title.startswith("PCA"):
                ax.set_aspect("equal", adjustable="datalim")
            ax.set_title(f"{title}, coloured by {name}", fontsize=9)
            if continuous:
                fig.colorbar(mappable, ax=ax, label=name + (" (grey: NA)" if not known.all() else ""), shrink=0.8)
                ax.legend(handles=split_handles, fontsize=7, loc="best", title="split", title_fontsize=7)
                continue
            if len(levels) <= 20:
                handles = [Line2D([], [], marker="o", ls="", color=color[lvl], markeredgecolor="black",
                                  markersize=6, label=lvl) for lvl in levels] + split_handles
            else:
                handles = split_handles
                ax.text(0.01, 0.01, f"{len(levels)} levels: colours repeat, no legend", transform=ax.transAxes,
                        fontsize=7, va="bottom")
            ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                      title=f"{name} / split", title_fontsize=7)
    fig.suptitle("latent space (colour = label, marker = split)", fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi)


# ------------------------------------------------------------------ evaluation


def reconstruction_error(errors, path, dpi=120):
    df = io.read_reconstruction_errors(errors, na="pandas")
    levels = sorted(df["condition"].unique())
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(levels) + 2.5), 4))
    data = [df.loc[df["condition"] == lvl, "reconstruction_mse"].dropna() for lvl in levels]
    ax.boxplot(data, tick_labels=[f"{lvl}\n(n={len(d)})" for lvl, d in zip(levels, data)], showfliers=False,
               widths=0.6, medianprops=dict(color="black", lw=1.5), boxprops=dict(color="dimgrey"),
               whiskerprops=dict(color="dimgrey"), capprops=dict(color="dimgrey"))
    rng = np.random.default_rng(0)
    x = df["condition"].map({lvl: i + 1 for i, lvl in enumerate(levels)}).to_numpy(float)
    x = x + rng.uniform(-0.18, 0.18, len(df))
    present = set(df["split"])
    for split in [s for s in SPLITS if s in present] + sorted(present - set(SPLITS)):
        m = (df["split"] == split).to_numpy()
        col, mk, name = _split_style(split)
        # one collection per split: one colour and marker, matching its legend entry
        ax.scatter(x[m], df.loc[m, "reconstruction_mse"], marker=mk, s=18, color=col, edgecolor="black", lw=0.3,
                   alpha=0.85, label=name, zorder=3)
    ax.set_ylabel("reconstruction MSE (preprocessed space)")
    ax.set_title("per-sample reconstruction error by group (box: all splits)", fontsize=10)
    ax.legend(fontsize=8, title="split", title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0)
    ax.grid(True, axis="y", lw=0.4, alpha=0.5)
    if len(levels) > 6:
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    _save(fig, path, dpi)


# ------------------------------------------------------------------ risk genes


def _read_risk(risk):
    df = pd.read_csv(risk, sep="\t", dtype=str, keep_default_na=False)
    for col in ("vae_score", "vae_rank", "p_value", "fdr", "log2_fold_change", "classical_rank"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def top_rank_column(sub):
    """The rank a contrast's top genes are shown by: ``vae_rank``, or ``classical_rank`` (modelled genes
    only) when the VAE route abstained (``vae_status``), so that no noise ranking is shown as a result."""
    if "vae_status" in sub.columns and (sub["vae_status"] == "abstained").any():
        return "classical_rank"
    return "vae_rank"


def _top_rows(sub, k, modelled=False):
    col = top_rank_column(sub)
    if modelled and "in_model" in sub.columns:
        sub = sub[sub["in_model"].str.lower() == "true"]
    return sub.nsmallest(k, col), col


def _annotation_columns(df):
    from .risk import RISK_COLUMNS

    return [c for c in df.columns if c not in RISK_COLUMNS]


def fdr_cutoff(sub, level=FDR_LEVEL):
    """The largest p-value among genes with FDR < ``level`` (None if no gene passes)."""
    ok = sub["fdr"].notna() & (sub["fdr"] < level) & sub["p_value"].notna()
    return float(sub.loc[ok, "p_value"].max()) if ok.any() else None


def neg_log10_p(p, t):
    """-log10 of the moderated t-test's p-values; where a p-value underflowed (below 1e-300: a cohort of
    thousands of cells), from the normal tail of ``t`` instead, log-space (``log_ndtr``), so that those
    genes stay ordered by their statistic rather than piled up at one height."""
    from scipy.special import log_ndtr

    p, t = np.asarray(p, float), np.abs(np.asarray(t, float))
    y = -np.log10(np.clip(p, 1e-300, 1))
    tiny = (p < 1e-300) & np.isfinite(t)
    y[tiny] = -(np.log(2.0) + log_ndtr(-t[tiny])) / np.log(10.0)
    return y


def volcano(risk, path, top_genes=30, dpi=120):
    from adjustText import adjust_text

    df = _read_risk(risk)
    ann_cols = _annotation_columns(df)
    contrasts = list(dict.fromkeys(df["contrast"]))
    n = len(contrasts)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 5.2 * rows), squeeze=False)
    fig.subplots_adjust(hspace=0.32, wspace=0.22, top=1 - 0.8 / (5.2 * rows))
    for ax, c in zip(axes.flat, contrasts):
        sub = df[(df["contrast"] == c) & df["p_value"].notna() & df["log2_fold_change"].notna()]
        x = sub["log2_fold_change"].to_numpy(float)
        y = neg_log10_p(sub["p_value"], sub["t_stat"])
        col = top_rank_column(sub)
        top = (sub[col] <= top_genes).to_numpy()
        ax.scatter(x[~top], y[~top], s=6, c="lightgrey")
        ax.scatter(x[top], y[top], s=14, c="tab:red", edgecolor="darkred", lw=0.3, zorder=3)
        ax.axvline(0, color="grey", lw=0.5)
        xmax = max(float(np.abs(x).max()) if len(x) else 1.0, 1e-3)
        ymax = max(float(y.max()) if len(y) else 1.0, 1.0)
        ax.set_xlim(-1.15 * xmax, 1.15 * xmax)
        ax.set_ylim(-0.03 * ymax, 1.12 * ymax)
        cut = fdr_cutoff(sub)
        n_sig = int((sub["fdr"] < FDR_LEVEL).sum())
        if cut is not None:
            yc = -np.log10(max(cut, 1e-300))
            ax.axhline(yc, color="tab:blue", ls="--", lw=1)
            ax.annotate("FDR 5%", (0.01, yc), xycoords=("axes fraction", "data"), xytext=(0, 2),
                        textcoords="offset points", fontsize=7, color="tab:blue", va="bottom")
        else:
            ax.text(0.5, 0.5, "no gene reaches FDR < 5%", transform=ax.transAxes, ha="center", fontsize=9,
                    color="tab:blue", bbox=dict(facecolor="white", edgecolor="tab:blue", alpha=0.8))
        route = "VAE top" if col == "vae_rank" else "VAE abstained; t-test top"
        ax.set_title(f"{c}: {n_sig} of {len(sub)} genes at FDR < 5% ({route} {top_genes} in red)", fontsize=9)
        ax.set_xlabel("log2 fold change (classical)")
        ax.set_ylabel("-log10 p (moderated t-test" + ("; below 1e-300: normal tail of t)"
                                                       if (sub["p_value"] < 1e-300).any() else ")"))
        lab = sub.assign(px=x, py=y).nsmallest(min(VOLCANO_LABELS, top_genes), col)
        texts = [ax.text(r["px"], r["py"], gene_label(r["gene"], r[ann_cols], max_len=16), fontsize=6.5)
                 for _, r in lab.iterrows()]
        if texts:
            adjust_text(texts, x=x[top], y=y[top], ax=ax, ensure_inside_axes=True, expand_axes=False,
                        expand=(1.15, 1.4), arrowprops=dict(arrowstyle="-", color="black", lw=0.4),
                        iter_lim=LABEL_ITERATIONS)
    for ax in axes.flat[n:]:
        ax.axis("off")
    handles = [
        Line2D([], [], marker="o", ls="", color="lightgrey", markersize=4, label="other genes"),
        Line2D([], [], marker="o", ls="", color="tab:red", markeredgecolor="darkred", markersize=5,
               label=f"top {top_genes} (top {min(VOLCANO_LABELS, top_genes)} labelled)"),
        Line2D([], [], color="tab:blue", ls="--", lw=1, label="FDR 5% (Benjamini-Hochberg)"),
    ]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    _save(fig, path, dpi)


def risk_heatmap(risk, features, latent, path, top_genes=30, dpi=120, condition="condition"):
    df = _read_risk(risk)
    ann_cols = _annotation_columns(df)
    contrasts = list(dict.fromkeys(df["contrast"]))
    per = max(1, top_genes // len(contrasts))
    genes, block = [], []
    for c in contrasts:
        new = [g for g in _top_rows(df[df["contrast"] == c], per, modelled=True)[0]["gene"] if g not in genes]
        genes += new
        block.append((c, len(new)))
    ann = df.drop_duplicates("gene").set_index("gene")[ann_cols]
    labels = _unique_labels(genes, [gene_label(g, ann.loc[g] if g in ann.index else None, 30) for g in genes])
    x = io.read_matrix(features)[genes]
    lat = io.read_latent(latent, na="pandas").set_index("sample_id")
    order = lat.sort_values(["condition", "sample_id"]).index
    x = x.loc[order]
    v = x.to_numpy().T
    lim = float(np.nanpercentile(np.abs(v), 98)) or 1.0
    fig, ax = plt.subplots(figsize=(min(16, 4.5 + 0.08 * len(order)), 2 + 0.2 * len(genes)))
    im = ax.imshow(v, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_yticks(range(len(genes)))
    ax.set_yticklabels(labels, fontsize=6)
    cond = lat.loc[order, "condition"].to_numpy()
    bounds = [0] + [i for i in range(1, len(cond)) if cond[i] != cond[i - 1]] + [len(cond)]
    ax.set_xticks([(a + b) / 2 for a, b in zip(bounds[:-1], bounds[1:])])
    ax.set_xticklabels([f"{cond[a]}\n(n={b - a})" for a, b in zip(bounds[:-1], bounds[1:])], fontsize=8)
    if len(bounds) > 7:
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    ax.set_xlabel(f"samples grouped by {condition}")
    for b in bounds[1:-1]:
        ax.axvline(b - 0.5, color="black", lw=0.8)
    start = 0
    for c, k in block:  # gene blocks: the top genes of each contrast, named on the right
        if k == 0:
            continue
        if start:
            ax.axhline(start - 0.5, color="black", lw=0.8)
        ax.annotate(c, (1.01, start + k / 2 - 0.5), xycoords=("axes fraction", "data"), fontsize=7, va="center",
                    rotation=90 if k >= 4 else 0)
        start += k
    cb = fig.colorbar(im, ax=ax, shrink=0.6, pad=0.06)
    cb.set_label(f"preprocessed value\n(colours capped at ±{lim:.2g}, 98th percentile of |value|)", fontsize=8)
    ax.set_title(f"top {per} VAE risk genes per contrast (rows), samples grouped by {condition}", fontsize=9)
    _save(fig, path, dpi)


def make_plots(
    *, histories, selection, latent, errors, risk, features, samples, out, condition="condition", labels=(), batch=(),
    top_genes=30, dpi=120,
):
    loss_curves(histories, selection, out["loss"], dpi)
    latent_space(latent, samples, labels, out["latent"], dpi, condition=condition)
    reconstruction_error(errors, out["errors"], dpi)
    volcano(risk, out["volcano"], top_genes, dpi)
    risk_heatmap(risk, features, latent, out["heatmap"], top_genes, dpi, condition=condition)
