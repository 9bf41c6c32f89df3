"""results/{run}/latent.h5ad (genovae.export): typed obs columns and the model-input layer.

Fast: the run's tables are written by the test (with genovae.io's writers) and
export_h5ad is called directly; the file is read back with anndata.read_h5ad (and
scanpy computes neighbours on obsm["X_genovae"]), and with h5py its encodings are
compared with those of the fixture tests/data/anndata_0.12.19_cohort.h5ad.
"""

import json
import tracemalloc
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
import pytest

from genovae import io
from genovae.export import INPUT_LAYER, MODELLED, anndata_frame, export_h5ad, typed_column, uns_value

FIXTURE = Path(__file__).resolve().parent / "data" / "anndata_0.12.19_cohort.h5ad"
SAMPLES = [f"S{i}" for i in range(1, 7)]
GENES = [f"G{j}" for j in range(1, 9)]
MODELLED_GENES = ["G7", "G2", "G5"]  # a subset of the genes, not in the matrix's order
SHEET = {
    "sample_id": SAMPLES,
    "condition": ["1", "2", "1", "2", "1", "2"],  # a label that looks numeric
    "age": ["34", "51", "47", "62", "29", "40"],
    "bmi": ["21.5", "30", "24.25", "19", "27.5", "1e1"],
    "dose": ["10", "", "20", "30", "", "5"],  # integers with gaps
    "smoker": ["true", "False", "TRUE", "false", "true", "false"],
    "responder": ["True", "", "False", "True", "", "False"],  # booleans with gaps
    "patient": ["007", "012", "101", "102", "103", "104"],  # identifiers with leading zeros
    "batch": ["b1", "b2", "b1", "b2", "b1", "b2"],
    "site": ["1", "2", "A", "1", "2", "A"],  # mostly numbers, not all
    "lane": ["3", "4", "3", "4", "3", "4"],  # numeric-looking, but named in analysis.labels
    "notes": ["", "", "", "", "", ""],
}


def write_run(tmp, features_genes=MODELLED_GENES, sheet=SHEET, latent_condition=None):
    """The export rule's inputs for a 6-sample x 8-gene run, written as the workflow writes them."""
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(len(SAMPLES), len(GENES))).astype(np.float32), index=SAMPLES, columns=GENES)
    io.write_matrix(tmp / "matrix.parquet", X)
    io.write_tsv(tmp / "samples.tsv", pd.DataFrame(sheet))
    io.write_tsv(tmp / "genes.tsv", pd.DataFrame({"gene": GENES, "symbol": [f"SYM{g}" for g in GENES],
                                                  "length": [str(100 * (j + 1)) for j in range(len(GENES))]}))
    # the model's input: other samples' order, only the modelled genes
    order = SAMPLES[::-1]
    features = pd.DataFrame(rng.normal(size=(len(order), len(features_genes))).astype(np.float32),
                            index=order, columns=list(features_genes))
    io.write_matrix(tmp / "features.parquet", features)
    condition = latent_condition if latent_condition is not None else sheet["condition"]
    latent = pd.DataFrame({"sample_id": SAMPLES, "split": ["train", "train", "val", "test", "train", "val"],
                           "condition": condition, "z1": np.arange(6.0), "z2": 1.0})
    io.write_tsv(tmp / "latent.tsv", latent)
    io.write_tsv(tmp / "errors.tsv", latent[["sample_id", "split", "condition"]].assign(reconstruction_mse=0.25))
    risk = pd.DataFrame({"contrast": "2_vs_1", "gene": MODELLED_GENES, "vae_score": [3.0, 2.0, 1.0],
                         "vae_rank": [1, 2, 3], "fdr": 0.01})
    io.write_tsv(tmp / "risk.tsv", risk)
    io.write_json(tmp / "summary.json", {"run": "t", "n_samples": 6})
    return X, features


def export(tmp, **kwargs):
    args = dict(matrix=tmp / "matrix.parquet", samples=tmp / "samples.tsv", genes=tmp / "genes.tsv",
                latent=tmp / "latent.tsv", errors=tmp / "errors.tsv", risk=tmp / "risk.tsv",
                summary=tmp / "summary.json", out_h5ad=tmp / "latent.h5ad", run="t",
                features=tmp / "features.parquet", condition="condition", labels=["lane"])
    args.update(kwargs)
    export_h5ad(**args)
    return tmp / "latent.h5ad"


