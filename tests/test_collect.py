"""Malformed inputs for the collect step.

Every bad input must stop collect with a GenovaeError whose message names the
offending file (or config key) and the problem, and must leave no output
behind. A few look-alike inputs (all-zero genes or samples) are not errors:
they are dropped with a warning in the manifest. Valid inputs in every
supported format must give the same canonical matrix.
"""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np
import pandas as pd
import pytest

from genovae import io
from genovae.collect import collect
from genovae.errors import ConfigError, GenovaeError, InputError

N_SAMPLES, N_GENES = 12, 8
SAMPLES = [f"S{i:02d}" for i in range(1, N_SAMPLES + 1)]
GENES = [f"G{i}" for i in range(1, N_GENES + 1)]
# the sample sheet lists the samples in another order than the matrix
SHEET_ORDER = [SAMPLES[i] for i in np.random.default_rng(1).permutation(N_SAMPLES)]
OUTPUTS = ("matrix.parquet", "samples.tsv", "genes.tsv", "manifest.json")


# ---------------------------------------------------------------- fixtures
def make_matrix():
    """Samples x genes integer counts, no zero anywhere."""
    values = np.random.default_rng(0).integers(1, 500, size=(N_SAMPLES, N_GENES))
    return pd.DataFrame(values, index=pd.Index(SAMPLES, name="sample_id"), columns=GENES)


