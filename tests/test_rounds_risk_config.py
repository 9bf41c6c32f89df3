"""Unit tests of the retrain loop (rounds, decide), risk ranking and config typing."""

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from genovae.config import coerce_types
from genovae.dataset import Cohort
from genovae.preprocess import Transform
from genovae.risk import RISK_COLUMNS, bh, contrasts, rank_genes, ranking_metrics
from genovae.loop import METRICS, better, decide, loop_continues, round_settings, select_round
from genovae.simulate import simulate_cohort
from genovae.train import train_vae

ROOT = Path(__file__).resolve().parents[1]


# ================================================================ rounds
def test_round_one_is_the_base_setting():
    for strategy in ("warm_start", "reseed"):
        s = round_settings(1, epochs=100, lr=1e-3, seed=7, strategy=strategy)
        assert s == {"epochs": 100, "lr": 1e-3, "seed": 7, "warm_start": False}


@pytest.mark.parametrize("r", [2, 3, 4])
def test_round_settings_warm_start(r):
    s = round_settings(
        r, epochs=100, lr=1e-3, seed=7, strategy="warm_start", epochs_factor=1.5, lr_factor=0.5
    )
    assert s["epochs"] == int(np.ceil(100 * 1.5 ** (r - 1)))
    assert s["lr"] == pytest.approx(1e-3 * 0.5 ** (r - 1))
    assert s["warm_start"] is True
    assert isinstance(s["epochs"], int)


def test_round_settings_warm_start_values():
    assert round_settings(2, epochs=100, lr=1e-3, seed=1)["epochs"] == 150
    assert round_settings(3, epochs=100, lr=1e-3, seed=1)["epochs"] == 225
    assert round_settings(3, epochs=10, lr=0.01, seed=1, epochs_factor=2, lr_factor=0.1) == {
        "epochs": 40,
        "lr": pytest.approx(1e-4),
        "seed": 3,
        "warm_start": True,
    }
    # the round may come as a string (a Snakemake wildcard)
    assert round_settings("2", epochs=10, lr=0.01, seed=1)["epochs"] == 15


@pytest.mark.parametrize("r", [2, 3, 5])
def test_round_settings_reseed(r):
    s = round_settings(
        r, epochs=100, lr=1e-3, seed=7, strategy="reseed", epochs_factor=3.0, lr_factor=0.1
    )
    assert s == {"epochs": 100, "lr": 1e-3, "seed": 7 + r - 1, "warm_start": False}


def test_round_settings_errors():
    # the strategy is the schema's to check (tests/test_settings.py); a round below 1 is a bug
    with pytest.raises(ValueError):
        round_settings(0, epochs=10, lr=0.1, seed=1)


def test_decide_lower_is_better():
    d = decide({"val_recon_mse": 0.3}, "val_recon_mse", 0.5)
    assert d["passed"] is True and d["direction"] == "lower is better"
    assert d["value"] == 0.3 and d["threshold"] == 0.5 and d["metric"] == "val_recon_mse"
    assert decide({"val_recon_mse": 0.5}, "val_recon_mse", 0.5)["passed"] is True  # equal passes
    assert decide({"val_recon_mse": 0.7}, "val_recon_mse", 0.5)["passed"] is False


def test_decide_higher_is_better():
    d = decide({"val_r2": 0.7}, "val_r2", 0.5)
    assert d["passed"] is True and d["direction"] == "higher is better"
    assert decide({"val_r2": 0.5}, "val_r2", 0.5)["passed"] is True
    assert decide({"val_r2": 0.3}, "val_r2", 0.5)["passed"] is False


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_decide_non_finite_never_passes(metric):
    for bad in (float("nan"), float("inf"), float("-inf"), None):
        assert decide({metric: bad}, metric, 0.5)["passed"] is False


def test_better():
    assert better(0.1, 0.2, "val_recon_mse") and not better(0.2, 0.1, "val_recon_mse")
    assert better(0.9, 0.8, "val_r2") and not better(0.8, 0.9, "val_r2")
    assert not better(0.5, 0.5, "val_r2")
    assert better(0.1, float("nan"), "val_r2") and not better(float("nan"), 0.1, "val_r2")


