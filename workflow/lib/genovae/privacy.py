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

DP-SGD is a plan (:class:`DPPlan`) of the one training loop
(:func:`genovae.train.train_vae`): early stopping, history and checkpoints are
those of plain training. A checkpoint holds the accountant's history and, when
``privacy.dp.seed`` is set, the states of the sampling and noise generators, so
a resumed round equals an uninterrupted one; secret randomness is never written.

Rounds of the retrain loop compose: the total epsilon is the RDP composition of
the steps of every round run (all rounds' models are written to results/).
A round whose planned steps would bring the total above
``privacy.dp.total_epsilon`` is not started (see :func:`budget_decision`).

BatchNorm mixes the samples of a batch, so per-sample gradients are not
defined: a model with ``model.batch_norm: true`` is refused.
"""

from __future__ import annotations

import inspect
import logging

import torch

from .errors import ConfigError
from .train import Plan, make_optimizer, train_vae

log = logging.getLogger(__name__)

ACCOUNTANT = "rdp"
EPSILON_TOLERANCE = 0.01
#: RDP orders searched for the epsilon spent: Opacus's default orders end at 63, where the optimum of
#: few-step or low-noise runs can sit (Opacus warns); up to 255 the epsilon is tight (never larger).
#: The noise is calibrated over Opacus's default orders (a subset: 40x faster, as integer orders cost
#: their size), so the epsilon reported over these orders is at most the target, never above it.
ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 256))


# ---------------------------------------------------------------- accounting
def sample_rate(n_train, batch_size):
    """Poisson sampling probability of one training sample per step."""
    return min(1.0, float(batch_size) / float(n_train))


def steps_per_epoch(n_train, batch_size):
    """Steps of one epoch: one pass over n_train samples in expectation."""
    return max(1, int(round(float(n_train) / float(min(batch_size, n_train)))))


def noise_multiplier(epsilon, delta, rate, steps):
    """Opacus's noise multiplier that spends at most (epsilon, delta) in ``steps`` steps at ``rate``."""
    import warnings

    from opacus.accountants.utils import get_noise_multiplier

    try:
        # the bisection tries noise levels far from the answer, whose optimal order lies outside any
        # range (Opacus warns about each): the epsilon of the answer is reported with ALPHAS
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Optimal order is the")
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
    return float(acc.get_epsilon(delta=float(delta), alphas=ALPHAS))


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


class DPPlan(Plan):
    """DP-SGD as a plan of :func:`genovae.train.train_vae` (see the module doc).

    ``dp``: ``{"epsilon", "delta", "max_grad_norm", "seed"}``, the round's target,
    the clipping norm and the seed of batch sampling and noise (None: secret
    randomness from the operating system). The plan calibrates the noise
    multiplier, draws Poisson batches, computes per-sample gradients, lets
    Opacus's ``DPOptimizer`` clip them and add the noise, and counts the steps in
    an RDP accountant. Its checkpoint state is the optimizer, the accountant's
    history and, with a seed, the states of the sampling and noise generators, so
    a resumed run equals an uninterrupted one; with secret randomness the
    generator states are never written and a resumed run draws fresh randomness.
    """

    desc = "train (DP)"
    precision = None  # DP-SGD runs in float32; the info has no precision entry
    eval_batch_size = 4096

    def __init__(self, dp):
        self.dp = dict(dp)

    def check(self, model_config, precision):
        check_model(model_config)
        if str(precision) != "32":
            raise ConfigError(
                "train.precision", "differentially private training runs in float32: set train.precision: 32"
            )

    def remedy(self, lr):
        return f"lower train.lr (now {lr:g}), raise privacy.dp.epsilon or check the input scaling"

    def setup(self, model, *, dev, n, batch_size, lr, weight_decay, seed, epochs):
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DPOptimizer

        dp = self.dp
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
        log.info(
            "DP-SGD: target epsilon %g, delta %g over %d epochs (%d steps of Poisson rate %.4g): "
            "noise multiplier %.4g, max_grad_norm %g",
            epsilon, delta, epochs, planned, q, sigma, max_grad_norm,
        )
        self.epsilon, self.delta, self.max_grad_norm = epsilon, delta, max_grad_norm
        self.n, self.q, self.spe, self.planned, self.sigma = n, q, spe, planned, sigma
        self.batch_size, self.dev = int(batch_size), dev
        self.names = [k for k, p in model.named_parameters() if p.requires_grad]
        self.params = dict(model.named_parameters())
        # batch sampling and noise: secret randomness unless privacy.dp.seed makes them reproducible
        dp_seed = dp.get("seed")
        self.secret = dp_seed is None
        if self.secret:
            import secrets

            dp_seed = secrets.randbits(62)
        self.dp_seed = int(dp_seed)
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(self.dp_seed)
        self.noise_gen = torch.Generator(device=dev)
        self.noise_gen.manual_seed(self.dp_seed + 7919)
        self.opt = DPOptimizer(
            make_optimizer(model.parameters(), lr, weight_decay, dev),
            noise_multiplier=sigma,
            max_grad_norm=max_grad_norm,
            expected_batch_size=max(1, int(round(q * n))),
            loss_reduction="mean",
            generator=self.noise_gen,
        )
        self.accountant = RDPAccountant()
        self.steps = 0

    def train_epoch(self, model, data, warm):
        dev = self.dev
        acc = torch.zeros(3, device=dev)
        n_seen = 0
        for _ in range(self.spe):
            idx = torch.nonzero(torch.rand(self.n, generator=self.gen, device=dev) < self.q).flatten()
            self.opt.zero_grad(set_to_none=True)
            detached = {k: v.detach() for k, v in self.params.items()}
            buffers = dict(model.named_buffers())
            if idx.numel():
                grads, parts = _per_sample_grads(model, detached, buffers, *data.batch(idx), warm)
                acc += parts.sum(0)
                n_seen += int(idx.numel())
            else:  # an empty Poisson batch still takes a (noise-only) step
                grads = {k: torch.zeros((0, *v.shape), device=dev, dtype=v.dtype) for k, v in detached.items()}
            for k in self.names:
                self.params[k].grad_sample = grads[k]
            self.opt.step()
            self.accountant.step(noise_multiplier=self.sigma, sample_rate=self.q)
            self.steps += 1
        return acc, n_seen

    def fingerprint(self):
        return ["dp", self.epsilon, self.delta, self.max_grad_norm, "secret" if self.secret else self.dp_seed,
                self.sigma, self.q]

    def state_dict(self):
        seeded = not self.secret  # secret randomness is never written to disk
        return {
            "optimizer": self.opt.state_dict(),
            "generator": self.gen.get_state() if seeded else None,
            "noise_generator": self.noise_gen.get_state() if seeded else None,
            "accountant_history": [[float(s), float(q), int(k)] for s, q, k in self.accountant.history],
            "dp_steps": int(self.steps),
        }

    def load_state_dict(self, state):
        self.opt.load_state_dict(state["optimizer"])
        self.accountant.history = [(float(s), float(q), int(k)) for s, q, k in state["accountant_history"]]
        self.steps = int(state["dp_steps"])
        if not self.secret and state.get("generator") is not None:
            self.gen.set_state(state["generator"].cpu())
            self.noise_gen.set_state(state["noise_generator"].cpu())

    def finish(self, model):
        for p in model.parameters():
            p.grad_sample = None
            p.summed_grad = None

    def summary(self):
        from opacus import __version__ as opacus_version

        spent = float(self.accountant.get_epsilon(delta=self.delta, alphas=ALPHAS))
        log.info("DP-SGD: %d steps, epsilon spent %.4g (target %g, delta %g)", self.steps, spent, self.epsilon,
                 self.delta)
        return {
            "dp": {
                "epsilon": spent,
                "target_epsilon": self.epsilon,
                "delta": self.delta,
                "max_grad_norm": self.max_grad_norm,
                "noise_multiplier": self.sigma,
                "sample_rate": self.q,
                "n_train": self.n,
                "batch_size": self.batch_size,
                "steps_per_epoch": self.spe,
                "planned_steps": self.planned,
                "steps": self.steps,
                "history": [[self.sigma, self.q, self.steps]],
                "accountant": ACCOUNTANT,
                "opacus": opacus_version,
                "secure_mode": False,
                "seed": None if self.secret else self.dp_seed,
                "randomness": (
                    "operating system (secret)" if self.secret else "seeded by privacy.dp.seed (reproducible)"
                ),
            }
        }


def train_vae_dp(cohort, *, dp, precision="32", **kwargs):
    """DP-SGD version of :func:`genovae.train.train_vae`: same arguments plus ``dp`` (see :class:`DPPlan`).

    Returns (model on CPU, history, info) like ``train_vae``; ``info["dp"]``
    holds the noise multiplier, the sampling rate, the steps and the epsilon
    spent. With ``checkpoint`` a killed run resumes like a plain one.
    """
    known = set(inspect.signature(train_vae).parameters) - {"cohort", "plan"}
    ignored = sorted(k for k in kwargs if k not in known)
    if ignored:
        log.info("settings without effect on DP training: %s", ", ".join(ignored))
    kwargs = {k: v for k, v in kwargs.items() if k in known}
    return train_vae(cohort, plan=DPPlan(dp), precision=precision, **kwargs)


# ------------------------------------------------------ budget across rounds
def budget_decision(infos, *, round_, passed, max_rounds, settings):
    """Privacy block of round ``round_``'s decision: epsilon of the round, total so far, and whether to stop.

    ``infos``: train_info.json of rounds 1..round_ (in order). ``settings``: the
    ``privacy.dp`` section plus the retrain settings to plan the next round
    (``epochs``, ``lr``, ``seed``, ``strategy``, ``epochs_factor``, ``lr_factor``).
    """
    from . import io
    from .loop import plan_round

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
    nxt = plan_round(r + 1, settings)
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
