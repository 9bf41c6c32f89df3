# Helpers shared by all stages - config and sample-sheet validation, paths,
# the params each rule depends on, and the retrain loop's input function.
import json
import sys
from pathlib import Path

import pandas as pd
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "lib"))
from genovae.errors import GenovaeError  # noqa: E402
from genovae.io import sha256sum  # noqa: E402
from genovae.rounds import loop_continues  # noqa: E402
from genovae.settings import load_settings  # noqa: E402
from genovae.sources import (  # noqa: E402
    carries_sample_sheet,
    expected_sha256,
    geo_series_url,
    is_url,
    resolve_format,
)


def config_error(key, problem):
    raise WorkflowError(f"genovae config error: '{key}': {problem}")


# Every default, type and cross-key check of the config lives in genovae.settings.
# S holds one typed section per config section; config gets the defaults filled in.
try:
    S = load_settings(config)
except GenovaeError as exc:
    raise WorkflowError(f"genovae {exc}")
config.update(S.config)

R = S.results
SIMULATE = S.simulate_source


def validate_sample_sheet():
    """Schema-check the sample sheet when it is a readable local file.

    Unreadable or malformed files are left to the collect step, which names the
    file and the problem in its error message.
    """
    path = config["data"]["samples"]
    if SIMULATE or not path or not Path(path).is_file():
        return
    sep = "," if ".csv" in Path(path).suffixes else "\t"
    try:
        sheet = pd.read_csv(path, sep=sep, dtype=str)
    except Exception:
        return
    if "sample_id" in sheet.columns:
        validate(sheet.dropna(subset=["sample_id"]), "../schemas/samples.schema.yaml")


def expression_location():
    """data.expression, or the NCBI URL of the series matrix of data.geo."""
    data = config["data"]
    return geo_series_url(data["geo"]) if data["geo"] else data["expression"]


def expression_format():
    data = config["data"]
    return resolve_format(data["format"], expression_location(), data["geo"])


validate_sample_sheet()


# ----------------------------------------------------------------- inputs
def collect_inputs():
    if SIMULATE:
        return {}
    data = config["data"]
    inputs = {"expression": input_file(expression_location())}
    for key in ("samples", "genes"):
        if data[key]:
            inputs[key] = input_file(data[key])
    return inputs


def input_file(location):
    """A local path, or an http(s) URL that Snakemake's HTTP storage plugin fetches.

    Downloads are kept in .snakemake/storage/http/ (or --local-storage-prefix) and
    fetched again only when the server's copy is newer.
    """
    return storage.http(location, keep_local=True) if is_url(location) else location


def previous_model(wildcards):
    """Round r > 1 with warm start begins from round r-1's weights."""
    r = int(wildcards.round)
    if r > 1 and config["retrain"]["strategy"] == "warm_start":
        return f"{R}/rounds/{r - 1}/model.pt"
    return []


def loop_decisions(wildcards):
    """Walk rounds 1..max_rounds through the decide checkpoint.

    Each round's decision is read only after its checkpoint has run; the loop
    stops at the first passing round or at retrain.max_rounds.
    """
    max_rounds = config["retrain"]["max_rounds"]
    decisions = []
    for r in range(1, max_rounds + 1):
        path = f"{R}/rounds/{r}/decision.json"
        if not Path(path).exists():
            # a round not decided yet is a plain input: Snakemake schedules it even
            # when the outputs downstream exist (e.g. after raising max_rounds), and
            # re-evaluates this function once the checkpoint has run
            decisions.append(path)
            break
        path = checkpoints.decide.get(round=r).output.decision
        decisions.append(path)
        with open(path) as fh:
            if not loop_continues(json.load(fh), r, max_rounds):
                break
    return decisions


def loop_models(wildcards):
    return [d.replace("decision.json", "model.pt") for d in loop_decisions(wildcards)]


def loop_histories(wildcards):
    return [d.replace("decision.json", "history.tsv") for d in loop_decisions(wildcards)]


def loop_metrics(wildcards):
    return [d.replace("decision.json", "metrics.json") for d in loop_decisions(wildcards)]


# ----------------------------------------------------------------- params
def collect_params():
    return {
        "source": config["data"]["source"],
        "format": config["data"]["format"],
        "layer": config["data"]["layer"],
        "sha256": expected_sha256(config["data"]["sha256"]),
        "origins": {} if SIMULATE else origins(),
        "orientation": config["data"]["orientation"],
        "value_type": S.value_type,
        "condition": config["analysis"]["condition"],
        "case": config["analysis"]["case"],
        "control": config["analysis"]["control"],
        "split": split_fractions(),
        "simulate": config["simulate"] if SIMULATE else None,
        **pseudonym_params(),  # privacy.pseudonymize (privacy.smk)
    }


def origins():
    """Where each input comes from, as configured (URL or path), for the manifest."""
    data = config["data"]
    found = {"expression": expression_location(), "samples": data["samples"]}
    return {**found, "genes": data["genes"]}


def split_fractions():
    s = config["preprocess"]["split"]
    return {k: s[k] for k in ("train", "val", "test")}


