"""A catalogue of bad inputs and faults (issue 16, item 4).

Every case drives one bad input or fault through the step as Snakemake runs it (``genovae.runner.run_rule``
with a stand-in for the ``snakemake`` object, in-process) and checks what the user gets: the exit (1, no
traceback), a message that names the cause and the file or config key, and no output, partial or not, left
behind. Configuration errors are checked at ``settings.load_settings``; the plausibility warnings (item 3)
at the manifest's ``warnings``. The tests marked ``workflow`` run Snakemake for real on tiny data for the
user-visible message and exit status.
"""

from __future__ import annotations

import copy
import errno
import http.server
import os
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, TINY_CONFIG, run_snakemake, write_config

sys.path.insert(0, str(REPO / "workflow" / "lib"))

from genovae import collect as collect_mod  # noqa: E402
from genovae import io, plausible, runner  # noqa: E402
from genovae.errors import ConfigError  # noqa: E402
from genovae.preprocess import preprocess  # noqa: E402
from genovae.settings import load_settings  # noqa: E402

N, G = 24, 30
OUTPUTS = ("matrix.parquet", "samples.tsv", "genes.tsv", "manifest.json")


# ------------------------------------------------------------------ a good cohort, and how each case spoils it
def good_values(value_type="log", seed=0):
    rng = np.random.default_rng(seed)
    if value_type == "counts":
        return rng.poisson(50, size=(N, G)).astype(float)
    if value_type == "intensity":
        return np.round(2 ** rng.normal(9, 1, size=(N, G)), 1)
    return np.round(rng.normal(8, 1, size=(N, G)), 4)


