"""Differentially private training (DP-SGD) and its privacy budget across rounds.

``privacy.dp.enabled`` trains each round with DP-SGD (Abadi et al. 2016):

* **Poisson sampling** over the preloaded train tensor: at every step each
  training sample joins the batch independently with probability
  ``q = batch_size / n_train`` (so batches vary in size and may be empty);
  an epoch is ``round(n_train / batch_size)`` steps;
* **per-sample gradients** of each sample's loss (its negative ELBO), computed
  with ``torch.func`` (``vmap`` of ``grad``), so that every parameter, the
  likelihood's gene-wise scale or dispersion included, is covered;
* **clipping and noise** by Opacus's ``DPOptimizer``: each per-sample gradient is
  clipped to L2 norm ``max_grad_norm``, the clipped gradients are summed,
  Gaussian noise with standard deviation ``noise_multiplier * max_grad_norm`` is
  added, and the sum is divided by the expected batch size; the optimizer
  (Adam) then steps on that noisy gradient;
* **accounting** with Opacus's RDP accountant: the noise multiplier is
  calibrated with ``get_noise_multiplier`` so that the planned epochs of the
  round spend at most the target ``(epsilon, delta)``; the epsilon actually spent
  is that of the steps run (early stopping on the validation loss can end a round
  sooner; the validation split is not the protected training set).

Rounds of the retrain loop compose: the total epsilon is the RDP composition of
the steps of every round run (all rounds' models are written to results/).
A round whose planned steps would bring the total above
``privacy.dp.total_epsilon`` is not started (see :func:`budget_decision`).

BatchNorm mixes the samples of a batch, so per-sample gradients are not
defined: a model with ``model.batch_norm: true`` is refused.
"""

from __future__ import annotations

import logging
import time

import pandas as pd
import torch

from .errors import ConfigError, TrainingError

log = logging.getLogger(__name__)

ACCOUNTANT = "rdp"
EPSILON_TOLERANCE = 0.01


# ---------------------------------------------------------------- accounting
def sample_rate(n_train, batch_size):
    """Poisson sampling probability of one training sample per step."""
    return min(1.0, float(batch_size) / float(n_train))


def steps_per_epoch(n_train, batch_size):
    """Steps of one epoch: one pass over n_train samples in expectation."""
    return max(1, int(round(float(n_train) / float(min(batch_size, n_train)))))


def noise_multiplier(epsilon, delta, rate, steps):
    """Opacus's noise multiplier that spends at most (epsilon, delta) in ``steps`` steps at ``rate``."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(
            get_noise_multiplier(
                target_epsilon=float(epsilon),
                target_delta=float(delta),
                sample_rate=float(rate),
                steps=int(steps),
                accountant=ACCOUNTANT,
                epsilon_tolerance=EPSILON_TOLERANCE,
            )
        )
    except ValueError as exc:  # "The privacy budget is too low."
        raise ConfigError(
            "privacy.dp.epsilon", f"epsilon {epsilon:g} cannot be reached with delta {delta:g} in {steps} steps ({exc})"
        )


def epsilon_spent(history, delta):
    """Epsilon of a list of ``(noise_multiplier, sample_rate, steps)`` by Opacus's RDP accountant."""
    from opacus.accountants import RDPAccountant

    history = [(float(s), float(q), int(n)) for s, q, n in history if int(n) > 0]
    if not history:
        return 0.0
    acc = RDPAccountant()
    acc.history = history
    return float(acc.get_epsilon(delta=float(delta)))


def check_model(model_config):
    if model_config.get("batch_norm"):
        raise ConfigError(
            "model.batch_norm",
            "differentially private training (privacy.dp.enabled) needs model.batch_norm: false: "
            "BatchNorm mixes the samples of a batch, so per-sample gradients (and their clipping) "
            "are not defined",
        )


# ------------------------------------------------------------------ training
def _per_sample_grads(model, params, buffers, x, t, lib, beta):
    """Per-sample gradients of each sample's loss, and the per-sample (loss, recon, KL)."""
    from torch.func import functional_call, grad, vmap

    def one(p, b, xi, ti, li):
        loss, recon, kl = functional_call(
            model, (p, b), (xi.unsqueeze(0), ti.unsqueeze(0), li.unsqueeze(0)), {"beta": beta}
        )
        return loss, torch.stack([loss.detach(), recon.detach(), kl.detach()])

    grads, parts = vmap(grad(one, has_aux=True), in_dims=(None, None, 0, 0, 0), randomness="different")(
        params, buffers, x, t, lib
    )
    return grads, parts