def make_sheet():
    cond = {s: ("A" if i < N_SAMPLES // 2 else "B") for i, s in enumerate(SAMPLES)}
    return pd.DataFrame({"sample_id": SHEET_ORDER, "condition": [cond[s] for s in SHEET_ORDER]})


class Inputs:
    """A valid expression matrix and sample sheet in ``tmp``; cases break one thing."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.matrix = make_matrix()
        self.sheet = make_sheet()
        self.expression = tmp / "expression.tsv"
        self.samples = tmp / "samples.tsv"
        self.kwargs = {}

    def write_matrix(self, df=None, name="expression.tsv", sep="\t"):
        df = self.matrix if df is None else df
        self.expression = self.tmp / name
        df.to_csv(self.expression, sep=sep)
        return self.expression

    def write_sheet(self, df=None, name="samples.tsv", sep="\t"):
        df = self.sheet if df is None else df
        self.samples = self.tmp / name
        df.to_csv(self.samples, sep=sep, index=False)
        return self.samples

    def write_lines(self, path, lines):
        path.write_text("\n".join(lines) + "\n")

    def matrix_lines(self, sep="\t"):
        return self.matrix.to_csv(sep=sep).splitlines()

    def set_cell(self, value, sample="S03", gene="G5"):
        """Write the matrix with one cell replaced by the text ``value``."""
        df = self.matrix.astype(object)
        df.loc[sample, gene] = value
        self.write_matrix(df)

    def outputs(self):
        out = self.tmp / "out"
        return {f"out_{name.split('.')[0]}": out / name for name in OUTPUTS}

    def run(self, **kwargs):
        args = {
            "orientation": "samples_by_genes",
            "value_type": "counts",
            "condition": "condition",
            "split": {"train": 0.7, "val": 0.15, "test": 0.15},
            **self.kwargs,
            **kwargs,
        }
        return collect(self.expression, self.samples, **self.outputs(), **args)


@pytest.fixture
def inputs(tmp_path):
    d = Inputs(tmp_path)
    d.write_matrix()
    d.write_sheet()
    return d


# ---------------------------------------------------------------- error cases
# Each case: a function that breaks the valid inputs; what the message must
# start with ("expression" or "samples" file, or "config:<key>"); lower-case
# words that must appear in the message; and optionally a file the message must
# also name.
CASES = {}


def case(culprit, *words, also=None, marks=()):
    def register(fn):
        CASES[fn.__name__] = (fn, culprit, words, also, marks)
        return fn

    return register


@case("expression", "not found")
def missing_expression(d):
    d.expression = d.tmp / "no_such_matrix.tsv"


@case("samples", "not found")
def missing_sample_sheet(d):
    d.samples = d.tmp / "no_such_sheet.tsv"


@case("expression", "empty")
def empty_expression(d):
    d.expression.write_bytes(b"")


@case("samples", "empty")
def empty_sample_sheet(d):
    d.samples.write_bytes(b"")


@case(
    "expression",
    "not readable",
    "permissions",
    marks=pytest.mark.skipif(
        hasattr(os, "geteuid") and os.geteuid() == 0,
        reason="running as root: chmod 000 does not block reading",
    ),
)
def unreadable_expression(d):
    d.expression.chmod(0)


@case("expression", "comma-separated", "rename")
def csv_content_in_tsv(d):
    d.write_lines(d.expression, d.matrix_lines(sep=","))


@case("expression", "tab-separated", "rename")
def tsv_content_in_csv(d):
    d.expression = d.tmp / "expression.csv"
    d.write_lines(d.expression, d.matrix_lines(sep="\t"))


@case("samples", "comma-separated", "rename")
def csv_content_in_tsv_sheet(d):
    d.write_sheet(sep=",")


@case("expression", "header", "no data rows")
def header_only_expression(d):
    d.write_lines(d.expression, d.matrix_lines()[:1])


@case("samples", "header", "no samples")
def header_only_sample_sheet(d):
    d.write_lines(d.samples, ["sample_id\tcondition"])


@case("expression", "different numbers of fields")
def ragged_row_too_long(d):
    lines = d.matrix_lines()
    lines[3] += "\t17"
    d.write_lines(d.expression, lines)


@case("expression", "different numbers of fields", "line 4")
def ragged_row_too_short(d):
    lines = d.matrix_lines()
    lines[3] = lines[3].rsplit("\t", 1)[0]
    d.write_lines(d.expression, lines)


@case("expression", "non-numeric", "'abc'", "'s03'", "'g5'")
def non_numeric_cell(d):
    d.set_cell("abc")


@case("expression", "missing values", "'s03'", "'g5'")
def empty_cell(d):
    d.set_cell("")


@case("expression", "missing values", "'s03'", "'g5'")
def nan_cell(d):
    d.set_cell("NaN")


@case("expression", "missing values", "'s03'", "'g5'")
def na_string_cell(d):
    d.set_cell("NA")


@case("expression", "infinite", "'s03'", "'g5'")
def inf_cell(d):
    d.set_cell("inf")


@case("expression", "empty sample id")
def empty_sample_id_in_matrix(d):
    lines = d.matrix_lines()
    lines[2] = "\t" + lines[2].split("\t", 1)[1]
    d.write_lines(d.expression, lines)


@case("expression", "duplicate sample ids", "'s02'")
def duplicate_sample_ids_in_matrix(d):
    d.write_matrix(d.matrix.rename(index={"S03": "S02"}))


@case("expression", "duplicate gene ids", "'g2'")
def duplicate_gene_ids_in_header(d):
    d.write_matrix(d.matrix.set_axis(["G1", "G2", "G2", *GENES[3:]], axis=1))


@case("samples", "duplicate sample ids", "'s01'")
def duplicate_sample_ids_in_sheet(d):
    d.write_sheet(pd.concat([d.sheet, d.sheet[d.sheet.sample_id == "S01"]]))


@case("samples", "not in", "'s99'", also="expression")
def sheet_ids_not_in_matrix(d):
    extra = pd.DataFrame({"sample_id": ["S99"], "condition": ["A"]})
    d.write_sheet(pd.concat([d.sheet, extra]))


@case("expression", "not in the sample sheet", "'s12'", also="samples")
def matrix_samples_not_in_sheet(d):
    d.write_sheet(d.sheet[d.sheet.sample_id != "S12"])


@case("samples", "no 'sample_id' column")
def sheet_without_sample_id_column(d):
    d.write_sheet(d.sheet.rename(columns={"sample_id": "sample"}))


@case("samples", "no column 'condition'")
def sheet_without_condition_column(d):
    d.write_sheet(d.sheet.drop(columns="condition"))


@case("samples", "column 'condition' is empty", "'s05'")
def condition_with_empty_value(d):
    sheet = d.sheet.copy()
    sheet.loc[sheet.sample_id == "S05", "condition"] = ""
    d.write_sheet(sheet)


@case("samples", "only one group")
def one_condition_only(d):
    d.write_sheet(d.sheet.assign(condition="A"))


@case("samples", "too small", "'b' has 2")
def condition_too_small_to_split(d):
    cond = ["B" if s in ("S01", "S02") else "A" for s in d.sheet.sample_id]
    d.write_sheet(d.sheet.assign(condition=cond))


@case("expression", "negative", "counts")
def negative_counts(d):
    d.set_cell(-3)


@case("expression", "non-integer", "counts")
def non_integer_counts(d):
    d.set_cell(2.5)


@case("expression", "transposed", "data.orientation: genes_by_samples")
def genes_by_samples_declared_samples_by_genes(d):
    d.write_matrix(d.matrix.T.rename_axis("gene_id"))


@case("expression", "transposed", "data.orientation: samples_by_genes")
def samples_by_genes_declared_genes_by_samples(d):
    d.kwargs["orientation"] = "genes_by_samples"


@case("expression", "decompressed", "truncated")
def truncated_gzip(d):
    d.expression = d.tmp / "expression.tsv.gz"
    data = gzip.compress(d.matrix.to_csv(sep="\t").encode())
    gzip.decompress(data)  # valid before the cut
    d.expression.write_bytes(data[: len(data) // 2])


@case("expression", "unknown file type", ".parquet")
def unknown_extension(d):
    d.expression = d.tmp / "expression.xlsx"
    d.expression.write_bytes(b"PK\x03\x04 not really a spreadsheet")


@case("expression", "cannot be read as parquet")
def corrupt_parquet(d):
    d.expression = d.tmp / "expression.parquet"
    d.matrix.to_parquet(d.expression)
    data = d.expression.read_bytes()
    d.expression.write_bytes(data[: len(data) // 2])


@case("config:analysis.case", "'x' is not a value", also="samples")
def case_not_in_condition(d):
    d.kwargs.update(case="X", control="A")


@case("config:analysis.control", "'y' is not a value", also="samples")
def control_not_in_condition(d):
    d.kwargs.update(case="A", control="Y")


@case("expression", "no samples or no genes are left", "all-zero")
def everything_zero(d):
    d.write_matrix(d.matrix * 0)


def assert_no_outputs(d):
    left = [p for p in d.outputs().values() if p.exists()]
    assert not left, f"outputs written despite the error: {left}"
    out = d.tmp / "out"
    if out.exists():
        assert not list(out.iterdir()), f"files left in {out}: {list(out.iterdir())}"


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, id=name, marks=spec[4]) for name, spec in CASES.items()],
)
def test_malformed_input_is_refused(inputs, name):
    breaker, culprit, words, also, _ = CASES[name]
    breaker(inputs)
    with pytest.raises(GenovaeError) as info:
        inputs.run()
    message = str(info.value)
    if culprit.startswith("config:"):
        key = culprit.split(":", 1)[1]
        assert isinstance(info.value, ConfigError), message
        assert message.startswith(f"config error: '{key}':"), message
    else:
        path = getattr(inputs, culprit)
        assert isinstance(info.value, InputError), message
        assert message.startswith(f"{path}:"), message
        assert path.name in message
    if also:
        assert str(getattr(inputs, also)) in message, message
    for word in words:
        assert word in message.lower(), f"{word!r} not in: {message}"
    assert "Traceback" not in message
    assert_no_outputs(inputs)


# ---------------------------------------------------------------- dropped with a warning
def test_all_zero_gene_is_dropped_with_warning(inputs):
    m = inputs.matrix.copy()
    m["G3"] = 0
    inputs.write_matrix(m)
    manifest = inputs.run()
    assert any("G3" in w or "zero" in w for w in manifest["warnings"]), manifest["warnings"]
    assert any(str(inputs.expression) in w and "zero" in w for w in manifest["warnings"])
    written = io.read_matrix(inputs.outputs()["out_matrix"])
    assert "G3" not in written.columns
    assert list(written.columns) == [g for g in GENES if g != "G3"]
    assert manifest["shape_before"] == [N_SAMPLES, N_GENES]
    assert manifest["shape_after"] == [N_SAMPLES, N_GENES - 1]
    genes = pd.read_csv(inputs.outputs()["out_genes"], sep="\t")
    assert "G3" not in genes["gene"].tolist()


def test_all_zero_sample_is_dropped_with_warning(inputs):
    m = inputs.matrix.copy()
    m.loc["S05"] = 0
    inputs.write_matrix(m)
    manifest = inputs.run()
    assert any("'S05'" in w and "zero" in w for w in manifest["warnings"]), manifest["warnings"]
    written = io.read_matrix(inputs.outputs()["out_matrix"])
    assert "S05" not in written.index
    assert list(written.index) == [s for s in SHEET_ORDER if s != "S05"]
    sheet = pd.read_csv(inputs.outputs()["out_samples"], sep="\t", dtype=str)
    assert sheet["sample_id"].tolist() == list(written.index)


# ---------------------------------------------------------------- valid inputs
def _write_tsv(d):
    return d.write_matrix()


def _write_csv(d):
    d.write_sheet(name="samples.csv", sep=",")
    return d.write_matrix(name="expression.csv", sep=",")


def _write_tsv_gz(d):
    return d.write_matrix(name="expression.tsv.gz")


def _write_txt(d):
    return d.write_matrix(name="expression.txt")


def _write_parquet(d):
    d.expression = d.tmp / "expression.parquet"
    d.matrix.to_parquet(d.expression)
    return d.expression


def _write_parquet_id_column(d):
    d.expression = d.tmp / "expression.parquet"
    d.matrix.reset_index().to_parquet(d.expression, index=False)
    return d.expression


def _write_parquet_unnamed_index(d):
    d.expression = d.tmp / "expression.parquet"
    d.matrix.rename_axis(None).to_parquet(d.expression)
    return d.expression


def _write_crlf(d):
    d.expression.write_bytes(d.matrix.to_csv(sep="\t").replace("\n", "\r\n").encode())
    return d.expression


def _write_r_style_header(d):
    # R's write.table leaves out the name of the row-name column
    d.expression.write_text(d.matrix.to_csv(sep="\t").split("\t", 1)[1])
    return d.expression


def _write_genes_by_samples(d):
    d.kwargs["orientation"] = "genes_by_samples"
    return d.write_matrix(d.matrix.T.rename_axis("gene_id"))


def _write_genes_by_samples_parquet(d):
    d.kwargs["orientation"] = "genes_by_samples"
    d.expression = d.tmp / "expression.parquet"
    d.matrix.T.rename_axis("gene_id").to_parquet(d.expression)
    return d.expression


VALID = {
    "tsv": _write_tsv,
    "csv": _write_csv,
    "tsv_gz": _write_tsv_gz,
    "txt": _write_txt,
    "parquet": _write_parquet,
    "parquet_id_column": _write_parquet_id_column,
    "parquet_unnamed_index": _write_parquet_unnamed_index,
    "crlf": _write_crlf,
    "r_style_header": _write_r_style_header,
    "genes_by_samples": _write_genes_by_samples,
    "genes_by_samples_parquet": _write_genes_by_samples_parquet,
}


@pytest.mark.parametrize("fmt", list(VALID))
def test_valid_formats_give_the_same_matrix(inputs, fmt):
    VALID[fmt](inputs)
    manifest = inputs.run()
    written = io.read_matrix(inputs.outputs()["out_matrix"])
    expected = make_matrix().loc[SHEET_ORDER].astype(np.float32)
    assert (written.dtypes == np.float32).all()
    assert list(written.index) == SHEET_ORDER
    assert list(written.columns) == GENES
    np.testing.assert_array_equal(written.to_numpy(), expected.to_numpy())
    # 12 samples: only plausible.check_split_sizes' note that the cohort is small
    assert [w for w in manifest["warnings"] if "the cohort is small" not in w] == []
    assert manifest["shape_before"] == [N_SAMPLES, N_GENES]
    assert manifest["shape_after"] == [N_SAMPLES, N_GENES]
    sheet = pd.read_csv(inputs.outputs()["out_samples"], sep="\t", dtype=str)
    assert sheet["sample_id"].tolist() == SHEET_ORDER
    for path in inputs.outputs().values():
        assert path.exists()


def test_manifest_has_sha256_of_inputs(inputs):
    manifest = inputs.run()
    disk = io.read_json(inputs.outputs()["out_manifest"])
    assert disk["inputs"] == manifest["inputs"]
    by_role = {entry["role"]: entry for entry in disk["inputs"]}
    for role, path in (("expression", inputs.expression), ("samples", inputs.samples)):
        data = path.read_bytes()
        assert by_role[role]["path"] == str(path)
        assert by_role[role]["sha256"] == hashlib.sha256(data).hexdigest()
        assert by_role[role]["bytes"] == len(data)


def test_numeric_looking_sample_ids_stay_text(inputs):
    ids = {s: f"{i:03d}" for i, s in enumerate(SAMPLES, start=1)}
    inputs.write_matrix(inputs.matrix.rename(index=ids))
    inputs.write_sheet(inputs.sheet.assign(sample_id=inputs.sheet.sample_id.map(ids)))
    inputs.run()
    written = io.read_matrix(inputs.outputs()["out_matrix"])
    assert list(written.index) == [ids[s] for s in SHEET_ORDER]


def test_split_seed_is_not_a_split(inputs):
    # 3 samples per group are enough for train/val/test; 'seed' is not a fourth split
    cond = ["B" if s in ("S01", "S02", "S03") else "A" for s in inputs.sheet.sample_id]
    inputs.write_sheet(inputs.sheet.assign(condition=cond))
    manifest = inputs.run(split={"train": 0.7, "val": 0.15, "test": 0.15, "seed": 1})
    # collected, with every sample of the small group kept (a 'seed' split would have refused it)
    out = inputs.outputs()
    assert manifest and out["out_matrix"].is_file()
    sheet = io.read_sample_sheet(out["out_samples"])
    assert sorted(sheet.loc[sheet["condition"] == "B", "sample_id"]) == ["S01", "S02", "S03"]


@pytest.mark.parametrize(
    "na, expected",
    [("empty", ["NA", None, "x"]), ("none", ["NA", "", "x"]), ("pandas", [None, None, "x"])],
)
def test_sample_sheet_reader_treats_cells_as_asked(tmp_path, na, expected):
    """io.read_sample_sheet reads collect's samples.tsv: text only; which cells are missing is explicit."""
    path = tmp_path / "samples.tsv"
    path.write_text("sample_id\tnote\n001\tNA\n002\t\n003\tx\n")
    sheet = io.read_sample_sheet(path, na=na)
    assert sheet["sample_id"].tolist() == ["001", "002", "003"]
    assert [None if pd.isna(v) else v for v in sheet["note"]] == expected
    with pytest.raises(ValueError, match="na must be one of"):
        io.read_sample_sheet(path, na="all")
