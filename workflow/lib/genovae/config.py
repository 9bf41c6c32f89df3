"""Typing of command-line config overrides.

``snakemake --config model='{latent_dim: 8}'`` parses nested values with
YAML's BaseLoader, so every nested scalar arrives as a string ('8'). Before
validation, :func:`coerce_types` converts such strings to the type the JSON
schema asks for (integer, number, boolean, null), so that overrides work and
are still type-checked: a value that does not parse as the expected type stays
a string and fails validation with a message naming the key.
"""

from __future__ import annotations

import yaml

_PY = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def _types(schema):
    t = schema.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def _parse_scalar(text, types):
    if "null" in types and text.strip() in ("null", "~", "None", ""):
        return None
    if "string" in types:
        # e.g. train.threads (an integer or 'auto'): '1' is the integer, 'auto' stays text
        others = [t for t in types if t != "string"]
        value = _parse_scalar(text, others) if others else text
        return text if isinstance(value, str) else value
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if "number" in types and isinstance(value, str):
        try:
            value = float(text)
        except ValueError:
            pass
    for t in types:
        py = _PY.get(t)
        if py is None:
            continue
        if isinstance(value, bool) and t in ("integer", "number"):
            continue
        if isinstance(value, py):
            return value
    return text


def coerce_types(value, schema):
    """Return ``value`` with string scalars converted to the schema's types."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: coerce_types(v, props.get(k, {})) for k, v in value.items()}
    if isinstance(value, list):
        return [coerce_types(v, schema.get("items", {})) for v in value]
    if isinstance(value, str):
        types = _types(schema)
        if value in schema.get("enum", ()):  # e.g. train.precision '32', a value as written
            return value
        if types and types != ["string"]:
            return _parse_scalar(value, types)
    return value


def write_run_config(config, out):
    """The config a run used, every default filled in, as YAML (``results/{run}/config.yaml``).

    Passed back with ``--configfile``, it rebuilds exactly this run: hints and docs point at it
    so that a report or ``apply_new`` never picks up another run's (e.g. the demo's) settings.
    """
    from . import io

    text = (
        "# The config this run used (defaults filled in), written by genovae.\n"
        "# Reuse it: snakemake --configfile <this file> ...\n"
        + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    )
    io.write_text(out, text)
