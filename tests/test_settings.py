"""genovae.settings: the one place that owns defaults, types and cross-key rules of the config."""

import copy

import pytest
import yaml

from conftest import REPO
from genovae import settings
from genovae.errors import ConfigError
from genovae.settings import GENERATED_MARKER, load_settings, reference_markdown, schema, undocumented_keys

SIM = {"data": {"source": "simulate"}}


def defaults(node):
    """{key: default} of a schema section, nested sections recursively."""
    out = {}
    for key, sub in node.get("properties", {}).items():
        if settings._is_section(sub):
            out[key] = defaults(sub)
        else:
            out[key] = sub.get("default")
    return out


def test_every_default_comes_from_the_schema():
    s = load_settings(SIM)
    want = defaults(schema())
    for section in settings.section_classes():
        got = getattr(s, section).asdict()
        expected = copy.deepcopy(want[section])
        if section == "data":
            expected["source"] = "simulate"
        if section == "retrain":  # null resolves by the strategy (tests/test_search.py)
            assert expected["stop_without_improvement"] is None
            expected["stop_without_improvement"] = True
        assert got == expected, section
    assert s.config["run"] == want["run"]


def test_sections_are_typed_and_frozen():
    s = load_settings({**SIM, "model": {"latent_dim": "8"}, "preprocess": {"split": {"seed": "3"}}})
    assert s.model.latent_dim == 8 and s.preprocess.split.seed == 3  # --config strings typed by the schema
    with pytest.raises(Exception):
        s.model.latent_dim = 4
    assert s.value_type == "counts"  # simulated cohorts are counts
    assert s.results == "results/demo"


def test_demo_config_loads():
    s = load_settings(yaml.safe_load((REPO / "config/config.yaml").read_text()))
    assert s.analysis.condition == "tumour_type" and not s.simulate_source


def test_retrain_plan_stated_once():
    s = load_settings({**SIM, "train": {"epochs": 100, "lr": 0.01, "seed": 5},
                       "retrain": {"strategy": "warm_start", "epochs_factor": 2.0, "lr_factor": 0.5,
                                   "max_rounds": 4}})
    assert s.retrain_plan() == {"epochs": 100, "lr": 0.01, "seed": 5, "strategy": "warm_start",
                                "epochs_factor": 2.0, "lr_factor": 0.5, "max_rounds": 4}
    assert s.round_training(1) == {"epochs": 100, "lr": 0.01, "seed": 5, "warm_start": False}
    assert s.round_training(3) == {"epochs": 400, "lr": 0.0025, "seed": 7, "warm_start": True}


FILE = {"data": {"expression": "x.tsv", "samples": "s.tsv"}}
BAD = [
    ({**SIM, "train": {"epochs": "many"}}, "train.epochs", "not of type integer"),
    ({**SIM, "model": {"latnt_dim": 4}}, "model.latnt_dim", "unknown key"),
    ({**SIM, "modle": {}}, "modle", "unknown key"),
    ({**SIM, "retrain": {"metric": "accuracy"}}, "retrain.metric", "not one of"),
    ({**SIM, "preprocess": {"scaling": "rank"}}, "preprocess.scaling", "not one of"),
    ({**SIM, "preprocess": {"gene_selection": "hvg"}}, "preprocess.gene_selection", "not one of"),
    ({**FILE, "preprocess": {"gene_selection": "seurat_v3"}}, "preprocess.gene_selection", "raw counts"),
    ({**SIM, "data": {"source": "simulate", "orientation": "rows"}}, "data.orientation", "not one of"),
    ({**SIM, "data": {"source": "simulate", "value_type": "raw"}}, "data.value_type", "not one of"),
    ({**SIM, "data": {"source": "simulate", "format": "xlsx"}}, "data.format", "not one of"),
    ({**SIM, "retrain": {"strategy": "restart"}}, "retrain.strategy", "not one of"),
    ({**SIM, "run": "a/b"}, "run", "does not match"),
    ({**SIM, "preprocess": {"split": {"train": 0.5, "val": 0.2, "test": 0.2}}}, "preprocess.split", "must be 1"),
    ({**SIM, "analysis": {"case": "a"}}, "analysis.case", "set both"),
    ({**SIM, "analysis": {"control": "a"}}, "analysis.case", "set both"),
    ({**SIM, "analysis": {"case": "a", "control": "a"}}, "analysis.control", "must differ"),
    ({**FILE, "model": {"likelihood": "nb"}}, "model.likelihood", "raw counts"),
    ({**SIM, "model": {"likelihood": "bernoulli"}}, "model.likelihood", "minmax"),
    ({"data": {"samples": "s.tsv"}}, "data.expression", "is required"),
    ({"data": {"expression": "x.tsv"}}, "data.samples", "is required"),
    ({"data": {"expression": "x.tsv", "geo": "GSE1", "samples": "s.tsv"}}, "data.geo", "not both"),
    ({**SIM, "new_data": {"expression": "n.tsv", "geo": "GSE2"}}, "new_data.geo", "not both"),
    ({**SIM, "privacy": {"dp": {"enabled": True}}}, "model.batch_norm", "per-sample gradients"),
    ({**SIM, "model": {"batch_norm": False}, "train": {"precision": "bf16"}, "privacy": {"dp": {"enabled": True}}},
     "train.precision", "float32"),
    ({**SIM, "model": {"batch_norm": False}, "privacy": {"dp": {"enabled": True, "epsilon": 3, "total_epsilon": 1}}},
     "privacy.dp.total_epsilon", "budget of one round"),
    ({**SIM, "privacy": {"map_file": "ids.tsv"}}, "privacy.map_file", "pseudonymize"),
]


