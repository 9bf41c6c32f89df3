"""The verdict (genovae.verdict) and the overview page that shows it (genovae.overview)."""

import pandas as pd
import pytest

from genovae.annotation import symbol_column
from genovae.overview import render_overview
from genovae.verdict import build_verdict, end_of_run_text


def selection(values=(1.2, 1.15, 1.16), threshold=1.03, met=False):
    rounds = [{"round": i + 1, "metric": "val_mse_ratio_pca", "value": v, "passed": v <= threshold}
              for i, v in enumerate(values)]
    best = min(rounds, key=lambda r: r["value"])
    return {"metric": "val_mse_ratio_pca", "threshold": threshold, "threshold_met": met, "rounds": rounds,
            "selected_round": best["round"], "rounds_run": len(rounds), "max_rounds": 3}


def tmetrics(ratio=1.1, n=20, vae_acc=0.9, pca_acc=0.9):
    return {
        "test_n": n, "test_recon_mse": 0.5 * ratio, "test_pca_recon_mse": 0.5, "test_mse_ratio_pca": ratio,
        "test_r2": 0.4,
        "labels": [
            {"label": "disease", "scope": "test", "representation": "vae", "knn_accuracy": vae_acc},
            {"label": "disease", "scope": "test", "representation": "pca", "knn_accuracy": pca_acc},
            {"label": "disease", "scope": "all", "representation": "vae", "knn_accuracy": 0.1},
        ],
    }


def round_metrics(train=0.3, val=0.6, pca_train=0.4, pca_val=0.6, active=10):
    return {"train_recon_mse": train, "val_recon_mse": val, "train_pca_recon_mse": pca_train,
            "val_pca_recon_mse": pca_val, "val_active_units": active}


def verdict(sel=None, tm=None, rm=None, latent_dim=10, **kw):
    return build_verdict(selection=sel or selection(), test_metrics=tm or tmetrics(),
                         round_metrics=rm or round_metrics(), latent_dim=latent_dim, condition="disease", **kw)


def test_failed_threshold_is_a_failure_with_its_reason_and_pca_comparison():
    v = verdict()
    assert v["status"] == "fail"
    assert "did not reach the threshold" in v["headline"] and "in 3 rounds" in v["headline"]
    assert "10 % worse than PCA-10" in v["headline"]
    assert any("did not reach the threshold" in w for w in v["warnings"])
    assert any("10 % worse than PCA-10" in w for w in v["warnings"])
    assert "consider" in v["headline"]
    assert v["threshold"]["selected_round"] == 2 and v["threshold"]["selected_value"] == 1.15


def test_good_model_passes_without_warnings():
    v = verdict(sel=selection(values=(1.01,), met=True), tm=tmetrics(ratio=0.97),
                rm=round_metrics(train=0.4, val=0.5))
    assert v["status"] == "pass", v["warnings"]
    assert v["warnings"] == []
    assert "reached the threshold" in v["headline"] and "3 % better than PCA-10" in v["headline"]
    assert "consider" not in v["headline"]


def test_met_threshold_but_worse_on_test_is_caution():
    v = verdict(sel=selection(values=(1.02,), met=True), tm=tmetrics(ratio=1.2))
    assert v["status"] == "caution"
    assert any("20 % worse" in w for w in v["warnings"])


def test_overfitting_is_measured_against_pca_gap():
    # VAE: val 6x train; PCA on the same samples 1.5x: overfitting
    v = verdict(rm=round_metrics(train=0.1, val=0.6, pca_train=0.4, pca_val=0.6))
    assert v["overfitting"]["flag"] and v["overfitting"]["gap"] == pytest.approx(6.0)
    assert any("overfits" in w for w in v["warnings"])
    assert "smaller model" in v["headline"]
    # the same gap as PCA's is not overfitting
    v = verdict(rm=round_metrics(train=0.4, val=0.6, pca_train=0.4, pca_val=0.6))
    assert not v["overfitting"]["flag"]
    assert not any("overfits" in w for w in v["warnings"])


