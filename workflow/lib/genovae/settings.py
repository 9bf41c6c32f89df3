"""Typed settings: the one place that knows the configuration.

:func:`load_settings` takes the config as Snakemake hands it over and

1. types ``--config`` overrides by the schema (nested values arrive as strings),
2. fills every default from ``workflow/schemas/config.schema.yaml`` (the single source of
   defaults: nothing else in genovae states one),
3. checks types, ranges and unknown keys, with a message that names the one key at fault,
4. checks every rule that spans keys (split fractions, case with control, likelihood with
   value type, differential privacy with batch norm, ...),

and returns :class:`Settings`: one frozen dataclass per config section (``settings.model.latent_dim``)
plus the derived values and the params of each rule. The library trusts what it guarantees and
does not check it again. Every problem is a :class:`~genovae.errors.ConfigError`, printed as
``genovae config error: '<key>': <problem>``.

Light on purpose (yaml and jsonschema only): the Snakefile imports it at every start.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from functools import lru_cache
from pathlib import Path

import yaml

from .config import coerce_types
from .errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


@lru_cache(maxsize=1)
def schema():
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def section_defaults(section):
    """{key: default} of one config section, from the schema (library functions' defaults use it)."""
    return {k: copy.deepcopy(v.get("default")) for k, v in schema()["properties"][section]["properties"].items()}


# ------------------------------------------------------------------ validation
def _validator():
    import jsonschema

    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema_):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema_)

    return jsonschema.validators.extend(base, {"properties": set_defaults})(schema())


def _key(path):
    return ".".join(str(p) for p in path) or "(top level)"


