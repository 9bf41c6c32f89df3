"""genovae as a Snakemake module of another workflow (issue 17 item 3).

A separate workflow in a temporary folder imports a copy of genovae with a ``module`` block, its
own config (the tiny simulated cohort) and ``prefix:``, uses every rule as ``genovae_*`` and runs
for real: every path of genovae's own files (library, schemas, scripts, envs, report captions)
must resolve relative to genovae, its results under the prefix, the user's data where it is.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY_CONFIG, copy_workflow, run_snakemake

pytestmark = pytest.mark.workflow

PREFIX = "genovae_out"
RESULTS = Path(PREFIX) / "results" / TINY_CONFIG["run"]


def importer(tmp_path, genovae_config):
    """A workflow of its own (tmp_path/analysis) importing genovae (a copy in tmp_path/genovae)."""
    genovae = copy_workflow(tmp_path / "genovae")
    analysis = tmp_path / "analysis"
    (analysis / "config").mkdir(parents=True)
    (analysis / "config" / "config.yaml").write_text(
        yaml.safe_dump({"genovae": genovae_config}, sort_keys=False)
    )
    (analysis / "Snakefile").write_text(textwrap.dedent(f"""\
        configfile: "config/config.yaml"


        module genovae:
            snakefile:
                "{genovae / 'Snakefile'}"
            config:
                config["genovae"]
            prefix:
                "{PREFIX}"


        use rule * from genovae as genovae_*
        """))
    return analysis


def test_genovae_runs_as_a_module_with_a_prefix(tmp_path):
    analysis = importer(tmp_path, TINY_CONFIG)
    proc = run_snakemake(analysis)
    assert "genovae_train" in proc.stdout + proc.stderr  # the importer's names for genovae's rules

    results = analysis / RESULTS
    for name in ("config.yaml", "summary.json", "latent.tsv", "reconstruction_error.tsv", "risk_genes.tsv",
                 "plots/loss_curves.png", "overview.html", "provenance.json", "latent.h5ad"):
        assert (results / name).is_file(), name
    assert not (analysis / "results").exists(), "a result was written outside the prefix"
    summary = json.loads((results / "summary.json").read_text())
    assert summary["run"] == "tiny" and summary["verdict"]
    # provenance reads the job records beside the logs, under the prefix (a params path)
    provenance = json.loads((results / "provenance.json").read_text())
    assert provenance["jobs"], "provenance found no job records under the prefix"

    # the retrain loop reads its decisions where they are: a second run has nothing to do
    proc = run_snakemake(analysis, "--dry-run")
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]

    # the report's landing page is the run's, found under the prefix
    run_snakemake(analysis, "--report", "report.html")
    html = (analysis / "report.html").read_text()
    assert "has not finished" not in html


def test_module_reads_the_users_data_where_the_user_put_it(tmp_path):
    """Relative data paths of the importer's config are the importer's files, not under the prefix."""
    config = {
        "run": "khan",
        "data": {
            "source": "file",
            "expression": "data/expression.tsv.gz",
            "samples": "data/samples.tsv",
            "orientation": "samples_by_genes",
            "value_type": "log",
            "log_base": "e",
        },
        "analysis": {"condition": "tumour_type"},
    }
    analysis = importer(tmp_path, config)
    shutil.copytree(REPO / "resources" / "khan_srbct", analysis / "data")
    proc = run_snakemake(analysis, "--dry-run")
    text = proc.stdout + proc.stderr
    block = text.split("rule genovae_collect:", 1)[1].split("\n\n", 1)[0]
    assert "input: data/expression.tsv.gz, data/samples.tsv" in block, block
    assert f"output: {PREFIX}/results/khan/data/matrix.parquet" in block, block
