"""Memory and time requests sized from measurements (genovae.resources), not flat."""

from __future__ import annotations

import json

import pytest

from conftest import REPO
from genovae import resources as res

SCALE = REPO / "benchmarks" / "runs" / "bench_scale.json"
#: bench_scale.json predates the apply split: apply_model is now latent, test_metrics, risk_genes
RENAMED = {"apply_model": ["latent", "test_metrics", "risk_genes"]}


def test_requests_cover_every_measured_peak_of_a_tcga_sized_run():
    run = json.loads(SCALE.read_text())
    shape = (run["input"]["samples"], run["input"]["genes"])
    modelled = 10_000  # that run's preprocess.n_top_genes
    checked = 0
    for job in run["jobs"]:
        for rule in RENAMED.get(job["rule"], [job["rule"]]):
            request = res.mem_mb(rule, shape, modelled)
            assert request >= job["peak_rss_mb"], (rule, request, job["peak_rss_mb"])
            # and not the flat 4-8 GB of before for jobs that need a tenth of it
            assert request <= max(4 * job["peak_rss_mb"], 2 * res.LIGHT_MB), (rule, request, job["peak_rss_mb"])
            checked += 1
    assert checked >= 12


def test_requests_grow_with_the_cohort_and_the_attempt():
    small, large = (80, 2_000), (20_000, 30_000)
    for rule in res.MEMORY:
        assert res.mem_mb(rule, large, 2_000) > res.mem_mb(rule, small, 2_000)
        assert res.runtime_min(rule, large, 2_000) > res.runtime_min(rule, small, 2_000)
        assert res.mem_mb(rule, small, 2_000, attempt=2) == 2 * res.mem_mb(rule, small, 2_000)
    # light rules: flat, whatever the cohort
    assert res.mem_mb("decide", large) == res.mem_mb("decide", small) == res.LIGHT_MB
    assert res.runtime_min("summarize", large, attempt=3) == 3 * res.LIGHT_MINUTES
    # model rules hold the modelled genes only
    assert res.mem_mb("latent", large, 2_000) < res.mem_mb("latent", large, 30_000)
    assert res.mem_mb("collect", large, 2_000) == res.mem_mb("collect", large, 30_000)


def test_the_cohort_size_before_collect(tmp_path):
    assert res.estimated_shape({"shape_after": [83, 2308]}, None, None) == (83, 2308)
    assert res.estimated_shape(None, {"n_samples": 60, "n_genes": 120}, None) == (60, 120)
    f = tmp_path / "x.tsv"
    f.write_bytes(b"0" * 9_000_000)
    n, g = res.estimated_shape(None, None, str(f))
    assert n * g == 1_000_000 and g == 1  # every gene counted as modelled: the safe side
    assert res.estimated_shape(None, None, "https://example.org/x.tsv") is None
    assert res.mem_mb("train", None) == res.UNKNOWN_MB


@pytest.mark.parametrize("rule", sorted(res.MEMORY))
def test_every_sized_rule_is_a_rule_of_the_workflow(rule):
    text = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    assert f'job_mem_mb("{rule}")' in text


