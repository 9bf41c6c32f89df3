# Privacy settings (config section privacy:) and the synthetic cohort (generate:):
# checks before anything runs, and the params that carry them to the rules. Pseudonymisation happens at the
# source (collect, simulate, apply_new); DP-SGD in train; the privacy budget
# across retrain rounds in decide (see workflow/lib/genovae/privacy.py).
import os

from genovae.pseudonym import check_outside_results, key_id, read_key  # noqa: E402

PRIVACY = config["privacy"]
DP = PRIVACY["dp"]


def check_privacy():
    """Refuse inconsistent privacy settings with the key's name, before any job runs."""
    from genovae.errors import GenovaeError

    for key in ("key_file", "map_file"):
        if PRIVACY[key]:
            try:
                check_outside_results(PRIVACY[key], f"privacy.{key}")
            except GenovaeError as exc:
                raise WorkflowError(f"genovae config error: {exc}")
    if PRIVACY["pseudonymize"]:
        try:
            read_key(PRIVACY["key_file"], PRIVACY["key_env"])
        except GenovaeError as exc:
            raise WorkflowError(f"genovae config error: {exc}")
    elif PRIVACY["map_file"]:
        config_error("privacy.map_file", "is only written with privacy.pseudonymize: true")
    if DP["enabled"]:
        if config["model"]["batch_norm"]:
            config_error(
                "model.batch_norm",
                "differentially private training (privacy.dp.enabled) needs model.batch_norm: false: "
                "BatchNorm mixes the samples of a batch, so per-sample gradients are not defined",
            )
        if str(config["train"].get("precision", "32")) != "32":
            config_error(
                "train.precision", "differentially private training runs in float32: set 32"
            )
        total = DP["total_epsilon"]
        if total is not None and DP["epsilon"] > total:
            config_error(
                "privacy.dp.total_epsilon",
                f"{total:g} is below privacy.dp.epsilon = {DP['epsilon']:g}, the budget of one round",
            )


check_privacy()


def pseudonym_params(new_cohort=None):
    """{"privacy": ...} for the rules that read sample ids, only with pseudonymisation on.

    The key itself is never a param (params are recorded by Snakemake): the rule
    reads it again from the file or environment variable; ``key_id``, a public
    fingerprint of the key, makes a new key rerun those rules. A new cohort's
    map (apply_new) goes beside the training cohort's: ids.tsv -> ids.<name>.tsv.
    """
    if not PRIVACY["pseudonymize"]:
        return {}
    map_file = PRIVACY["map_file"]
    if map_file and new_cohort:
        root, ext = os.path.splitext(map_file)
        map_file = f"{root}.{new_cohort}{ext or '.tsv'}"
    key = read_key(PRIVACY["key_file"], PRIVACY["key_env"])
    return {
        "privacy": {
            "pseudonymize": True,
            "key_file": PRIVACY["key_file"],
            "key_env": PRIVACY["key_env"],
            "map_file": map_file,
            "key_id": key_id(key),
        }
    }


def pseudonym_map_output():
    """The id map as a declared output of collect/simulate (when written)."""
    if PRIVACY["pseudonymize"] and PRIVACY["map_file"]:
        return {"id_map": PRIVACY["map_file"]}
    return {}


def dp_train_params():
    """{"dp": ...} in the train params, only with DP on (non-DP rounds keep their params)."""
    if not DP["enabled"]:
        return {}
    return {
        "dp": {
            "epsilon": DP["epsilon"],
            "delta": DP["delta"],
            "max_grad_norm": DP["max_grad_norm"],
            "seed": DP["seed"],
        }
    }


def dp_decide_params():
    """{"privacy": ...} for decide with DP on: the budget and how to plan the next round."""
    if not DP["enabled"]:
        return {}
    t, rt = config["train"], config["retrain"]
    return {
        "privacy": {
            "epsilon": DP["epsilon"],
            "delta": DP["delta"],
            "total_epsilon": DP["total_epsilon"],
            "max_rounds": rt["max_rounds"],
            "epochs": t["epochs"],
            "lr": t["lr"],
            "seed": t["seed"],
            "strategy": rt["strategy"],
            "epochs_factor": rt["epochs_factor"],
            "lr_factor": rt["lr_factor"],
        }
    }


def dp_round_infos(wildcards):
    """With DP, decide of round r reads the training info (privacy spent) of rounds 1..r."""
    if not DP["enabled"]:
        return []
    return [f"{R}/rounds/{r}/train_info.json" for r in range(1, int(wildcards.round) + 1)]


# ------------------------------------------------------ synthetic cohort
def generate_params():
    g = config["generate"]
    return {
        "condition_column": config["analysis"]["condition"],
        "n_per_condition": g["n_per_condition"],
        "seed": g["seed"],
        "noise": g["noise"],
    }


def synthetic_metrics():
    """generate's metrics as an input of summarize, with generate.enabled."""
    return f"{R}/synthetic/metrics.json" if config["generate"]["enabled"] else []
