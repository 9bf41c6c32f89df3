"""Consistency of the conda environments, requirements.txt and the rule declarations."""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))
RULE_FILES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
CONDA_TO_PIP = {"pytorch": "torch", "snakemake-minimal": "snakemake"}


def requirement_pins():
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)\s*==\s*([^\s;]+)", line)
        assert m, f"requirements.txt: {line!r} is not an exact pin (name==version)"
        name = m.group(1).split("[")[0]  # snakemake[reports]: the package is snakemake
        pins[name.lower().replace("_", "-")] = m.group(2)
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


# ------------------------------------------------------- imports against envs
# Each rule's conda env must provide the Python packages its script needs: the imports of the script
# and of the genovae code it runs, found statically (ast). A genovae module's module-level imports
# count once it is imported; a function's or class's own (lazy) imports count once the script
# reaches it through a reference, followed across genovae modules.
LIB = ROOT / "workflow" / "lib"
SCRIPTS = ROOT / "workflow" / "scripts"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
#: import name -> conda-forge package, where they differ
IMPORT_TO_CONDA = {
    "torch": "pytorch",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "adjustText": "adjusttext",
    "snakemake": "snakemake-minimal",
}
#: imports that come with another package (scikit-learn depends on joblib)
PROVIDED_BY = {"joblib": "scikit-learn"}
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class PyModule:
    """One genovae module or rule script: its imports and top-level definitions."""

    def __init__(self, path, name):
        self.name = name
        self.package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        self.tree = ast.parse(path.read_text())
        self.defs = {n.name: n for n in self.tree.body if isinstance(n, SCOPES)}
        # every local name an import binds anywhere in the file -> its absolute dotted name
        self.aliases = dict(kv for n in ast.walk(self.tree) for kv in self.imports(n))
        # what runs on import: the module body without the bodies of its functions and classes
        self.top = [n for n in self.tree.body if not isinstance(n, SCOPES)]
        self.top += [d for n in self.tree.body if isinstance(n, SCOPES) for d in n.decorator_list]
        # names a package imports from its modules on first use (genovae.sources' _LAZY: name -> module)
        try:
            self.lazy = self.constant("_LAZY")
        except KeyError:
            self.lazy = {}

    def constant(self, name):
        """The value of a module-level literal assignment ``name = ...``."""
        for node in self.tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
                return ast.literal_eval(node.value)
        raise KeyError(name)

    def imports(self, node):
        if isinstance(node, ast.Import):
            return [(a.asname or a.name.split(".")[0], a.name) for a in node.names]
        if isinstance(node, ast.ImportFrom):
            module = node.module
            if node.level:
                parts = self.package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{module}" if module else base
            return [(a.asname or a.name, f"{module}.{a.name}") for a in node.names]
        return []

    def scope(self, nodes):
        """(absolute names imported, dotted names referenced) in ``nodes``."""
        imported, referenced = set(), set()
        for node in nodes:
            for n in ast.walk(node):
                imported.update(absolute for _, absolute in self.imports(n))
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
                    if n.value.id in self.aliases:
                        referenced.add(f"{self.aliases[n.value.id]}.{n.attr}")
                elif isinstance(n, ast.Name):
                    if n.id in self.defs:
                        referenced.add(f"{self.name}.{n.id}")
                    elif n.id in self.aliases:
                        referenced.add(self.aliases[n.id])
        return imported, referenced


def script_packages(script):
    """Top-level import names of the non-standard-library packages a rule script needs."""
    modules = {"__script__": PyModule(script, "__script__")}

    def module(dotted):
        if dotted not in modules:
            if dotted == "_bootstrap":
                path = SCRIPTS / "_bootstrap.py"
            else:
                path = LIB.joinpath(*dotted.split("."))
                path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
            modules[dotted] = PyModule(path, dotted) if path.is_file() else None
        return modules[dotted]

    def resolve(name):
        """The (module, None) and (module, definition) units a genovae name refers to."""
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            target = ".".join(parts[:i])
            mod = module(target)
            if mod is None:
                continue
            units, rest = [(target, None)], parts[i:]
            if rest and rest[0] in mod.defs:
                units.append((target, rest[0]))
            elif rest and mod.aliases.get(rest[0], name) != name:  # re-exported from elsewhere
                units += resolve(mod.aliases[rest[0]])
            elif rest and rest[0] in mod.lazy:  # imported on first use (a package's __getattr__)
                units += resolve(f"{target}.{mod.lazy[rest[0]]}.{rest[0]}")
            return units
        return []

    needed, seen = set(), set()
    # the script runs as a whole (its step function included)
    todo = [("__script__", None)] + [("__script__", d) for d in modules["__script__"].defs]
    while todo:
        unit = todo.pop()
        if unit in seen:
            continue
        seen.add(unit)
        mod = modules[unit[0]]
        imported, referenced = mod.scope(mod.top if unit[1] is None else [mod.defs[unit[1]]])
        if unit == ("genovae.provenance", "versions"):
            # provenance.json records these packages' versions (importlib.metadata)
            needed.update(PyModule(LIB / "genovae" / "provenance.py", "p").constant("PACKAGES"))
        for name in imported | referenced:
            top = name.split(".")[0]
            if top in ("genovae", "_bootstrap") or (top == "__script__" and name != "__script__"):
                # importing runs a module's body; its functions run when referenced
                todo += [u for u in resolve(name) if name in referenced or u[1] is None]
            elif name in imported and top not in STDLIB and top != "__script__":
                needed.add(top)
    return needed


def env_packages(path):
    names = set()
    for dep in yaml.safe_load(path.read_text())["dependencies"]:
        if isinstance(dep, str):
            names.add(re.split(r"[\s=<>!]", dep.split("::")[-1].strip(), maxsplit=1)[0].lower())
    return names


def rule_script_and_env(body):
    conda = re.search(r"(?m)^[ \t]+conda\s*:\s*\n\s*[\"']([^\"']+)[\"']", body)
    script = re.search(r"(?m)^[ \t]+script\s*:\s*\n\s*[\"']([^\"']+)[\"']", body)
    rules_dir = ROOT / "workflow" / "rules"
    return (
        (rules_dir / script.group(1)).resolve() if script else None,
        (rules_dir / conda.group(1)).resolve() if conda else None,
    )


def test_import_analysis_follows_genovae_code():
    """The analysis sees through the bootstrap and genovae's modules, lazily imported packages included."""
    needed = script_packages(SCRIPTS / "train.py")
    assert {"torch", "numpy", "pandas", "yaml"} <= needed
    assert "matplotlib" not in needed  # plots are not drawn by training
    assert {"matplotlib", "adjustText"} <= script_packages(SCRIPTS / "plots.py")
    # through genovae.sources' lazily imported readers: collect reads .h5ad with anndata
    assert {"anndata", "h5py", "pyarrow"} <= script_packages(SCRIPTS / "collect.py")


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b[0]}:{b[1]}")
def test_rule_env_provides_what_its_script_imports(block):
    fname, name, body = block
    script, env = rule_script_and_env(body)
    if script is None or env is None:
        pytest.skip(f"rule {name} runs no Python script in a conda env")
    listed = env_packages(env)
    needed = script_packages(script)
    missing = sorted(
        IMPORT_TO_CONDA.get(n, n)
        for n in needed
        if PROVIDED_BY.get(n, IMPORT_TO_CONDA.get(n, n).lower()) not in listed
        and IMPORT_TO_CONDA.get(n, n).lower() not in listed
    )
    assert not missing, f"{fname}: rule {name} ({script.name}) runs in {env.name}, which lacks {missing}"
