"""Input sources for collect: GEO series matrices, featureCounts and Salmon tables, AnnData.

Each source is written by the test in its real format (the .h5ad fixture was
written by anndata 0.12.19 itself, see tests/data/make_anndata_fixture.py) and
must end in the same canonical matrix, sample sheet, genes and manifest as a
plain table. Broken files stop with an InputError naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from genovae import io, sources
from genovae.collect import collect
from genovae.errors import ConfigError, InputError
from genovae.export import OBSM_KEY, export_h5ad
from genovae.sources.anndata import read_h5ad
from genovae.sparse import SparseMatrix

DATA = Path(__file__).resolve().parent / "data"
H5AD = DATA / "anndata_0.12.19_cohort.h5ad"
OUTPUTS = ("matrix.parquet", "samples.tsv", "genes.tsv", "manifest.json")
RNG = np.random.default_rng(11)
GSM = [f"GSM10{i:02d}" for i in range(1, 13)]
PROBES = [f"{200000 + i}_at" for i in range(1, 9)]
COUNTS = RNG.integers(1, 500, size=(len(PROBES), len(GSM)))  # genes x samples
STATE = ["AML"] * 6 + ["healthy"] * 6


def outputs(tmp):
    return {f"out_{name.split('.')[0]}": tmp / "out" / name for name in OUTPUTS}


def run(tmp, expression, samples=None, **kwargs):
    args = {"value_type": "counts", "condition": "condition", **kwargs}
    manifest = collect(expression, samples, **outputs(tmp), **args)
    out = outputs(tmp)
    matrix = io.read_matrix(out["out_matrix"])
    sheet = pd.read_csv(out["out_samples"], sep="\t", dtype=str)
    genes = pd.read_csv(out["out_genes"], sep="\t", dtype=str)
    assert json.loads(out["out_manifest"].read_text()) == io.to_jsonable(manifest)
    return matrix, sheet, genes, manifest


def no_outputs(tmp):
    out = tmp / "out"
    return not out.exists() or not list(out.iterdir())


# ------------------------------------------------------------------ GEO
def geo_lines(table=True, end=True, values=None):
    """A series matrix as GEO writes it: quoted !Series_/!Sample_ lines, the table between markers."""
    q = lambda items: "\t".join(f'"{x}"' for x in items)  # noqa: E731
    lines = [
        '!Series_title\t"A small test series"',
        '!Series_geo_accession\t"GSE4242"',
        '!Series_platform_id\t"GPL570"',
        "",
        "!Sample_title\t" + q(f"patient {i}" for i in range(1, 13)),
        "!Sample_geo_accession\t" + q(GSM),
        '!Sample_status\t' + q(["Public on Jan 01 2020"] * 12),
        "!Sample_source_name_ch1\t" + q(["bone marrow"] * 12),
        "!Sample_organism_ch1\t" + q(["Homo sapiens"] * 12),
        "!Sample_characteristics_ch1\t" + q(f"disease state: {s}" for s in STATE),
        "!Sample_characteristics_ch1\t" + q(f"age: {30 + i}" for i in range(12)),
        "!Sample_characteristics_ch1\t" + q(["tissue: marrow"] * 11 + ["frozen"]),
        "!Sample_data_processing\t" + q(["RMA"] * 12),
        "!Sample_data_processing\t" + q(["log2"] * 12),
    ]
    if table:
        lines.append("!series_matrix_table_begin")
        lines.append(q(["ID_REF", *GSM]))
        vals = COUNTS if values is None else values
        for probe, row in zip(PROBES, vals):
            lines.append(f'"{probe}"\t' + "\t".join(str(v) for v in row))
        if end:
            lines.append("!series_matrix_table_end")
    return "\n".join(lines) + "\n"


def write_geo(tmp, name="GSE4242_series_matrix.txt.gz", **kwargs):
    path = tmp / name
    data = geo_lines(**kwargs).encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def test_geo_url_is_built_from_the_accession():
    assert sources.geo_series_url("GSE1234") == (
        "https://ftp.ncbi.nlm.nih.gov/geo/series/GSE1nnn/GSE1234/matrix/GSE1234_series_matrix.txt.gz"
    )
    assert sources.geo_series_url("gse12345") == (
        "https://ftp.ncbi.nlm.nih.gov/geo/series/GSE12nnn/GSE12345/matrix/GSE12345_series_matrix.txt.gz"
    )
    assert sources.geo_series_url("GSE12").startswith(
        "https://ftp.ncbi.nlm.nih.gov/geo/series/GSEnnn/GSE12/matrix/"
    )
    with pytest.raises(ConfigError, match="data.geo"):
        sources.geo_series_url("GDS507")
    assert sources.resolve_format("auto", None, geo="GSE1") == "geo"
    assert sources.resolve_format("auto", sources.geo_series_url("GSE1")) == "geo"



def test_import_is_light():
    """The Snakefile imports genovae.sources at every start: the readers (pandas) load on first use,
    anndata when an .h5ad is read."""
    import subprocess
    import sys

    lib = Path(__file__).resolve().parent.parent / "workflow" / "lib"
    code = (
        f"import sys; sys.path.insert(0, {str(lib)!r}); import genovae.sources as s; "
        "assert 'pandas' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'; "
        "assert s.carries_sample_sheet(s.resolve_format('auto', 'x.h5ad')); "
        "assert s.read_source.__module__ == 'genovae.sources.read'; "
        "assert 'anndata' not in sys.modules and 'h5py' not in sys.modules, 'anndata is imported by the reader'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("orientation", ["samples_by_genes", "genes_by_samples"])
def test_read_source_reads_plain_tables_as_laid_out(tmp_path, orientation):
    df = pd.DataFrame(COUNTS, index=PROBES, columns=GSM)  # genes x samples
    if orientation == "samples_by_genes":
        df = df.T
    path = tmp_path / "m.tsv.gz"
    path.write_bytes(gzip.compress(df.to_csv(sep="\t").encode()))
    assert sources.detect_format(path) == "table"
    source = sources.read_source(path, "table", orientation=orientation)
    assert source.layout == orientation and source.parser == "delimited-text" and source.sheet is None
    pd.testing.assert_frame_equal(source.values, df.astype(np.float64), check_names=False)


def test_open_text_reads_plain_and_gzip_by_content(tmp_path):
    (tmp_path / "plain.txt").write_text("a\tb\n")
    (tmp_path / "packed.txt").write_bytes(gzip.compress(b"a\tb\n"))  # gzip without .gz: found by its bytes
    for name in ("plain.txt", "packed.txt"):
        with io.open_text(tmp_path / name) as fh:
            assert fh.readline() == "a\tb\n"
    with pytest.raises(OSError):  # decided by the name, as pandas decides
        with io.open_text(tmp_path / "plain.txt", gzipped=True) as fh:
            fh.readline()

def test_geo_series_matrix_gives_matrix_and_sample_sheet(tmp_path):
    path = write_geo(tmp_path)
    assert sources.detect_format(path) == "geo"
    matrix, sheet, _, manifest = run(tmp_path, path, condition="disease state", case="AML",
                                     control="healthy")
    assert list(matrix.index) == GSM and list(matrix.columns) == PROBES
    np.testing.assert_array_equal(matrix.to_numpy(), COUNTS.T.astype(np.float32))
    assert sheet["sample_id"].tolist() == GSM
    assert sheet["geo_accession"].tolist() == GSM
    assert sheet["title"].tolist()[:2] == ["patient 1", "patient 2"]
    assert sheet["disease state"].tolist() == STATE
    assert sheet["age"].tolist()[:2] == ["30", "31"]
    assert sheet["tissue"].tolist()[:11] == ["marrow"] * 11 and pd.isna(sheet["tissue"].iloc[11])
    assert sheet["characteristics_ch1"].iloc[11] == "frozen"  # no "key:" -> the line's own name
    assert sheet["source_name_ch1"].iloc[0] == "bone marrow"
    assert sheet["data_processing"].iloc[0] == "RMA; log2"
    assert manifest["format"] == "geo"
    assert manifest["inputs"][0]["parser"] == "geo-series-matrix"
    assert manifest["shape_before"] == [12, 8] and manifest["shape_after"] == [12, 8]
    assert manifest["sample_sheet"].startswith("carried by")


def test_geo_uncompressed_with_other_name_is_detected_by_content(tmp_path):
    path = write_geo(tmp_path, name="download.txt")
    assert sources.detect_format(path) == "geo"
    matrix, sheet, _, _ = run(tmp_path, path, condition="disease state")
    assert matrix.shape == (12, 8)


def test_geo_with_separate_sample_sheet(tmp_path):
    path = write_geo(tmp_path)
    sheet = tmp_path / "samples.tsv"
    pd.DataFrame({"sample_id": GSM, "condition": ["x", "y"] * 6}).to_csv(sheet, sep="\t", index=False)
    _, written, _, manifest = run(tmp_path, path, sheet)
    assert list(written.columns) == ["sample_id", "condition"]
    assert [e["role"] for e in manifest["inputs"]] == ["expression", "samples"]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"table": False}, ["!series_matrix_table_begin", "not a geo series matrix"]),
        ({"end": False}, ["!series_matrix_table_end", "truncated"]),
        ({"values": COUNTS[:0]}, ["no data rows", "supplementary"]),
    ],
    ids=["no_table_begin", "no_table_end", "empty_table"],
)
def test_broken_geo_files_are_refused(tmp_path, kwargs, words):
    path = write_geo(tmp_path, **kwargs)
    with pytest.raises(InputError) as info:
        run(tmp_path, path, condition="disease state", format="geo")
    message = str(info.value)
    assert message.startswith(f"{path}:")
    for word in words:
        assert word in message.lower(), message
    assert no_outputs(tmp_path)


def test_geo_empty_probe_id_is_refused(tmp_path):
    path = tmp_path / "GSE4242_series_matrix.txt"
    path.write_text(geo_lines().replace(f'"{PROBES[1]}"\t', '""\t', 1))
    with pytest.raises(InputError, match=r"probe/gene \(ID_REF\) ids are empty"):
        run(tmp_path, path, condition="disease state")
    assert no_outputs(tmp_path)


def test_geo_null_values_are_reported_as_missing(tmp_path):
    values = COUNTS.astype(object)
    values[2, 3] = "null"
    path = write_geo(tmp_path, values=values)
    with pytest.raises(InputError, match=r"missing values.*'200003_at'.*'GSM1004'"):
        run(tmp_path, path, condition="disease state")
    assert no_outputs(tmp_path)


def test_geo_condition_that_is_not_a_characteristic(tmp_path):
    path = write_geo(tmp_path)
    with pytest.raises(InputError, match="no column 'disease'.*disease state"):
        run(tmp_path, path, condition="disease")


# ------------------------------------------------------------------ featureCounts
SAMPLE_NAMES = [f"S{i}" for i in range(1, 13)]


def write_featurecounts(tmp, bam_paths=True):
    cols = [f"/data/aligned/{s}.sorted.bam" if bam_paths else s for s in SAMPLE_NAMES]
    lines = [
        '# Program:featureCounts v2.0.6; Command:"featureCounts" "-a" "genes.gtf" "-o" "counts.txt"',
        "\t".join(["Geneid", "Chr", "Start", "End", "Strand", "Length", *cols]),
    ]
    for g, row in enumerate(COUNTS):
        exons = "chr1;chr1" if g % 2 else "chr2"
        start = "100;500" if g % 2 else "1000"
        end = "200;900" if g % 2 else "1500"
        strand = "+;+" if g % 2 else "-"
        lines.append("\t".join([f"ENSG{g:05d}", exons, start, end, strand, str(300 + g),
                                *map(str, row)]))
    path = tmp / "counts.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def sample_sheet(tmp, ids):
    path = tmp / "samples.tsv"
    pd.DataFrame({"sample_id": ids, "condition": ["A", "B"] * 6}).to_csv(path, sep="\t", index=False)
    return path


def test_featurecounts_annotation_columns_are_dropped(tmp_path, caplog):
    path = write_featurecounts(tmp_path)
    assert sources.detect_format(path) == "featurecounts"
    caplog.set_level("INFO")
    matrix, _, genes, manifest = run(tmp_path, path, sample_sheet(tmp_path, SAMPLE_NAMES))
    assert list(matrix.index) == SAMPLE_NAMES
    assert list(matrix.columns) == [f"ENSG{g:05d}" for g in range(len(PROBES))]
    np.testing.assert_array_equal(matrix.to_numpy(), COUNTS.T)
    assert manifest["format"] == "featurecounts"
    assert manifest["inputs"][0]["parser"] == "featurecounts"
    assert any("Chr, Start, End, Strand, Length" in n for n in manifest["notes"])
    assert "dropped the annotation columns" in caplog.text
    # the annotation becomes the gene table: one chromosome and strand, span of the exons
    assert genes.columns.tolist() == ["gene", "chr", "start", "end", "strand", "length"]
    assert genes.iloc[1][["chr", "start", "end", "strand"]].tolist() == ["chr1", "100", "900", "+"]


def test_featurecounts_with_sample_sheet_naming_the_bam_files(tmp_path):
    path = write_featurecounts(tmp_path)
    bams = [f"/data/aligned/{s}.sorted.bam" for s in SAMPLE_NAMES]
    matrix, _, _, _ = run(tmp_path, path, sample_sheet(tmp_path, bams))
    assert list(matrix.index) == bams


def test_featurecounts_needs_counts_value_type(tmp_path):
    path = write_featurecounts(tmp_path, bam_paths=False)
    with pytest.raises(ConfigError, match="data.value_type.*featureCounts"):
        run(tmp_path, path, sample_sheet(tmp_path, SAMPLE_NAMES), value_type="log")


def test_featurecounts_declared_but_other_columns(tmp_path):
    path = tmp_path / "counts.txt"
    path.write_text("Geneid\tS1\tS2\ng1\t1\t2\n")
    with pytest.raises(InputError, match="not a featureCounts table.*Chr, Start, End"):
        run(tmp_path, path, sample_sheet(tmp_path, SAMPLE_NAMES), format="featurecounts")


# ------------------------------------------------------------------ Salmon / tximport
def test_merged_salmon_table_is_rounded_and_annotation_kept(tmp_path, caplog):
    estimated = COUNTS + 0.37
    df = pd.DataFrame(estimated, columns=SAMPLE_NAMES)
    df.insert(0, "gene_id", [f"ENSG{g:05d}" for g in range(len(PROBES))])
    df.insert(1, "gene_name", [f"SYM{g}" for g in range(len(PROBES))])
    path = tmp_path / "salmon.merged.gene_counts.tsv"
    df.to_csv(path, sep="\t", index=False)
    assert sources.detect_format(path) == "salmon"
    caplog.set_level("INFO")
    matrix, _, genes, manifest = run(tmp_path, path, sample_sheet(tmp_path, SAMPLE_NAMES))
    np.testing.assert_array_equal(matrix.to_numpy(), COUNTS.T)  # integer counts
    assert genes["gene_name"].tolist() == [f"SYM{g}" for g in range(len(PROBES))]
    assert manifest["inputs"][0]["parser"] == "salmon"
    assert any("gene_name" in n for n in manifest["notes"])
    assert any("rounded" in n for n in manifest["notes"])
    assert "gene_name" in caplog.text


def test_tximport_csv_with_text_annotation_column(tmp_path):
    """write.csv(txi$counts) style: unnamed id column, plus a text column that is not a sample."""
    df = pd.DataFrame(COUNTS + 0.5, columns=SAMPLE_NAMES,
                      index=[f"ENST{g:05d}" for g in range(len(PROBES))])
    df.insert(0, "biotype", ["protein_coding"] * len(PROBES))
    path = tmp_path / "txi_counts.csv"
    df.to_csv(path)
    matrix, _, genes, manifest = run(tmp_path, path, sample_sheet(tmp_path, SAMPLE_NAMES),
                                     format="salmon")
    assert matrix.shape == (12, 8)
    assert (matrix.to_numpy() == np.round(COUNTS.T + 0.5)).all()
    assert "biotype" in genes.columns
    assert any("biotype" in n for n in manifest["notes"])


def test_salmon_tpm_kept_as_given_when_not_counts(tmp_path):
    df = pd.DataFrame(COUNTS + 0.25, columns=SAMPLE_NAMES)
    df.insert(0, "Name", [f"ENST{g:05d}" for g in range(len(PROBES))])
    path = tmp_path / "quantmerge.tsv"
    df.to_csv(path, sep="\t", index=False)
    matrix, _, _, _ = run(tmp_path, path, sample_sheet(tmp_path, SAMPLE_NAMES), format="salmon",
                          value_type="intensity")
    np.testing.assert_allclose(matrix.to_numpy(), COUNTS.T + 0.25)


# ------------------------------------------------------------------ AnnData
def test_h5ad_written_by_anndata_is_read(tmp_path):
    assert sources.detect_format(H5AD) == "h5ad"
    matrix, sheet, genes, manifest = run(tmp_path, H5AD, condition="disease", layer="counts")
    assert matrix.shape == (40, 50)
    assert matrix.index[0] == "donor01" and matrix.columns[0] == "ENSG00000000001"
    assert np.all(matrix.to_numpy() == np.round(matrix.to_numpy()))  # the counts layer
    assert sheet.columns.tolist() == ["sample_id", "disease", "age", "batch"]
    assert sheet["disease"].value_counts().to_dict() == {"healthy": 20, "AML": 20}
    assert genes["gene_symbols"].iloc[0] == "SYM1"
    assert manifest["inputs"][0]["parser"] == "h5ad:counts"
    assert manifest["format"] == "h5ad"


def test_h5ad_x_is_the_sparse_normalised_matrix(tmp_path):
    values, obs, var = read_h5ad(H5AD)
    counts, _, _ = read_h5ad(H5AD, "counts")
    assert sparse.issparse(values) and not sparse.issparse(counts)  # each read as stored: X sparse, the layer dense
    expected = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(values.toarray(), expected, rtol=1e-5)
    matrix, _, _, _ = run(tmp_path, H5AD, condition="disease", value_type="log")
    assert isinstance(matrix, SparseMatrix)  # and collected sparse (genovae.sparse)
    np.testing.assert_allclose(matrix.column_values(), expected, rtol=1e-5)


def test_h5ad_without_the_named_layer(tmp_path):
    with pytest.raises(InputError) as info:
        run(tmp_path, H5AD, condition="disease", layer="spliced")
    message = str(info.value)
    assert message.startswith(f"{H5AD}:") and "no layer 'spliced'" in message and "counts" in message
    assert no_outputs(tmp_path)


def test_not_an_h5ad_file(tmp_path):
    path = tmp_path / "broken.h5ad"
    path.write_bytes(b"this is not HDF5" * 10)
    with pytest.raises(InputError, match="cannot be read as an HDF5"):
        run(tmp_path, path, condition="disease")
    assert no_outputs(tmp_path)


def test_layer_for_a_table_is_a_config_error(tmp_path):
    path = write_featurecounts(tmp_path, bam_paths=False)
    with pytest.raises(ConfigError, match="data.layer"):
        run(tmp_path, path, sample_sheet(tmp_path, SAMPLE_NAMES), layer="counts")


def test_table_needs_a_sample_sheet(tmp_path):
    path = write_featurecounts(tmp_path, bam_paths=False)
    with pytest.raises(ConfigError, match="data.samples"):
        run(tmp_path, path)


def test_h5ad_reader_takes_what_anndata_writes(tmp_path):
    """Dense X, nullable and categorical obs columns, var annotation: read as anndata wrote them."""
    obs = pd.DataFrame({"group": pd.Categorical(["a", None, "b"]), "x": [1.0, 2.0, 3.0], "ok": [True, False, True],
                        "n": pd.array([1, None, 3], dtype="Int64")}, index=["s1", "s2", "s3"])
    var = pd.DataFrame({"symbol": ["A", "B"]}, index=["g1", "g2"])
    path = tmp_path / "out.h5ad"
    anndata.AnnData(X=np.arange(6, dtype=np.float32).reshape(3, 2), obs=obs, var=var,
                    obsm={"X_test": np.ones((3, 2))}, uns={"a": {"b": [1, 2], "c": "text"}}).write_h5ad(path)
    values, obs2, var2 = read_h5ad(path)
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, np.arange(6).reshape(3, 2))
    assert list(obs2.index) == ["s1", "s2", "s3"] and list(var2.index) == ["g1", "g2"]
    pd.testing.assert_frame_equal(obs2, obs)
    source = sources.read_anndata(path)
    assert source.sheet.to_dict("list") == {"sample_id": ["s1", "s2", "s3"], "group": ["a", None, "b"],
                                            "x": ["1.0", "2.0", "3.0"], "ok": ["True", "False", "True"],
                                            "n": ["1", None, "3"]}


def test_h5ad_with_a_text_matrix_is_refused(tmp_path):
    path = tmp_path / "text.h5ad"
    adata = anndata.AnnData(X=np.zeros((2, 2), dtype=np.float32), obs=pd.DataFrame(index=["s1", "s2"]),
                            var=pd.DataFrame(index=["g1", "g2"]))
    adata.layers["words"] = np.array([["a", "b"], ["c", "d"]], dtype=object)
    adata.write_h5ad(path)
    with pytest.raises(InputError) as info:
        run(tmp_path, path, condition="disease", layer="words")
    assert str(info.value).startswith(f"{path}:") and "'/layers/words' holds" in str(info.value)
    assert "not numbers" in str(info.value)
    assert no_outputs(tmp_path)


def test_h5ad_without_obs_is_not_anndata(tmp_path):
    import h5py

    path = tmp_path / "plain.h5ad"
    with h5py.File(path, "w") as fh:
        fh["X"] = np.zeros((2, 2))
    with pytest.raises(InputError, match="has no 'obs': not an AnnData .h5ad file"):
        read_h5ad(path)


# ------------------------------------------------------------------ checksums, manifest
def test_sha256_match_is_recorded_and_mismatch_refused(tmp_path):
    path = write_featurecounts(tmp_path, bam_paths=False)
    sheet = sample_sheet(tmp_path, SAMPLE_NAMES)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _, _, _, manifest = run(tmp_path, path, sheet, sha256=digest.upper())
    entry = manifest["inputs"][0]
    assert entry["sha256"] == entry["sha256_expected"] == digest
    assert entry["bytes"] == path.stat().st_size and entry["source"] == str(path)
    for name in OUTPUTS:
        (tmp_path / "out" / name).unlink()
    wrong = "0" * 64
    with pytest.raises(InputError) as info:
        run(tmp_path, path, sheet, sha256={"expression": digest, "samples": wrong})
    message = str(info.value)
    assert message.startswith(f"{sheet}:") and wrong in message and "sha256 mismatch" in message
    assert hashlib.sha256(sheet.read_bytes()).hexdigest() in message and "not used" in message
    assert sheet.exists()  # a local file is never deleted
    assert no_outputs(tmp_path)


def test_sha256_for_a_file_that_is_not_configured(tmp_path):
    path = write_featurecounts(tmp_path, bam_paths=False)
    with pytest.raises(ConfigError, match="data.genes is not set"):
        run(tmp_path, path, sample_sheet(tmp_path, SAMPLE_NAMES), sha256={"genes": "a" * 64})


def test_every_source_ends_in_the_same_canonical_outputs(tmp_path):
    """The same counts as a plain table, GEO, featureCounts, Salmon and h5ad give one matrix."""
    ids = GSM
    table = tmp_path / "table" / "expr.tsv"
    table.parent.mkdir()
    pd.DataFrame(COUNTS.T, index=pd.Index(ids, name="sample_id"), columns=PROBES).to_csv(table, sep="\t")
    sheet = tmp_path / "table" / "samples.tsv"
    pd.DataFrame({"sample_id": ids, "condition": STATE}).to_csv(sheet, sep="\t", index=False)

    fc = tmp_path / "fc" / "counts.txt"
    fc.parent.mkdir()
    fc_frame = pd.DataFrame(COUNTS, index=pd.Index(PROBES, name="Geneid"), columns=ids)
    for i, col in enumerate(("Chr", "Start", "End", "Strand", "Length")):
        fc_frame.insert(i, col, ["chr1", "1", "2", "+", "2"][i])
    fc.write_text("# Program:featureCounts v2.0.6\n" + fc_frame.to_csv(sep="\t"))

    salmon = tmp_path / "salmon" / "salmon.merged.gene_counts.tsv"
    salmon.parent.mkdir()
    sal = pd.DataFrame(COUNTS, columns=ids)
    sal.insert(0, "gene_id", PROBES)
    sal.insert(1, "gene_name", PROBES)
    sal.to_csv(salmon, sep="\t", index=False)

    (tmp_path / "geo").mkdir()
    geo = write_geo(tmp_path / "geo")

    h5 = tmp_path / "h5" / "cohort.h5ad"
    h5.parent.mkdir()
    anndata.AnnData(X=COUNTS.T.astype(np.float64), obs=pd.DataFrame({"condition": STATE}, index=ids),
                    var=pd.DataFrame(index=PROBES)).write_h5ad(h5)

    results = {}
    for name, expression, samples in (
        ("table", table, sheet),
        ("featurecounts", fc, sheet),
        ("salmon", salmon, sheet),
        ("geo", geo, sheet),
        ("h5ad", h5, None),
    ):
        out = tmp_path / f"run_{name}"
        out.mkdir()
        results[name] = run(out, expression, samples)
        assert results[name][3]["format"] == name
        for entry in results[name][3]["inputs"]:
            assert {"role", "path", "source", "sha256", "bytes", "parser"} <= set(entry)
        assert results[name][3]["shape_after"] == [12, 8]
    base = results["table"][0]
    for name, (matrix, written_sheet, _, _) in results.items():
        pd.testing.assert_frame_equal(matrix, base, check_names=False, obj=name)
        assert written_sheet["condition"].tolist() == STATE, name


# ------------------------------------------------------------------ export
def test_export_h5ad_from_result_tables(tmp_path):
    out = outputs(tmp_path)
    run(tmp_path, H5AD, condition="disease", layer="counts")
    samples = pd.read_csv(out["out_samples"], sep="\t", dtype=str)["sample_id"].tolist()
    genes = io.read_matrix(out["out_matrix"]).columns.tolist()
    latent = pd.DataFrame({"sample_id": samples[::-1], "split": "train", "condition": "x",
                           "z1": np.arange(40.0)[::-1], "z2": 1.0})
    latent.to_csv(tmp_path / "latent.tsv", sep="\t", index=False)
    latent.assign(reconstruction_mse=0.5)[["sample_id", "split", "condition", "reconstruction_mse"]].to_csv(
        tmp_path / "errors.tsv", sep="\t", index=False)
    risk = pd.DataFrame({"contrast": "AML_vs_healthy", "gene": genes[:10], "vae_score": np.arange(10.0),
                         "vae_rank": np.arange(1, 11), "fdr": 0.01})
    risk.to_csv(tmp_path / "risk.tsv", sep="\t", index=False)
    (tmp_path / "summary.json").write_text(json.dumps(
        {"run": "t", "rounds": [{"round": 1, "value": 0.5, "passed": True}], "device_note": None}))
    export_h5ad(matrix=out["out_matrix"], samples=out["out_samples"], genes=out["out_genes"],
                latent=tmp_path / "latent.tsv", errors=tmp_path / "errors.tsv", risk=tmp_path / "risk.tsv",
                summary=tmp_path / "summary.json", out_h5ad=tmp_path / "latent.h5ad")
    import h5py

    from conftest import check_h5ad_for_scanpy

    with h5py.File(tmp_path / "latent.h5ad") as fh:
        assert fh.attrs["encoding-type"] == "anndata"
    adata = check_h5ad_for_scanpy(tmp_path / "latent.h5ad")
    z = adata.obsm[OBSM_KEY]
    assert z.shape == (40, 2) and z[0, 0] == 0.0  # aligned to the sample order, not latent.tsv's
    assert adata.uns["genovae"]["summary"]["rounds"]["0"]["value"] == 0.5
    obs, var = adata.obs, adata.var
    assert adata.X.shape == (40, 50)
    assert (obs["genovae_reconstruction_mse"] == 0.5).all()
    assert var["vae_score_AML_vs_healthy"].notna().sum() == 10
    assert var["genovae_used"].sum() == 10 and var["gene_symbols"].iloc[0] == "SYM1"