def train_vae_dp(
    cohort,
    *,
    model_config,
    dp,
    epochs=200,
    batch_size=64,
    lr=1e-3,
    weight_decay=0.0,
    beta=1.0,
    kl_warmup_epochs=20,
    patience=20,
    min_delta=0.0,
    seed=1,
    device="auto",
    threads=1,
    deterministic=True,
    init_state=None,
    progress=None,
    checkpoint=None,
    checkpoint_every=10,
    precision="32",
    **ignored,
):
    """DP-SGD version of :func:`genovae.train.train_vae`: same arguments plus ``dp``.

    ``dp``: ``{"epsilon", "delta", "max_grad_norm", "seed"}``, the round's target,
    the clipping norm and the seed of batch sampling and noise (None: secret
    randomness from the operating system). Returns (model on CPU, history, info) like ``train_vae``;
    ``info["dp"]`` holds the noise multiplier, the sampling rate, the steps and
    the epsilon spent. Training checkpoints are not written with DP (a killed
    round starts again).
    """
    from opacus import __version__ as opacus_version
    from opacus.accountants import RDPAccountant
    from opacus.optimizers import DPOptimizer

    from .model import VAE
    from .train import _EpochBook, _optimizer, evaluate_loss, resolve_device, set_seeds

    check_model(model_config)
    if ignored:
        log.info("settings without effect on DP training: %s", ", ".join(sorted(ignored)))
    if str(precision) != "32":
        raise ConfigError("train.precision", "differentially private training runs in float32: set train.precision: 32")
    if threads:
        torch.set_num_threads(int(threads))
    set_seeds(seed, deterministic)
    dev, dev_info = resolve_device(device)
    x_tr, t_tr, l_tr = cohort.tensors("train", dev)
    x_va, t_va, l_va = cohort.tensors("val", dev)
    n = int(x_tr.shape[0])
    if n < 2:
        raise TrainingError("the train split has fewer than 2 samples")
    epsilon, delta, max_grad_norm = float(dp["epsilon"]), float(dp["delta"]), float(dp["max_grad_norm"])
    if delta >= 1.0 / n:
        log.warning(
            "privacy.dp.delta %g is not below 1/n_train = %.3g: a delta this large allows leaking "
            "whole records; use a smaller delta", delta, 1.0 / n,
        )
    q = sample_rate(n, batch_size)
    spe = steps_per_epoch(n, batch_size)
    planned = int(epochs) * spe
    sigma = noise_multiplier(epsilon, delta, q, planned)
    expected = max(1, int(round(q * n)))
    log.info(
        "DP-SGD: target epsilon %g, delta %g over %d epochs (%d steps of Poisson rate %.4g): "
        "noise multiplier %.4g, max_grad_norm %g",
        epsilon, delta, epochs, planned, q, sigma, max_grad_norm,
    )
    model = VAE(n_genes=x_tr.shape[1], **model_config).to(dev)
    if init_state is not None:
        model.load_state_dict(init_state)
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    # batch sampling and noise: secret randomness unless privacy.dp.seed makes them reproducible
    dp_seed = dp.get("seed")
    secret = dp_seed is None
    if secret:
        import secrets

        dp_seed = secrets.randbits(62)
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(dp_seed))
    noise_gen = torch.Generator(device=dev)
    noise_gen.manual_seed(int(dp_seed) + 7919)
    opt = DPOptimizer(
        _optimizer(model.parameters(), lr, weight_decay, dev),
        noise_multiplier=sigma,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected,
        loss_reduction="mean",
        generator=noise_gen,
    )
    accountant = RDPAccountant()
    book = _EpochBook(
        epochs=epochs, kl_warmup_epochs=kl_warmup_epochs, patience=patience, min_delta=min_delta,
        progress=progress, desc="train (DP)",
        remedy=f"lower train.lr (now {lr:g}), raise privacy.dp.epsilon or check the input scaling",
    )
    t0 = time.perf_counter()
    steps = 0
    for epoch in range(1, int(epochs) + 1):
        model.train()
        warm = beta * min(1.0, epoch / kl_warmup_epochs) if kl_warmup_epochs > 0 else beta
        acc = torch.zeros(3, device=dev)
        n_seen = 0
        for _ in range(spe):
            idx = torch.nonzero(torch.rand(n, generator=gen, device=dev) < q).flatten()
            opt.zero_grad(set_to_none=True)
            detached = {k: v.detach() for k, v in params.items()}
            buffers = dict(model.named_buffers())
            if idx.numel():
                grads, parts = _per_sample_grads(model, detached, buffers, x_tr[idx], t_tr[idx], l_tr[idx], warm)
                acc += parts.sum(0)
                n_seen += int(idx.numel())
            else:  # an empty Poisson batch still takes a (noise-only) step
                grads = {k: torch.zeros((0, *v.shape), device=dev, dtype=v.dtype) for k, v in detached.items()}
            for k in names:
                params[k].grad_sample = grads[k]
            opt.step()
            accountant.step(noise_multiplier=sigma, sample_rate=q)
            steps += 1
        val = evaluate_loss(model, x_va, t_va, l_va, beta=beta)
        if book.end_epoch(epoch, warm, acc, n_seen, val, model):
            break
    best = book.finish(model)
    for p in model.parameters():
        p.grad_sample = None
        p.summed_grad = None
    model.load_state_dict(best[2])
    model = model.cpu().eval()
    spent = float(accountant.get_epsilon(delta=delta))
    history = pd.DataFrame(book.rows)
    info = {
        "device": dev_info,
        "epochs_run": int(len(book.rows)),
        "best_epoch": int(best[1]),
        "best_val_loss": float(best[0]),
        "seconds": time.perf_counter() - t0,
        "seed": int(seed),
        "threads": int(torch.get_num_threads()),
        "torch": str(torch.__version__),
        "dp": {
            "epsilon": spent,
            "target_epsilon": epsilon,
            "delta": delta,
            "max_grad_norm": max_grad_norm,
            "noise_multiplier": sigma,
            "sample_rate": q,
            "n_train": n,
            "batch_size": int(batch_size),
            "steps_per_epoch": spe,
            "planned_steps": planned,
            "steps": steps,
            "history": [[sigma, q, steps]],
            "accountant": ACCOUNTANT,
            "opacus": opacus_version,
            "secure_mode": False,
            "seed": None if secret else int(dp_seed),
            "randomness": "operating system (secret)" if secret else "seeded by privacy.dp.seed (reproducible)",
        },
    }
    log.info("DP-SGD: %d steps, epsilon spent %.4g (target %g, delta %g)", steps, spent, epsilon, delta)
    return model, history, info


