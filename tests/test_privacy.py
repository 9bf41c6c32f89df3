"""Patient privacy and synthetic cohorts: keyed pseudonyms, DP-SGD and its budget, synthetic data.

Unit tests of genovae.pseudonym, genovae.privacy and genovae.synthetic, and three real
workflow runs: a pseudonymised run scanned for raw ids, a DP run on the shipped demo
data, and a privacy budget that stops the retrain loop.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import hmac
import json
import os
import re
import stat
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, TINY_CONFIG, copy_workflow, noise_cohort, planned_jobs, run_snakemake, write_config

sys.path.insert(0, str(REPO / "workflow" / "lib"))

from genovae import privacy, pseudonym, synthetic  # noqa: E402
from genovae.errors import ConfigError  # noqa: E402
from genovae.loop import loop_continues  # noqa: E402
from genovae.summary import privacy_warning  # noqa: E402

KEY = b"0123456789abcdef0123456789abcdef"


# ------------------------------------------------------------ pseudonyms
def test_pseudonyms_are_keyed_hmac_sha256_and_deterministic():
    p = pseudonym.pseudonym(KEY, "PT-0042")
    assert re.fullmatch(r"s_[0-9a-f]{16}", p)
    assert p == "s_" + hmac.new(KEY, b"PT-0042", hashlib.sha256).hexdigest()[:16]
    assert p == pseudonym.pseudonym(KEY, "PT-0042")  # same key, same id: same pseudonym
    assert p != pseudonym.pseudonym(KEY, "PT-0043")
    assert p != pseudonym.pseudonym(b"another key of 32 characters....", "PT-0042")
    # the key fingerprint is not the key and does not contain it
    kid = pseudonym.key_id(KEY)
    assert KEY.decode() not in kid and len(kid) == 12


def test_key_is_read_from_a_file_or_an_environment_variable(tmp_path, monkeypatch):
    f = tmp_path / "key"
    f.write_bytes(KEY + b"\n")
    assert pseudonym.read_key(key_file=str(f)) == KEY
    monkeypatch.setenv("GENOVAE_TEST_KEY", KEY.decode())
    assert pseudonym.read_key(key_env="GENOVAE_TEST_KEY") == KEY


@pytest.mark.parametrize(
    "kwargs, key, words",
    [
        ({}, "privacy.key_file", "exactly one"),
        ({"key_file": "k", "key_env": "K"}, "privacy.key_file", "exactly one"),
        ({"key_file": "no/such/key"}, "privacy.key_file", "file not found"),
        ({"key_env": "GENOVAE_UNSET_KEY_VAR"}, "privacy.key_env", "not set"),
        ({"key_file": "SHORT"}, "privacy.key_file", "at least 16"),
    ],
)
def test_a_missing_or_weak_key_is_a_clear_config_error(tmp_path, monkeypatch, kwargs, key, words):
    monkeypatch.delenv("GENOVAE_UNSET_KEY_VAR", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "SHORT").write_text("abc\n")
    with pytest.raises(ConfigError) as err:
        pseudonym.read_key(**kwargs)
    assert err.value.key == key and words in str(err.value)


def test_id_map_is_written_with_mode_0600(tmp_path):
    path = tmp_path / "private" / "ids.tsv"
    old = os.umask(0o022)
    try:
        pseudonym.write_map(path, {"PT1": "s_1", "PT2": "s_2"})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        path.chmod(0o644)  # an existing map with wider permissions is replaced by a 0600 one
        pseudonym.write_map(path, {"PT1": "s_1"})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert path.read_text() == "sample_id\tpseudonym\nPT1\ts_1\n"
    with pytest.raises(ConfigError, match="results/"):
        pseudonym.check_outside_results("results/demo/ids.tsv", "privacy.map_file")


def test_ids_inside_sample_sheet_text_are_replaced_as_tokens():
    scrub = pseudonym.Scrubber({"PAT1": "s_a", "PAT10": "s_b"})
    assert scrub("tumour of PAT1, /x/PAT10.sorted.bam") == "tumour of s_a, /x/s_b.sorted.bam"
    assert scrub("PAT100 and xPAT1") == "PAT100 and xPAT1"  # not whole tokens
    assert scrub("relapse of pat1 (see Pat10)") == "relapse of s_a (see s_b)"  # in any case


def _sheet(ids, **columns):
    return pd.DataFrame({"sample_id": ids, **columns}, index=pd.Index(ids, name="sample_id"))


def test_integer_ids_corrupt_no_other_column(tmp_path, caplog):
    """Integer ids 1..n once turned condition 1-4 and ages that equal an id into pseudonyms."""
    ids = [str(i) for i in range(1, 9)]
    sheet = _sheet(
        ids,
        condition=["1", "2", "3", "4"] * 2,
        age=["3", "45", "7", "61", "8", "2", "70", "5"],
        notes=["sample 3 relapsed", "", "2 biopsies", "x", "", "", "", "rerun of 1"],
    )
    mapping = pseudonym.pseudonyms(KEY, ids)
    out = pseudonym.pseudonymize_sheet(sheet, mapping)
    assert out["sample_id"].tolist() == [mapping[i] for i in ids]
    for col in ("condition", "age", "notes"):  # all-numeric ids are not looked for outside the id column
        assert out[col].tolist() == sheet[col].tolist(), col
    caplog.set_level("WARNING")
    matrix = pd.DataFrame(np.ones((8, 2)), index=sheet.index, columns=["g1", "g2"])
    (tmp_path / "key").write_bytes(KEY)
    privacy_cfg = {"pseudonymize": True, "key_file": str(tmp_path / "key")}
    m2, s2, _, scrub, entry = pseudonym.apply_to_cohort(matrix, sheet, privacy_cfg)
    assert entry["ids_replaced_in_id_column_only"] == 8
    assert "not looked for in free text" in caplog.text
    assert list(m2.index) == [mapping[i] for i in ids] and s2["condition"].tolist() == sheet["condition"].tolist()
    assert scrub("sample 3 relapsed") == "sample 3 relapsed"


def test_short_ids_are_replaced_in_the_id_column_only():
    ids = ["P1", "P2", "ABC", "PT0004"]
    sheet = _sheet(ids, notes=["P1 and ABC", "abc", "of PT0004", "pt0004 again"], group=["P2", "a", "b", "c"])
    mapping = pseudonym.pseudonyms(KEY, ids)
    out = pseudonym.pseudonymize_sheet(sheet, mapping)
    assert out["sample_id"].tolist() == [mapping[i] for i in ids]
    assert out["group"].tolist() == ["P2", "a", "b", "c"]
    p4 = mapping["PT0004"]
    assert out["notes"].tolist() == ["P1 and ABC", "abc", f"of {p4}", f"{p4} again"]
    assert [pseudonym.scrubbable(i) for i in ("P1", "ABC", "1234", "2021-03", "PT01", "ab_1")] == [
        False, False, False, False, True, True]


def test_ids_in_another_case_inside_notes_and_id_columns_are_replaced():
    ids = ["PT0001", "PT0002", "PT0003", "PT0004"]
    mapping = pseudonym.pseudonyms(KEY, ids)
    sheet = _sheet(
        ids,
        notes=["biopsy of pt0001, repeated", "Pt0002", "see PT0003/PT0004", ""],  # free text: a cell with a space
        matched_normal=["PT0002", "pt0001", "PT0004", ""],  # every cell an id: an id column
        bam=["/x/pt0003.bam", "PT0002", "tumour", "normal"],  # codes: ids inside longer cells only
        condition=["a", "b", "a", "b"],
    )
    out = pseudonym.pseudonymize_sheet(sheet, mapping)
    p = mapping
    assert out["notes"].tolist() == [f"biopsy of {p['PT0001']}, repeated", p["PT0002"],
                                     f"see {p['PT0003']}/{p['PT0004']}", ""]
    assert out["matched_normal"].tolist() == [p["PT0002"], p["PT0001"], p["PT0004"], ""]
    assert out["bam"].tolist() == [f"/x/{p['PT0003']}.bam", "PT0002", "tumour", "normal"]
    assert out["condition"].tolist() == ["a", "b", "a", "b"]
    # ids that differ only in case are replaced where the case matches exactly
    scrub = pseudonym.Scrubber({"Ab12": "s_1", "aB12": "s_2"})
    assert scrub("Ab12 aB12 AB12") == "s_1 s_2 AB12"


def test_collect_pseudonymises_before_anything_is_written(tmp_path, caplog):
    from genovae.collect import collect

    ids = [f"PATIENT{i:02d}" for i in range(12)]
    rng = np.random.default_rng(0)
    values = rng.normal(size=(12, 6))
    values[3] = 0.0  # an all-zero sample: dropped with a warning that must not name the raw id
    pd.DataFrame(values, index=pd.Index(ids, name="sample_id"), columns=[f"g{j}" for j in range(6)]).to_csv(
        tmp_path / "expr.tsv", sep="\t"
    )
    pd.DataFrame(
        {"sample_id": ids, "group": ["a", "b"] * 6, "title": [f"biopsy of {i}" for i in ids]}
    ).to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    (tmp_path / "key").write_bytes(KEY)
    out = tmp_path / "out"
    caplog.set_level("INFO")
    manifest = collect(
        str(tmp_path / "expr.tsv"),
        str(tmp_path / "samples.tsv"),
        out_matrix=str(out / "matrix.parquet"),
        out_samples=str(out / "samples.tsv"),
        out_genes=str(out / "genes.tsv"),
        out_manifest=str(out / "manifest.json"),
        condition="group",
        privacy={"pseudonymize": True, "key_file": str(tmp_path / "key"), "map_file": str(tmp_path / "ids.tsv")},
    )
    assert manifest["privacy"] == {"pseudonymized": True, "key_id": pseudonym.key_id(KEY), "id_map_written": True}
    assert pseudonym.pseudonym(KEY, "PATIENT03") in manifest["warnings"][0]
    sheet = pd.read_csv(out / "samples.tsv", sep="\t")
    assert sheet["sample_id"].tolist() == [pseudonym.pseudonym(KEY, i) for i in ids if i != "PATIENT03"]
    assert sheet["title"].str.startswith("biopsy of s_").all()
    texts = [p.read_bytes() for p in out.iterdir()] + [caplog.text.encode()]
    for raw in ids:
        assert not any(raw.encode() in t for t in texts), raw
    assert stat.S_IMODE((tmp_path / "ids.tsv").stat().st_mode) == 0o600


# ------------------------------------------------------------ accounting
def test_accountant_epsilon_matches_opacus():
    from opacus.accountants import RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier

    eps, delta, q, steps = 2.0, 1e-5, 32 / 600, 400
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        sigma = privacy.noise_multiplier(eps, delta, q, steps)
    assert not [w for w in seen if "Optimal order" in str(w.message)]  # the bisection's warnings are silenced
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus's own bisection warns at noise levels far from the answer
        assert sigma == get_noise_multiplier(
            target_epsilon=eps, target_delta=delta, sample_rate=q, steps=steps, accountant="rdp",
            epsilon_tolerance=0.01,
        )
    acc = RDPAccountant()
    for _ in range(steps):
        acc.step(noise_multiplier=sigma, sample_rate=q)
    expected = acc.get_epsilon(delta=delta, alphas=privacy.ALPHAS)
    assert privacy.epsilon_spent([(sigma, q, steps)], delta) == pytest.approx(expected, rel=1e-12)
    # the wider range of RDP orders never gives a larger epsilon than Opacus's default orders
    assert expected <= acc.get_epsilon(delta=delta)
    assert eps - 0.011 <= expected <= eps
    # two rounds compose as one accountant that saw both
    sigma2 = privacy.noise_multiplier(eps, delta, q, 200)
    for _ in range(200):
        acc.step(noise_multiplier=sigma2, sample_rate=q)
    both = privacy.epsilon_spent([(sigma, q, steps), (sigma2, q, 200)], delta)
    assert both == pytest.approx(acc.get_epsilon(delta=delta, alphas=privacy.ALPHAS), rel=1e-12)
    assert eps < both < 2 * eps


def test_sampling_rate_and_steps_per_epoch():
    assert privacy.sample_rate(58, 32) == pytest.approx(32 / 58)
    assert privacy.steps_per_epoch(58, 32) == 2
    assert privacy.sample_rate(10, 64) == 1.0 and privacy.steps_per_epoch(10, 64) == 1


MODEL = {"hidden": [16], "latent_dim": 3, "dropout": 0.1, "batch_norm": False, "likelihood": "gaussian"}
DP = {"epsilon": 1.5, "delta": 1e-5, "max_grad_norm": 1.0, "seed": 5}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """In-process training here runs on one torch thread."""


def test_wide_rdp_orders_tighten_epsilon_where_the_default_orders_end():
    """Much noise over few steps puts the optimal order beyond Opacus's 63: the wider orders find it."""
    import warnings

    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(5.0, 0.01, 10)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = acc.get_epsilon(delta=1e-5)
    wide = privacy.epsilon_spent(acc.history, 1e-5)
    assert wide < 0.5 * default