@pytest.mark.parametrize("cfg,key,problem", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_config_names_its_key(cfg, key, problem):
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert err.value.key == key
    assert problem in err.value.problem
    assert str(err.value).startswith(f"config error: '{key}': ")
    assert len(str(err.value)) < 300  # a sentence, not the section's schema


def test_h5ad_and_geo_need_no_sample_sheet():
    assert load_settings({"data": {"expression": "cohort.h5ad"}}).data.samples is None
    assert load_settings({"data": {"geo": "GSE12345"}}).data.geo == "GSE12345"


def test_every_key_is_described_and_config_readme_is_generated_from_the_schema():
    assert undocumented_keys() == []
    readme = (REPO / "config" / "README.md").read_text()
    assert GENERATED_MARKER in readme
    generated = readme.split(GENERATED_MARKER, 1)[1]
    assert GENERATED_MARKER + generated == reference_markdown(), (
        "config/README.md is out of date: run `cd workflow/lib && python3 -m genovae.settings`"
    )
    for key in ("new_data", "analysis", "privacy"):
        assert f"## `{key}`" in readme
    assert "`labels`" in readme


def test_rule_params_come_from_the_settings():
    s = load_settings({**SIM, "train": {"epochs": 10, "precision": "bf16"}, "analysis": {"labels": ["batch"]},
                       "retrain": {"metric": "val_r2", "threshold": 0.3, "strategy": "warm_start"}})
    assert s.train_params(2)["epochs"] == 15 and s.train_params(2)["warm_start"]
    assert s.train_params(1)["precision"] == "bf16" and "dp" not in s.train_params(1)
    assert s.decide_params() == {"metric": "val_r2", "threshold": 0.3}
    assert s.label_params() == {"condition": "condition", "labels": ["batch"]}
    assert s.collect_params()["simulate"]["n_samples"] == 200 and s.collect_params()["value_type"] == "counts"
    assert s.preprocess_params()["split"] == {"train": 0.7, "val": 0.15, "test": 0.15}
    assert s.model_params() == s.config["model"]
    dp = load_settings({**SIM, "model": {"batch_norm": False}, "privacy": {"dp": {"enabled": True, "seed": 4}}})
    assert dp.train_params(1)["dp"]["seed"] == 4
    assert dp.dp_decide_params()["privacy"]["max_rounds"] == dp.retrain.max_rounds


def test_new_data_params_use_the_saved_model(tmp_path):
    s = load_settings({**SIM, "new_data": {"expression": "new.h5ad", "name": "b2"}})
    model = tmp_path / "model.pt"
    assert s.new_data_params(str(model), "t.json")["model_sha256"] is None  # not trained yet
    model.write_bytes(b"weights")
    p = s.new_data_params(str(model), "t.json")
    assert p["model_sha256"] and p["format"] == "h5ad" and p["origins"]["expression"] == "new.h5ad"


def test_library_defaults_are_the_schemas():
    """train_vae states no default of its own: each is the config's (no drift possible)."""
    import inspect

    from genovae.train import train_vae

    params = inspect.signature(train_vae).parameters
    for key, default in settings.section_defaults("train").items():
        # threads: the rule passes the job's granted cores; a library call uses one unless told
        if key in params and key != "threads":
            want = str(default) if key == "precision" else default
            assert params[key].default == want, key