def _decisions(metric, values, threshold=None):
    threshold = 0.0 if threshold is None else threshold
    return [
        {"round": i + 1, **decide({metric: v}, metric, threshold)} for i, v in enumerate(values)
    ]


def test_select_round_min_metric():
    assert select_round(_decisions("val_recon_mse", [0.5, 0.2, 0.3])) == 2
    assert select_round(_decisions("val_recon_mse", [0.5, 0.6, 0.7])) == 1


def test_select_round_max_metric():
    assert select_round(_decisions("val_r2", [0.5, 0.2, 0.6])) == 3
    assert select_round(_decisions("val_r2", [0.5, 0.2, 0.3])) == 1


def test_select_round_ties_and_nan():
    assert select_round(_decisions("val_r2", [0.4, 0.6, 0.6])) == 2
    assert select_round(_decisions("val_recon_mse", [0.3, 0.3, 0.3])) == 1
    assert select_round(_decisions("val_r2", [float("nan"), 0.1, 0.1])) == 2
    # the order of the list does not matter, the round numbers do
    ds = _decisions("val_r2", [0.2, 0.9, 0.5])[::-1]
    assert select_round(ds) == 2
    with pytest.raises(ValueError):
        select_round([])


def test_loop_continues():
    failed, passed = {"passed": False}, {"passed": True}
    assert loop_continues(failed, 1, 3) is True
    assert loop_continues(failed, 2, 3) is True
    assert loop_continues(failed, 3, 3) is False
    assert loop_continues(passed, 1, 3) is False
    assert loop_continues(failed, "1", "2") is True
    assert loop_continues(failed, 1, 1) is False


# ================================================================== risk
def test_contrasts_two_levels():
    # no control-like name: the first level in sort order is the control
    cond = np.array(["a", "b", "b", "a", "b"])
    ((name, case, ctrl),) = contrasts(cond)
    assert name == "b_vs_a"
    np.testing.assert_array_equal(case, cond == "b")
    np.testing.assert_array_equal(ctrl, cond == "a")


@pytest.mark.parametrize(
    "levels,expected",
    [
        (("case", "control"), "case_vs_control"),
        (("tumour", "Normal"), "tumour_vs_Normal"),
        (("ko", "WT"), "ko_vs_WT"),
        (("aml", "healthy"), "aml_vs_healthy"),
        (("control", "treated"), "treated_vs_control"),
        (("control", "normal"), "normal_vs_control"),  # both control-like: sort order
    ],
)
def test_contrasts_two_levels_control_named(levels, expected):
    cond = np.array([levels[0], levels[1], levels[1], levels[0]])
    ((name, case, ctrl),) = contrasts(cond)
    assert name == expected
    case_level, control_level = expected.split("_vs_")
    np.testing.assert_array_equal(case, cond == case_level)
    np.testing.assert_array_equal(ctrl, cond == control_level)


def test_contrasts_explicit_case_control():
    cond = np.array(["tumour", "normal", "other", "tumour", "normal"])
    ((name, case, ctrl),) = contrasts(cond, case="normal", control="tumour")
    assert name == "normal_vs_tumour"
    np.testing.assert_array_equal(case, [False, True, False, False, True])
    np.testing.assert_array_equal(ctrl, [True, False, False, True, False])
    # a third level is in neither group
    assert not (case | ctrl)[2]


def test_contrasts_one_vs_rest():
    cond = np.array(["x", "y", "z", "x", "z", "z"])
    out = contrasts(cond)
    assert [c[0] for c in out] == ["x_vs_rest", "y_vs_rest", "z_vs_rest"]
    for name, case, ctrl in out:
        lvl = name.split("_vs_")[0]
        np.testing.assert_array_equal(case, cond == lvl)
        np.testing.assert_array_equal(ctrl, ~case)


