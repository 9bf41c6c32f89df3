"""train.precision: float32, bfloat16 autocast and float16 autocast with loss scaling.

CPU autocast supports both bfloat16 and float16, so the mixed-precision paths of
the training loop run here too (on a GPU they are the same code with device 'cuda').
"""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from snakemake.utils import validate

import genovae.train as gtrain
from genovae.config import coerce_types
from genovae.errors import ConfigError
from genovae.model import VAE
from genovae.train import resolve_precision, train_vae
from test_train import MODEL, make_cohort

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
SETTINGS = dict(model_config=MODEL, epochs=12, batch_size=16, lr=1e-2, kl_warmup_epochs=3, patience=100, seed=3,
                device="cpu", threads=1)


@pytest.fixture(scope="module")
def cohort():
    return make_cohort()


def run(cohort, **kw):
    return train_vae(cohort, progress=io.StringIO(), **{**SETTINGS, **kw})


@pytest.mark.parametrize("spec, key", [("32", "32"), (32, "32"), (None, "32"), ("bf16", "bf16"),
                                       ("16-mixed", "16-mixed")])
def test_resolve_precision(spec, key):
    assert resolve_precision(spec) == key


@pytest.mark.parametrize("spec", ["fp8", "16", "64", ""])
def test_unknown_precision_is_a_config_error(spec, cohort):
    with pytest.raises(ConfigError, match="train.precision"):
        resolve_precision(spec)
    with pytest.raises(ConfigError, match="train.precision"):
        run(cohort, precision=spec, epochs=1)


def test_float32_is_the_default_and_unchanged(cohort):
    m0, h0, i0 = run(cohort)
    m1, h1, i1 = run(cohort, precision=32)
    assert i0["precision"] == i1["precision"] == "32"
    assert h0["val_loss"].tolist() == h1["val_loss"].tolist()
    for k, v in m0.state_dict().items():
        assert torch.equal(v, m1.state_dict()[k]), k


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_mixed_precision_trains_on_cpu(cohort, precision):
    ref_model, ref, _ = run(cohort)
    model, hist, info = run(cohort, precision=precision)
    assert info["precision"] == precision
    assert np.isfinite(hist[["train_loss", "val_loss"]].to_numpy()).all()
    # it learns: the loss falls about as far as in float32
    assert hist["val_loss"].iloc[-1] < hist["val_loss"].iloc[0]
    assert hist["val_loss"].min() == pytest.approx(ref["val_loss"].min(), rel=0.1)
    # autocast really ran (low-precision matmuls change the numbers) ...
    assert hist["train_loss"].tolist() != ref["train_loss"].tolist()
    # ... while weights stay float32
    assert all(v.dtype == torch.float32 for k, v in model.state_dict().items() if v.is_floating_point())


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_mixed_precision_is_deterministic(cohort, precision):
    m1, h1, _ = run(cohort, precision=precision, seed=7)
    m2, h2, _ = run(cohort, precision=precision, seed=7)
    assert h1["val_loss"].tolist() == h2["val_loss"].tolist()
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k


def test_loss_is_float32_under_autocast():
    torch.manual_seed(0)
    for likelihood in ("gaussian", "nb"):
        model = VAE(n_genes=20, hidden=[8], latent_dim=2, likelihood=likelihood)
        x = torch.rand(6, 20) * 5
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, recon, kl = model(x, x.round(), x.sum(1))
            assert model.decode(torch.zeros(6, 2)).dtype == (
                torch.float32 if likelihood == "nb" else torch.bfloat16
            )
        assert loss.dtype == recon.dtype == kl.dtype == torch.float32


def test_16_mixed_resume_restores_the_loss_scale(cohort, tmp_path, monkeypatch):
    """A checkpointed 16-mixed run resumed after a kill ends like an uninterrupted one."""
    ref_model, ref_hist, _ = run(cohort, precision="16-mixed", epochs=10)
    ckpt = tmp_path / "ckpt.pt"
    real = gtrain.evaluate_loss
    calls = {"n": 0}

    class Killed(Exception):
        pass

    def killed_at_7(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise Killed
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(gtrain, "evaluate_loss", killed_at_7)
        with pytest.raises(Killed):
            run(cohort, precision="16-mixed", epochs=10, checkpoint=str(ckpt), checkpoint_every=5)
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 5 and state["scaler"]["scale"] > 0
    model, hist, _ = run(cohort, precision="16-mixed", epochs=10, checkpoint=str(ckpt), checkpoint_every=5)
    assert hist["val_loss"].tolist() == ref_hist["val_loss"].tolist()
    for k, v in ref_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_fp32_checkpoint_is_not_resumed_in_bf16(cohort, tmp_path, monkeypatch, caplog):
    ckpt = tmp_path / "ckpt.pt"
    real = gtrain.evaluate_loss
    calls = {"n": 0}

    def killed_at_7(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(gtrain, "evaluate_loss", killed_at_7)
        with pytest.raises(KeyboardInterrupt):
            run(cohort, epochs=10, checkpoint=str(ckpt), checkpoint_every=5)
    with caplog.at_level("WARNING"):
        _, _, info = run(cohort, precision="bf16", epochs=10, checkpoint=str(ckpt), checkpoint_every=5)
    assert "other settings or data" in caplog.text and info["epochs_run"] == 10


def test_schema_accepts_the_precisions():
    schema = yaml.safe_load(SCHEMA.read_text())
    for value in ("32", 32, "bf16", "16-mixed"):
        cfg = {"train": {"precision": value}}
        validate(cfg, str(SCHEMA))
        assert str(cfg["train"]["precision"]) in gtrain.PRECISIONS
    # a --config override arrives as a string and stays one
    assert coerce_types({"train": {"precision": "bf16"}}, schema)["train"]["precision"] == "bf16"
    assert coerce_types({"train": {"precision": "32"}}, schema)["train"]["precision"] == "32"
    # an integer or a word (train.threads): '2' is the integer, 'auto' stays the word
    assert coerce_types({"train": {"threads": "2"}}, schema)["train"]["threads"] == 2
    assert coerce_types({"train": {"threads": "auto"}}, schema)["train"]["threads"] == "auto"
    assert coerce_types({"train": {"threads": "two"}}, schema)["train"]["threads"] == "two"  # refused later
    default = {}
    validate(default, str(SCHEMA))
    assert default["train"]["precision"] == "32"
    with pytest.raises(Exception, match="precision|fp8"):
        validate({"train": {"precision": "fp8"}}, str(SCHEMA))
