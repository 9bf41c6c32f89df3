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
    split = pre["split"]
    total = split["train"] + split["val"] + split["test"]
    if abs(total - 1.0) > 1e-6:
        raise ConfigError("preprocess.split", f"train + val + test must be 1, not {total:g}")
    case, control = analysis["case"], analysis["control"]
    if (case is None) != (control is None):
        raise ConfigError("analysis.case", "set both case and control, or neither")
    if case is not None and case == control:
        raise ConfigError("analysis.control", "case and control must differ")
    if cfg["new_data"]["geo"] and cfg["new_data"]["expression"]:
        raise ConfigError("new_data.geo", "set new_data.geo or new_data.expression, not both")
    _check_privacy(cfg)


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
        """Epochs, learning rate, seed and warm start of one round (genovae.rounds.round_settings)."""
        from .rounds import round_settings

        plan = self.retrain_plan()
        plan.pop("max_rounds")
        return round_settings(round_, **plan)


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