def read_h5ad(path, layer=None):
    """(X or the layer as a dense array, obs, var) of ``path`` as anndata reads it."""
    adata = anndata.read_h5ad(path)
    values = adata.X if layer is None else adata.layers[layer]
    return np.asarray(values), adata.obs, adata.var


def attrs(element):
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in element.attrs.items()}


# ------------------------------------------------------------------ obs column types
def test_numeric_sheet_columns_are_written_as_numbers(tmp_path):
    write_run(tmp_path)
    path = export(tmp_path)
    _, obs, _ = read_h5ad(path)
    assert obs["age"].dtype == np.int64 and obs["age"].tolist() == [34, 51, 47, 62, 29, 40]
    assert obs["bmi"].dtype == np.float64 and obs["bmi"].tolist() == [21.5, 30.0, 24.25, 19.0, 27.5, 10.0]
    # an integer column with gaps: float with NaN
    assert obs["dose"].dtype == np.float64
    np.testing.assert_array_equal(obs["dose"].to_numpy(), [10.0, np.nan, 20.0, 30.0, np.nan, 5.0])
    assert obs["smoker"].dtype == bool and obs["smoker"].tolist() == [True, False, True, False, True, False]
    assert obs["genovae_reconstruction_mse"].dtype == np.float64
    with h5py.File(path) as fh, h5py.File(FIXTURE) as ref:
        # encoded exactly as anndata 0.12 encodes its numeric obs column 'age'
        expected = attrs(ref["obs/age"])
        assert expected == {"encoding-type": "array", "encoding-version": "0.2.0"}
        for col in ("age", "bmi", "dose", "smoker", "genovae_reconstruction_mse"):
            assert isinstance(fh["obs"][col], h5py.Dataset), col
            assert attrs(fh["obs"][col]) == expected, col
        assert fh["obs/age"].dtype == np.int64 and fh["obs/dose"].dtype == np.float64
        assert fh["obs/smoker"].dtype == bool
        # booleans with gaps: anndata's nullable-boolean (values + mask, True = missing)
        responder = fh["obs/responder"]
        assert attrs(responder) == {"encoding-type": "nullable-boolean", "encoding-version": "0.1.0"}
        assert responder["values"].dtype == bool and attrs(responder["values"]) == expected
        assert responder["mask"][()].tolist() == [False, True, False, False, True, False]
        assert responder["values"][()][[0, 2, 3, 5]].tolist() == [True, False, True, False]
    assert obs["responder"].dtype == "boolean"
    assert obs["responder"].astype(object).where(obs["responder"].notna(), None).tolist() == [
        True, None, False, True, None, False]


def test_text_columns_ids_and_labels_stay_categorical(tmp_path):
    write_run(tmp_path)
    path = export(tmp_path)
    _, obs, _ = read_h5ad(path)
    for col in ("condition", "patient", "batch", "site", "lane", "genovae_split"):
        assert isinstance(obs[col].dtype, pd.CategoricalDtype), col
    # the condition is a label even though its values are numbers, and so are analysis.labels columns
    assert list(obs["condition"].cat.categories) == ["1", "2"]
    assert obs["condition"].astype(str).tolist() == SHEET["condition"]
    assert obs["lane"].astype(str).tolist() == SHEET["lane"]
    assert obs["patient"].astype(str).tolist()[:2] == ["007", "012"]  # leading zeros kept
    assert obs["site"].astype(str).tolist() == SHEET["site"]
    assert obs["notes"].isna().all()
    assert list(obs.index) == SAMPLES  # sample_id is the index (obs_names), not a column
    with h5py.File(path) as fh, h5py.File(FIXTURE) as ref:
        assert "sample_id" not in fh["obs"]
        for col in ("condition", "patient", "lane"):
            assert attrs(fh["obs"][col]) == attrs(ref["obs/disease"]), col
            assert attrs(fh["obs"][col]["categories"]) == attrs(ref["obs/disease/categories"])
            assert attrs(fh["obs"][col]["codes"]) == attrs(ref["obs/disease/codes"])


