"""Consistency of the conda environments, requirements.txt and the rule declarations."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))
RULE_FILES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
CONDA_TO_PIP = {"pytorch": "torch"}


def requirement_pins():
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)\s*==\s*([^\s;]+)", line)
        assert m, f"requirements.txt: {line!r} is not an exact pin (name==version)"
        pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def conda_pins(env):
    """{pip name: version} of the exactly pinned conda dependencies (python excluded)."""
    out = {}
    for dep in env["dependencies"]:
        if not isinstance(dep, str):
            continue  # a nested pip: section
        dep = dep.split("::")[-1].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(?:==?\s*([^\s=<>!,]+))?(.*)", dep)
        assert m, dep
        name, version = m.group(1).lower(), m.group(2)
        if name == "python" or version is None:
            continue
        out[CONDA_TO_PIP.get(name, name)] = version
    return out


def test_envs_exist():
    names = {p.name for p in ENVS}
    assert {"data.yaml", "model.yaml", "report.yaml"} <= names


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_parses(path):
    env = yaml.safe_load(path.read_text())
    assert isinstance(env, dict)
    assert isinstance(env.get("channels"), list) and env["channels"]
    assert isinstance(env.get("dependencies"), list) and env["dependencies"]
    assert any(
        isinstance(d, str) and d.split("=")[0].strip() == "python" for d in env["dependencies"]
    )


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_pins_match_requirements(path):
    env = yaml.safe_load(path.read_text())
    reqs = requirement_pins()
    pins = conda_pins(env)
    assert pins, f"{path.name} pins no package"
    for name, version in pins.items():
        assert name in reqs, f"{path.name}: {name} is pinned but not in requirements.txt"
        assert (
            version == reqs[name]
        ), f"{path.name}: {name}={version} but requirements.txt has {reqs[name]}"


def test_every_env_package_is_pinned():
    for path in ENVS:
        env = yaml.safe_load(path.read_text())
        for dep in env["dependencies"]:
            if isinstance(dep, str):
                assert re.search(r"=\s*\d", dep), f"{path.name}: {dep!r} has no version pin"


def test_requirements_pin_torch_exactly():
    text = (ROOT / "requirements.txt").read_text()
    assert re.search(r"(?m)^torch==2\.13\.0\s*$", text)
    assert requirement_pins()["torch"] == "2.13.0"


def test_model_env_has_pytorch_of_that_version():
    env = yaml.safe_load((ROOT / "envs" / "model.yaml").read_text())
    assert conda_pins(env).get("torch") == "2.13.0"


# ------------------------------------------------------------------ rules
RULE_RE = re.compile(r"^(?P<indent>[ \t]*)(?:rule|checkpoint)\s+(?P<name>\w+)\s*:", re.M)


def rule_blocks():
    blocks = []
    for path in RULE_FILES:
        text = path.read_text()
        heads = list(RULE_RE.finditer(text))
        for i, m in enumerate(heads):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            blocks.append((path.name, m.group("name"), text[m.end() : end]))
    return blocks


BLOCKS = rule_blocks()


def test_rules_found():
    names = {name for _, name, _ in BLOCKS}
    assert {"preprocess", "train", "evaluate", "decide", "select_model"} <= names
    assert len(names) == len(BLOCKS), "duplicate rule names"


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b[0]}:{b[1]}")
def test_rule_has_log_benchmark_conda(block):
    fname, name, body = block
    for keyword in ("log", "benchmark", "conda"):
        assert re.search(
            rf"(?m)^[ \t]+{keyword}\s*:", body
        ), f"{fname}: rule {name} has no {keyword}:"


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b[0]}:{b[1]}")
def test_rule_conda_env_exists(block):
    fname, name, body = block
    m = re.search(r"(?m)^[ \t]+conda\s*:\s*\n\s*[\"']([^\"']+)[\"']", body)
    assert m, f"{fname}: rule {name}: conda: is not a plain path"
    env = (ROOT / "workflow" / "rules" / m.group(1)).resolve()
    assert env.exists(), f"{fname}: rule {name}: {m.group(1)} does not exist"
    assert env.parent == (ROOT / "envs").resolve()
