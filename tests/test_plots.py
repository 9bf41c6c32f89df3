"""The report figures: labels, colours, axes and the FDR line (fast: synthetic tables, no Snakemake)."""

import math

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest

from genovae import io, plots
from genovae.annotation import gene_label
from genovae.loop import METRICS


@pytest.fixture
def figures(monkeypatch):
    """Keep the figures that the plot functions would save and close."""
    kept = {}

    def keep(fig, path, dpi):
        kept[str(path)] = fig

    monkeypatch.setattr(plots, "_save", keep)
    yield kept
    for fig in kept.values():
        plots.plt.close(fig)


def rgba(c):
    return tuple(np.round(mcolors.to_rgba(c), 4))


# ------------------------------------------------------------------ gene labels


def test_gene_label_prefers_symbol_like_columns():
    desc = "tumor protein p53 (Li-Fraumeni syndrome), a very long description of the gene"
    assert gene_label("201746_at", {"Gene_Symbol": "TP53", "description": desc}) == "TP53"
    assert gene_label("g1", {"name": "nm", "symbol": "SYM"}) == "SYM"  # symbol before name
    assert gene_label("g1", {"HGNC_symbol": "BRCA1"}) == "BRCA1"
    assert gene_label("g1", {"gene_name": "MYC", "image_id": "12345"}) == "MYC"
    assert gene_label("g1", pd.Series({"symbol": "A /// B"})) == "A"
    # empty or missing symbols fall back to the id
    assert gene_label("g1", {"symbol": "", "image_id": "42"}) == "g1"
    assert gene_label("g1", {"symbol": float("nan")}) == "g1"
    assert gene_label("g1", None) == "g1"
    assert gene_label("g1", {}) == "g1"
    # a description never appears whole
    label = gene_label("V7", {"description": desc, "image_id": "1"})
    assert label.startswith("V7") and len(label) < len(desc) and desc not in label


# ------------------------------------------------------------------ reconstruction error


