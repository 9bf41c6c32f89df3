"""overview.html: the run's results on one page (the report's landing page shows it).

Self-contained HTML (inline styles, no scripts, no external resources), so it reads
the same in a browser on its own and inside Snakemake's report: the verdict, a
headline table (cohort, rounds, VAE against PCA on the test samples), the round
decisions, the label metrics and the top genes of every contrast with their symbols.
"""

from __future__ import annotations

import html

import pandas as pd

from . import io
from .annotation import gene_label, symbol_column
from .risk import RISK_COLUMNS
from .verdict import LABEL_METRICS

#: genes shown per contrast
TOP_GENES = 10

_STATUS_COLOUR = {"pass": "#1a7f37", "caution": "#9a6700", "fail": "#cf222e"}
_CSS = (
    "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:14px;line-height:1.45;"
    "color:#1f2328;max-width:1100px"
)
_TABLE = "border-collapse:collapse;margin:6px 0 14px 0;font-size:13px"
_CELL = "border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top"


def _e(x):
    return html.escape(str(x))


def _fmt(x, digits=3):
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if x != x:
            return "–"
        return f"{x:.{digits}g}"
    return str(x)


def _table(header, rows):
    head = "".join(f'<th style="{_CELL};background:#f6f8fa">{_e(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(f'<td style="{_CELL}">{c}</td>' for c in row) + "</tr>" for row in rows)
    return f'<table style="{_TABLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _verdict_html(summary):
    v = summary.get("verdict") or {}
    status = v.get("status", "fail")
    colour = _STATUS_COLOUR.get(status, "#57606a")
    warnings = summary.get("warnings") or []
    parts = [
        f'<div style="border-left:6px solid {colour};background:#f6f8fa;padding:10px 14px;margin:8px 0 16px 0">',
        f'<div style="font-size:16px;font-weight:600;color:{colour}">Verdict: {_e(v.get("status_text", status))}</div>',
        f"<p style='margin:6px 0'>{_e(v.get('headline', ''))}</p>",
    ]
    if warnings:
        parts.append(f"<div style='font-weight:600'>{len(warnings)} warning{'s' if len(warnings) != 1 else ''}</div>")
        parts.append("<ul style='margin:4px 0'>" + "".join(f"<li>{_e(w)}</li>" for w in warnings) + "</ul>")
    else:
        parts.append("<div>No warnings.</div>")
    parts.append("</div>")
    return "".join(parts)


def _headline_html(summary, risk=None, top=TOP_GENES):
    v = summary.get("verdict") or {}
    th, test = v.get("threshold", {}), v.get("test", {})
    split = summary.get("split", {})
    groups = summary.get("groups", {})
    latent_dim = (v.get("latent") or {}).get("latent_dim")
    pca = f"PCA-{latent_dim}" if latent_dim else "PCA"
    rows = [
        ("samples", f"{summary['n_samples']} (train {split.get('train', 0)}, validation {split.get('val', 0)}, "
                    f"test {split.get('test', 0)})"),
        ("groups", ", ".join(f"{_e(k)} {n}" for k, n in groups.items())),
        ("genes modelled", f"{summary['n_genes']} of {summary['n_genes_input']} ({_e(summary['value_type'])} values)"),
        ("rounds", f"{th.get('rounds_run')} of at most {th.get('max_rounds')}; selected round {th.get('selected_round')}"),
        ("retrain threshold", f"{_e(th.get('metric'))} {_fmt(th.get('selected_value'))} against {_fmt(th.get('threshold'))}"
                              f" ({_e(th.get('direction'))}): {'met' if th.get('met') else '<b>not met</b>'}"),
        (f"test reconstruction, VAE / {pca}", f"{_fmt(test.get('recon_mse'))} / {_fmt(test.get('pca_recon_mse'))} "
                                              f"(ratio {_fmt(test.get('mse_ratio_pca'))}, lower is better)"),
    ]
    for label, per in (v.get("test_labels") or {}).items():
        for key, name in LABEL_METRICS.items():
            reps = per.get(key)
            if reps:
                rows.append((f"test {name} for '{_e(label)}', VAE / {pca}",
                             f"{_fmt(reps.get('vae'), 2)} / {_fmt(reps.get('pca'), 2)}"))
    of = v.get("overfitting") or {}
    if of.get("gap") is not None:
        rows.append(("validation / training error, VAE / " + pca,
                     f"{_fmt(of.get('gap'), 2)} / {_fmt(of.get('pca_gap'), 2)}" + (" (overfitting)" if of.get("flag") else "")))
    lat = v.get("latent") or {}
    if lat.get("active_units") is not None:
        rows.append(("active latent dimensions", f"{lat['active_units']} of {lat['latent_dim']}"))
    for col, b in (summary.get("batch") or {}).items():
        if isinstance(b, dict) and b.get("batch_mixing"):
            mix = [b["batch_mixing"].get(k) for k in ("vae", "vae_plain", "pca")]
            rows.append((f"batch mixing of '{_e(col)}' (kNN, 1 = well mixed), VAE / without the covariate / {pca}",
                         " / ".join("–" if v is None else f"{v:.2f}" for v in mix)))
    pred = (summary.get("prediction") or {}).get("test") or {}
    if pred:
        key = "roc_auc" if any(pred[k].get("roc_auc") is not None for k in pred) else "balanced_accuracy"
        vals = " / ".join(_fmt(pred.get(k, {}).get(key), 2) for k in ("vae", "pca", "genes"))
        rows.append((f"predicting the condition on test samples ({key.replace('_', ' ')}), VAE / PCA / genes",
                     _e(vals)))
    rows.append(("device", _e(summary.get("device_name") or summary.get("device"))))
    if risk is not None:
        rows += _top_genes_rows(risk, top)
    return _table(("", "value"), [(f"<b>{k}</b>", val) for k, val in rows])


def _vae_abstained(sub):
    """Whether the VAE route abstained for this contrast (its rows say so in ``vae_status``)."""
    if "vae_status" not in sub.columns:
        return False
    return bool((sub["vae_status"].astype(str) == "abstained").any())


def _top(sub, top):
    """The contrast's top genes: the VAE route's, or the classical route's when the VAE route abstained."""
    if _vae_abstained(sub):
        return sub.nsmallest(top, "classical_rank"), "classical route; the VAE route abstained"
    return sub.nsmallest(top, "vae_rank"), "VAE route"


def _top_genes_rows(risk, top):
    """One headline row per contrast: its top genes, by symbol where known."""
    if risk.empty:
        return [("top genes", "no contrast was tested")]
    ann = [c for c in risk.columns if c not in RISK_COLUMNS]
    rows = []
    for contrast, sub in risk.groupby("contrast", sort=False):
        best, route = _top(sub, top)
        names = [gene_label(r["gene"], r[ann], describe=False) for _, r in best.iterrows()]
        rows.append((f"top {top} genes, {_e(contrast)} ({route})", _e(", ".join(names))))
    return rows


def _rounds_html(rounds):
    header = list(rounds.columns)
    rows = [[_e(_fmt(r[c])) if not isinstance(r[c], str) else _e(r[c]) for c in header] for _, r in rounds.iterrows()]
    return _table(header, rows)


def _labels_html(labels):
    cols = [c for c in ("label", "scope", "representation", "n", "silhouette", *LABEL_METRICS, "batch_mixing",
                        "batch_asw") if c in labels.columns]
    rows = [[_e(_fmt(r[c])) for c in cols] for _, r in labels.iterrows()]
    return _table(cols, rows)


def _genes_html(risk, top=TOP_GENES):
    if risk.empty:
        return "<p>No contrast was tested.</p>"
    sym = symbol_column(risk.columns)
    desc = next((c for c in risk.columns if c.lower() == "description"), None)
    out = []
    for contrast, sub in risk.groupby("contrast", sort=False):
        best, route = _top(sub, top)
        calls = int(sub["vae_call"].astype(str).str.lower().eq("true").sum()) if "vae_call" in sub else 0
        header = ["VAE rank", "gene"] + (["symbol"] if sym else []) + (["description"] if desc and not sym else [])
        header += ["VAE P(DE)", "VAE call", "log2 fold change", "FDR (moderated t)", "t-test rank"]
        rows = []
        for _, r in best.iterrows():
            row = [_e("" if pd.isna(r["vae_rank"]) else int(r["vae_rank"])), _e(r["gene"])]
            if sym:
                row.append(_e("" if pd.isna(r[sym]) else r[sym]))
            elif desc:
                text = "" if pd.isna(r[desc]) else str(r[desc])
                row.append(_e(text[:60] + ("…" if len(text) > 60 else "")))
            row += [_e(_fmt(r["vae_proba_de"])), _e("yes" if str(r["vae_call"]).lower() == "true" else ""),
                    _e(_fmt(r["log2_fold_change"])), _e(_fmt(r["fdr"])), _e(int(r["classical_rank"]))]
            rows.append(row)
        note = f"top {top} by the {route}; the VAE route called {calls} gene(s)"
        out.append(f"<h4 style='margin:10px 0 2px 0'>{_e(contrast)}</h4><p style='margin:0 0 4px 0'>{_e(note)}</p>"
                   + _table(header, rows))
    return "".join(out)


def _known_html(rows):
    """The known genes (analysis.known_genes) and their ranks by both routes, per contrast."""
    if not rows:
        return []
    header = ["contrast", "gene", "VAE rank", "VAE call", "t-test rank", "FDR (moderated t)", "log2 fold change"]
    body = []
    for r in rows:
        if not r.get("found"):
            body.append([_e(r["contrast"]), _e(r["gene"]), "not in the data", "", "", "", ""])
            continue
        vae = "not modelled" if r.get("vae_rank") is None else f"{r['vae_rank']} of {r['n_modelled']}"
        body.append([_e(r["contrast"]), _e(r["gene"]), _e(vae), "yes" if r.get("vae_call") else "",
                     _e(f"{r['classical_rank']} of {r['n_genes']}"), _e(_fmt(r.get("fdr"))),
                     _e(_fmt(r.get("log2_fold_change")))])
    return ["<h3>Known genes (analysis.known_genes)</h3>", _table(header, body)]


def render_overview(*, summary, rounds, risk, labels, out_html, out_landing=None, top_genes=TOP_GENES):
    """Write overview.html (and the report's landing-page part) from the run's tables.

    ``out_html``: the whole page (verdict, headline table, rounds, label metrics, top genes per
    contrast in detail); ``out_landing``: only the verdict and the headline table, short enough
    for the report's landing page, which centres its content and cannot scroll above it.
    """
    s = io.read_json(summary)
    rounds_df = pd.read_csv(rounds, sep="\t")
    risk_df = io.read_risk(risk)
    labels_df = pd.read_csv(labels, sep="\t")
    title = f"<h2 style='margin:4px 0'>genovae run '{_e(s['run'])}'</h2>"
    head = [_verdict_html(s), _headline_html(s, risk_df, top_genes)]
    page = [
        f'<div style="{_CSS}">',
        title,
        *head,
        "<h3>Retrain rounds</h3>",
        _rounds_html(rounds_df),
        "<h3>Latent space against PCA (label structure)</h3>",
        "<p style='margin:2px 0'>scope <i>all</i>: leave-one-out over every sample; <i>test</i>: classifiers "
        "fitted on train + validation, scored on the test samples.</p>",
        _labels_html(labels_df),
        f"<h3>Top {top_genes} genes per contrast</h3>",
        _genes_html(risk_df, top_genes),
        *_known_html(s.get("known_genes")),
        "<p style='color:#57606a'>Full tables: summary.json, model/rounds.tsv, label_metrics.tsv, risk_genes.tsv "
        "in the run's results folder.</p>",
        "</div>",
    ]
    io.write_text(out_html, "\n".join(page) + "\n")
    if out_landing:
        landing = [
            f'<div style="{_CSS}">',
            f"<div style='font-size:15px'>genovae run <b>{_e(s['run'])}</b>: a VAE on the cohort, retrained until "
            "good enough, against PCA.</div>",
            # without the top-gene rows: the landing page centres its content and cannot scroll above it
            _verdict_html(s),
            _headline_html(s),
            "<p style='color:#57606a;margin:2px 0'>Rounds, label metrics and the top genes per contrast: "
            "<b>0. Overview</b> (overview.html).</p>",
            "</div>",
        ]
        io.write_text(out_landing, "\n".join(landing) + "\n")
