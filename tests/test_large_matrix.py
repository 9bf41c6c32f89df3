"""The memory-lean paths for large matrices give the same results as the plain ones.

collect reads an all-numeric Parquet matrix column-chunked into one float32
array and checks values in column blocks; preprocess fits its transform in gene
blocks; io.read_matrix reads column-chunked. Here the chunk sizes are shrunk so
that small inputs span many chunks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genovae import io
from genovae import preprocess as gpre
from genovae.sources import table as gtable
from genovae.errors import InputError
from test_collect import GENES, SAMPLES, SHEET_ORDER, Inputs, make_matrix


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    monkeypatch.setattr(gtable, "COLUMN_BLOCK", 3)
    monkeypatch.setattr(io, "COLUMN_CHUNK", 3)
    d = Inputs(tmp_path)
    d.write_sheet()
    return d


def write_arrow_parquet(d, df, id_name="sample_id"):
    """A Parquet file as other tools write it: no pandas metadata, ids in the first column."""
    cols = [pa.array(df.index.astype(str))] + [pa.array(df[c].to_numpy()) for c in df.columns]
    table = pa.Table.from_arrays(cols, names=[id_name, *map(str, df.columns)])
    d.expression = d.tmp / "expression.parquet"
    pq.write_table(table, d.expression, row_group_size=5)  # several row groups
    return d.expression


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64])
def test_arrow_parquet_gives_the_tsv_matrix(inputs, dtype):
    inputs.write_matrix()
    inputs.run()
    expected = io.read_matrix(inputs.outputs()["out_matrix"])
    write_arrow_parquet(inputs, make_matrix().astype(dtype))
    inputs.run()
    written = io.read_matrix(inputs.outputs()["out_matrix"])
    pd.testing.assert_frame_equal(written, expected)
    assert list(written.index) == SHEET_ORDER and list(written.columns) == GENES


def test_matrix_in_sheet_order_is_not_reordered(inputs):
    inputs.write_sheet(inputs.sheet.set_index("sample_id").loc[SAMPLES].reset_index())
    write_arrow_parquet(inputs, make_matrix())
    inputs.run()
    written = io.read_matrix(inputs.outputs()["out_matrix"])
    np.testing.assert_array_equal(written.to_numpy(), make_matrix().to_numpy(np.float32))
    assert list(written.index) == SAMPLES


@pytest.mark.parametrize("bad, word", [(np.nan, "missing values"), (np.inf, "infinite values")])
def test_parquet_missing_and_infinite_values_name_the_first_cell(inputs, bad, word):
    m = make_matrix().astype(float)
    m.loc["S05", "G2"] = bad
    m.loc["S03", "G7"] = bad  # first in row order, though in a later column block
    m.loc["S09", "G1"] = bad
    write_arrow_parquet(inputs, m)
    with pytest.raises(InputError) as err:
        inputs.run()
    msg = str(err.value)
    assert msg.startswith(f"{inputs.expression}:")
    assert f"3 {word}" in msg and "row 'S03', column 'G7'" in msg, msg


def test_parquet_nulls_are_missing_values(inputs):
    m = make_matrix()
    cols = [pa.array(m.index)] + [pa.array(m[c].to_numpy()) for c in m.columns]
    cols[4] = pa.array([None if i == 6 else v for i, v in enumerate(m["G4"].tolist())], type=pa.int64())
    inputs.expression = inputs.tmp / "expression.parquet"
    pq.write_table(pa.Table.from_arrays(cols, names=["sample_id", *GENES]), inputs.expression)
    with pytest.raises(InputError, match=r"1 missing values .* row 'S07', column 'G4'"):
        inputs.run()


def test_parquet_text_column_takes_the_general_path(inputs):
    m = make_matrix().astype(object)
    m.loc["S03", "G5"] = "abc"
    m["G5"] = m["G5"].astype(str)
    write_arrow_parquet(inputs, m)
    with pytest.raises(InputError, match=r"non-numeric value 'abc' in row 'S03', column 'G5'"):
        inputs.run()


def test_duplicate_ids_in_parquet(inputs):
    m = make_matrix().rename(index={"S04": "S02"})
    write_arrow_parquet(inputs, m)
    with pytest.raises(InputError, match="duplicate sample ids"):
        inputs.run()


@pytest.mark.parametrize("value, word", [(-3, "negative value -3"), (2.5, "non-integer value 2.5")])
def test_count_checks_name_the_first_cell_across_blocks(inputs, value, word):
    m = make_matrix().astype(float)
    cells = {"S06": "G1", "S02": "G8"}
    for sample, gene in cells.items():
        m.loc[sample, gene] = value
    # checked after ordering by the sample sheet: the first such row in the sheet, whatever its column
    first = min(cells, key=SHEET_ORDER.index)
    write_arrow_parquet(inputs, m)
    with pytest.raises(InputError, match=rf"{word} \(row '{first}', column '{cells[first]}'\)"):
        inputs.run()
    # the same message as the text path (whole-matrix checks, float64)
    inputs.write_matrix(m)
    with pytest.raises(InputError, match=rf"{word} \(row '{first}', column '{cells[first]}'\)"):
        inputs.run()


def test_read_matrix_columns_and_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "COLUMN_CHUNK", 4)
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.random((9, 11)).astype(np.float32), index=pd.Index([f"s{i}" for i in range(9)]),
                      columns=[f"g{j}" for j in range(11)])
    io.write_matrix(tmp_path / "m.parquet", df)
    full = io.read_matrix(tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(full, pd.read_parquet(tmp_path / "m.parquet"))
    assert full.to_numpy().dtype == np.float32
    sub = io.read_matrix(tmp_path / "m.parquet", columns=["g7", "g2"])
    assert list(sub.columns) == ["g7", "g2"]
    np.testing.assert_array_equal(sub.to_numpy(), df[["g7", "g2"]].to_numpy())
    with pytest.raises(KeyError, match="nope"):
        io.read_matrix(tmp_path / "m.parquet", columns=["nope"])
    # a file without a pandas index: pandas decides, as before
    df.reset_index(drop=True).to_parquet(tmp_path / "plain.parquet")
    plain = io.read_matrix(tmp_path / "plain.parquet")
    assert list(plain.index) == [str(i) for i in range(9)]


@pytest.mark.parametrize("value_type", ["counts", "log", "intensity"])
@pytest.mark.parametrize("scaling", ["zscore", "minmax"])
def test_gene_blocks_do_not_change_the_transform(monkeypatch, value_type, scaling):
    rng = np.random.default_rng(3)
    n, g = 80, 47
    if value_type == "counts":
        x = rng.poisson(rng.lognormal(1.0, 1.5, size=g) * rng.lognormal(0, 0.4, size=(n, 1)))
    elif value_type == "log":
        x = rng.normal(5.0, 1.0, size=(n, g))
    else:
        x = rng.lognormal(6.0, 1.5, size=(n, g))
    m = pd.DataFrame(x.astype(np.float32), index=[f"s{i}" for i in range(n)], columns=[f"g{j}" for j in range(g)])
    mask = rng.random(n) < 0.7
    kw = dict(n_top_genes=20, scaling=scaling, min_expression=0.5, min_samples=0.1)
    t_one, l_one = gpre.fit_transform(m, mask, value_type, **kw)  # one block
    monkeypatch.setattr(gpre, "GENE_BLOCK", 4)
    t_many, l_many = gpre.fit_transform(m, mask, value_type, **kw)
    assert t_one.genes == t_many.genes
    assert t_one.center == t_many.center and t_one.scale == t_many.scale
    assert t_one.filter_report == t_many.filter_report
    np.testing.assert_array_equal(l_one, l_many)
    np.testing.assert_array_equal(gpre.row_sums(m.to_numpy()), m.to_numpy(np.float64).sum(axis=1))
