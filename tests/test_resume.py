"""Resumable training: a run interrupted after a checkpoint and resumed ends with
exactly the model of an uninterrupted run (CPU); stale checkpoints are ignored."""

import io

import pytest
import torch

import genovae.train as gtrain
from genovae.train import train_vae
from test_train import MODEL, make_cohort

SETTINGS = dict(model_config={**MODEL, "dropout": 0.2}, epochs=30, batch_size=16, lr=1e-2,
                kl_warmup_epochs=3, patience=100, seed=5, threads=1)


class Killed(Exception):
    pass


def interrupt_at(monkeypatch, epoch):
    """Make the validation pass of ``epoch`` raise, as if the job were killed then."""
    real = gtrain.evaluate_loss
    calls = {"n": 0}

    def evaluate_loss(*a, **k):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise Killed
        return real(*a, **k)

    monkeypatch.setattr(gtrain, "evaluate_loss", evaluate_loss)


def test_resumed_training_equals_uninterrupted(tmp_path, monkeypatch):
    cohort = make_cohort()
    ref, ref_hist, _ = train_vae(cohort, progress=io.StringIO(), **SETTINGS)
    ckpt = tmp_path / "ckpt.pt"
    with monkeypatch.context() as m:
        interrupt_at(m, 18)
        with pytest.raises(Killed):
            train_vae(cohort, progress=io.StringIO(), checkpoint=str(ckpt), checkpoint_every=5, **SETTINGS)
    assert ckpt.exists()
    assert torch.load(ckpt, weights_only=True)["epoch"] == 15
    log = io.StringIO()
    model, hist, info = train_vae(cohort, progress=log, checkpoint=str(ckpt), checkpoint_every=5, **SETTINGS)
    assert info["epochs_run"] == 30
    assert hist["val_loss"].tolist() == pytest.approx(ref_hist["val_loss"].tolist(), rel=0, abs=0)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_checkpoint_of_other_settings_is_ignored(tmp_path, monkeypatch, caplog):
    cohort = make_cohort()
    ckpt = tmp_path / "ckpt.pt"
    with monkeypatch.context() as m:
        interrupt_at(m, 12)
        with pytest.raises(Killed):
            train_vae(cohort, progress=io.StringIO(), checkpoint=str(ckpt), checkpoint_every=5, **SETTINGS)
    other = {**SETTINGS, "lr": 5e-3}
    ref, _, _ = train_vae(cohort, progress=io.StringIO(), **other)
    with caplog.at_level("WARNING"):
        model, _, info = train_vae(cohort, progress=io.StringIO(), checkpoint=str(ckpt), checkpoint_every=5,
                                   **other)
    assert "other settings or data" in caplog.text
    assert info["epochs_run"] == 30
    for k, v in ref.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_corrupt_checkpoint_is_ignored(tmp_path, caplog):
    cohort = make_cohort()
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with caplog.at_level("WARNING"):
        _, _, info = train_vae(cohort, progress=io.StringIO(), checkpoint=str(ckpt), checkpoint_every=0,
                               **{**SETTINGS, "epochs": 5})
    assert "unreadable checkpoint" in caplog.text and info["epochs_run"] == 5


def test_out_of_memory_is_explained(monkeypatch):
    cohort = make_cohort()

    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(gtrain, "evaluate_loss", boom)
    with pytest.raises(gtrain.TrainingError, match=r"out of memory .* batch_size 16 .*lower train.batch_size"):
        train_vae(cohort, progress=io.StringIO(), **{**SETTINGS, "epochs": 3})