def test_advice_follows_the_selected_rounds_diagnosis():
    """Below the overfitting warning (gap < 2x PCA's) the advice still follows the round's diagnosis, the one
    the retrain loop acted on: a model that generalises worse than it trains is not told to grow."""
    # training error 0.57x PCA's, validation/training gap 1.9x PCA's: genovae.loop.diagnose says overfitting
    v = verdict(sel=selection(values=(1.08,), threshold=1.1, met=True), tm=tmetrics(ratio=1.08),
                rm=round_metrics(train=0.2, val=0.65, pca_train=0.35, pca_val=0.6))
    assert not v["overfitting"]["flag"]
    assert "more regularisation" in v["headline"] and "larger model" not in v["headline"], v["headline"]
    # training error 1.25x PCA's with a gap like PCA's: underfitting
    v = verdict(sel=selection(values=(1.08,), threshold=1.1, met=True), tm=tmetrics(ratio=1.08),
                rm=round_metrics(train=0.5, val=0.65, pca_train=0.4, pca_val=0.6))
    assert "larger model" in v["headline"] and "more regularisation" not in v["headline"], v["headline"]


def test_posterior_collapse_flagged():
    v = verdict(rm=round_metrics(active=2))
    assert v["latent"] == {"latent_dim": 10, "active_units": 2, "inactive_units": 8, "flag": True}
    assert any("2 of 10 latent dimensions are active" in w for w in v["warnings"])
    assert not verdict(rm=round_metrics(active=9))["latent"]["flag"]


def test_label_structure_worse_than_pca_beyond_sampling_noise():
    v = verdict(tm=tmetrics(n=40, vae_acc=0.7, pca_acc=0.9))
    assert any("separates 'disease' worse than PCA-10" in w for w in v["warnings"])
    # one sample of 13 (0.077) is within noise on a small test split
    v = verdict(tm=tmetrics(n=13, vae_acc=0.846, pca_acc=0.923))
    assert not any("separates" in w for w in v["warnings"])
    # two groups: the ROC AUC of label_metrics.tsv counts too
    tm = tmetrics(n=40)
    tm["labels"] += [{"label": "disease", "scope": "test", "representation": "vae", "logreg_auc": 0.6},
                     {"label": "disease", "scope": "test", "representation": "pca", "logreg_auc": 0.95}]
    assert any("ROC AUC 0.60 vs 0.95" in w for w in verdict(tm=tm)["warnings"])
    # the 'all' scope row (fitted on the samples it scores) never decides
    assert v["test_labels"] == {"disease": {"knn_accuracy": {"vae": 0.846, "pca": 0.923}}}


def test_small_and_empty_test_split_warned():
    assert any("Only 6 test samples" in w for w in verdict(tm=tmetrics(n=6))["warnings"])
    tm = {"test_n": 0, "labels": []}
    v = verdict(tm=tm)
    assert any("No test samples" in w for w in v["warnings"])
    assert v["test"]["mse_ratio_pca"] is None


def test_higher_is_better_metric_direction():
    sel = selection(values=(0.3, 0.35), threshold=0.5)
    sel["metric"] = "val_r2"
    v = verdict(sel=sel, direction="max")
    assert "≥ 0.5" in v["headline"] and v["threshold"]["direction"] == "higher is better"


def test_end_of_run_text_names_verdict_warnings_and_the_runs_config():
    v = verdict()
    text = end_of_run_text({"run": "golub", "verdict": v, "warnings": ["collect: a data warning"] + v["warnings"]},
                           "results/golub", "results/golub/config.yaml")
    assert "Verdict: not good enough" in text
    assert v["headline"] in text
    assert "collect: a data warning" in text
    assert "snakemake --configfile results/golub/config.yaml --report results/golub/report.html" in text


def test_symbol_column_prefers_symbols():
    assert symbol_column(["gene", "description", "Symbol"]) == "Symbol"
    assert symbol_column(["gene", "hgnc_symbol", "name"]) == "hgnc_symbol"
    assert symbol_column(["gene", "description"]) is None