def _bh_by_hand(p):
    p = np.asarray(p, float)
    m = len(p)
    order = np.argsort(p)
    q = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(q[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def test_bh_hand_computed():
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    # sorted: 0.005 0.01 0.03 0.04 0.5 -> *5/rank: 0.025 0.025 0.05 0.05 0.5
    expected = [0.025, 0.05, 0.05, 0.025, 0.5]
    np.testing.assert_allclose(bh(p), expected, rtol=1e-12)
    rng = np.random.default_rng(0)
    q = rng.uniform(size=40) ** 3
    np.testing.assert_allclose(bh(q), _bh_by_hand(q), rtol=1e-12)


def test_bh_keeps_nan_out():
    p = np.array([0.01, np.nan, 0.02, 0.9])
    out = bh(p)
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2, 3]], _bh_by_hand([0.01, 0.02, 0.9]), rtol=1e-12)
    assert np.isnan(bh([np.nan, np.nan])).all()


def test_ranking_metrics_hand_made():
    risk = pd.DataFrame(
        {
            "contrast": ["c1"] * 5 + ["c2"] * 5,
            "gene": list("abcde") * 2,
            "vae_rank": [1, 2, 3, 4, 5, 5, 4, 3, 2, 1],
            "classical_rank": [2, 1, 5, 3, 4, 1, 3, 2, 4, 5],
        }
    )
    out = ranking_metrics(risk, ["a", "c"])
    assert set(out) == {"c1", "c2"}
    # c1: vae top-2 = {a, b} -> 1 hit; classical top-2 = {a, b} -> 1 hit
    assert out["c1"] == {
        "k": 2,
        "vae_precision_at_k": 0.5,
        "vae_recall_at_k": 0.5,
        "classical_precision_at_k": 0.5,
        "classical_recall_at_k": 0.5,
    }
    # c2: vae top-2 = {e, d} -> 0; classical top-2 = {a, c} -> 2
    assert out["c2"]["vae_precision_at_k"] == 0.0
    assert out["c2"]["classical_precision_at_k"] == 1.0
    assert out["c2"]["classical_recall_at_k"] == 1.0
    # a planted gene not among the ranked genes counts against precision, not recall
    out = ranking_metrics(risk, ["a", "zzz"])
    assert out["c2"]["classical_precision_at_k"] == 0.5
    assert out["c2"]["classical_recall_at_k"] == 1.0
    assert ranking_metrics(risk, []) == {}


@pytest.fixture(scope="module")
def planted():
    """A simulated cohort with 6 strongly planted genes, log-normalised, and a small trained VAE."""
    matrix, sheet, truth = simulate_cohort(
        n_samples=120,
        n_genes=40,
        n_planted=6,
        log2_fold_change=2.0,
        mean_log=3.0,
        sd_log=0.7,
        seed=3,
    )
    counts = matrix.to_numpy()
    lib = counts.sum(axis=1)
    logx = np.log1p(counts / lib[:, None] * np.median(lib))
    rng = np.random.default_rng(0)
    split = np.array(["train"] * 90 + ["val"] * 20 + ["test"] * 10)
    rng.shuffle(split)
    tr = split == "train"
    center, scale = logx[tr].mean(axis=0), logx[tr].std(axis=0)
    transform = Transform(
        value_type="log",
        log_base=float(np.e),
        genes=list(matrix.columns),
        center=center.tolist(),
        scale=scale.tolist(),
    )
    x = transform.scale_log(logx)
    cohort = Cohort(
        sample_ids=matrix.index.to_numpy(),
        split=split,
        condition=sheet["condition"].to_numpy(),
        x=x,
        target=x,
        library=np.ones(len(x), np.float32),
        library_all=lib,
        genes=list(matrix.columns),
    )
    model, _, _ = train_vae(
        cohort,
        model_config=dict(
            hidden=[16], latent_dim=3, dropout=0.0, batch_norm=True, likelihood="gaussian"
        ),
        epochs=50,
        batch_size=32,
        lr=1e-2,
        kl_warmup_epochs=5,
        patience=50,
        seed=1,
        device="cpu",
        progress=io.StringIO(),
    )
    return cohort, transform, model, truth, logx


COLUMNS = list(RISK_COLUMNS)