# ------------------------------------------------------ budget across rounds
def budget_decision(infos, *, round_, passed, max_rounds, settings):
    """Privacy block of round ``round_``'s decision: epsilon of the round, total so far, and whether to stop.

    ``infos``: train_info.json of rounds 1..round_ (in order). ``settings``: the
    ``privacy.dp`` section plus the retrain settings to plan the next round
    (``epochs``, ``lr``, ``seed``, ``strategy``, ``epochs_factor``, ``lr_factor``).
    """
    from . import io
    from .rounds import round_settings

    dps = [io.read_json(p)["dp"] for p in infos]
    delta = float(settings["delta"])
    history = [tuple(h) for d in dps for h in d["history"]]
    total = epsilon_spent(history, delta)
    budget = settings.get("total_epsilon")
    out = {
        "epsilon": float(dps[-1]["epsilon"]),
        "epsilon_total": total,
        "total_epsilon": budget,
        "delta": delta,
        "stop": False,
        "reason": None,
    }
    r = int(round_)
    if passed or r >= int(max_rounds):
        return out
    nxt = round_settings(
        r + 1,
        epochs=settings["epochs"],
        lr=settings["lr"],
        seed=settings["seed"],
        strategy=settings["strategy"],
        epochs_factor=settings["epochs_factor"],
        lr_factor=settings["lr_factor"],
    )
    q, spe = float(dps[-1]["sample_rate"]), int(dps[-1]["steps_per_epoch"])
    steps = int(nxt["epochs"]) * spe
    sigma = noise_multiplier(settings["epsilon"], delta, q, steps)
    predicted = epsilon_spent(history + [(sigma, q, steps)], delta)
    out["next_round_epsilon_total"] = predicted
    if budget is not None and predicted > float(budget):
        out["stop"] = True
        out["reason"] = (
            f"privacy budget: round {r + 1} would bring the total epsilon from {total:.3g} to "
            f"{predicted:.3g}, above privacy.dp.total_epsilon = {float(budget):g}; it was not started"
        )
        log.warning(out["reason"])
    return out


def summary_block(selection, dp_config):
    """The ``privacy.dp`` part of summary.json from the selection (None without DP)."""
    rounds = [r for r in selection.get("rounds", []) if r.get("epsilon") is not None]
    last = selection.get("privacy")
    if not last:
        return None
    info = selection.get("train_info", {}).get("dp", {})
    return {
        "enabled": True,
        "mechanism": "DP-SGD (Poisson sampling, per-sample clipping, Gaussian noise; Opacus RDP accountant)",
        "target_epsilon_per_round": dp_config.get("epsilon") if dp_config else info.get("target_epsilon"),
        "delta": last.get("delta"),
        "max_grad_norm": info.get("max_grad_norm"),
        "epsilon_per_round": {str(r["round"]): r["epsilon"] for r in rounds},
        "epsilon_spent": last.get("epsilon_total"),
        "total_epsilon_budget": last.get("total_epsilon"),
        "selected_round_noise_multiplier": info.get("noise_multiplier"),
        "stop_reason": last.get("reason"),
    }