class Cohort:
    """expr.tsv (samples x genes) and samples.tsv in ``root``; ``kwargs`` are collect's keyword arguments."""

    def __init__(self, root, value_type="log"):
        self.root = Path(root)
        self.ids = [f"s{i:02d}" for i in range(1, N + 1)]
        self.genes = [f"g{j}" for j in range(1, G + 1)]
        self.values = good_values(value_type)
        self.labels = ["case", "control"] * (N // 2)
        self.expression = self.root / "expr.tsv"
        self.samples = self.root / "samples.tsv"
        self.kwargs = {"value_type": value_type}
        self.cells = {}  # (row, col) -> text written instead of the number
        self.write_expression = True

    def frame(self):
        df = pd.DataFrame(self.values, index=pd.Index(self.ids, name="sample_id"), columns=self.genes)
        return df.astype(object) if self.cells else df

    def write(self):
        df = self.frame()
        for (r, c), text in self.cells.items():
            df.iat[r, c] = text
        if self.write_expression and not self.expression.exists():
            if self.expression.suffix == ".parquet":
                df.to_parquet(self.expression)
            else:
                df.to_csv(self.expression, sep="," if self.expression.suffix == ".csv" else "\t")
        if self.samples and not self.samples.exists():
            pd.DataFrame({"sample_id": self.ids, "condition": self.labels}).to_csv(self.samples, sep="\t",
                                                                                   index=False)


def fake_job(rule, outputs, log=()):
    return SimpleNamespace(rule=rule, output=[str(p) for p in outputs], log=[str(p) for p in log], config={})


def run_collect(tmp_path, cohort):
    out = tmp_path / "results" / "demo" / "data"
    paths = {k: out / name for k, name in zip(("out_matrix", "out_samples", "out_genes", "out_manifest"), OUTPUTS)}
    job = fake_job("collect", paths.values(), [tmp_path / "logs" / "collect.log"])

    def step(sm, _log):
        return collect_mod.collect(str(cohort.expression), str(cohort.samples) if cohort.samples else None,
                                   **paths, **cohort.kwargs)

    runner.run_rule(job, step)
    return paths


def left_behind(tmp_path):
    """Files under results/ (temporary ones included) after a step."""
    root = tmp_path / "results"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# each case: (id, spoil(cohort, monkeypatch), words the message must contain (lower case), the file it names:
# "expression", "samples" or a config key)
def _cell(text, r=2, c=3):
    def spoil(co, mp):
        co.cells[(r, c)] = text
    return spoil


def _value(v, r=4, c=5):
    def spoil(co, mp):
        co.values[r, c] = v
    return spoil


def _labels(*changes):
    def spoil(co, mp):
        for i, label in changes:
            co.labels[i] = label
    return spoil


def _raw(data, name="expr.tsv"):
    def spoil(co, mp):
        co.expression = co.root / name
        co.expression.write_bytes(data)
    return spoil


def _kw(**kw):
    def spoil(co, mp):
        co.kwargs.update(kw)
    return spoil


def _value_type(value_type, values=None):
    def spoil(co, mp):
        co.kwargs["value_type"] = value_type
        if values is not None:
            co.values = values(co)
    return spoil


def _both(*spoils):
    def spoil(co, mp):
        for s in spoils:
            s(co, mp)
    return spoil


def _missing_expression(co, mp):
    co.expression = co.root / "nowhere.tsv"
    co.write_expression = False


def _folder_expression(co, mp):
    co.expression = co.root / "folder.tsv"
    co.expression.mkdir()


def _unreadable(co, mp):  # tests run as root: chmod does not bite, os.access is asked instead
    real = os.access
    mp.setattr(io.os, "access", lambda p, mode, *a, **k: False if str(p) == str(co.expression) else real(p, mode))


def _header_only(co, mp):
    co.expression.write_text("sample_id\t" + "\t".join(co.genes) + "\n")


def _ragged(co, mp):
    co.write()
    lines = co.expression.read_text().splitlines()
    lines[3] = "\t".join(lines[3].split("\t")[:-2])
    co.expression.write_text("\n".join(lines) + "\n")


def _wrong_delimiter(co, mp):
    co.frame().to_csv(co.expression, sep=",")  # commas in a .tsv


def _semicolons(co, mp):
    co.expression = co.root / "expr.csv"
    co.frame().to_csv(co.expression, sep=";")


def _duplicate_sample(co, mp):
    co.ids[5] = co.ids[4]


def _duplicate_gene(co, mp):
    co.genes[7] = co.genes[6]


def _sheet_lacks_sample(co, mp):
    co.write()
    sheet = pd.read_csv(co.samples, sep="\t").iloc[1:]
    sheet.to_csv(co.samples, sep="\t", index=False)


def _sheet_has_extra(co, mp):
    co.write()
    sheet = pd.read_csv(co.samples, sep="\t")
    sheet.loc[len(sheet)] = ["s99", "case"]
    sheet.to_csv(co.samples, sep="\t", index=False)


def _transposed(co, mp):
    co.frame().T.to_csv(co.expression, sep="\t")


def _no_condition_column(co, mp):
    pd.DataFrame({"sample_id": co.ids, "group": co.labels}).to_csv(co.samples, sep="\t", index=False)


def _no_sample_id_column(co, mp):
    pd.DataFrame({"id": co.ids, "condition": co.labels}).to_csv(co.samples, sep="\t", index=False)


def _truncated_gzip(co, mp):
    co.expression = co.root / "expr.tsv.gz"
    co.frame().to_csv(co.root / "full.tsv.gz", sep="\t")
    data = (co.root / "full.tsv.gz").read_bytes()
    co.expression.write_bytes(data[: len(data) // 2])


def _corrupt_parquet(co, mp):
    co.expression = co.root / "expr.parquet"
    co.expression.write_bytes(b"PAR1" + os.urandom(300))


def _parquet_beyond_float32(co, mp):
    co.expression = co.root / "expr.parquet"
    co.values[3, 4] = 1e39
    co.frame().to_parquet(co.expression)


def _sha256(digest):
    def spoil(co, mp):
        co.kwargs["sha256"] = {"expression": digest}
    return spoil


GEO_HEAD = (
    '!Series_geo_accession\t"GSE1"\n'
    '!Sample_geo_accession\t"GSM1"\t"GSM2"\t"GSM3"\t"GSM4"\n'
    '!Sample_characteristics_ch1\t"group: a"\t"group: b"\t"group: a"\t"group: b"\n'
)


def _geo(text, platforms=None):
    def spoil(co, mp):
        co.expression = co.root / "GSE1_series_matrix.txt"
        head = GEO_HEAD + (f"!Sample_platform_id\t{platforms}\n" if platforms else "")
        co.expression.write_text(head + text)
        co.samples = None
        co.kwargs["condition"] = "group"
    return spoil


GEO_TABLE = (
    "!series_matrix_table_begin\n"
    '"ID_REF"\t"GSM1"\t"GSM2"\t"GSM3"\t"GSM4"\n"p1"\t1\t2\t3\t4\n"p2"\t2\t3\t4\t5\n'
    "!series_matrix_table_end\n"
)


def _featurecounts_as_log(co, mp):
    co.expression = co.root / "counts.txt"
    co.expression.write_text(
        "# Program:featureCounts v2.0.1\n"
        "Geneid\tChr\tStart\tEnd\tStrand\tLength\ta.bam\tb.bam\n"
        "g1\t1\t1\t10\t+\t10\t5\t6\n"
    )


def _all_zero(co, mp):
    co.kwargs["value_type"] = "counts"
    co.values = np.zeros((N, G))


def _counts_like_logs(co):
    return np.random.default_rng(1).poisson(30, size=(N, G)).astype(float)


def _log_ratios(co):
    return np.round(np.random.default_rng(1).normal(0, 1.5, size=(N, G)), 3)


def _logged_intensities(co):
    return np.round(np.random.default_rng(1).normal(9, 1, size=(N, G)), 3)


def _disk_full_on(name):
    """os.replace (the atomic writer's last step) finds the disk full for the output ``name``: the outputs
    written before it must be removed too."""
    def spoil(co, mp):
        real = os.replace

        def replace(src, dst, *a, **k):
            if str(dst).endswith(name):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(src, dst, *a, **k)
        mp.setattr(io.os, "replace", replace)
    return spoil


def _write_fails(code):
    """Writing any output fails with ``code`` (a full disk while writing, an unwritable or read-only results
    folder: chmod does not bite as root, so the write itself is made to fail)."""
    def spoil(co, mp):
        real = io.tempfile.mkstemp

        def mkstemp(*a, dir=None, **k):
            if dir is not None and "results" in str(dir):
                raise OSError(code, os.strerror(code), str(dir))
            return real(*a, dir=dir, **k)
        mp.setattr(io.tempfile, "mkstemp", mkstemp)
    return spoil


def _parquet_write_fails(co, mp):
    """pyarrow's own error for a full disk: an OSError whose errno is only in the text."""
    def to_parquet(self, *a, **k):
        raise OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device")
    mp.setattr(pd.DataFrame, "to_parquet", to_parquet)


CASES = [
    # files that cannot be read
    ("missing file", _missing_expression, ["file not found"], "expression"),
    ("empty file", _raw(b""), ["file is empty"], "expression"),
    ("folder instead of file", _folder_expression, ["is a folder"], "expression"),
    ("unreadable file", _unreadable, ["not readable", "permission"], "expression"),
    ("binary garbage", _raw(b"\x00\x01\xff\xfe" + bytes(range(256)) * 8), ["binary"], "expression"),
    ("unknown file type", _raw(b"a\tb\n", "expr.xlsx"), ["unknown file type"], "expression"),
    ("truncated gzip", _truncated_gzip, ["truncated"], "expression"),
    ("corrupt parquet", _corrupt_parquet, ["parquet"], "expression"),
    # layout
    ("wrong delimiter", _wrong_delimiter, ["comma", "tab"], "expression"),
    ("semicolon-separated csv", _semicolons, ["one column", "delimiter"], "expression"),
    ("header only", _header_only, ["no data rows"], "expression"),
    ("rows of different lengths", _ragged, ["different numbers of fields"], "expression"),
    ("transposed matrix", _transposed, ["transposed", "data.orientation"], "expression"),
    ("duplicate sample ids", _duplicate_sample, ["duplicate sample ids", "s05"], "expression"),
    ("duplicate gene ids", _duplicate_gene, ["duplicate gene ids", "g7"], "expression"),
    # values
    ("non-numeric value", _cell("high"), ["non-numeric", "high"], "expression"),
    ("missing value NA", _cell("NA"), ["missing values"], "expression"),
    ("infinite value", _cell("inf"), ["infinite"], "expression"),
    ("beyond float32 (text)", _value(1e39), ["float32", "s05", "g6"], "expression"),
    ("beyond float32 (parquet)", _parquet_beyond_float32, ["float32"], "expression"),
    ("absurd value on a log scale", _value(1e6), ["log scale", "data.value_type", "s05", "g6"], "expression"),
    ("counts declared as log", _value_type("log", _counts_like_logs), ["look like counts", "data.value_type"],
     "expression"),
    ("logs declared as counts (negative)", _value_type("counts", _log_ratios), ["negative", "counts"],
     "expression"),
    ("logs declared as counts (fractions)", _value_type("counts", _logged_intensities), ["non-integer", "counts"],
     "expression"),
    ("log ratios declared as intensity", _value_type("intensity", _log_ratios),
     ["log ratios", "data.value_type"], "expression"),
    ("logged intensities declared as intensity", _value_type("intensity", _logged_intensities),
     ["log values", "data.value_type"], "expression"),
    ("all values zero", _all_zero, ["no samples or no genes"], "expression"),
    ("featureCounts declared as log", _featurecounts_as_log, ["data.value_type"], "data.value_type"),
    ("layer on a table", _kw(layer="counts"), ["only applies to .h5ad"], "data.layer"),
    # sample sheet
    ("sheet lacks a sample", _sheet_lacks_sample, ["not in the sample sheet", "s01"], "expression"),
    ("sheet has an extra sample", _sheet_has_extra, ["not in", "s99"], "samples"),
    ("sheet without sample_id", _no_sample_id_column, ["no 'sample_id' column"], "samples"),
    ("no condition column", _no_condition_column, ["has no column 'condition'"], "samples"),
    ("condition NA", _labels((0, "NA"), (3, "NA")), ["na-like", "'na'", "s01", "s04"], "samples"),
    ("condition nan", _labels((1, "nan")), ["na-like", "'nan'", "s02"], "samples"),
    ("condition None", _labels((1, "None")), ["na-like", "'none'"], "samples"),
    ("condition N/A", _labels((1, " N/A ")), ["na-like", "n/a"], "samples"),
    ("condition empty", _labels((1, "")), ["is empty"], "samples"),
    ("labels differing by case", _labels((0, "Case"), (2, "CASE")), ["differ only by case", "'case'", "'case'"],
     "samples"),
    ("labels differing by white space", _labels((0, "case "), (2, " case")), ["surrounding white space"],
     "samples"),
    ("a single group", _labels(*[(i, "case") for i in range(1, N, 2)]), ["only one group"], "samples"),
    ("group too small to split", _labels(*[(i, "case") for i in range(1, N - 2, 2)]), ["too small"], "samples"),
    ("case value not in the column", _kw(case="tumour"), ["'tumour' is not a value"], "analysis.case"),
    # checksums
    ("sha256 mismatch", _sha256("0" * 64), ["sha256 mismatch"], "expression"),
    ("sha256 malformed", _sha256("abc"), ["not a sha256"], "data.sha256"),
    # GEO series matrix files
    ("GEO without table", _geo("!Sample_title\t1\t2\t3\t4\n"), ["series_matrix_table_begin"], "expression"),
    ("GEO with two platform tables", _geo(GEO_TABLE + GEO_TABLE), ["2 platform tables"], "expression"),
    ("GEO with samples of two platforms", _geo(GEO_TABLE, '"GPL96"\t"GPL96"\t"GPL97"\t"GPL97"'),
     ["platform", "gpl96, gpl97"], "expression"),
    # faults while writing: every output written before the fault is removed too
    ("disk full at the last output", _disk_full_on("manifest.json"), ["disk full at", "manifest.json"], None),
    ("disk full in pyarrow", _parquet_write_fails, ["disk full at"], None),
    ("results folder not writable", _write_fails(errno.EACCES), ["permission denied at", "results"], None),
    ("results on a read-only file system", _write_fails(errno.EROFS), ["read-only file system at", "results"],
     None),
]


@pytest.mark.parametrize("spoil,words,names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_stops_with_a_message_and_leaves_nothing(tmp_path, monkeypatch, capsys, spoil, words, names):
    monkeypatch.chdir(tmp_path)
    co = Cohort(tmp_path)
    spoil(co, monkeypatch)
    co.write()
    with pytest.raises(SystemExit) as stop:
        run_collect(tmp_path, co)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("genovae: rule collect failed: ")]
    assert len(lines) == 1, err
    message = lines[0].lower()
    for word in words:
        assert word.lower() in message, f"{word!r} not in: {lines[0]}"
    if names in ("expression", "samples"):
        assert str(getattr(co, names)).lower() in message, f"{names} file not named: {lines[0]}"
    elif names is not None:
        assert f"'{names}'" in message, f"key {names} not named: {lines[0]}"
    assert left_behind(tmp_path) == []
    assert "rule collect failed" in (tmp_path / "logs" / "collect.log").read_text()


def test_the_catalogue_is_large():
    assert len(CASES) + len(CONFIG_CASES) + len(WARNINGS) + 2 >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


# ------------------------------------------------------------------ preprocess: the filtered genes, the model size
@pytest.mark.parametrize("n_genes", [1, 3])
def test_fewer_genes_than_latent_dimensions_names_model_latent_dim(tmp_path, monkeypatch, capsys, n_genes):
    """A one-gene (or three-gene) matrix passes collect but cannot feed a 4-dimensional latent space."""
    monkeypatch.chdir(tmp_path)
    co = Cohort(tmp_path)
    co.genes, co.values = co.genes[:n_genes], co.values[:, :n_genes]
    co.write()
    data = run_collect(tmp_path, co)
    out = tmp_path / "results" / "demo" / "preprocess"
    outs = {"out_features": out / "features.parquet", "out_split": out / "split.tsv",
            "out_transform": out / "transform.json"}
    job = fake_job("preprocess", outs.values())
    with pytest.raises(SystemExit):
        runner.run_rule(job, lambda sm, _: preprocess(
            data["out_matrix"], data["out_samples"], **outs, condition="condition", value_type="log",
            split={"train": 0.7, "val": 0.15, "test": 0.15}, seed=1, latent_dim=4, n_top_genes=2000))
    err = capsys.readouterr().err
    assert "Traceback" not in err and "config error: 'model.latent_dim'" in err
    assert f"only {n_genes} gene(s)" in err
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------ configuration errors
CONFIG_CASES = [
    ("unknown key", {"train": {"epochz": 3}}, "train"),
    ("wrong type", {"train": {"epochs": "ten"}}, "train.epochs"),
    ("out of range", {"retrain": {"max_rounds": 0}}, "retrain.max_rounds"),
    ("bad folder name", {"run": "../x"}, "run"),
    ("nb on log data", {"data": {"source": "file", "expression": "x.tsv", "samples": "s.tsv",
                                 "value_type": "log"}, "model": {"likelihood": "nb"}}, None),
]


@pytest.mark.parametrize("cfg,key", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_names_the_key(cfg, key):
    base = {"data": {"source": "simulate"}}
    with pytest.raises(ConfigError) as err:
        load_settings({**base, **cfg})
    assert str(err.value).startswith("config error: '")
    if key is not None:
        assert err.value.key.startswith(key), err.value.key


# ------------------------------------------------------------------ plausibility warnings (item 3): the run goes on
def _warn_clipped(co, mp):
    co.kwargs.update(value_type="intensity", intensity_floor=100.0)
    co.values = good_values("intensity")
    co.values[:, :5] = 20.0  # a sixth of the values below the floor


def _warn_outlier(co, mp):
    co.values[6, 2] = 60.0  # log scale: the rest of g3 lies around 8


def _warn_small(co, mp):
    co.ids, co.values, co.labels = co.ids[:8], co.values[:8], co.labels[:8]
    co.kwargs["split"] = {"train": 0.5, "val": 0.25, "test": 0.25}


def _warn_url(co, mp):
    co.kwargs["origins"] = {"expression": "https://example.org/expr.tsv"}


WARNINGS = [
    ("clipped intensities", _warn_clipped, ["clipped before log2", "preprocess.intensity_floor (100"]),
    ("single outlier", _warn_outlier, ["robust sds", "'g3'", "'s07'"]),
    ("small cohort", _warn_small, ["the cohort is small", "4 train / 2 validation / 2 test",
                                   "4 training samples"]),
    ("url without sha256", _warn_url, ["https://example.org/expr.tsv", "data.sha256.expression"]),
]


@pytest.mark.parametrize("spoil,words", [c[1:] for c in WARNINGS], ids=[c[0] for c in WARNINGS])
def test_implausible_but_usable_data_are_warned_about_in_the_manifest(tmp_path, monkeypatch, spoil, words):
    monkeypatch.chdir(tmp_path)
    co = Cohort(tmp_path)
    spoil(co, monkeypatch)
    co.write()
    paths = run_collect(tmp_path, co)
    warnings = io.read_json(paths["out_manifest"])["warnings"]
    hits = [w for w in warnings if all(word.lower() in w.lower() for word in words)]
    assert len(hits) == 1, warnings


def test_a_clean_cohort_gets_no_warning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for value_type in ("log", "counts", "intensity"):
        co = Cohort(tmp_path / value_type, value_type)
        co.root.mkdir()
        co.write()
        paths = run_collect(tmp_path / value_type, co)
        assert io.read_json(paths["out_manifest"])["warnings"] == [], value_type


def test_unexpected_errors_keep_their_traceback(tmp_path, monkeypatch):
    """Only the user's own problems (GenovaeError, disk full, permissions) lose the traceback: a bug keeps it."""
    monkeypatch.chdir(tmp_path)
    job = fake_job("collect", [tmp_path / "results" / "x.tsv"])
    with pytest.raises(ZeroDivisionError):
        runner.run_rule(job, lambda sm, _: 1 / 0)
    with pytest.raises(FileNotFoundError):  # ENOENT is no user-facing OS error
        runner.run_rule(job, lambda sm, _: open(tmp_path / "nowhere"))
    assert plausible.split_sizes([12, 12], {"train": 0.7, "val": 0.15, "test": 0.15}) == \
        {"train": 16, "val": 4, "test": 4}


# ------------------------------------------------------------------ real Snakemake runs
def file_config(expression="data/expr.tsv", samples="data/samples.tsv", **data):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["data"] = {"source": "file", "expression": expression, "samples": samples, "value_type": "log", **data}
    return cfg


def write_files(workdir, spoil=None):
    co = Cohort(Path(workdir) / "data")
    co.root.mkdir(exist_ok=True)
    if spoil:
        spoil(co, None)
    co.write()
    return co


def assert_user_error(proc, *words):
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for word in words:
        assert word in text, text[-3000:]
    return text


@pytest.mark.workflow
def test_workflow_bad_expression_file(workdir):
    write_files(workdir, _labels((0, "EWS"), (2, "EWS "), (4, "ews")))
    write_config(workdir, file_config())
    proc = run_snakemake(workdir, check=False)
    text = assert_user_error(proc, "genovae: rule collect failed: data/samples.tsv", "differ only by case",
                             "'EWS', 'EWS ', 'ews'")
    assert "Traceback" not in text
    assert not (workdir / "results" / "tiny" / "data").exists() or not any(
        p.name in OUTPUTS for p in (workdir / "results" / "tiny" / "data").iterdir())


@pytest.mark.workflow
def test_workflow_config_key_error_and_configfile_folder(workdir):
    write_files(workdir)
    cfg = file_config()
    cfg["model"]["latent_dim"] = "four"
    write_config(workdir, cfg)
    proc = run_snakemake(workdir, check=False)
    assert_user_error(proc, "config error: 'model.latent_dim'")
    assert not (workdir / "results").exists()
    proc = run_snakemake(workdir, "--configfile", "config", check=False)
    text = assert_user_error(proc, "config")
    assert "is a directory" in text.lower() or "is a folder" in text.lower(), text[-2000:]
    assert not (workdir / "results").exists()


SITE_ENOSPC = '''
import errno, os
_replace = os.replace
def _full(src, dst, *a, **k):
    if str(dst).endswith("manifest.json"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _replace(src, dst, *a, **k)
os.replace = _full
'''


@pytest.mark.workflow
def test_workflow_disk_full(workdir, tmp_path, monkeypatch):
    """A full disk while collect writes (simulated in the job's Python): one line naming the file, no outputs."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE_ENOSPC)
    monkeypatch.setenv("PYTHONPATH", str(site))
    write_files(workdir)
    write_config(workdir, file_config())
    proc = run_snakemake(workdir, "results/tiny/data/manifest.json", check=False)
    text = assert_user_error(proc, "genovae: rule collect failed: disk full at results/tiny/data/manifest.json")
    assert "Traceback" not in text
    data = workdir / "results" / "tiny" / "data"
    assert not data.exists() or not [p.name for p in data.iterdir()]


class Redirect(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", "file:///etc/passwd")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *a):
        pass


def collect_from_server(workdir, handler, runs=1):
    """Serve the expression table through `handler` on localhost and run collect `runs` times."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        write_files(workdir)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/expr.tsv"
        write_config(workdir, file_config(expression=url))
        return [run_snakemake(workdir, "results/tiny/data/manifest.json", check=False) for _ in range(runs)]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.workflow
def test_workflow_redirect_to_a_local_file_is_refused(workdir):
    (proc,) = collect_from_server(workdir, Redirect)
    text = assert_user_error(proc, "redirects to 'file:///etc/passwd': only http(s) redirects are followed")
    assert "root:" not in text  # nothing of the local file is read or shown
    assert "Traceback" not in text  # genovae asks the server first: the plugin never meets the redirect
    assert not (workdir / "results" / "tiny" / "data").exists()
    assert not list(workdir.glob(".snakemake/storage/http/**/expr.tsv"))


class Truncated(http.server.BaseHTTPRequestHandler):
    """Says 100,000 bytes and sends 200."""

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.send_header("Last-Modified", "Mon, 02 Nov 2026 10:00:00 GMT")
        self.end_headers()

    def do_GET(self):
        self.do_HEAD()
        self.wfile.write(b"sample_id\tg1\n" + b"s01\t1.0\n" * 20)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *a):
        pass


@pytest.mark.workflow
def test_workflow_truncated_download_is_refused(workdir):
    procs = collect_from_server(workdir, Truncated, runs=2)
    for proc in procs:  # the second run does not take the partial copy of the first for a download
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "IncompleteRead" in text, text[-3000:]
        assert "Traceback" not in text
    assert not (workdir / "results" / "tiny" / "data").exists()


class LengthOnlyOnHead(Truncated):
    """Declares 100,000 bytes when asked (HEAD), then sends 173 bytes of whole rows without a length."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"sample_id\tg1\n" + b"s01\t1.0\n" * 20)
        self.wfile.flush()
        self.close_connection = True


class NoLength(LengthOnlyOnHead):
    """Declares no length at all: a copy cut short cannot be told from the whole file."""

    def do_HEAD(self):
        self.send_response(200)
        self.end_headers()


@pytest.mark.workflow
def test_workflow_download_cut_short_without_a_length_in_the_transfer_is_refused(workdir):
    """The transfer ends cleanly (no Content-Length to betray it); the server's HEAD said 100,000 bytes."""
    procs = collect_from_server(workdir, LengthOnlyOnHead, runs=2)
    for proc in procs:  # refused, and the copy deleted: the second run downloads again and refuses again
        text = assert_user_error(proc, "the download is 173 bytes but the server declared 100,000: it was cut short")
        assert "Traceback" not in text
    assert not (workdir / "results" / "tiny" / "data").exists()
    assert not list(workdir.glob(".snakemake/storage/http/**/expr.tsv"))


@pytest.mark.workflow
def test_workflow_download_from_a_server_without_lengths_needs_a_checksum(workdir):
    (proc,) = collect_from_server(workdir, NoLength)
    text = assert_user_error(proc, "the server declares no length, so a download cut short could not be told",
                             "set data.sha256.expression")
    assert "Traceback" not in text
    assert not (workdir / "results").exists()
    assert not list(workdir.glob(".snakemake/storage/http/**/expr.tsv"))  # refused before the download



@pytest.mark.workflow
def test_workflow_unreachable_server_is_one_line(workdir):
    """Without genovae's probe the HTTP plugin raised requests' ConnectionError with a full traceback."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_files(workdir)
    write_config(workdir, file_config(expression=f"http://127.0.0.1:{port}/expr.tsv"))
    proc = run_snakemake(workdir, "results/tiny/data/manifest.json", check=False)
    text = assert_user_error(proc, f"genovae: http://127.0.0.1:{port}/expr.tsv: cannot be downloaded: "
                                   "ConnectionError ([Errno 111] Connection refused)")
    assert "Traceback" not in text and "requests.exceptions" not in text
    assert not (workdir / "results").exists()
