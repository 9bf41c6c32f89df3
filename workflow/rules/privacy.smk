# Privacy settings (config section privacy:) and the synthetic cohort (generate:):
# the params that carry them to the rules. Pseudonymisation happens at the
# source (collect, simulate, apply_new); DP-SGD in train; the privacy budget
# across retrain rounds in decide (see workflow/lib/genovae/privacy.py).
import os

from genovae.pseudonym import key_id, read_key  # noqa: E402

# the privacy settings' rules (key readable, map outside results/, DP without batch
# norm, ...) are checked with the rest of the config in genovae.settings
PRIVACY = config["privacy"]
DP = PRIVACY["dp"]


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
    return {
        "privacy": {
            "epsilon": DP["epsilon"],
            "delta": DP["delta"],
            "total_epsilon": DP["total_epsilon"],
            **S.retrain_plan(),  # how the next round would train (its privacy cost)
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