class _Killed(Exception):
    pass


def _dp_run(monkeypatch=None, kill_at=None, dp=DP, **kw):
    """DP training on the noise cohort; with ``kill_at`` the validation of that epoch raises (a killed job)."""
    import io

    import genovae.train as gtrain

    if kill_at is not None:
        real, calls = gtrain.evaluate_loss, {"n": 0}

        def evaluate_loss(*a, **k):
            calls["n"] += 1
            if calls["n"] == kill_at:
                raise _Killed
            return real(*a, **k)

        monkeypatch.setattr(gtrain, "evaluate_loss", evaluate_loss)
    settings = dict(model_config=MODEL, dp=dp, epochs=7, batch_size=8, lr=1e-2, kl_warmup_epochs=2, patience=50,
                    threads=1, device="cpu", progress=io.StringIO())
    return privacy.train_vae_dp(noise_cohort(), **{**settings, **kw})


def test_dp_resumed_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    ref, ref_hist, ref_info = _dp_run()
    ckpt = tmp_path / "ckpt.pt"
    with monkeypatch.context() as m:
        with pytest.raises(_Killed):
            _dp_run(m, kill_at=6, checkpoint=str(ckpt), checkpoint_every=2)
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 4 and state["dp_steps"] == 4 * 5
    assert state["accountant_history"] == [[pytest.approx(ref_info["dp"]["noise_multiplier"]), 0.2, 20]]
    assert state["noise_generator"] is not None and state["generator"] is not None
    model, hist, info = _dp_run(checkpoint=str(ckpt), checkpoint_every=2)
    assert info["epochs_run"] == 7 and info["dp"]["steps"] == ref_info["dp"]["steps"] == 35
    assert info["dp"]["epsilon"] == ref_info["dp"]["epsilon"]
    assert list(hist.columns) == list(ref_hist.columns)
    assert np.array_equal(hist.to_numpy(np.float64), ref_hist.to_numpy(np.float64))  # resumed rows: float64
    for k, v in ref.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_dp_checkpoint_of_secret_randomness_holds_no_generator_state(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt.pt"
    secret = {**DP, "seed": None}
    with monkeypatch.context() as m:
        with pytest.raises(_Killed):
            _dp_run(m, kill_at=3, dp=secret, checkpoint=str(ckpt), checkpoint_every=2)
    state = torch.load(ckpt, weights_only=True)
    assert state["generator"] is None and state["noise_generator"] is None
    _, _, info = _dp_run(dp=secret, checkpoint=str(ckpt), checkpoint_every=2)
    # resumed after epoch 2 with fresh randomness: the accountant counts every step of both parts
    assert info["epochs_run"] == 7 and info["dp"]["steps"] == 35 and info["dp"]["seed"] is None
    # a DP checkpoint is never resumed by plain training, nor the other way round
    with monkeypatch.context() as m:
        with pytest.raises(_Killed):
            _dp_run(m, kill_at=3, checkpoint=str(ckpt), checkpoint_every=2)
    import io

    from genovae.train import train_vae

    _, _, plain = train_vae(noise_cohort(), model_config=MODEL, epochs=3, batch_size=8, threads=1, device="cpu",
                            progress=io.StringIO(), checkpoint=str(ckpt), checkpoint_every=2)
    assert plain["epochs_run"] == 3 and "dp" not in plain


def test_dp_training_spends_at_most_the_target_epsilon():
    model, history, info = privacy.train_vae_dp(
        noise_cohort(), model_config=MODEL, dp=DP, epochs=6, batch_size=8, kl_warmup_epochs=2, patience=50,
        threads=1, device="cpu",
    )
    d = info["dp"]
    assert d["steps"] == info["epochs_run"] * d["steps_per_epoch"] == 6 * 5
    assert 0 < d["epsilon"] <= DP["epsilon"]
    assert d["epsilon"] == pytest.approx(privacy.epsilon_spent(d["history"], DP["delta"]))
    assert d["noise_multiplier"] == privacy.noise_multiplier(DP["epsilon"], DP["delta"], 8 / 40, 30)
    assert np.isfinite(history[["train_loss", "val_loss"]].to_numpy()).all()
    # early stopping ends sooner and spends less
    _, _, short = privacy.train_vae_dp(
        noise_cohort(), model_config=MODEL, dp=DP, epochs=6, batch_size=8, kl_warmup_epochs=1, patience=1,
        min_delta=1e9, threads=1, device="cpu",
    )
    assert short["epochs_run"] < 6 and short["dp"]["epsilon"] < d["epsilon"]


# with the noise switched off there is no privacy to account: Opacus's epsilon is infinite at every order
@pytest.mark.filterwarnings("ignore:Optimal order is the smallest alpha")
def test_dp_clips_every_per_sample_gradient(monkeypatch):
    """The optimizer steps on clipped per-sample gradients of every parameter (noise switched off)."""
    from opacus.optimizers import DPOptimizer

    seen = []
    original = DPOptimizer.clip_and_accumulate

    def spy(self):
        original(self)
        summed = torch.cat([p.summed_grad.flatten() for p in self.params])
        seen.append((len(self.params), summed.norm().item(), len(self.params[0].grad_sample)))

    monkeypatch.setattr(DPOptimizer, "clip_and_accumulate", spy)
    monkeypatch.setattr(privacy, "noise_multiplier", lambda *a, **k: 0.0)
    model, _, _ = privacy.train_vae_dp(
        noise_cohort(), model_config=MODEL, dp={**DP, "max_grad_norm": 0.01}, epochs=1, batch_size=8,
        kl_warmup_epochs=0, patience=5, threads=1, device="cpu",
    )
    n_params = len([p for p in model.parameters()])
    assert seen, "the DP optimizer never clipped a batch"
    for count, norm, batch in seen:
        assert count == n_params  # the likelihood's gene-wise scale included
        assert norm <= 0.01 * batch + 1e-6  # a sum of gradients each clipped to 0.01


def test_batch_norm_is_refused_with_dp():
    with pytest.raises(ConfigError) as err:
        privacy.train_vae_dp(noise_cohort(), model_config={**MODEL, "batch_norm": True}, dp=DP, epochs=1)
    assert err.value.key == "model.batch_norm" and "per-sample gradients" in str(err.value)


def _info(tmp_path, r, eps, sigma, q=0.2, steps=50, spe=5):
    path = tmp_path / f"info{r}.json"
    path.write_text(json.dumps({"dp": {"epsilon": eps, "history": [[sigma, q, steps]], "sample_rate": q,
                                       "steps_per_epoch": spe}}))
    return str(path)


def test_a_round_that_would_exceed_the_total_budget_is_not_started(tmp_path):
    settings = {"epsilon": 2.0, "delta": 1e-5, "total_epsilon": 2.5, "epochs": 10, "lr": 1e-3, "seed": 1,
                "strategy": "warm_start", "epochs_factor": 1.5, "lr_factor": 0.5}
    sigma = privacy.noise_multiplier(2.0, 1e-5, 0.2, 50)
    infos = [_info(tmp_path, 1, privacy.epsilon_spent([(sigma, 0.2, 50)], 1e-5), sigma)]
    block = privacy.budget_decision(infos, round_=1, passed=False, max_rounds=3, settings=settings)
    assert block["stop"] and "round 2" in block["reason"] and "privacy.dp.total_epsilon" in block["reason"]
    assert block["next_round_epsilon_total"] > 2.5 >= block["epsilon_total"]
    decision = {"round": 1, "passed": False, "privacy": block}
    assert not loop_continues(decision, 1, 3)
    # a larger budget lets round 2 start
    roomy = privacy.budget_decision(infos, round_=1, passed=False, max_rounds=3, settings={**settings,
                                                                                           "total_epsilon": 10})
    assert not roomy["stop"] and loop_continues({**decision, "privacy": roomy}, 1, 3)
    # a passing (or last) round plans nothing
    done = privacy.budget_decision(infos, round_=1, passed=True, max_rounds=3, settings=settings)
    assert not done["stop"] and "next_round_epsilon_total" not in done


# ------------------------------------------------------------ synthetic data
def _population(rng, n, genes=200, rank=5):
    """Samples of one fixed population (low-rank structure plus noise): fresh draws never saw the cohort."""
    loadings = np.random.default_rng(99).normal(size=(rank, genes))
    return rng.normal(size=(n, rank)) @ loadings + rng.normal(size=(n, genes))


def _privacy_case(seed=1, n_train=80, n_holdout=60, genes=200):
    rng = np.random.default_rng(seed)
    real = _population(rng, n_train + n_holdout, genes)
    return rng, real, np.arange(n_train), np.arange(n_train, n_train + n_holdout)


def test_near_copies_of_training_records_fail_the_privacy_check():
    rng, real, train, holdout = _privacy_case()
    copies = real[rng.choice(train, 200)] + rng.normal(scale=0.05, size=(200, real.shape[1]))
    p = synthetic.privacy_metrics(copies, real, train, holdout)
    assert not p["passed"] and p["verdict"] == "synthetic samples copy training records"
    assert p["membership_auc"] > 0.95 and p["membership_advantage_ci"][0] > 0.8
    assert p["n_near_copies"] == 200 and p["n_identical_to_training"] == 0  # not exact copies: near ones
    assert p["share_below_holdout_p05"] == 1.0 and p["dcr_ratio"] < 0.1
    # a few copies among fresh samples are still caught (more than 5 % near-copies)
    mixed = np.vstack([copies[:30], _population(rng, 170)])
    m = synthetic.privacy_metrics(mixed, real, train, holdout)
    assert not m["passed"] and m["n_near_copies"] == 30 and m["verdict"] == "synthetic samples copy training records"
    # exact copies are copies
    assert synthetic.privacy_metrics(real[train[:5]], real, train, holdout)["n_identical_to_training"] == 5


def test_an_independent_generator_passes_the_privacy_check():
    rng, real, train, holdout = _privacy_case()
    fresh = _population(rng, 200)
    p = synthetic.privacy_metrics(fresh, real, train, holdout)
    assert p["passed"] and p["verdict"] == "no sign of memorisation", p
    assert abs(p["membership_auc"] - 0.5) < 0.1 and p["membership_advantage_ci"][0] < 0 < p["membership_advantage_ci"][1]
    assert p["n_near_copies"] == 0 and p["holdout_near_copy_share"] == 0
    assert p["share_below_holdout_p05"] < 0.15 and 0.85 < p["dcr_ratio"] < 1.15
    # a Gaussian with the training mean and covariance (many more records than genes) too
    rng, real, train, holdout = _privacy_case(seed=2, n_train=400, n_holdout=200, genes=20)
    gauss = rng.multivariate_normal(real[train].mean(0), np.cov(real[train], rowvar=False), size=300)
    g = synthetic.privacy_metrics(gauss, real, train, holdout)
    assert g["passed"] and abs(g["membership_auc"] - 0.5) < 0.1 and g["near_copy_share"] <= 0.05, g


def test_privacy_metrics_are_deterministic_for_a_seed():
    rng, real, train, holdout = _privacy_case()
    syn = _population(rng, 100)
    one, two = (synthetic.privacy_metrics(syn, real, train, holdout, seed=3) for _ in range(2))
    assert one == two
    other = synthetic.privacy_metrics(syn, real, train, holdout, seed=4)
    assert other["membership_auc"] == one["membership_auc"]  # only the interval is random
    assert other["membership_advantage_ci"] != one["membership_advantage_ci"]
    # without held-out samples: near-copies only, said so
    alone = synthetic.privacy_metrics(syn, real, train, np.array([], int))
    assert "membership_auc" not in alone and alone["passed"] and "not tested" in alone["verdict"]


def test_summary_warns_when_the_synthetic_cohort_fails_the_privacy_check():
    assert privacy_warning({"passed": True, "verdict": "no sign of memorisation"}) is None
    w = privacy_warning(
        {"passed": False, "verdict": "synthetic samples copy training records", "membership_auc": 0.97,
         "membership_advantage": 0.94, "membership_ci_level": 0.99,
         "membership_advantage_ci": [0.9, 1.0], "n_near_copies": 12, "n_synthetic": 40}
    )
    assert w.startswith("synthetic cohort: synthetic samples copy training records") and "0.97" in w and "12 of 40" in w


def test_synthetic_fidelity_of_copies_and_the_two_sample_classifier():
    rng = np.random.default_rng(1)
    train, holdout = rng.normal(size=(40, 25)), rng.normal(size=(40, 25))
    labels = np.array(["a", "b"] * 20)
    real, train_rows = np.vstack([train, holdout]), np.arange(40)
    moments = synthetic.group_moments(real, labels, train_rows)
    fid = synthetic.fidelity(moments, synthetic.group_moments(train.copy(), labels))
    assert fid["mean_correlation"] == pytest.approx(1.0) and fid["variance_correlation"] == pytest.approx(1.0)
    assert synthetic.two_sample_auc(train, train.copy()) <= 0.6
    # shifted synthetic samples are recognised by the two-sample classifier
    assert synthetic.two_sample_auc(train, train + 1.0) > 0.9
    assert synthetic.two_sample_auc(real, train + 1.0, rows=train_rows) > 0.9


def test_utility_compares_training_on_synthetic_with_training_on_real():
    rng = np.random.default_rng(2)
    y = np.array(["a", "b"] * 30)
    x = rng.normal(size=(60, 10)) + (y == "b")[:, None] * 2.0
    u = synthetic.utility(x, np.arange(40), y[:40], x[:40] + 0.1, y[:40], np.arange(40, 60), y[40:], "test")
    assert u["train_on_real"]["balanced_accuracy"] > 0.8 and u["train_on_synthetic"]["auc"] > 0.8
    assert u["balanced_accuracy_ratio"] == pytest.approx(
        u["train_on_synthetic"]["balanced_accuracy"] / u["train_on_real"]["balanced_accuracy"]
    )


# ------------------------------------------------------------ workflow runs
SMALL_MODEL = {"hidden": [32], "latent_dim": 4, "dropout": 0.0, "batch_norm": False, "likelihood": "gaussian"}


def _khan_cohort(workdir, n=40):
    """A slice of the shipped data with patient-like ids, a sheet column naming them, and an all-zero sample."""
    src = workdir / "resources/khan_srbct"
    expr = pd.read_csv(src / "expression.tsv.gz", sep="\t", index_col=0)
    sheet = pd.read_csv(src / "samples.tsv", sep="\t")
    keep = sheet.groupby("tumour_type").head(n // 4)["sample_id"].tolist()
    ids = {old: f"PATIENT-{7000 + i}-ZQ" for i, old in enumerate(keep)}
    expr = expr.loc[keep].rename(index=ids)
    expr.loc["PATIENT-9999-ZQ"] = 0.0  # dropped with a warning that must name the pseudonym only
    sheet = sheet.set_index("sample_id").loc[keep].rename(index=ids).reset_index()
    sheet = pd.concat([sheet, pd.DataFrame({"sample_id": ["PATIENT-9999-ZQ"], "tumour_type": ["EWS"]})])
    sheet["title"] = "biopsy of " + sheet["sample_id"]
    (workdir / "cohort").mkdir()
    expr.index.name = "sample_id"
    with gzip.open(workdir / "cohort/expr.tsv.gz", "wt") as fh:
        expr.to_csv(fh, sep="\t")
    sheet.drop(columns=["split"], errors="ignore").to_csv(workdir / "cohort/samples.tsv", sep="\t", index=False)
    return list(expr.index)


def _readable(path):
    """What a reader of ``path`` sees, as bytes: its raw bytes plus, decoded as a reader would,
    the text inside compressed containers (Parquet pages, gzip, the report's base64 data URIs and
    the zip archives they hold, HDF5 string datasets and attributes of .h5ad, a torch pickle)."""
    import base64
    import io as _io
    import zipfile

    path = Path(path)
    raw = path.read_bytes()
    parts = [raw]
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        parts.append("\n".join(map(str, [*df.index, *df.columns])).encode())
        for col in df.columns:
            if df[col].dtype == object:
                parts.append("\n".join(map(str, df[col])).encode())
    elif path.suffix == ".gz":
        parts.append(gzip.decompress(raw))
    elif path.suffix in (".h5ad", ".h5"):
        import h5py

        def visit(_, obj):
            for v in obj.attrs.values():
                parts.append(str(v).encode())
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "OSU":
                parts.append("\n".join(str(v) for v in np.ravel(obj[()])).encode())

        with h5py.File(path, "r") as fh:
            fh.visititems(visit)
    elif path.suffix == ".pt":
        import torch

        parts.append(repr(torch.load(path, map_location="cpu", weights_only=True)).encode())
    elif path.suffix == ".html":
        for blob in re.findall(rb"base64,([A-Za-z0-9+/=]+)", raw):
            data = base64.b64decode(blob + b"=" * (-len(blob) % 4))
            parts.append(data)
            if data[:2] == b"PK":
                with zipfile.ZipFile(_io.BytesIO(data)) as z:
                    parts += [z.read(n) for n in z.namelist()]
    return b"\n".join(parts)


def _scan(paths, needles):
    """{file: [needles found]} in what a reader of each file sees (see :func:`_readable`)."""
    found = {}
    for path in paths:
        data = _readable(path)
        hits = [n for n in needles if n.encode() in data]
        if hits:
            found[str(path)] = hits
    return found


def test_the_privacy_scan_reads_inside_compressed_files(tmp_path):
    """The scan finds an id that only a reader sees: in Parquet (compressed pages), gzip, .h5ad."""
    ids = [f"PATIENT-{i:04d}" for i in range(40)]
    df = pd.DataFrame({"x": np.arange(40.0)}, index=pd.Index(ids, name="sample_id"))
    df.to_parquet(tmp_path / "t.parquet", compression="zstd")
    with gzip.open(tmp_path / "t.tsv.gz", "wt") as fh:
        fh.write("\n".join(ids))
    import anndata

    anndata.AnnData(X=np.zeros((40, 1)), obs=pd.DataFrame(index=ids), var=pd.DataFrame(index=["g"])).write_h5ad(
        tmp_path / "t.h5ad")
    for name in ("t.parquet", "t.tsv.gz", "t.h5ad"):
        found = _scan([tmp_path / name], ids)
        assert len(found.get(str(tmp_path / name), [])) == 40, (name, found)


@pytest.mark.workflow
def test_pseudonymised_run_leaves_no_raw_sample_id(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    raw_ids = _khan_cohort(wd)
    secret = tmp_path / "secret"
    secret.mkdir()
    key = "f3b9c2d1e0a4978665544332211ffeed"
    (secret / "genovae.key").write_text(key + "\n")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg.update(
        run="pseudo",
        data={"source": "file", "expression": "cohort/expr.tsv.gz", "samples": "cohort/samples.tsv",
              "value_type": "log", "log_base": "e"},
        analysis={"condition": "tumour_type"},
        preprocess={"n_top_genes": 60},
        model=SMALL_MODEL,
        retrain={"metric": "val_r2", "threshold": -100.0, "max_rounds": 1},
        privacy={"pseudonymize": True, "key_file": str(secret / "genovae.key"), "map_file": "private/ids.tsv"},
        generate={"n_per_condition": 20},
    )
    cfg["train"]["epochs"] = 8
    write_config(wd, cfg)
    run_snakemake(wd)
    run_snakemake(wd, "--report", "results/pseudo/report.html")
    # a new cohort through apply_new is pseudonymised with the same key
    new = pd.read_csv(wd / "cohort/expr.tsv.gz", sep="\t", index_col=0).iloc[:5]
    new_ids = [f"NEWPATIENT-{i}-QX" for i in range(5)]
    new.index = pd.Index(new_ids, name="sample_id")
    new.to_csv(wd / "cohort/new.tsv", sep="\t")
    run_snakemake(wd, "apply_new", "--config", "new_data={expression: cohort/new.tsv, name: followup}")

    r = wd / "results/pseudo"
    files = [p for p in r.rglob("*") if p.is_file()]
    assert (r / "report.html").is_file() and (r / "latent.h5ad").is_file() and (r / "model/model.pt").is_file()
    assert any(p.suffix == ".png" for p in files) and any(p.suffix == ".parquet" for p in files)
    # no raw id and no key anywhere: tables, logs, plots, Parquet, .pt, .h5ad, the report
    assert _scan(files, raw_ids + new_ids + [key]) == {}
    from conftest import check_every_h5ad

    check_every_h5ad(r)  # the pseudonymised latent.h5ad still reads with anndata and scanpy
    # the pseudonyms are there instead, as HMAC-SHA256 of the ids with the key
    latent = pd.read_csv(r / "latent.tsv", sep="\t")
    expected = {pseudonym.pseudonym(key.encode(), i) for i in raw_ids if i != "PATIENT-9999-ZQ"}
    assert set(latent["sample_id"]) == expected
    new_latent = pd.read_csv(r / "new/followup/latent.tsv", sep="\t")
    assert list(new_latent["sample_id"]) == [pseudonym.pseudonym(key.encode(), i) for i in new_ids]
    summary = json.loads((r / "summary.json").read_text())
    assert summary["privacy"]["pseudonymized"] is True and summary["privacy"]["key_id"] == pseudonym.key_id(key.encode())
    assert any(pseudonym.pseudonym(key.encode(), "PATIENT-9999-ZQ") in w for w in summary["warnings"])
    # the map: only where the config says, owner-only; apply_new's beside it
    for name in ("ids.tsv", "ids.followup.tsv"):
        m = wd / "private" / name
        assert stat.S_IMODE(m.stat().st_mode) == 0o600, name
    ids_map = pd.read_csv(wd / "private/ids.tsv", sep="\t")
    assert dict(zip(ids_map["sample_id"], ids_map["pseudonym"]))["PATIENT-7000-ZQ"] == pseudonym.pseudonym(
        key.encode(), "PATIENT-7000-ZQ"
    )
    # the synthetic cohort and its evaluation
    assert summary["synthetic"]["n_synthetic"] == 80
    syn = pd.read_csv(r / "synthetic/samples.tsv", sep="\t")
    assert set(syn["tumour_type"]) == {"BL", "EWS", "NB", "RMS"}
    assert "synthetic cohort" in (r / "report.html").read_text()


@pytest.mark.workflow
def test_dp_run_on_the_demo_reports_epsilon_within_the_target(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    run_snakemake(
        wd, "--config", "model={batch_norm: false}", "train={epochs: 12, patience: 5, threads: 1}",
        "retrain={max_rounds: 1}", "privacy={dp: {enabled: true, epsilon: 3.0, delta: 1.0e-5}}",
        "generate={n_per_condition: 25}",
    )
    summary = json.loads((wd / "results/demo/summary.json").read_text())
    dp = summary["privacy"]["dp"]
    assert summary["n_samples"] == 83 and summary["rounds_run"] == 1
    assert dp["enabled"] is True and 0 < dp["epsilon_spent"] <= 3.0
    assert dp["epsilon_per_round"]["1"] == dp["epsilon_spent"] and dp["delta"] == 1e-5
    info = json.loads((wd / "results/demo/rounds/1/train_info.json").read_text())
    assert info["dp"]["epsilon"] == dp["epsilon_spent"] and info["dp"]["seed"] is None
    rounds = pd.read_csv(wd / "results/demo/model/rounds.tsv", sep="\t")
    assert rounds["epsilon"].iloc[0] == pytest.approx(dp["epsilon_spent"], rel=1e-5)
    syn = summary["synthetic"]
    assert syn["n_synthetic"] == 100 and syn["fidelity"]["mean_correlation"] > 0.5
    assert {"dcr_ratio", "membership_auc", "n_near_copies", "verdict", "passed"} <= set(syn["privacy"])


@pytest.mark.workflow
def test_total_epsilon_too_small_for_a_second_round_stops_the_loop(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["model"] = SMALL_MODEL
    cfg["retrain"] = {"metric": "val_r2", "threshold": 2.0, "max_rounds": 3}  # never met
    cfg["privacy"] = {"dp": {"enabled": True, "epsilon": 2.0, "total_epsilon": 2.2, "seed": 3}}
    cfg["generate"] = {"enabled": False}
    write_config(wd, cfg)
    # BatchNorm with DP is refused before anything runs
    proc = run_snakemake(wd, "--dry-run", "--config", "model={batch_norm: true}", check=False)
    assert proc.returncode != 0 and "model.batch_norm" in proc.stdout + proc.stderr
    run_snakemake(wd, "results/tiny/summary.json")  # the loop and the summary; no plots needed here
    r = wd / "results/tiny"
    assert sorted(p.name for p in (r / "rounds").iterdir() if p.is_dir()) == ["1"]
    summary = json.loads((r / "summary.json").read_text())
    assert summary["rounds_run"] == 1 and summary["threshold_met"] is False
    reason = summary["loop_stop_reason"]
    assert "privacy budget" in reason and "round 2" in reason and "2.2" in reason
    dp = summary["privacy"]["dp"]
    assert dp["stop_reason"] == reason and dp["epsilon_spent"] <= 2.0 and dp["total_epsilon_budget"] == 2.2
    assert "synthetic" not in summary and not (r / "synthetic").exists()
    assert planned_jobs(wd, "results/tiny/summary.json") == {}  # the stopped loop is stable