def test_condition_column_is_found_without_analysis_condition(tmp_path):
    """Called without condition (library use), the sheet column holding latent.tsv's condition stays a label."""
    sheet = {**SHEET, "group": SHEET["condition"]}
    write_run(tmp_path, sheet=sheet)
    _, obs, _ = read_h5ad(export(tmp_path, condition=None, labels=()))
    assert isinstance(obs["condition"].dtype, pd.CategoricalDtype)
    assert isinstance(obs["group"].dtype, pd.CategoricalDtype)  # the same values: also the condition
    assert obs["lane"].dtype == np.int64  # not a label any more
    # with another condition in latent.tsv, a numeric-looking column is a number
    write_run(tmp_path, latent_condition=["a", "b", "a", "b", "a", "b"])
    _, obs, _ = read_h5ad(export(tmp_path, condition=None, labels=()))
    assert obs["condition"].dtype == np.int64


@pytest.mark.parametrize(
    "values, dtype, expected",
    [
        (["1", "2", "3"], np.int64, [1, 2, 3]),
        (["-1", "+2", " 3 "], np.int64, [-1, 2, 3]),
        (["1", None, "3"], np.float64, [1.0, np.nan, 3.0]),
        (["0.5", "1", "2e-3"], np.float64, [0.5, 1.0, 0.002]),
        (["0", "0.0", "-0.5"], np.float64, [0.0, 0.0, -0.5]),
        (["True", "false", "TRUE"], bool, [True, False, True]),
    ],
)
def test_typed_column_numbers(values, dtype, expected):
    out = typed_column(pd.Series(values, dtype=str))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.to_numpy(), np.array(expected, dtype=dtype))


@pytest.mark.parametrize(
    "values",
    [["007", "8", "9"], ["1", "two", "3"], ["NA", "1", "2"], ["nan", "1", "2"], ["1", "2", "yes"], [None, None, None]],
    ids=["leading_zero", "word", "NA_text", "nan_text", "yes", "empty"],
)
def test_typed_column_keeps_text(values):
    col = pd.Series(values, dtype=str)
    out = typed_column(col)
    assert not pd.api.types.is_numeric_dtype(out) and not pd.api.types.is_bool_dtype(out)
    assert out.equals(col)


def test_obs_and_var_frames_as_genovae_writes_them(tmp_path):
    """Text columns become categoricals (sorted categories, missing kept), names an .h5ad can hold."""
    df = pd.DataFrame(
        {
            "group": ["b", None, "a"],
            "x": [1.0, 2.0, 3.0],
            "i32": np.array([1, 2, 3], dtype=np.int32),
            "ok": [True, False, True],
            "dose/time": ["1", "2", "3"],
            "_index": ["u", "v", "w"],
            "mixed": [1, "two", None],
        },
        index=["s1", "s2", "s3"],
    )
    out = anndata_frame(df)
    assert list(out.columns) == ["group", "x", "i32", "ok", "dose_time", "_index_", "mixed"]
    assert list(out["group"].cat.categories) == ["a", "b"] and out["group"].isna().tolist() == [False, True, False]
    assert out["mixed"].astype(object).tolist()[:2] == ["1", "two"]
    assert out["x"].dtype == np.float64 and out["i32"].dtype == np.int32 and out["ok"].dtype == bool
    path = tmp_path / "out.h5ad"
    anndata.AnnData(X=np.zeros((3, 2), dtype=np.float32), obs=out, var=anndata_frame(pd.DataFrame(
        index=["g1", "g2"]))).write_h5ad(path)
    back = anndata.read_h5ad(path).obs
    pd.testing.assert_frame_equal(back, out)


def test_uns_values_anndata_can_store():
    summary = {"run": "t", "note": None, "a/b": 1, "rounds": [{"round": 1, "value": 0.5}],
               "names": ["x", "y"], "values": [1, 2.5], "empty": [], "mixed": [1, "x", None], "flag": True}
    out = uns_value(summary)
    assert "note" not in out and out["a_b"] == 1 and out["flag"] is True
    assert out["rounds"] == {"0": {"round": 1, "value": 0.5}}
    assert out["names"].tolist() == ["x", "y"] and out["values"].tolist() == [1.0, 2.5]
    assert out["empty"].size == 0 and out["mixed"] == {"0": 1, "1": "x"}


