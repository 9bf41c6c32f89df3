"""Remote inputs and AnnData in real Snakemake runs.

``http://`` inputs are served by a real HTTP server on 127.0.0.1 that each test
starts (Python's http.server in a thread) and fetched by Snakemake's HTTP
storage plugin: a good download runs and is cached, a 404 and a sha256
mismatch stop the run with a clear message and no outputs. An .h5ad written by
anndata runs end to end and gives results/{run}/latent.h5ad.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest

from conftest import TINY_CONFIG, run_snakemake, write_config

pytestmark = pytest.mark.workflow

DATA = Path(__file__).resolve().parent / "data"
H5AD = DATA / "anndata_0.12.19_cohort.h5ad"
RESULTS = Path("results/tiny")
COLLECTED = ("matrix.parquet", "samples.tsv", "genes.tsv", "manifest.json")
MANIFEST = str(RESULTS / "data/manifest.json")


class Server:
    """http.server on 127.0.0.1:<free port> serving ``root``; records every request."""

    def __init__(self, root):
        self.root = Path(root)
        self.requests = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, fmt, *args):  # keep pytest output quiet
                server.requests.append((self.command, self.path.split("?", 1)[0]))

        handler = functools.partial(Handler, directory=str(self.root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def gets(self, name):
        return sum(1 for verb, path in self.requests if verb == "GET" and path == f"/{name}")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    with Server(root) as srv:
        yield srv


def write_cohort(root, n_samples=24, n_genes=40, seed=5):
    rng = np.random.default_rng(seed)
    ids = [f"s{i:02d}" for i in range(1, n_samples + 1)]
    counts = rng.poisson(20, size=(n_samples, n_genes)) + 1
    expr = pd.DataFrame(counts, index=pd.Index(ids, name="sample_id"),
                        columns=[f"g{j}" for j in range(1, n_genes + 1)])
    expr.to_csv(root / "expr.tsv.gz", sep="\t")
    sheet = pd.DataFrame({"sample_id": ids, "condition": ["case", "control"] * (n_samples // 2)})
    sheet.to_csv(root / "samples.tsv", sep="\t", index=False)
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest()
            for name in ("expr.tsv.gz", "samples.tsv")}


def url_config(server, expression="expr.tsv.gz", samples="samples.tsv", sha256=None):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["data"] = {
        "source": "file",
        "expression": f"{server.url}/{expression}",
        "samples": f"{server.url}/{samples}",
        "value_type": "counts",
    }
    if sha256 is not None:
        cfg["data"]["sha256"] = sha256
    return cfg


def collected(workdir):
    data = workdir / RESULTS / "data"
    return sorted(p.name for p in data.iterdir()) if data.is_dir() else []


def test_url_inputs_are_fetched_checked_and_cached(workdir, server):
    sums = write_cohort(server.root)
    write_config(workdir, url_config(server, sha256={"expression": sums["expr.tsv.gz"],
                                                     "samples": sums["samples.tsv"]}))
    run_snakemake(workdir, MANIFEST)
    assert collected(workdir) == sorted(COLLECTED)
    manifest = json.loads((workdir / MANIFEST).read_text())
    by_role = {e["role"]: e for e in manifest["inputs"]}
    for role, name in (("expression", "expr.tsv.gz"), ("samples", "samples.tsv")):
        entry = by_role[role]
        assert entry["source"] == f"{server.url}/{name}"
        assert entry["sha256"] == entry["sha256_expected"] == sums[name]
        assert entry["bytes"] == (server.root / name).stat().st_size
        # the download is kept in Snakemake's storage cache
        local = workdir / entry["path"]
        assert ".snakemake/storage/http" in entry["path"] and local.is_file()
        assert server.gets(name) == 1
    assert manifest["shape_after"] == [24, 40]
    # a rerun finds everything up to date and does not download again
    proc = run_snakemake(workdir, MANIFEST)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert server.gets("expr.tsv.gz") == 1 and server.gets("samples.tsv") == 1
    # the rest of the pipeline is planned on top of the cached inputs, without fetching
    proc = run_snakemake(workdir, "--dry-run")
    assert "export_h5ad" in proc.stdout and "collect" not in proc.stdout.split("Job stats:")[1].split("total")[0]
    assert server.gets("expr.tsv.gz") == 1


def test_missing_url_stops_with_a_clear_error(workdir, server):
    write_cohort(server.root)
    write_config(workdir, url_config(server, expression="no_such_matrix.tsv"))
    proc = run_snakemake(workdir, MANIFEST, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # asked before the download: one line naming the URL and the server's answer
    line = next(ln for ln in text.splitlines() if ln.startswith("genovae: "))
    assert line == f"genovae: {server.url}/no_such_matrix.tsv: the server answered HTTP 404 File not found"
    assert "Traceback" not in text
    assert collected(workdir) == []
    assert ("HEAD", "/no_such_matrix.tsv") in server.requests


def test_sha256_mismatch_stops_and_the_download_is_not_used(workdir, server):
    sums = write_cohort(server.root)
    wrong = hashlib.sha256(b"another file").hexdigest()
    write_config(workdir, url_config(server, sha256={"expression": wrong,
                                                     "samples": sums["samples.tsv"]}))
    proc = run_snakemake(workdir, MANIFEST, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    message = next(line for line in text.splitlines() if "genovae: rule collect failed" in line)
    assert f"{server.url}/expr.tsv.gz" in message and "sha256 mismatch" in message
    assert wrong in message and sums["expr.tsv.gz"] in message and "not used" in message
    assert "Traceback" not in text
    assert collected(workdir) == []
    cached = list((workdir / ".snakemake/storage/http").rglob("expr.tsv.gz"))
    assert cached == []  # the bad download is deleted, the next run fetches it again
    # with the right sum the next run fetches the file again and succeeds
    write_config(workdir, url_config(server, sha256=sums["expr.tsv.gz"]))
    run_snakemake(workdir, MANIFEST)
    assert collected(workdir) == sorted(COLLECTED)
    assert server.gets("expr.tsv.gz") == 2


def test_h5ad_input_runs_end_to_end_and_exports_latent_h5ad(workdir):
    shutil.copy(H5AD, workdir / "cohort.h5ad")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["data"] = {"source": "file", "expression": "cohort.h5ad", "layer": "counts",
                   "value_type": "counts"}
    cfg["analysis"] = {"condition": "disease", "case": "AML", "control": "healthy"}
    cfg["preprocess"] = {"n_top_genes": None}
    cfg["retrain"] = {"metric": "val_r2", "threshold": -100.0, "max_rounds": 1}
    cfg["train"] = {**cfg["train"], "epochs": 8}
    write_config(workdir, cfg)
    # latent.h5ad is part of the default target; asking for it alone skips the plots
    run_snakemake(workdir, str(RESULTS / "latent.h5ad"))
    r = workdir / RESULTS
    manifest = json.loads((r / "data/manifest.json").read_text())
    assert manifest["format"] == "h5ad" and manifest["inputs"][0]["parser"] == "h5ad:counts"
    assert manifest["shape_after"] == [40, 50]
    summary = json.loads((r / "summary.json").read_text())
    latent = pd.read_csv(r / "latent.tsv", sep="\t")
    risk = pd.read_csv(r / "risk_genes.tsv", sep="\t")
    assert (r / "logs/export_h5ad.log").is_file() and (r / "benchmarks/export_h5ad.tsv").is_file()

    from conftest import check_every_h5ad

    # every .h5ad of the run (latent.h5ad) reads with anndata and gives scanpy a kNN graph
    assert check_every_h5ad(r) == [r / "latent.h5ad"]
    adata = anndata.read_h5ad(r / "latent.h5ad")
    values, obs, var = adata.X, adata.obs, adata.var
    assert values.shape == (40, 50)
    z = adata.obsm["X_genovae"]
    assert adata.uns["genovae"]["summary"]["run"] == "tiny"
    assert adata.uns["genovae"]["summary"]["n_samples"] == summary["n_samples"] == 40
    assert json.loads(adata.uns["genovae"]["summary_json"]) == summary
    assert z.shape == (40, 4)
    lat = latent.set_index("sample_id").loc[list(obs.index), ["z1", "z2", "z3", "z4"]]
    np.testing.assert_allclose(z, lat.to_numpy(), rtol=1e-5)
    assert obs["disease"].notna().all() and set(obs["genovae_split"]) == {"train", "val", "test"}
    assert obs["genovae_reconstruction_mse"].notna().all()
    scores = var["vae_score_AML_vs_healthy"]
    assert scores.notna().sum() == risk["gene"].nunique() == 50
    assert var["gene_symbols"].iloc[0] == "SYM1"
    # obs: the numeric obs column of the input is numeric again, the condition and text columns are labels
    assert obs["age"].dtype == np.float64 and obs["age"].tolist() == [30.0 + i for i in range(40)]
    assert isinstance(obs["disease"].dtype, pd.CategoricalDtype) and isinstance(obs["batch"].dtype, pd.CategoricalDtype)
    # layers["genovae_input"]: the model's input (features.parquet) at its genes, NaN for the others
    from genovae import io

    features = io.read_matrix(r / "preprocess/features.parquet")
    layer = adata.layers["genovae_input"]
    modelled = var["genovae_modelled"].to_numpy()
    assert layer.shape == values.shape
    assert set(var.index[modelled]) == set(features.columns) and 0 < modelled.sum() <= 50
    np.testing.assert_array_equal(layer[:, modelled], features.loc[list(obs.index), var.index[modelled]].to_numpy())
    assert np.isnan(layer[:, ~modelled]).all()


def test_latent_h5ad_has_anndata_types(workdir):
    """The types scanpy users meet: numeric obs numbers, labels categories, the layer and var flags."""
    test_h5ad_input_runs_end_to_end_and_exports_latent_h5ad(workdir)
    adata = anndata.read_h5ad(workdir / RESULTS / "latent.h5ad")
    assert adata.obsm["X_genovae"].shape == (40, 4) and adata.obsm["X_genovae"].dtype == np.float32
    assert "genovae_reconstruction_mse" in adata.obs and "vae_score_AML_vs_healthy" in adata.var
    assert adata.obs["age"].dtype == np.float64 and adata.obs["disease"].dtype == "category"
    assert adata.layers["genovae_input"].shape == (40, 50) and adata.var["genovae_modelled"].dtype == bool


@pytest.mark.parametrize(
    "data, key, words",
    [
        ({"geo": "GSE1234", "expression": "x.tsv"}, "data.geo", "not both"),
        ({"expression": "x.tsv"}, "data.samples", "carries a sample sheet"),
        ({"expression": "x.tsv", "samples": "s.tsv", "sha256": "abc"}, "sha256", "does not match"),
    ],
    ids=["geo_and_expression", "table_without_samples", "malformed_sha256"],
)
def test_source_config_errors_are_reported_before_anything_runs(workdir, data, key, words):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["data"] = {"source": "file", **data}
    write_config(workdir, cfg)
    proc = run_snakemake(workdir, "--dry-run", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert key in text and words in text, text[-2000:]