def test_auto_threads_follow_the_size_of_a_training_step():
    """train.threads: auto is 1 thread unless batch_size x genes modelled is large (from the config alone)."""
    assert res.auto_threads(32, 2000) == 1  # the demo, every small cohort
    assert res.auto_threads(128, 2000) == 1
    big = res.AUTO_THREADS_MIN_STEP
    assert res.auto_threads(big // 1000, 1000) == res.AUTO_THREADS_MAX > 1
    assert res.auto_threads(big // 1000 - 1, 1000) == 1


@pytest.mark.workflow
@pytest.mark.parametrize("train, top, threads", [
    ({"threads": "auto"}, 60, "1"),
    ({"threads": "auto", "batch_size": 4096}, 1000, "2"),  # 4,096 x 1,000 genes: a large step
    ({"threads": 2}, 60, "2"),  # a number is taken as it is (capped by --cores)
])
def test_the_jobs_threads_in_a_dry_run(tmp_path, train, top, threads):
    import copy
    import re

    from conftest import TINY_CONFIG, copy_workflow, run_snakemake, write_config

    wd = copy_workflow(tmp_path / "wf")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["train"].update(train)
    cfg["preprocess"]["n_top_genes"] = top
    write_config(wd, cfg)
    out = run_snakemake(wd, "--dry-run").stdout  # --cores 2
    for rule in ("train", "apply_model"):  # a tiny cohort: the merged job layout
        block = out.split(f"rule {rule}:", 1)[1].split("\n\n", 1)[0]
        shown = re.search(r"^\s+threads: (\d+)$", block, re.M)  # Snakemake leaves out "threads: 1"
        assert (shown.group(1) if shown else "1") == threads, block


def test_a_sparse_cohort_is_sized_by_its_csr(tmp_path):
    """200,000 cells x 20,000 genes at 5 % non-zero: 16 GB dense, 1.6 GB of CSR."""
    shape, csr = (200_000, 20_000), 1_605.0
    manifest = {"shape_after": list(shape), "sparse": {"nnz": 200_000_000, "csr_mb": csr}}
    assert res.estimated_sparse_mb(manifest) == csr
    assert res.estimated_sparse_mb({"shape_after": list(shape)}) is None  # dense once collected
    for rule in res.SPARSE_MEMORY:
        sparse_request = res.mem_mb(rule, shape, 2_000, sparse_mb=csr)
        assert 2 * csr < sparse_request < 5 * csr < res.mem_mb(rule, shape, 2_000)  # not the dense 16 GB
        assert res.mem_mb(rule, shape, 2_000, attempt=2, sparse_mb=csr) == 2 * sparse_request
        assert res.runtime_min(rule, shape, 2_000, sparse_mb=csr) < res.runtime_min(rule, shape, 2_000)
    # the model rules hold the modelled genes dense, sparse or not
    assert res.mem_mb("train", shape, 2_000, sparse_mb=csr) == res.mem_mb("train", shape, 2_000)
    # before collect: an .h5ad's size is its X as stored; another file says nothing about sparsity
    h5ad = tmp_path / "cells.h5ad"
    h5ad.write_bytes(b"\0" * 3_000_000)
    assert res.estimated_sparse_mb(None, str(h5ad)) == pytest.approx(3.0)
    assert res.estimated_sparse_mb(None, str(tmp_path / "x.tsv")) is None
    assert res.mem_mb("collect", None, sparse_mb=3.0) < res.UNKNOWN_MB


def test_the_atlas_table_of_docs_cluster_is_what_genovae_asks():
    """docs/cluster.md's requests for 200,000 / 1M / 2M cells are genovae.resources' figures."""
    text = (REPO / "docs" / "cluster.md").read_text()
    for cells in (200_000, 1_000_000, 2_000_000):
        csr = round(cells * 20_000 * 0.05 * 8 / 1e6 + (cells + 1) * 8 / 1e6, 1)
        req = {rule: res.mem_mb(rule, (cells, 20_000), 2_000, sparse_mb=csr) / 1000
               for rule in ("collect", "preprocess", "export_h5ad", "train", "risk_genes")}
        minutes = {rule: res.runtime_min(rule, (cells, 20_000), 2_000, sparse_mb=csr)
                   for rule in ("collect", "risk_genes")}
        row = (f"| {cells:,} | {csr / 1000:.1f} GB | {req['collect']:.1f} GB, {minutes['collect']} min | "
               f"{req['preprocess']:.1f} GB, {minutes['collect']} min | {req['export_h5ad']:.1f} GB, "
               f"{minutes['collect']} min | {req['train']:.1f} GB | {req['risk_genes']:.1f} GB, "
               f"{minutes['risk_genes']} min |")
        assert row in text, row


def test_requests_cover_every_measured_peak_of_an_atlas_run():
    """benchmarks/runs/bench_atlas.json: 200,000 cells x 20,000 genes, sparse, 2,000 modelled genes."""
    run = json.loads((REPO / "benchmarks" / "runs" / "bench_atlas.json").read_text())
    shape = (run["input"]["cells"], run["input"]["genes"])
    csr_mb = run["input"]["csr_bytes"] / 1e6
    for job in run["jobs"]:
        request = res.mem_mb(job["rule"], shape, 2_000, sparse_mb=csr_mb)
        peak = max(job["peak_rss_mb"] or 0, job["max_rss_mb"] or 0)
        assert request >= peak, (job["rule"], request, peak)
        assert request <= max(4 * peak, 2 * res.LIGHT_MB), (job["rule"], request, peak)