# ------------------------------------------------------------------ the model-input layer
def test_input_layer_holds_the_features_at_their_genes_and_nan_elsewhere(tmp_path):
    X, features = write_run(tmp_path)
    path = export(tmp_path)
    values, obs, var = read_h5ad(path)
    layer, _, _ = read_h5ad(path, INPUT_LAYER)
    np.testing.assert_array_equal(values, X.to_numpy())  # X is still the collected matrix
    assert layer.shape == values.shape == (len(SAMPLES), len(GENES))
    assert var[MODELLED].dtype == bool
    assert var.index[var[MODELLED]].tolist() == sorted(MODELLED_GENES, key=GENES.index)
    expected = features.loc[SAMPLES]  # aligned to the obs order, not features.parquet's
    for gene in GENES:
        j = GENES.index(gene)
        if gene in MODELLED_GENES:
            np.testing.assert_array_equal(layer[:, j], expected[gene].to_numpy())
        else:
            assert np.isnan(layer[:, j]).all(), gene
    with h5py.File(path) as fh, h5py.File(FIXTURE) as ref:
        ds = fh["layers"][INPUT_LAYER]
        assert attrs(ds) == attrs(ref["layers/counts"]) and ds.dtype == np.float32
        assert attrs(fh["layers"]) == attrs(ref["layers"])
        assert attrs(fh["var"][MODELLED]) == {"encoding-type": "array", "encoding-version": "0.2.0"}
        assert INPUT_LAYER in fh["uns/genovae/layers"]
    # the risk-gene columns are unchanged
    assert var["genovae_used"].tolist() == var[MODELLED].tolist()
    assert var["vae_score_2_vs_1"].notna().sum() == 3


def test_without_features_there_is_no_layer(tmp_path):
    write_run(tmp_path)
    path = export(tmp_path, features=None)
    with h5py.File(path) as fh:
        assert len(fh["layers"]) == 0
    _, _, var = read_h5ad(path)
    assert MODELLED not in var.columns


def test_features_with_a_gene_the_matrix_lacks_are_refused(tmp_path):
    write_run(tmp_path, features_genes=["G1", "NOT_A_GENE"])
    with pytest.raises(ValueError, match="NOT_A_GENE"):
        export(tmp_path)
    assert not (tmp_path / "latent.h5ad").exists()


def test_features_lacking_a_sample_are_refused(tmp_path):
    _, features = write_run(tmp_path)
    io.write_matrix(tmp_path / "features.parquet", features.drop(index="S3"))
    with pytest.raises(ValueError, match="lacks 1 samples.*S3"):
        export(tmp_path)
    assert not (tmp_path / "latent.h5ad").exists() and not list(tmp_path.glob(".latent.h5ad.*"))


def test_input_layer_is_filled_a_chunk_of_genes_at_a_time(tmp_path, monkeypatch):
    """Chunk boundaries do not change the values, with chunks of 2 genes (a short last chunk)."""
    monkeypatch.setattr(io, "COLUMN_CHUNK", 2)
    X, features = write_run(tmp_path)
    path = export(tmp_path)
    values, _, _ = read_h5ad(path)
    layer, _, var = read_h5ad(path, INPUT_LAYER)
    np.testing.assert_array_equal(values, X.to_numpy())
    cols = var[MODELLED].to_numpy()
    np.testing.assert_array_equal(layer[:, cols], features.loc[SAMPLES, var.index[cols]].to_numpy())
    assert np.isnan(layer[:, ~cols]).all()