def _error_message(error):
    """(key, problem) of a jsonschema error, naming one key and what it accepts."""
    key = _key(error.absolute_path)
    sub = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(sub.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f"{key}." if error.absolute_path else ""
        return f"{where}{extra[0]}", f"unknown key; {key} takes {', '.join(allowed)}"
    if error.validator == "enum":
        return key, f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    if error.validator == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return key, f"{error.instance!r} is not of type {' or '.join(types)}"
    if error.validator == "pattern":
        return key, f"{error.instance!r} does not match {error.validator_value}"
    return key, error.message


def validate(config):
    """The config with defaults filled and types checked (a new dict; ``config`` is not changed)."""
    cfg = coerce_types(copy.deepcopy(dict(config)), schema())
    errors = sorted(_validator().iter_errors(cfg), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    if errors:
        import jsonschema

        raise ConfigError(*_error_message(jsonschema.exceptions.best_match(errors)))
    # defaults inside defaults (e.g. data: {} gets source: file) need a second pass
    _validator().validate(cfg)
    return cfg


# ------------------------------------------------------------------ sections
def _dataclass(name, section_schema):
    """A frozen dataclass with one field per key of a schema section (nested sections nest)."""
    fields = []
    for key, sub in section_schema.get("properties", {}).items():
        kind = _dataclass(f"{name}_{key}", sub) if _is_section(sub) else object
        fields.append((key, kind))
    cls_name = "".join(part.capitalize() for part in name.split("_")) + "Settings"
    return dataclasses.make_dataclass(cls_name, fields, frozen=True, namespace={"asdict": dataclasses.asdict})


def _is_section(sub):
    return sub.get("type") == "object" and "properties" in sub and not sub.get("additionalProperties", False) is True


def _build(cls, values):
    kwargs = {}
    for f in dataclasses.fields(cls):
        v = values.get(f.name)
        kwargs[f.name] = _build(f.type, v) if dataclasses.is_dataclass(f.type) and isinstance(v, dict) else v
    return cls(**kwargs)


@lru_cache(maxsize=1)
def section_classes():
    return {
        key: _dataclass(key, sub) for key, sub in schema()["properties"].items() if _is_section(sub)
    }


# ------------------------------------------------------------------ cross-key rules
def check(cfg):
    """Every rule that spans keys; raises ConfigError naming the key to change."""
    data, model, pre, analysis = cfg["data"], cfg["model"], cfg["preprocess"], cfg["analysis"]
    simulate = data["source"] == "simulate"
    if not simulate:
        from .sources import carries_sample_sheet, resolve_format

        if data["geo"] and data["expression"]:
            raise ConfigError("data.geo", "set data.geo or data.expression, not both")
        if not (data["expression"] or data["geo"]):
            raise ConfigError("data.expression", "is required when data.source is 'file' (or data.geo)")
        location = data["expression"] or data["geo"]
        if not data["samples"] and not carries_sample_sheet(resolve_format(data["format"], location, data["geo"])):
            raise ConfigError(
                "data.samples",
                "is required unless the expression file carries a sample sheet "
                "(GEO series matrix, .h5ad; else set data.format)",
            )
    elif analysis["condition"] != "condition":
        raise ConfigError("analysis.condition", "simulated cohorts label samples in column 'condition'")
    value_type = "counts" if simulate else data["value_type"]
    if model["likelihood"] == "nb" and value_type != "counts":
        raise ConfigError("model.likelihood", "'nb' models raw counts: set data.value_type: counts")
    if model["likelihood"] == "bernoulli" and pre["scaling"] != "minmax":
        raise ConfigError("model.likelihood", "'bernoulli' needs values in [0, 1]: set preprocess.scaling: minmax")
    if pre["gene_selection"] == "seurat_v3" and value_type != "counts":
        raise ConfigError(
            "preprocess.gene_selection", "'seurat_v3' ranks raw counts: use mad or variance for log values and intensities"
        )
    split = pre["split"]
    total = split["train"] + split["val"] + split["test"]
    if abs(total - 1.0) > 1e-6:
        raise ConfigError("preprocess.split", f"train + val + test must be 1, not {total:g}")
    if analysis["condition"] in analysis["batch"]:
        raise ConfigError("analysis.batch", f"{analysis['condition']!r} is the condition: a batch column must differ")
    if simulate and set(analysis["batch"]) - {"batch"}:
        raise ConfigError("analysis.batch", "simulated cohorts label batches in column 'batch'")
    case, control = analysis["case"], analysis["control"]
    if (case is None) != (control is None):
        raise ConfigError("analysis.case", "set both case and control, or neither")
    if case is not None and case == control:
        raise ConfigError("analysis.control", "case and control must differ")
    if cfg["new_data"]["geo"] and cfg["new_data"]["expression"]:
        raise ConfigError("new_data.geo", "set new_data.geo or new_data.expression, not both")
    for key, name in (("run", cfg["run"]), ("new_data.name", cfg["new_data"]["name"])):
        if not is_folder_name(name):
            raise ConfigError(
                key, f"{name!r} is not a folder name: use letters, digits, _, - and ., not starting with a dot, no /"
            )
    if cfg["retrain"]["strategy"] == "search":
        from .search import declared_space

        try:
            space = declared_space(cfg["retrain"]["search"])
        except ValueError as exc:
            key, _, problem = str(exc).partition(": ")
            raise ConfigError(key, problem) from None
        if not space:
            raise ConfigError("retrain.search", "every setting is null, so the search has nothing to draw")
    _check_privacy(cfg)


def is_folder_name(name):
    """A name that makes exactly one new folder below its parent: not ``.``/``..``, no leading dot, no separator."""
    return isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", name) is not None


def output_root(config, rule):
    """The folder a rule's outputs must stay inside (checked by genovae.runner before the rule runs):
    ``results/{run}/``, for apply_new ``results/{run}/new/{name}/``. The id map (privacy.map_file)
    is written where the user says (never inside results/)."""
    root = Path("results") / config["run"]
    return root / "new" / config["new_data"]["name"] if rule == "apply_new" else root


def _check_privacy(cfg):
    from .pseudonym import check_outside_results, read_key

    privacy, dp = cfg["privacy"], cfg["privacy"]["dp"]
    for key in ("key_file", "map_file"):
        if privacy[key]:
            check_outside_results(privacy[key], f"privacy.{key}")
    if privacy["pseudonymize"]:
        read_key(privacy["key_file"], privacy["key_env"])
    elif privacy["map_file"]:
        raise ConfigError("privacy.map_file", "is only written with privacy.pseudonymize: true")
    if dp["enabled"]:
        if cfg["model"]["batch_norm"]:
            raise ConfigError(
                "model.batch_norm",
                "differentially private training (privacy.dp.enabled) needs model.batch_norm: false: "
                "BatchNorm mixes the samples of a batch, so per-sample gradients are not defined",
            )
        if str(cfg["train"]["precision"]) != "32":
            raise ConfigError("train.precision", "differentially private training runs in float32: set 32")
        total = dp["total_epsilon"]
        if total is not None and dp["epsilon"] > total:
            raise ConfigError(
                "privacy.dp.total_epsilon",
                f"{total:g} is below privacy.dp.epsilon = {dp['epsilon']:g}, the budget of one round",
            )


# ------------------------------------------------------------------ settings
class Settings:
    """The validated config: one frozen dataclass per section, derived values, rule params."""

    def __init__(self, cfg):
        self.config = cfg
        for key, cls in section_classes().items():
            setattr(self, key, _build(cls, cfg[key]))
        if self.retrain.stop_without_improvement is None:
            # a search's rounds are draws: a worse draw is no reason to stop; other strategies stop
            self.retrain = dataclasses.replace(
                self.retrain, stop_without_improvement=self.retrain.strategy != "search"
            )
        self.run = cfg["run"]
        self.results = f"results/{self.run}"
        self.simulate_source = cfg["data"]["source"] == "simulate"
        #: simulated cohorts are counts whatever data.value_type says
        self.value_type = "counts" if self.simulate_source else cfg["data"]["value_type"]

    # -- the retrain loop's plan, stated once (train and decide use it)
    def retrain_plan(self):
        t, r = self.train, self.retrain
        return {
            "epochs": t.epochs,
            "lr": t.lr,
            "seed": t.seed,
            "strategy": r.strategy,
            "epochs_factor": r.epochs_factor,
            "lr_factor": r.lr_factor,
            "max_rounds": r.max_rounds,
        }

    def round_training(self, round_):
        """Epochs, learning rate, seed and warm start of one round (genovae.loop.round_settings)."""
        from .loop import plan_round

        return plan_round(round_, self.retrain_plan())


    # -- where the inputs come from
    def expression_location(self):
        """data.expression, or the NCBI URL of the series matrix of data.geo."""
        from .sources import geo_series_url

        d = self.data
        return geo_series_url(d.geo) if d.geo else d.expression

    def new_data_location(self):
        from .sources import geo_series_url

        n = self.new_data
        return geo_series_url(n.geo) if n.geo else n.expression

    # -- the params of each rule: what a job depends on, so that Snakemake reruns it when they change
    def collect_params(self):
        from .sources import expected_sha256

        d, a = self.data, self.analysis
        origins = {} if self.simulate_source else {
            "expression": self.expression_location(), "samples": d.samples, "genes": d.genes,
        }
        return {
            "source": d.source,
            "format": d.format,
            "layer": d.layer,
            "sha256": expected_sha256(d.sha256),
            "origins": origins,
            "orientation": d.orientation,
            "value_type": self.value_type,
            "condition": a.condition,
            "case": a.case,
            "control": a.control,
            "split": self.split_fractions(),
            "intensity_floor": self.preprocess.intensity_floor,
            "intensity_ceiling": self.preprocess.intensity_ceiling,
            "simulate": self.simulate.asdict() if self.simulate_source else None,
            **self.pseudonym_params(),
        }

    def split_fractions(self):
        s = self.preprocess.split
        return {"train": s.train, "val": s.val, "test": s.test}

    def preprocess_params(self):
        p = self.preprocess
        return {
            "condition": self.analysis.condition,
            "value_type": self.value_type,
            "log_base": self.data.log_base,
            "split": self.split_fractions(),
            "seed": p.split.seed,
            "library_size_target": p.library_size_target,
            "intensity_floor": p.intensity_floor,
            "intensity_ceiling": p.intensity_ceiling,
            "min_expression": p.min_expression,
            "min_samples": p.min_samples,
            "n_top_genes": p.n_top_genes,
            "scaling": p.scaling,
            "gene_selection": p.gene_selection,
            # only when set: runs without covariates keep their params (and outputs)
            **({"batch": list(self.analysis.batch)} if self.analysis.batch else {}),
        }

    def model_params(self):
        return self.model.asdict()

    def train_params(self, round_):
        """Training settings of one round (the retrain plan changes them per round)."""
        t = self.train
        return {
            **self.round_training(round_),
            "batch_size": t.batch_size,
            "weight_decay": t.weight_decay,
            "beta": t.beta,
            "kl_warmup_epochs": t.kl_warmup_epochs,
            "patience": t.patience,
            "device": t.device,
            "deterministic": t.deterministic,
            "checkpoint_every": t.checkpoint_every,
            **self.dp_train_params(),
            # only when not float32, so that float32 rounds trained before this key existed are kept
            **({"precision": str(t.precision)} if str(t.precision) != "32" else {}),
        }

    def decide_params(self):
        return {"metric": self.retrain.metric, "threshold": self.retrain.threshold}

    def round_params(self, round_, previous_decision=None):
        """{"model": ..., "train": ...} of one round. With ``retrain.strategy: adaptive`` a round
        r > 1 adapts round r-1's settings to its diagnosis (``previous_decision``: round r-1's
        decision.json; genovae.loop.adaptive_round), with ``search`` it takes the settings the
        study drew in round r-1's decision (``next_settings``); both train from scratch."""
        model, train = self.model_params(), self.train_params(round_)
        strategy = self.retrain.strategy
        if strategy in ("adaptive", "search") and int(round_) > 1:
            if not previous_decision:
                raise ConfigError(
                    "retrain.strategy",
                    f"{strategy} round {round_} needs round {int(round_) - 1}'s decision with its diagnosis; "
                    "run the loop from round 1 (snakemake builds the rounds in order)",
                )
            key = "settings" if strategy == "adaptive" else "next_settings"
            if key not in previous_decision:
                # a decision written before this strategy was chosen (decide reruns and writes one that
                # has it): the plan's settings until then, so that planning the DAG does not fail
                return {"model": model, "train": {**train, "warm_start": False}}
            from .loop import adaptive_round, with_round_settings

            if strategy == "adaptive":
                model, train = adaptive_round(model, train, previous_decision)
            else:
                model, train = with_round_settings(model, train, previous_decision["next_settings"])
        return {"model": model, "train": train}

    def search_decide_params(self):
        """Rule decide, strategy ``search``: the space and the seed of the study's draws (else none)."""
        if self.retrain.strategy != "search":
            return {}
        return {"search": {"config": self.retrain.search.asdict(), "seed": self.train.seed}}

    def label_params(self):
        """The condition and the label columns whose latent structure is measured; the batch
        columns (analysis.batch) are labels too, with batch-mixing scores (only when set)."""
        a = self.analysis
        labels = list(a.labels) + [b for b in a.batch if b not in a.labels]
        return {"condition": a.condition, "labels": labels, **({"batch": list(a.batch)} if a.batch else {})}

    def risk_params(self):
        a = self.analysis
        return {
            "case": a.case,
            "control": a.control,
            "latent_fdr": a.latent_fdr,
            "risk_fdr": a.risk_fdr,
            "lfc_delta": a.lfc_delta,
            "vae_draws": a.vae_draws,
            "vae_permutations": a.vae_permutations,
            "seed": self.train.seed,
        }

    def apply_model_params(self):
        """Rule apply_model (the apply steps in one job): the params of the steps it runs."""
        a = self.analysis
        return {
            "labels": self.label_params(),
            "risk": self.risk_params(),
            **({"predict": self.predict_params()} if a.predict else {}),
            **({"loadings": self.loadings_params()} if a.loadings else {}),
        }

    def loadings_params(self):
        return {"seed": self.train.seed, "dpi": self.plots.dpi}

    def predict_params(self):
        return {"C": self.analysis.predict_C, "seed": self.train.seed}

    def generate_params(self):
        g = self.generate
        return {
            "condition_column": self.analysis.condition,
            "n_per_condition": g.n_per_condition,
            "seed": g.seed,
            "noise": g.noise,
        }

    def dp_train_params(self):
        """{"dp": ...} in the train params, only with DP on (non-DP rounds keep their params)."""
        dp = self.privacy.dp
        if not dp.enabled:
            return {}
        return {"dp": {"epsilon": dp.epsilon, "delta": dp.delta, "max_grad_norm": dp.max_grad_norm, "seed": dp.seed}}

    def dp_decide_params(self):
        """{"privacy": ...} for decide with DP on: the budget and how the next round would train."""
        dp = self.privacy.dp
        if not dp.enabled:
            return {}
        return {
            "privacy": {
                "epsilon": dp.epsilon,
                "delta": dp.delta,
                "total_epsilon": dp.total_epsilon,
                **self.retrain_plan(),
            }
        }

    def pseudonym_params(self, new_cohort=None):
        """{"privacy": ...} for the rules that read sample ids, only with pseudonymisation on.

        The key itself is never a param (params are recorded by Snakemake): the rule reads it
        again from the file or environment variable; ``key_id``, a public fingerprint of the key,
        makes a new key rerun those rules. A new cohort's map (apply_new) goes beside the training
        cohort's: ids.tsv -> ids.<name>.tsv.
        """
        import os

        from .pseudonym import key_id, read_key

        p = self.privacy
        if not p.pseudonymize:
            return {}
        map_file = p.map_file
        if map_file and new_cohort:
            root, ext = os.path.splitext(map_file)
            map_file = f"{root}.{new_cohort}{ext or '.tsv'}"
        return {
            "privacy": {
                "pseudonymize": True,
                "key_file": p.key_file,
                "key_env": p.key_env,
                "map_file": map_file,
                "key_id": key_id(read_key(p.key_file, p.key_env)),
            }
        }

    def new_data_params(self, model, transform):
        """apply_new: the new cohort's settings and the run's saved model, used as they are."""
        from pathlib import Path

        from .io import sha256sum
        from .sources import expected_sha256, resolve_format

        n = self.new_data
        location = self.new_data_location()
        return {
            "model": model,
            "transform": transform,
            "model_sha256": sha256sum(model) if Path(model).is_file() else None,
            "orientation": n.orientation,
            "format": resolve_format(n.format, location, n.geo),
            "layer": n.layer,
            "sha256": expected_sha256(n.sha256),
            "origins": {"expression": location, "samples": n.samples},
            **self.pseudonym_params(new_cohort=n.name),
        }


def load_settings(config):
    """Validate ``config`` (defaults, types, cross-key rules) and return its :class:`Settings`."""
    cfg = validate(config)
    check(cfg)
    return Settings(cfg)


# ------------------------------------------------------------------ docs
#: config/README.md holds hand-written text above this line and the generated tables below it
GENERATED_MARKER = "<!-- generated from workflow/schemas/config.schema.yaml: python3 -m genovae.settings -->"


def reference_markdown():
    """config/README.md's key tables, generated from the schema's descriptions and defaults."""
    out = [GENERATED_MARKER]
    for key, sub in schema()["properties"].items():
        if _is_section(sub):
            out.append(f"\n## `{key}`\n")
            if sub.get("description"):
                out.append(" ".join(sub["description"].split()) + "\n")
            out.append("| key | default | meaning |\n| --- | --- | --- |")
            out.extend(_rows(sub, ""))
        else:
            out.append(f"\n## `{key}` (top level)\n")
            out.append("| key | default | meaning |\n| --- | --- | --- |")
            out.append(_row(key, sub))
    return "\n".join(out) + "\n"


def _rows(section, prefix):
    rows = []
    for key, sub in section.get("properties", {}).items():
        if _is_section(sub) and sub.get("properties"):
            rows.extend(_rows(sub, f"{prefix}{key}."))
        else:
            rows.append(_row(prefix + key, sub))
    return rows


def _row(key, sub):
    default = sub.get("default")
    shown = "`null`" if default is None else f"`{yaml.safe_dump(default, default_flow_style=True).strip()}`"
    shown = shown.replace("\n...", "").replace("|", "\\|")
    allowed = f" (one of {', '.join(f'`{v}`' for v in sub['enum'])})" if "enum" in sub else ""
    text = " ".join(str(sub.get("description", "")).split()).replace("|", "\\|")
    return f"| `{key}` | {shown} | {text}{allowed} |"


def undocumented_keys():
    """Keys of the schema without a description (every key must have one)."""
    missing = []

    def walk(section, prefix):
        for key, sub in section.get("properties", {}).items():
            if _is_section(sub) and sub.get("properties"):
                walk(sub, f"{prefix}{key}.")
            elif not sub.get("description"):
                missing.append(prefix + key)

    walk(schema(), "")
    return missing


if __name__ == "__main__":  # regenerate config/README.md's tables
    readme = SCHEMA_PATH.parents[2] / "config" / "README.md"
    head = readme.read_text().split(GENERATED_MARKER)[0]
    readme.write_text(head + reference_markdown())