def test_reconstruction_error_split_colours_match_legend(tmp_path, figures):
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(n)],
        "split": np.array(["train", "val", "test"])[np.arange(n) % 3],
        "condition": np.array(["A", "B", "C", "D"])[np.arange(n) % 4],
        "reconstruction_mse": rng.uniform(0.1, 1.0, n).round(6),
    })
    df.to_csv(tmp_path / "errors.tsv", sep="\t", index=False)
    plots.reconstruction_error(tmp_path / "errors.tsv", tmp_path / "e.png")
    ax = next(iter(figures.values())).axes[0]
    legend = {t.get_text(): h for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
    assert set(legend) == {"train", "validation", "test"}
    names = {"train": "train", "val": "validation", "test": "test"}
    seen = {}
    for coll in ax.collections:
        ys = set(np.round(coll.get_offsets()[:, 1], 6))
        if not ys:
            continue
        split = df.loc[df["reconstruction_mse"].isin(ys), "split"].unique()
        assert len(split) == 1, "one collection mixes splits"
        colours = {rgba(c) for c in coll.get_facecolors()}
        assert len(colours) == 1, "points of one split have several colours"
        seen.setdefault(split[0], set()).update(colours)
    assert set(seen) == {"train", "val", "test"}
    for split, colours in seen.items():
        assert len(colours) == 1, f"{split} points are drawn in several colours"
        assert colours == {rgba(legend[names[split]].get_facecolor()[0])}, f"{split}: legend colour differs"
        assert {c[:3] for c in colours} == {rgba(plots.SPLITS[split][0])[:3]}, f"{split}: not its fixed colour"
    assert len({next(iter(c)) for c in seen.values()}) == 3, "splits share a colour"


# ------------------------------------------------------------------ loss curves


def write_history(path, rnd, train, val):
    pd.DataFrame({
        "round": rnd, "epoch": np.arange(1, len(train) + 1), "beta": 1.0,
        "train_loss": train, "train_recon": train, "train_kl": 0.0,
        "val_loss": val, "val_recon": val, "val_kl": 0.0,
    }).to_csv(path, sep="\t", index=False)
    return path


def decision_run(tmp_path, train, val, values=(1.0444879, 1.0322182, 1.0235549), threshold=1.03,
                 metric="val_mse_ratio_pca"):
    histories = [write_history(tmp_path / f"h{r}.tsv", r, train, val) for r in (1, 2, 3)]
    passed = [(v <= threshold) if METRICS[metric] == "min" else (v >= threshold) for v in values]
    sel = {
        "metric": metric, "threshold": threshold, "selected_round": 3,
        "rounds": [{"round": r, "metric": metric, "value": v, "passed": p}
                   for r, v, p in zip((1, 2, 3), values, passed)],
        "train_info": {"round": 3, "best_epoch": 4},
    }
    io.write_json(tmp_path / "selection.json", sel)
    return histories, tmp_path / "selection.json"


def test_loss_decision_axis_separates_values_around_threshold(tmp_path, figures):
    loss = np.linspace(3000, 2300, 20)
    histories, selection = decision_run(tmp_path, loss, loss + 50)
    plots.loss_curves(histories, selection, tmp_path / "loss.png")
    fig = next(iter(figures.values()))
    ax, bx = fig.axes
    lo, hi = bx.get_ylim()
    values = [1.0444879, 1.0322182, 1.0235549]
    assert lo < min(values + [1.03]) and hi > max(values + [1.03])
    # the values and the threshold fill a good part of the axis (bars from zero would use < 3%)
    assert (max(values) - min(values)) / (hi - lo) > 0.4
    # each value's point is coloured by its pass/fail and the threshold line is labelled
    points = [c for c in bx.collections if len(c.get_offsets()) == 3]
    assert points, "no points for the three rounds"
    colours = [rgba(c) for c in points[0].get_facecolors()]
    assert colours == [rgba("tab:red"), rgba("tab:red"), rgba("tab:green")]
    texts = [t.get_text() for t in bx.texts]
    assert "threshold 1.03" in [t.get_text() for t in bx.get_legend().get_texts()]
    assert any("lower is better" in t for t in texts)
    # the loss axis is readable: not symlog, and tick labels with numbers inside the shown range
    assert ax.get_yscale() in ("linear", "log")
    fig.canvas.draw()
    lo, hi = ax.get_ylim()
    shown = [t.get_text() for t in ax.get_yticklabels() if lo <= t.get_position()[1] <= hi and t.get_text()]
    assert len(shown) >= 3, shown


def test_loss_axis_log_when_losses_span_decades_linear_otherwise(tmp_path, figures):
    histories, selection = decision_run(tmp_path, np.geomspace(1e5, 10, 30), np.geomspace(1e5, 20, 30))
    plots.loss_curves(histories, selection, tmp_path / "log.png")
    assert figures[str(tmp_path / "log.png")].axes[0].get_yscale() == "log"
    histories, selection = decision_run(tmp_path, np.linspace(50, -20, 30), np.linspace(60, -10, 30))
    plots.loss_curves(histories, selection, tmp_path / "lin.png")
    assert figures[str(tmp_path / "lin.png")].axes[0].get_yscale() == "linear"


def test_loss_axis_clips_huge_first_epochs(tmp_path, figures):
    loss = np.r_[1e6, np.linspace(300, 200, 40)]  # one spike, then all within a decade
    histories, selection = decision_run(tmp_path, loss, loss + 10)
    plots.loss_curves(histories, selection, tmp_path / "clip.png")
    ax = figures[str(tmp_path / "clip.png")].axes[0]
    assert ax.get_yscale() == "log" or ax.get_ylim()[1] < 1000


# ------------------------------------------------------------------ volcano


def risk_table(rng, contrasts, n=300, significant=True, annotation=None):
    rows = []
    for c in contrasts:
        p = rng.uniform(0, 1, n)
        if significant:
            k = min(40, n // 3)
            p[:k] = 10 ** -rng.uniform(4, 12, k)
        order = np.argsort(p)
        fdr = np.minimum(1, p * n / (np.argsort(order) + 1))
        fdr = np.minimum.accumulate(fdr[order][::-1])[::-1][np.argsort(order)]
        lfc = rng.normal(0, 0.5, n) + np.where(p < 1e-3, 2.5, 0)
        df = pd.DataFrame({
            "contrast": c, "gene": [f"g{i}" for i in range(n)], "vae_score": -np.log10(p),
            "vae_rank": np.argsort(np.argsort(p)) + 1, "vae_log2_fold_change": lfc, "t_stat": lfc,
            "p_value": p, "fdr": fdr, "log2_fold_change": lfc, "classical_rank": np.argsort(order) + 1,
        })
        if annotation is not None:
            for col, values in annotation.items():
                df[col] = values
        rows.append(df)
    return pd.concat(rows, ignore_index=True)


def test_volcano_fdr_line_symbols_and_labels_inside_axes(tmp_path, figures):
    rng = np.random.default_rng(1)
    n = 300
    risk = risk_table(rng, ["case_vs_control", "none_vs_rest"], n, annotation={
        "Symbol": [f"SYM{i}" for i in range(n)], "description": ["some long description " * 4] * n})
    none = risk["contrast"] == "none_vs_rest"
    risk.loc[none, "fdr"] = np.maximum(risk.loc[none, "fdr"], 0.2)  # no gene passes in this contrast
    io.write_tsv(tmp_path / "risk.tsv", risk)
    risk = pd.read_csv(tmp_path / "risk.tsv", sep="\t")  # the values as written (6 significant digits)
    plots.volcano(tmp_path / "risk.tsv", tmp_path / "v.png", top_genes=30)
    fig = next(iter(figures.values()))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [a for a in fig.axes if a.get_title()]
    assert len(axes) == 2
    sub = risk[risk["contrast"] == "case_vs_control"]
    cut = -math.log10(sub.loc[sub["fdr"] < 0.05, "p_value"].max())
    ax = axes[0]
    flat = [ln for ln in ax.get_lines() if len(set(ln.get_ydata())) == 1 and len(set(ln.get_xdata())) > 1]
    assert any(abs(ln.get_ydata()[0] - cut) < 1e-9 for ln in flat), "no horizontal line at the FDR 5% p-value"
    assert any(t.get_text() == "FDR 5%" for t in ax.texts)
    labels = [t for t in ax.texts if t.get_text().startswith("SYM")]
    assert len(labels) == plots.VOLCANO_LABELS
    assert {t.get_text() for t in labels} == {f"SYM{i}" for i in sub.nsmallest(len(labels), "vae_rank").index}
    box = ax.get_window_extent(renderer)
    for t in labels:
        b = t.get_window_extent(renderer)
        assert b.x0 >= box.x0 - 1 and b.x1 <= box.x1 + 1 and b.y0 >= box.y0 - 1 and b.y1 <= box.y1 + 1, t
    boxes = [t.get_window_extent(renderer) for t in labels]
    overlaps = sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert overlaps <= 1, f"{overlaps} pairs of gene labels overlap"
    # the contrast without significant genes says so and has no FDR line
    other = axes[1]
    assert any("no gene reaches FDR" in t.get_text() for t in other.texts)
    assert not any(t.get_text() == "FDR 5%" for t in other.texts)


# ------------------------------------------------------------------ heatmap and latent space


def test_risk_heatmap_rows_use_symbols(tmp_path, figures):
    rng = np.random.default_rng(2)
    n, genes = 20, 12
    samples = [f"s{i}" for i in range(n)]
    risk = risk_table(rng, ["A_vs_rest", "B_vs_rest"], genes, annotation={
        "gene_symbol": [f"SYM{i}" for i in range(genes - 2)] + ["DUP", "DUP"], "image_id": "7"})
    ranks = np.arange(genes)
    risk["vae_rank"] = np.r_[ranks + 1, (ranks + genes // 2) % genes + 1]  # B ranks g6..g11 first
    io.write_tsv(tmp_path / "risk.tsv", risk)
    x = pd.DataFrame(rng.normal(size=(n, genes)), index=samples, columns=[f"g{i}" for i in range(genes)])
    io.write_matrix(tmp_path / "features.parquet", x)
    pd.DataFrame({"sample_id": samples, "split": "train", "condition": ["A", "B"] * (n // 2), "z1": 0.0}).to_csv(
        tmp_path / "latent.tsv", sep="\t", index=False)
    plots.risk_heatmap(tmp_path / "risk.tsv", tmp_path / "features.parquet", tmp_path / "latent.tsv",
                       tmp_path / "h.png", top_genes=genes)
    ax = next(iter(figures.values())).axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert len(rows) == genes
    assert not any(r.startswith("g") for r in rows), rows  # no bare ids
    assert {"DUP (g10)", "DUP (g11)"} <= set(rows)  # a shared symbol keeps rows apart


def test_latent_space_legend_has_every_level_and_split(tmp_path, figures, monkeypatch):
    rng = np.random.default_rng(3)
    # stand-in projections (no scikit-learn start-up): PCA of all samples, "t-SNE" of a subset
    monkeypatch.setattr(plots, "_embed_2d", lambda z: {
        "PCA of latent means": (z[:, :2], ("PC1", "PC2"), None),
        "t-SNE of latent means (20 of 30 samples)": (z[5:25, 1:], ("t-SNE 1", "t-SNE 2"), np.arange(5, 25)),
    })
    n = 30
    split = np.array(["train", "val", "test"])[np.arange(n) % 3]
    cond = np.where(np.arange(n) < 27, np.array(["A", "B"])[np.arange(n) % 2], "C")
    cond[split == "train"] = np.where(cond[split == "train"] == "C", "A", cond[split == "train"])
    assert "C" not in set(cond[split == "train"]) and "C" in set(cond)  # C has no training sample
    df = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "split": split, "condition": cond})
    for k in range(3):
        df[f"z{k + 1}"] = rng.normal(size=n).round(5)
    df.to_csv(tmp_path / "latent.tsv", sep="\t", index=False)
    pd.DataFrame({"sample_id": df["sample_id"], "group": cond, "age": rng.integers(20, 80, n).astype(str)}).to_csv(
        tmp_path / "samples.tsv", sep="\t", index=False)
    plots.latent_space(tmp_path / "latent.tsv", tmp_path / "samples.tsv", ["age"], tmp_path / "l.png",
                       condition="group")
    fig = next(iter(figures.values()))
    pca, tsne = fig.axes[0], fig.axes[1]
    labels = {t.get_text() for t in pca.get_legend().get_texts()}
    assert {"A", "B", "C", "train", "validation", "test"} <= labels
    assert "t-SNE" in tsne.get_title() and not tsne.get_xticks().size  # arbitrary t-SNE units: no ticks
    # the numeric label gets a colour scale (a colour bar axis), not 50 legend entries
    assert any(a.get_label() == "<colorbar>" for a in fig.axes)
    # every sample is drawn once per view, at its own coordinates, in the colour of its group
    colours = {lvl: rgba(h.get_color()) for lvl, h in zip(
        [t.get_text() for t in pca.get_legend().get_texts()], pca.get_legend().legend_handles)}
    for ax, rows in ((pca, np.arange(n)), (tsne, np.arange(5, 25))):
        drawn = {}
        for coll in ax.collections:
            for (x, y), c in zip(coll.get_offsets(), coll.get_facecolors()):
                drawn[round(float(x), 5), round(float(y), 5)] = rgba(c)
        assert len(drawn) == len(rows)
        xy = df[["z1", "z2"]] if ax is pca else df[["z2", "z3"]]
        for i in rows:
            assert drawn[tuple(xy.iloc[i].round(5))] == colours[cond[i]]


def test_volcano_heights_beyond_the_smallest_float():
    """Atlas-sized contrasts: p-values that underflow to 0 are placed by their t statistic, in order."""
    from genovae.plots import neg_log10_p

    p = np.array([0.5, 1e-10, 1e-290, 0.0, 0.0, 0.0])
    t = np.array([0.7, 6.5, 36.5, 40.0, -80.0, 200.0])
    y = neg_log10_p(p, t)
    np.testing.assert_allclose(y[:3], -np.log10(p[:3]))
    assert 300 < y[3] < y[4] < y[5]  # ordered by |t|, not all at 300
    # the normal tail's asymptotic series: log Phi(-x) = -x^2/2 - log x - log(2 pi)/2 + log(1 - 1/x^2 + 3/x^4 ...)
    x = 40.0
    log_tail = -x * x / 2 - math.log(x) - math.log(2 * math.pi) / 2 + math.log(1 - 1 / x**2 + 3 / x**4)
    assert y[3] == pytest.approx(-(math.log(2) + log_tail) / math.log(10), rel=1e-7)
    assert neg_log10_p([0.0], [np.nan])[0] == pytest.approx(300)
