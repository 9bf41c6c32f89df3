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
from genovae.config import coerce_types  # noqa: E402
from genovae.rounds import loop_continues, round_settings  # noqa: E402

# nested --config overrides arrive as strings: type them by the schema, then validate
with open(Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml") as fh:
    config.update(coerce_types(config, yaml.safe_load(fh)))
validate(config, "../schemas/config.schema.yaml")

R = f"results/{config['run']}"
SIMULATE = config["data"]["source"] == "simulate"


def config_error(key, problem):
    raise WorkflowError(f"genovae config error: '{key}': {problem}")


def check_config():
    data, model, pre = config["data"], config["model"], config["preprocess"]
    if not SIMULATE:
        for key in ("expression", "samples"):
            if not data[key]:
                config_error(f"data.{key}", "is required when data.source is 'file'")
    elif config["analysis"]["condition"] != "condition":
        config_error("analysis.condition", "simulated cohorts label samples in column 'condition'")
    if model["likelihood"] == "nb" and value_type() != "counts":
        config_error("model.likelihood", "'nb' models raw counts: set data.value_type: counts")
    if model["likelihood"] == "bernoulli" and pre["scaling"] != "minmax":
        config_error(
            "model.likelihood",
            "'bernoulli' needs values in [0, 1]: set preprocess.scaling: minmax",
        )
    split = pre["split"]
    total = split["train"] + split["val"] + split["test"]
    if abs(total - 1.0) > 1e-6:
        config_error("preprocess.split", f"train + val + test must be 1, not {total:g}")
    case, control = config["analysis"]["case"], config["analysis"]["control"]
    if (case is None) != (control is None):
        config_error("analysis.case", "set both case and control, or neither")


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


def value_type():
    return "counts" if SIMULATE else config["data"]["value_type"]


check_config()
validate_sample_sheet()


# ----------------------------------------------------------------- inputs
def collect_inputs():
    if SIMULATE:
        return {}
    data = config["data"]
    inputs = {"expression": data["expression"], "samples": data["samples"]}
    if data["genes"]:
        inputs["genes"] = data["genes"]
    return inputs


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


# ----------------------------------------------------------------- params
def collect_params():
    return {
        "source": config["data"]["source"],
        "orientation": config["data"]["orientation"],
        "value_type": value_type(),
        "condition": config["analysis"]["condition"],
        "case": config["analysis"]["case"],
        "control": config["analysis"]["control"],
        "split": split_fractions(),
        "simulate": config["simulate"] if SIMULATE else None,
    }


def split_fractions():
    s = config["preprocess"]["split"]
    return {k: s[k] for k in ("train", "val", "test")}


def preprocess_params():
    pre = config["preprocess"]
    return {
        "condition": config["analysis"]["condition"],
        "value_type": value_type(),
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
    """Training settings of one round (the retrain strategy changes them per round)."""
    t, rt = config["train"], config["retrain"]
    settings = round_settings(
        wildcards.round,
        epochs=t["epochs"],
        lr=t["lr"],
        seed=t["seed"],
        strategy=rt["strategy"],
        epochs_factor=rt["epochs_factor"],
        lr_factor=rt["lr_factor"],
    )
    return {
        **settings,
        "batch_size": t["batch_size"],
        "weight_decay": t["weight_decay"],
        "beta": t["beta"],
        "kl_warmup_epochs": t["kl_warmup_epochs"],
        "patience": t["patience"],
        "device": t["device"],
        "deterministic": t["deterministic"],
    }


def decide_params():
    return {
        "metric": config["retrain"]["metric"],
        "threshold": config["retrain"]["threshold"],
    }


def risk_params():
    return {
        "case": config["analysis"]["case"],
        "control": config["analysis"]["control"],
        "latent_fdr": config["analysis"]["latent_fdr"],
    }


def truth_file():
    return f"{R}/data/truth.tsv" if SIMULATE else []


def final_outputs():
    return [
        f"{R}/summary.json",
        f"{R}/latent.tsv",
        f"{R}/reconstruction_error.tsv",
        f"{R}/risk_genes.tsv",
        f"{R}/plots/loss_curves.png",
    ]