def preprocess_params():
    pre = config["preprocess"]
    return {
        "condition": config["analysis"]["condition"],
        "value_type": S.value_type,
        "log_base": config["data"]["log_base"],
        "split": split_fractions(),
        "seed": pre["split"]["seed"],
        "library_size_target": pre["library_size_target"],
        "intensity_floor": pre["intensity_floor"],
        "intensity_ceiling": pre["intensity_ceiling"],
        "min_expression": pre["min_expression"],
        "min_samples": pre["min_samples"],
        "n_top_genes": pre["n_top_genes"],
        "scaling": pre["scaling"],
    }


def model_params():
    return dict(config["model"])


def train_params(wildcards):
    """Training settings of one round (the retrain plan changes them per round)."""
    t = S.train
    return {
        **S.round_training(wildcards.round),
        "batch_size": t.batch_size,
        "weight_decay": t.weight_decay,
        "beta": t.beta,
        "kl_warmup_epochs": t.kl_warmup_epochs,
        "patience": t.patience,
        "device": t.device,
        "deterministic": t.deterministic,
        "checkpoint_every": t.checkpoint_every,
        **dp_train_params(),  # privacy.dp (privacy.smk)
        # only when not float32, so that float32 rounds trained before this key existed are kept
        **({"precision": str(t.precision)} if str(t.precision) != "32" else {}),
    }


def decide_params():
    return {
        "metric": config["retrain"]["metric"],
        "threshold": config["retrain"]["threshold"],
    }


def label_params():
    return {
        "condition": config["analysis"]["condition"],
        "labels": config["analysis"]["labels"],
    }


def risk_params():
    return {
        "case": config["analysis"]["case"],
        "control": config["analysis"]["control"],
        "latent_fdr": config["analysis"]["latent_fdr"],
    }


# -------------------------------------------------------------- resources
# What a training job asks the scheduler for (config section resources:). They
# never change results, so they are not params: switching the GPU on or off
# reruns nothing.
def train_gpus():
    """1 with resources.gpu (SLURM --gpus=1; locally counted against --resources gpu=N), else 0."""
    return 1 if config["resources"]["gpu"] else 0


def train_gpu_model():
    """GPU type with resources.gpu (SLURM --gpus=<model>:1); None leaves the resource unset."""
    res = config["resources"]
    return res["gpu_model"] if res["gpu"] and res["gpu_model"] else None


# ------------------------------------------------------------ new cohort
NEW = config["new_data"]["name"]


def new_data_location():
    new = config["new_data"]
    if new["geo"] and new["expression"]:
        config_error("new_data.geo", "set new_data.geo or new_data.expression, not both")
    return geo_series_url(new["geo"]) if new["geo"] else new["expression"]


def new_data_inputs(wildcards):
    new = config["new_data"]
    location = new_data_location()
    if not location:
        config_error("new_data.expression", "set it to the new cohort's matrix to run apply_new")
    return {
        "expression": input_file(location),
        **({"samples": input_file(new["samples"])} if new["samples"] else {}),
    }


def new_data_params(wildcards):
    """The new cohort's settings and the run's saved model, used as they are.

    The model and transform are params, not inputs: apply_new never re-runs decide,
    select_model or training (e.g. after a threshold change), it applies what the run
    selected. The model's checksum makes apply_new rerun when the run's model changes.
    """
    new = config["new_data"]
    model = f"{R}/model/model.pt"
    return {
        "model": model,
        "transform": f"{R}/preprocess/transform.json",
        "model_sha256": sha256sum(model) if Path(model).is_file() else None,
        "orientation": new["orientation"],
        "format": resolve_format(new["format"], new_data_location(), new["geo"]),
        "layer": new["layer"],
        "sha256": expected_sha256(new["sha256"]),
        "origins": {"expression": new_data_location(), "samples": new["samples"]},
        **pseudonym_params(new_cohort=NEW),
    }


def truth_file():
    return f"{R}/data/truth.tsv" if SIMULATE else []


def final_outputs():
    return [
        f"{R}/config.yaml",
        f"{R}/overview.html",
        f"{R}/summary.json",
        f"{R}/latent.tsv",
        f"{R}/reconstruction_error.tsv",
        f"{R}/risk_genes.tsv",
        f"{R}/plots/loss_curves.png",
        f"{R}/provenance.json",
        f"{R}/latent.h5ad",
    ]


def end_of_run_message():
    """The verdict, the warnings and the next commands (with the run's own config)."""
    from genovae.verdict import end_of_run_text

    summary = Path(f"{R}/summary.json")
    if not summary.is_file():
        return f"\ngenovae: run '{config['run']}': no summary yet ({summary} is missing).\n"
    with open(summary) as fh:
        text = end_of_run_text(json.load(fh), R, f"{R}/config.yaml")
    return f"\n{text}\n"


def landing_page():
    """The report's landing page: the verdict once the run has one, else a note saying it is missing."""
    if Path(f"{R}/report/landing.html").is_file():
        return "workflow/report/workflow.rst"
    return "workflow/report/workflow_unfinished.rst"
