"""A sparse .h5ad cohort stays sparse (genovae.sparse) and gives the results of its dense twin.

The same counts are written twice, as an .h5ad with a CSR ``X`` and with a dense ``X``:
collect, preprocess, the training data, the classical risk route and apply_new's
transform must agree, bad values must be named as on the dense path, and the slow
test checks the point of it all: collect and preprocess never hold the dense cohort.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from scipy import sparse

from genovae import io
from genovae import sparse as gsparse
from genovae.collect import collect
from genovae.dataset import load_cohort
from genovae.de import classical_route
from genovae.errors import InputError
from genovae.preprocess import Transform, preprocess
from genovae.sparse import SparseMatrix, SparseRows
from genovae.evaluate import split_metrics
from genovae.train import train_vae

OUT = ("matrix.parquet", "samples.tsv", "genes.tsv", "manifest.json")
LIB = Path(__file__).resolve().parent.parent / "workflow" / "lib"


def cohort(n=90, g=60, density=0.3, seed=3):
    """Counts with two cell types (genes 0-9 up in type b), mostly zeros; gene 11 all zero."""
    rng = np.random.default_rng(seed)
    kind = np.where(np.arange(n) % 3 == 0, "b", "a")
    mean = np.full((n, g), 4.0)
    mean[kind == "b", :10] = 40.0
    counts = rng.poisson(mean) * (rng.random((n, g)) < density)
    counts[:, 11] = 0
    counts[:, 0] += 1  # no all-zero cell
    obs = pd.DataFrame({"cell_type": kind}, index=[f"cell{i:03d}" for i in range(n)])
    var = pd.DataFrame(index=[f"gene{j:02d}" for j in range(g)])
    return counts.astype(np.float32), obs, var


def write_h5ad(path, counts, obs, var, as_sparse):
    x = sparse.csr_matrix(counts) if as_sparse else counts
    anndata.AnnData(X=x, obs=obs, var=var).write_h5ad(path)
    return path


def collect_to(tmp, expression, **kw):
    out = {f"out_{name.split('.')[0]}": tmp / name for name in OUT}
    args = dict(value_type="counts", condition="cell_type", **kw)
    manifest = collect(expression, None, **out, **args)
    return out, manifest


@pytest.fixture
def twins(tmp_path):
    counts, obs, var = cohort()
    runs = {}
    for kind in ("sparse", "dense"):
        d = tmp_path / kind
        d.mkdir()
        h5ad = write_h5ad(d / "cohort.h5ad", counts, obs, var, kind == "sparse")
        out, manifest = collect_to(d, h5ad)
        runs[kind] = (d, out, manifest)
    return runs, counts, obs


def test_storage_round_trip_and_long_layout(tmp_path):
    counts, obs, var = cohort(n=30, g=14)
    m = SparseMatrix(sparse.csr_matrix(counts), obs.index, var.index)
    path = tmp_path / "m.parquet"
    io.write_matrix(path, m)
    assert gsparse.is_sparse_file(path)
    back = io.read_matrix(path)
    assert isinstance(back, SparseMatrix) and back.values.format == "csc"
    np.testing.assert_array_equal(back.column_values(), counts)
    assert list(back.index) == list(obs.index) and list(back.columns) == list(var.index)
    assert list(io.matrix_genes(path)) == list(var.index)
    index, names, values = io.read_matrix_values(path, columns=["gene05", "gene02"], order="C")
    np.testing.assert_array_equal(values, counts[:, [5, 2]])
    assert values.flags.c_contiguous and list(names) == ["gene05", "gene02"]
    with pytest.raises(KeyError, match="gene99"):
        io.read_matrix(path, columns=["gene01", "gene99"])
    long = pd.read_parquet(path)  # what another tool sees: one row per non-zero
    assert list(long.columns) == ["gene", "sample", "value"] and len(long) == np.count_nonzero(counts)
    dense = tmp_path / "d.parquet"
    io.write_matrix(dense, m.to_frame())
    assert not gsparse.is_sparse_file(dense)


def test_reading_some_genes_across_row_groups(tmp_path, monkeypatch):
    """Genes picked (in any order) from a file of many row groups: only their non-zeros, sorted."""
    monkeypatch.setattr(gsparse, "ROW_GROUP", 7)
    counts, obs, var = cohort(n=40, g=25)
    path = tmp_path / "m.parquet"
    io.write_matrix(path, SparseMatrix(sparse.csr_matrix(counts), obs.index, var.index))
    assert pq.ParquetFile(path).num_row_groups > 20
    pick = ["gene17", "gene03", "gene11", "gene04"]
    some = io.read_matrix(path, columns=pick)
    assert list(some.columns) == pick and some.nnz == np.count_nonzero(counts[:, [17, 3, 11, 4]])
    assert some.values.has_sorted_indices
    np.testing.assert_array_equal(some.column_values(), counts[:, [17, 3, 11, 4]])
    np.testing.assert_array_equal(io.read_matrix(path).column_values(), counts)
    in_file_order = io.read_matrix(path, columns=["gene02", "gene09", "gene21"])  # appended, not placed
    np.testing.assert_array_equal(in_file_order.column_values(), counts[:, [2, 9, 21]])
    with pytest.raises(ValueError, match="twice"):
        io.read_matrix(path, columns=["gene03", "gene03"])


def test_collect_keeps_sparse_and_matches_dense(twins):
    runs, counts, obs = twins
    (ds, s_out, s_man), (dd, d_out, d_man) = runs["sparse"], runs["dense"]
    assert gsparse.is_sparse_file(s_out["out_matrix"]) and not gsparse.is_sparse_file(d_out["out_matrix"])
    s, d = io.read_matrix(s_out["out_matrix"]), io.read_matrix(d_out["out_matrix"])
    assert isinstance(s, SparseMatrix)
    np.testing.assert_array_equal(s.column_values(), d.to_numpy())
    assert list(s.index) == list(d.index) and list(s.columns) == list(d.columns)
    assert "gene11" not in s.columns  # the all-zero gene dropped on both paths
    assert s_man["shape_after"] == d_man["shape_after"]
    assert s_man["warnings"] == [w.replace("/dense/", "/sparse/") for w in d_man["warnings"]]
    for name in ("samples.tsv", "genes.tsv"):
        assert (ds / name).read_text() == (dd / name).read_text()
    assert any("kept sparse" in n for n in s_man["notes"])


def test_preprocess_training_data_and_risk_route_match_dense(twins):
    runs, _, _ = twins
    results = {}
    for kind, (d, out, _) in runs.items():
        paths = {k: d / f"{k}.{ext}" for k, ext in (("features", "parquet"), ("split", "tsv"), ("transform", "json"))}
        preprocess(
            out["out_matrix"], out["out_samples"], out_features=paths["features"], out_split=paths["split"],
            out_transform=paths["transform"], condition="cell_type", value_type="counts",
            split={"train": 0.6, "val": 0.2, "test": 0.2}, seed=1, n_top_genes=25,
        )
        t = Transform.load(paths["transform"])
        nb = load_cohort(paths["features"], paths["split"], out["out_matrix"], "nb")
        split = io.read_split(paths["split"])
        case = (split["condition"] == "b").to_numpy()
        table, _ = classical_route(out["out_matrix"], t, split["sample_id"], split["library_size"], case, ~case)
        results[kind] = (t, pd.read_parquet(paths["features"]), nb, split, table)
    (ts, fs, cs, ss, rs), (td, fd, cd, sd, rd) = results["sparse"], results["dense"]
    assert ts.genes == td.genes and ts.center == td.center and ts.scale == td.scale
    assert ts.library_size_target == td.library_size_target and ts.filter_report == td.filter_report
    pd.testing.assert_frame_equal(fs, fd)
    pd.testing.assert_frame_equal(ss, sd)
    assert sparse.issparse(cs.target) and isinstance(cd.target, np.ndarray)  # nb counts: kept sparse
    np.testing.assert_array_equal(cs.target.toarray(), cd.target)
    np.testing.assert_array_equal(cs.library, cd.library)
    # training on the sparse counts (batches densified) is training on the dense ones, exactly
    runs = {}
    for kind, cohort_ in (("sparse", cs), ("dense", cd)):
        torch.set_num_threads(1)
        model, history, _ = train_vae(cohort_, model_config={"hidden": [8], "latent_dim": 2, "likelihood": "nb"},
                                      epochs=3, batch_size=16, kl_warmup_epochs=1, patience=5, seed=4,
                                      progress=None)
        runs[kind] = (model.state_dict(), history)
    pd.testing.assert_frame_equal(runs["sparse"][1], runs["dense"][1])
    for key, value in runs["dense"][0].items():
        assert torch.equal(runs["sparse"][0][key], value), key
    model.load_state_dict(runs["dense"][0])  # evaluation reads the sparse counts a block of rows at a time
    assert split_metrics(model, cs, ts, "val") == split_metrics(model, cd, td, "val")
    pd.testing.assert_frame_equal(rs, rd)
    planted = rs["gene"].isin([f"gene{j:02d}" for j in range(10)])
    assert rs.loc[planted, "log2_fold_change"].median() > rs.loc[~planted, "log2_fold_change"].median() + 0.5


def test_transform_applies_to_a_sparse_new_cohort(twins):
    """apply_new's path: library sizes from all genes, only the model's genes densified."""
    runs, counts, obs = twins
    d, out, _ = runs["sparse"]
    m = io.read_matrix(out["out_matrix"])
    t = Transform(value_type="counts", log_base=np.e, genes=["gene03", "gene17"], center=[0.0, 0.0],
                  scale=[1.0, 1.0], library_size_target=100.0)
    lib = m.row_sums()
    dense = m.to_frame()
    np.testing.assert_allclose(lib, dense.to_numpy(np.float64).sum(axis=1))
    model_genes = m.take_columns(m.columns.get_indexer(t.genes)).to_frame()
    pd.testing.assert_frame_equal(t.apply(model_genes, library_size=lib), t.apply(dense))


@pytest.mark.parametrize(
    "value, message",
    [(-3.0, "negative value -3"), (2.5, "non-integer value 2.5"), (np.nan, "missing values"),
     (np.inf, "infinite values")],
)
def test_bad_values_are_named_like_the_dense_path(tmp_path, value, message):
    counts, obs, var = cohort()
    counts[41, 7] = value
    errors = {}
    for kind in ("sparse", "dense"):
        d = tmp_path / kind
        d.mkdir()
        h5ad = write_h5ad(d / "c.h5ad", counts, obs, var, kind == "sparse")
        with pytest.raises(InputError) as info:
            collect_to(d, h5ad)
        errors[kind] = str(info.value).replace(str(h5ad), "<file>")
        assert not (d / "matrix.parquet").exists()
    assert message in errors["sparse"] and "'cell041'" in errors["sparse"] and "'gene07'" in errors["sparse"]
    if value == value and np.isfinite(value):  # NaN/inf: counted among stored values only when sparse
        assert errors["sparse"] == errors["dense"]


def test_stored_zeros_are_zeros(tmp_path):
    counts, obs, var = cohort()
    x = sparse.csr_matrix(counts)
    x.data[x.indices == 5] = 0.0  # stored, explicit zeros: gene05 is empty
    path = tmp_path / "c.h5ad"
    anndata.AnnData(X=x, obs=obs, var=var).write_h5ad(path)
    out, manifest = collect_to(tmp_path, path)
    assert "gene05" not in io.matrix_genes(out["out_matrix"])
    assert any("2 gene(s) that are zero in every sample" in w for w in manifest["warnings"])


PEAK = textwrap.dedent(
    """
    import json, resource, sys
    sys.path.insert(0, {lib!r})
    from genovae.collect import collect
    from genovae.preprocess import preprocess
    d = {tmp!r}
    out = {{f"out_{{n.split('.')[0]}}": f"{{d}}/{{n}}" for n in {out!r}}}
    collect(f"{{d}}/atlas.h5ad", None, value_type="counts", condition="cell_type", **out)
    after_collect = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    preprocess(out["out_matrix"], out["out_samples"], out_features=f"{{d}}/f.parquet", out_split=f"{{d}}/s.tsv",
               out_transform=f"{{d}}/t.json", condition="cell_type", value_type="counts",
               split={{"train": 0.7, "val": 0.15, "test": 0.15}}, seed=1, n_top_genes=200)
    print(json.dumps([after_collect, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]))
    """
)


@pytest.mark.slow
def test_collect_and_preprocess_never_hold_the_dense_cohort(tmp_path):
    """60,000 cells x 10,000 genes at 0.5 % non-zero: dense float32 2.4 GB, CSR 36 MB.

    Each step runs in a fresh process; its peak RSS must stay well below the dense
    float32 cohort: a step that densified it even once would need at least that much (and
    collect used to densify it to float64, twice that). What is left is the interpreter and
    its libraries (~0.3 GB) and a few blocks of genes (~0.1 GB each as float64).
    """
    n, g, nnz = 60_000, 10_000, 3_000_000
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, n, nnz), rng.integers(0, g, nnz)
    x = sparse.csr_matrix((rng.integers(1, 20, nnz).astype(np.float32), (rows, cols)), shape=(n, g))
    x.sum_duplicates()
    obs = pd.DataFrame({"cell_type": np.where(np.arange(n) % 2, "a", "b")}, index=[f"c{i}" for i in range(n)])
    anndata.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)])).write_h5ad(
        tmp_path / "atlas.h5ad")
    script = PEAK.format(lib=str(LIB), tmp=str(tmp_path), out=OUT)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    collect_peak, preprocess_peak = json.loads(run.stdout.strip().splitlines()[-1])
    dense = n * g * 4
    assert collect_peak < 0.75 * dense and preprocess_peak < 0.75 * dense, (collect_peak, preprocess_peak, dense)


@pytest.mark.workflow
def test_sparse_h5ad_runs_end_to_end_and_exports_sparse(tmp_path):
    """The workflow on a sparse .h5ad (nb likelihood), then apply_new on a sparse .h5ad of new cells."""
    from conftest import check_every_h5ad, copy_workflow, run_snakemake, write_config

    workdir = copy_workflow(tmp_path / "wf")
    counts, obs, var = cohort(n=120, g=80)
    write_h5ad(workdir / "cells.h5ad", counts[:100], obs.iloc[:100], var, True)
    write_h5ad(workdir / "new_cells.h5ad", counts[100:], obs.iloc[100:], var, True)
    write_config(workdir, {
        "run": "tiny",
        "data": {"expression": "cells.h5ad", "value_type": "counts"},
        "analysis": {"condition": "cell_type"},
        "preprocess": {"n_top_genes": 40},
        "model": {"hidden": [16], "latent_dim": 3, "likelihood": "nb"},
        "train": {"epochs": 5, "batch_size": 32, "threads": 1},
        "retrain": {"max_rounds": 1},
        "plots": {"dpi": 50},
        "generate": {"enabled": False},
    })
    run_snakemake(workdir)
    r = workdir / "results/tiny"
    assert gsparse.is_sparse_file(r / "data/matrix.parquet")
    adata = anndata.read_h5ad(r / "latent.h5ad")
    assert sparse.issparse(adata.X) and adata.X.format == "csr" and adata.n_obs == 100
    np.testing.assert_array_equal(adata.X.toarray(), counts[:100][:, adata.var.index.str[4:].astype(int)])
    genes = adata.uns["genovae"]["input_genes"]
    assert adata.obsm["genovae_input"].shape == (100, len(genes)) and len(genes) == 40
    assert adata.var["genovae_modelled"].sum() == 40 and "genovae_input" not in adata.layers
    features = pd.read_parquet(r / "preprocess/features.parquet")
    np.testing.assert_array_equal(adata.obsm["genovae_input"], features.loc[adata.obs_names, genes].to_numpy())
    check_every_h5ad(r)
    run_snakemake(workdir, "apply_new", "--config", "new_data={expression: new_cells.h5ad, name: more}")
    latent = pd.read_csv(r / "new/more/latent.tsv", sep="\t")
    assert len(latent) == 20 and np.isfinite(latent.filter(like="z").to_numpy()).all()


@pytest.mark.parametrize("value_type", ["counts", "log"])
def test_sparse_moments_are_the_dense_ones(tmp_path, value_type, monkeypatch):
    """The classical route's moments from non-zeros alone equal the dense computation (one gene
    always expressed at a high level, one never in the cases, blocks of a few non-zeros)."""
    import genovae.de as gde

    monkeypatch.setattr(gde, "BLOCK_VALUES", 8 * 37)  # 37 non-zeros per pass: many passes
    rng = np.random.default_rng(2)
    n, g = 70, 30
    x = rng.poisson(3.0, (n, g)) * (rng.random((n, g)) < 0.3)
    x[:, 4] = 5000 + rng.poisson(5.0, n)  # large mean, small relative variance
    case = np.arange(n) % 4 == 0
    x[case, 9] = 0
    x = x.astype(np.float32) if value_type == "counts" else np.log1p(x).astype(np.float32)
    ids = pd.Index([f"s{i}" for i in range(n)])
    genes = pd.Index([f"g{j}" for j in range(g)])
    sp_path, dense_path = tmp_path / "sparse.parquet", tmp_path / "dense.parquet"
    io.write_matrix(sp_path, SparseMatrix(sparse.csr_matrix(x), ids, genes))
    io.write_matrix(dense_path, pd.DataFrame(x, index=ids, columns=genes))
    t = Transform(value_type=value_type, log_base=np.e if value_type == "counts" else 2.0, genes=[],
                  center=[], scale=[], library_size_target=1000.0 if value_type == "counts" else None)
    order = rng.permutation(n)  # the masks' order is not the file's
    used = rng.random(n) < 0.9
    args = (t, ids[order], x[order].sum(axis=1), case[order] & used[order], ~case[order] & used[order])
    a, _ = gde.classical_route(sp_path, *args)
    b, _ = gde.classical_route(dense_path, *args)
    pd.testing.assert_frame_equal(a, b, rtol=1e-9, atol=1e-12)
    summed, _ = gde.classical_route(sp_path, args[0], args[1], None, *args[3:])  # library sizes from the file
    pd.testing.assert_frame_equal(summed, a, rtol=1e-9, atol=1e-12)


def test_sparse_rows_give_dense_batches():
    rng = np.random.default_rng(0)
    x = (rng.poisson(1.0, (50, 30)) * (rng.random((50, 30)) < 0.3)).astype(np.float32)
    x[7] = 0  # an empty row
    x[11] = 5.0  # a full row: the widest
    rows = SparseRows(sparse.csr_matrix(x), "cpu")
    assert rows.width == 30 and len(rows) == 50
    idx = torch.tensor([7, 3, 3, 49, 11, 0])
    assert torch.equal(rows[idx], torch.from_numpy(x[[7, 3, 3, 49, 11, 0]]))
    assert torch.equal(rows[2:9], torch.from_numpy(x[2:9]))
    assert rows[torch.tensor([], dtype=torch.int64)].shape == (0, 30)