def test_overview_page_shows_verdict_tables_and_symbols(tmp_path):
    from genovae import io

    v = verdict()
    summary = {"run": "r<1>", "n_samples": 80, "n_genes": 50, "n_genes_input": 60, "value_type": "log",
               "split": {"train": 56, "val": 12, "test": 12}, "groups": {"ALL": 50, "AML": 30},
               "device": "cpu", "device_name": "cpu", "verdict": v, "warnings": v["warnings"]}
    io.write_json(tmp_path / "summary.json", summary)
    pd.DataFrame(selection()["rounds"]).assign(selected=[False, True, False]).to_csv(
        tmp_path / "rounds.tsv", sep="\t", index=False)
    risk = pd.DataFrame({
        "contrast": ["AML_vs_ALL"] * 12, "gene": [f"p{i}_at" for i in range(12)], "in_model": True,
        "vae_score": range(12), "vae_rank": range(1, 13), "vae_call": [True] * 3 + [False] * 9,
        "vae_status": "called", "vae_proba_de": 0.99, "log2_fold_change": 1.0, "fdr": 0.01,
        "classical_rank": range(12, 0, -1), "symbol": [f"SYM{i}" for i in range(12)],
    })
    # a contrast where the VAE route abstained: its top genes are the classical route's
    risk = pd.concat([risk, risk.assign(contrast="T_vs_B", vae_status="abstained", vae_call=False,
                                        symbol=[f"ALT{i}" for i in range(12)])])
    risk.to_csv(tmp_path / "risk.tsv", sep="\t", index=False)
    pd.DataFrame([{"label": "disease", "scope": "test", "representation": "vae", "n": 12, "knn_accuracy": 0.8}]).to_csv(
        tmp_path / "labels.tsv", sep="\t", index=False)
    render_overview(summary=tmp_path / "summary.json", rounds=tmp_path / "rounds.tsv", risk=tmp_path / "risk.tsv",
                    labels=tmp_path / "labels.tsv", out_html=tmp_path / "overview.html")
    page = (tmp_path / "overview.html").read_text()
    assert "Verdict: not good enough" in page
    assert "r&lt;1&gt;" in page and "r<1>" not in page  # escaped
    for w in v["warnings"]:
        assert w.replace("'", "&#x27;") in page
    assert "SYM0" in page and "SYM9" in page and "SYM10" not in page  # top 10 per contrast, with symbols
    assert "the VAE route called 3 gene(s)" in page
    # abstained: classical ranks 1..10 are rows 11..2 (ALT11..ALT2), and the page says why
    assert "ALT11" in page and "ALT2" in page and "ALT1<" not in page and "ALT0" not in page
    assert "classical route; the VAE route abstained" in page
    assert "<table" in page and "AML_vs_ALL" in page


def test_failed_threshold_names_each_rounds_diagnosis_and_change():
    sel = selection()
    sel["rounds"][0].update(diagnosis="overfitting", diagnosis_reason="validation/training error 2x against PCA's 1.1x",
                            change="overfitting: hidden [64] -> [32], dropout 0.1 -> 0.2")
    sel["rounds"][1].update(diagnosis="underfitting", diagnosis_reason="training error 1.2x PCA's",
                            change="underfitting: hidden [32] -> [64]")
    v = verdict(sel)
    why = [w for w in v["warnings"] if w.startswith("Why the rounds fell short")]
    assert len(why) == 1
    assert "round 1: overfitting (validation/training error 2x" in why[0]
    assert "next round: hidden [64] -> [32], dropout 0.1 -> 0.2" in why[0]
    assert "round 2: underfitting" in why[0] and "round 3" not in why[0]
    assert "the selected round's diagnosis is underfitting" in v["headline"]  # round 2 is the best
    # a passing run says nothing of it
    assert not any("Why the rounds" in w for w in verdict(selection(values=(1.0,), met=True))["warnings"])


def _with_knn(sel, knn):
    for r, k in zip(sel["rounds"], knn):
        r["knn_vae"], r["knn_pca"] = k, 0.74
    return sel


@pytest.mark.parametrize(
    "knn, warned",
    [
        ((0.88, 0.46, 0.80), True),  # the selected round 2 lost the condition that round 1 kept
        ((0.88, 0.80, 0.85), False),  # within 0.1: the seeds' own spread
        ((0.46, 0.88, 0.50), False),  # the selected round is the best
        ((0.88, None, 0.80), False),  # the selected round has no figure (e.g. no label column)
    ],
)
def test_a_selected_round_whose_latent_space_lost_the_condition_is_warned(knn, warned):
    """Rounds are selected by reconstruction; a round whose latent space separates the condition far worse
    (5-NN on train + validation, recorded per round, docs/science.md "Search") than another round's is warned."""
    v = verdict(sel=_with_knn(selection(values=(1.06, 1.05, 1.07), met=False), knn))
    hits = [w for w in v["warnings"] if "latent space separates 'disease' better than the selected round 2" in w]
    assert bool(hits) is warned, v["warnings"]
    if warned:
        assert "Round 1's" in hits[0] and "0.88 vs 0.46" in hits[0] and "val_mse_ratio_pca" in hits[0]


def test_one_round_has_nothing_to_compare():
    v = verdict(sel=_with_knn(selection(values=(1.01,), met=True), (0.2,)), tm=tmetrics(ratio=0.97),
                rm=round_metrics(train=0.4, val=0.5))
    assert v["warnings"] == []