def test_rank_genes_table(planted):
    cohort, transform, model, truth, logx = planted
    risk, dims = rank_genes(model, cohort, transform, case="case", control="control")
    assert list(risk.columns) == COLUMNS
    assert set(risk["contrast"]) == {"case_vs_control"}
    n = len(cohort.genes)
    assert len(risk) == n and sorted(risk["gene"]) == sorted(cohort.genes) and risk["in_model"].all()
    for col in ("vae_rank", "classical_rank"):
        assert sorted(risk[col]) == list(range(1, n + 1))
    # the table is sorted by the VAE rank, which orders the conservative effect (vae_score)
    assert list(risk["vae_rank"]) == list(range(1, n + 1))
    assert np.all(np.diff(risk["vae_score"].to_numpy()) <= 1e-12) and (risk["vae_score"] >= 0).all()
    assert ((risk["vae_proba_de"] >= 0) & (risk["vae_proba_de"] <= 1)).all()
    # calls only when the route did not abstain
    calls = risk["vae_call"].to_numpy()
    assert set(risk["vae_status"]) <= {"called", "abstained"}
    if (risk["vae_status"] == "abstained").all():
        assert not calls.any()
    # the expected FDR of the call list is at most the target; calls are the most probable changes
    if calls.any():
        assert (1 - risk.loc[calls, "vae_proba_de"]).mean() <= 0.05 + 1e-12
        assert risk.loc[calls, "vae_proba_de"].min() >= risk.loc[~calls, "vae_proba_de"].max() - 1e-12
    # the conservative effect is at most the posterior mean's magnitude
    assert (risk["vae_score"] <= risk["vae_log2_fold_change"].abs() + 1e-9).all()
    # the classical rank orders p-values
    by_classical = risk.sort_values("classical_rank")
    assert np.all(np.diff(by_classical["p_value"].to_numpy()) >= 0)
    assert ((risk["fdr"] >= risk["p_value"] - 1e-15) & (risk["fdr"] <= 1)).all()
    # log2 fold change of the log-scale group means (natural log -> log2)
    case = cohort.condition == "case"
    g = truth["gene"].iloc[0]
    j = cohort.genes.index(g)
    lfc = (logx[case, j].mean() - logx[~case, j].mean()) / np.log(2)
    row = risk.set_index("gene").loc[g]
    assert row["log2_fold_change"] == pytest.approx(lfc, rel=1e-5)
    assert np.sign(row["log2_fold_change"]) == np.sign(truth["log2_fold_change"].iloc[0])
    # the VAE's decoded fold change of a planted gene has the planted sign
    assert np.sign(row["vae_log2_fold_change"]) == np.sign(truth["log2_fold_change"].iloc[0])
    # latent table: one row per dimension
    assert list(dims["dimension"]) == ["z1", "z2", "z3"]
    assert dims["separates_groups"].dtype == bool