def test_export_memory_is_the_matrix_once_plus_chunks(tmp_path):
    """numpy allocations at peak (tracemalloc): X, or the layer, plus chunks; no float64 or second copy."""
    rng = np.random.default_rng(1)
    n, g = 2000, 1500
    samples = [f"S{i}" for i in range(n)]
    genes = [f"G{j}" for j in range(g)]
    X = pd.DataFrame(rng.normal(size=(n, g)).astype(np.float32), index=samples, columns=genes)
    io.write_matrix(tmp_path / "matrix.parquet", X)
    io.write_matrix(tmp_path / "features.parquet", X.iloc[:, : g - 100])
    del X
    io.write_tsv(tmp_path / "samples.tsv", pd.DataFrame({"sample_id": samples, "condition": ["a", "b"] * (n // 2),
                                                         "age": np.arange(n)}))
    io.write_tsv(tmp_path / "genes.tsv", pd.DataFrame({"gene": genes}))
    latent = pd.DataFrame({"sample_id": samples, "split": "train", "condition": ["a", "b"] * (n // 2), "z1": 0.5})
    io.write_tsv(tmp_path / "latent.tsv", latent)
    io.write_tsv(tmp_path / "errors.tsv", latent.assign(reconstruction_mse=1.0))
    io.write_tsv(tmp_path / "risk.tsv", pd.DataFrame({"contrast": "b_vs_a", "gene": genes[:10], "vae_score": 1.0}))
    io.write_json(tmp_path / "summary.json", {"run": "t"})
    matrix_bytes = n * g * 4
    tracemalloc.start()
    try:
        export(tmp_path, labels=())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # X once (12 MB) plus chunks and tables; a C-ordered or float64 copy, or a full-size layer next to
    # the features or X, would be >= 2x
    assert peak < 1.5 * matrix_bytes, f"peak {peak / 1e6:.1f} MB for a {matrix_bytes / 1e6:.1f} MB matrix"
    with h5py.File(tmp_path / "latent.h5ad") as fh:
        assert fh["layers"][INPUT_LAYER].shape == (n, g) and fh["obs/age"].dtype == np.int64


def test_summary_is_still_in_uns(tmp_path):
    write_run(tmp_path)
    adata = anndata.read_h5ad(export(tmp_path))
    assert json.loads(adata.uns["genovae"]["summary_json"]) == {"run": "t", "n_samples": 6}
    assert adata.uns["genovae"]["summary"] == {"run": "t", "n_samples": 6}
    assert adata.obsm["X_genovae"].shape == (len(SAMPLES), 2)


def test_scanpy_computes_neighbours_on_the_latent_space(tmp_path):
    """What the file is for: scanpy reads it and builds the kNN graph on obsm["X_genovae"]."""
    from conftest import check_h5ad_for_scanpy

    write_run(tmp_path)
    adata = check_h5ad_for_scanpy(export(tmp_path))
    assert adata.n_obs == len(SAMPLES) and adata.n_vars == len(GENES)


def test_predictions_go_to_obs_and_loadings_to_varm(tmp_path):
    write_run(tmp_path)
    pred = pd.DataFrame({"sample_id": SAMPLES[::-1], "split": "train", "condition": "1",
                         "predicted": ["1", "2", "1", "1", "2", "2"],
                         "probability_1": [0.9, 0.2, 0.6, 0.7, 0.1, 0.4]})
    pred["probability_2"] = 1 - pred["probability_1"]
    io.write_tsv(tmp_path / "predictions.tsv", pred)
    rows = [{"dimension": f"z{k}", "gene": g, "loading": float(10 * k + j), "rank": j + 1}
            for k in (2, 1) for j, g in enumerate(MODELLED_GENES)]
    io.write_tsv(tmp_path / "loadings.tsv", pd.DataFrame(rows))
    path = export(tmp_path, predictions=tmp_path / "predictions.tsv", loadings=tmp_path / "loadings.tsv")
    _, obs, var = read_h5ad(path)
    # obs follows the matrix's sample order, whatever the table's order
    assert obs["genovae_predicted"].astype(str).tolist() == ["2", "2", "1", "1", "2", "1"]
    np.testing.assert_allclose(obs["genovae_probability_1"], [0.4, 0.1, 0.7, 0.6, 0.2, 0.9])
    load = anndata.read_h5ad(path).varm["genovae_loadings"]
    assert load.shape == (len(GENES), 2)
    g7, g3 = GENES.index("G7"), GENES.index("G3")
    assert load[g7].tolist() == [10.0, 20.0]  # columns z1, z2 in order; G7 is the first modelled gene
    assert np.isnan(load[g3]).all()  # not modelled