def test_rank_contrast_marks_genes_only_the_classical_route_saw(planted):
    """A classical table over more genes than the model (every collected gene): the extra genes are
    not in the model and not called, as plain bools, without pandas' object-downcasting warning."""
    import warnings

    from genovae.risk import rank_contrast

    cohort, transform, model, truth, logx = planted
    name, case_m, ctrl_m = next(iter(contrasts(cohort.condition)))
    genes = [*cohort.genes, "unmodelled"]
    classical = pd.DataFrame({"gene": genes, "ave_log2": 1.0, "log2_fold_change": 0.0,
                              "t_stat": 0.0, "p_value": 0.5, "fdr": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        table, _, _ = rank_contrast(model, cohort, transform, name, case_m, ctrl_m, classical=classical,
                                    draws=4, permutations=3)
    assert table["in_model"].dtype == bool and table["vae_call"].dtype == bool
    row = table.set_index("gene").loc["unmodelled"]
    assert not row["in_model"] and not row["vae_call"] and row["vae_status"] == "not modelled"
    assert table.set_index("gene").loc[cohort.genes, "in_model"].all()


def test_rank_genes_is_deterministic_for_a_seed(planted):
    cohort, transform, model, _, _ = planted
    a, _ = rank_genes(model, cohort, transform, case="case", control="control", seed=3)
    b, _ = rank_genes(model, cohort, transform, case="case", control="control", seed=3)
    pd.testing.assert_frame_equal(a, b)


def test_rank_genes_recovers_planted(planted):
    cohort, transform, model, truth, _ = planted
    risk, _ = rank_genes(model, cohort, transform, case="case", control="control")
    metrics = ranking_metrics(risk, truth["gene"])["case_vs_control"]
    assert metrics["k"] == 6
    assert metrics["classical_precision_at_k"] >= 0.8
    # planted genes are strongly significant; the VAE route finds at least some of them
    planted_fdr = risk.set_index("gene").loc[truth["gene"], "fdr"]
    assert (planted_fdr < 0.01).all()
    assert metrics["vae_precision_at_k"] >= 0.5
    # the signs agree with the planted direction
    lfc = risk.set_index("gene").loc[truth["gene"], "log2_fold_change"].to_numpy()
    assert (np.sign(lfc) == np.sign(truth["log2_fold_change"].to_numpy())).all()


def test_rank_genes_one_vs_rest_and_auto(planted):
    cohort, transform, model, _, _ = planted
    three = Cohort(**{**cohort.__dict__, "condition": np.array(["p", "q", "r"] * 40)})
    risk, dims = rank_genes(model, three, transform)
    assert list(risk["contrast"].unique()) == ["p_vs_rest", "q_vs_rest", "r_vs_rest"]
    n = len(cohort.genes)
    for _, df in risk.groupby("contrast"):
        assert sorted(df["vae_rank"]) == list(range(1, n + 1))
        assert sorted(df["classical_rank"]) == list(range(1, n + 1))
    assert len(dims) == 3 * 3
    # two levels without case/control: the group named "control" is the control
    auto, _ = rank_genes(model, cohort, transform)
    explicit, _ = rank_genes(model, cohort, transform, case="case", control="control")
    assert set(auto["contrast"]) == {"case_vs_control"}
    pd.testing.assert_frame_equal(auto, explicit)
    # swapping case and control flips the classical fold changes
    swapped, _ = rank_genes(model, cohort, transform, case="control", control="case")
    assert set(swapped["contrast"]) == {"control_vs_case"}
    a = swapped.set_index("gene")["log2_fold_change"]
    b = explicit.set_index("gene")["log2_fold_change"]
    np.testing.assert_allclose(a.loc[b.index], -b, rtol=1e-10, atol=1e-12)


# ================================================================ config
@pytest.fixture(scope="module")
def schema():
    with open(ROOT / "workflow" / "schemas" / "config.schema.yaml") as fh:
        return yaml.safe_load(fh)


def test_coerce_integer(schema):
    out = coerce_types({"model": {"latent_dim": "8"}}, schema)
    assert out == {"model": {"latent_dim": 8}}
    assert type(out["model"]["latent_dim"]) is int


def test_coerce_number(schema):
    out = coerce_types({"train": {"lr": "1e-3"}}, schema)
    assert out["train"]["lr"] == pytest.approx(0.001) and isinstance(out["train"]["lr"], float)
    assert coerce_types({"train": {"lr": "0.01"}}, schema)["train"]["lr"] == 0.01
    assert coerce_types({"model": {"dropout": "0"}}, schema)["model"]["dropout"] == 0


def test_coerce_boolean(schema):
    assert coerce_types({"model": {"batch_norm": "true"}}, schema)["model"]["batch_norm"] is True
    assert coerce_types({"model": {"batch_norm": "false"}}, schema)["model"]["batch_norm"] is False


def test_coerce_null(schema):
    out = coerce_types({"analysis": {"case": "null", "control": "tumour"}}, schema)
    assert out["analysis"] == {"case": None, "control": "tumour"}
    assert (
        coerce_types({"preprocess": {"n_top_genes": "null"}}, schema)["preprocess"]["n_top_genes"]
        is None
    )
    assert (
        coerce_types({"preprocess": {"n_top_genes": "500"}}, schema)["preprocess"]["n_top_genes"]
        == 500
    )


def test_coerce_strings_stay_strings(schema):
    out = coerce_types({"data": {"log_base": "2", "value_type": "counts"}, "run": "123"}, schema)
    assert out == {"data": {"log_base": "2", "value_type": "counts"}, "run": "123"}
    assert isinstance(out["data"]["log_base"], str)


def test_coerce_unparsable_stays_string(schema):
    assert coerce_types({"model": {"latent_dim": "x"}}, schema)["model"]["latent_dim"] == "x"
    # not an integer: left as a string for validation to reject
    assert coerce_types({"model": {"latent_dim": "8.5"}}, schema)["model"]["latent_dim"] == "8.5"
    assert coerce_types({"model": {"latent_dim": "true"}}, schema)["model"]["latent_dim"] == "true"
    assert (
        coerce_types({"model": {"batch_norm": "maybe"}}, schema)["model"]["batch_norm"] == "maybe"
    )


def test_coerce_lists(schema):
    out = coerce_types({"model": {"hidden": ["64", "32"]}}, schema)
    assert out["model"]["hidden"] == [64, 32]
    assert all(type(v) is int for v in out["model"]["hidden"])


def test_coerce_leaves_typed_values_and_unknown_keys(schema):
    value = {"model": {"latent_dim": 4, "hidden": [8]}, "train": {"lr": 0.1}, "nope": "5"}
    assert coerce_types(value, schema) == value


def test_coerced_config_validates(schema):
    jsonschema = pytest.importorskip("jsonschema")
    out = coerce_types(
        {
            "model": {"latent_dim": "8", "hidden": ["64", "32"], "batch_norm": "false"},
            "train": {"lr": "1e-3"},
        },
        schema,
    )
    jsonschema.validate(out, schema)
    bad = coerce_types({"model": {"latent_dim": "x"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def _d(value, passed=False, metric="val_mse_ratio_pca", **kw):
    return {"metric": metric, "value": value, "passed": passed, **kw}


def test_loop_stops_when_a_round_does_not_improve():
    from genovae.loop import walk_rounds

    # lower is better: round 2 is worse than round 1 -> no round 3
    assert walk_rounds([_d(1.10), _d(1.12)], 5) == (2, "round 2 did not improve on the best round before it")
    assert walk_rounds([_d(1.10), _d(1.05), _d(1.04)], 3) == (3, "max_rounds")
    assert walk_rounds([_d(1.10), _d(1.01, passed=True)], 5) == (2, "passed")
    # switched off: every round up to max_rounds
    assert walk_rounds([_d(1.10), _d(1.12), _d(1.2)], 3, stop_without_improvement=False) == (3, "max_rounds")
    # higher is better
    assert walk_rounds([_d(0.3, metric="val_r2"), _d(0.2, metric="val_r2")], 5)[0] == 2
    assert loop_continues(_d(1.05), 2, 5, best_before=1.10) is True
    assert loop_continues(_d(1.10), 2, 5, best_before=1.10) is False  # equal is no improvement


def test_posterior_draws_subsample_only_large_groups():
    """An atlas-sized contrast decodes at most POSTERIOR_PER_GROUP samples per group, seeded."""
    from genovae.risk import posterior_samples

    idx = np.arange(100, 160)
    lab = np.arange(60) < 12  # 12 case, 48 control
    same_idx, same_lab = posterior_samples(idx, lab, seed=4, per_group=50)
    np.testing.assert_array_equal(same_idx, idx)  # both groups small enough: untouched
    np.testing.assert_array_equal(same_lab, lab)
    cut_idx, cut_lab = posterior_samples(idx, lab, seed=4, per_group=20)
    assert cut_lab.sum() == 12 and (~cut_lab).sum() == 20  # the large group cut, the small one kept whole
    assert set(cut_idx[cut_lab]) == set(idx[lab]) and set(cut_idx) <= set(idx)
    assert np.all(np.diff(cut_idx) > 0)  # cohort order kept
    again, _ = posterior_samples(idx, lab, seed=4, per_group=20)
    other, _ = posterior_samples(idx, lab, seed=5, per_group=20)
    np.testing.assert_array_equal(again, cut_idx)
    assert not np.array_equal(other, cut_idx)
