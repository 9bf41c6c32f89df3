"""The training loop: device choice, seeds, KL warm-up, early stopping, history, checkpoints.

One epoch loop (:func:`train_vae`) with pluggable plans (:class:`Plan`) that take
the steps of an epoch: :class:`PlainPlan` (float32), :class:`MixedPrecisionPlan`
and DP-SGD (:class:`genovae.privacy.DPPlan`); :class:`EpochHistory` is the
history and early stopping of all of them.

The whole split lives on the device as one tensor; each epoch of the plain plans
draws a seeded permutation on the device and slices batches from it. Losses are accumulated on
the device and read back once per epoch (no per-step host synchronisation).
``precision`` selects fp32 (``32``), bfloat16 autocast (``bf16``) or float16
autocast with loss scaling (``16-mixed``); the loss itself is always computed in
float32 and the weights stay float32.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
import sys
import time

import numpy as np
import pandas as pd
import torch

from .errors import ConfigError, TrainingError
from .loop import resolve_hidden
from .model import VAE
from .settings import section_defaults

log = logging.getLogger(__name__)


def resolve_device(spec="auto"):
    """Return (torch.device, info). ``auto`` picks CUDA when usable, else CPU."""
    spec = str(spec or "auto")
    info = {"requested": spec, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    cuda_ok = torch.cuda.is_available()
    if spec == "auto":
        if cuda_ok:
            dev = torch.device("cuda")
        else:
            dev = torch.device("cpu")
            note = "no usable CUDA device"
            if info["cuda_visible_devices"]:
                note += f" although CUDA_VISIBLE_DEVICES={info['cuda_visible_devices']}"
            info["fallback"] = note + "; training on CPU"
            log.warning(info["fallback"])
    elif spec == "cpu":
        dev = torch.device("cpu")
    elif spec.startswith("cuda"):
        if not cuda_ok:
            raise ConfigError("train.device", f"{spec!r} was requested but no CUDA device is usable here; use 'auto' or 'cpu'")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError("train.device", f"{spec!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    else:
        raise ConfigError("train.device", f"must be auto, cpu, cuda or cuda:N, got {spec!r}")
    info["used"] = str(dev)
    info["name"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return dev, info


#: train.precision -> autocast dtype (None: plain float32)
PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16-mixed": torch.float16}


def resolve_precision(spec="32"):
    """Normalise ``train.precision`` (``32``, ``bf16`` or ``16-mixed``; YAML may give the integer 32)."""
    key = "32" if spec is None else str(spec).strip()
    if key not in PRECISIONS:
        raise ConfigError("train.precision", f"must be one of {', '.join(PRECISIONS)}, got {spec!r}")
    return key


def set_seeds(seed, deterministic=False):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def make_optimizer(params, lr, weight_decay, device):
    """Adam (fused where the device supports it)."""
    kwargs = dict(lr=lr, weight_decay=weight_decay)
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, **kwargs)


@torch.no_grad()
def evaluate_loss(model, x, target, library, beta=1.0, batch_size=4096):
    """Mean loss, recon and KL over a split using latent means (deterministic)."""
    model.eval()
    tot = torch.zeros(3, device=x.device)
    for i in range(0, x.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        out = model.loss(x[sl], target[sl], library[sl], beta=beta, sample=False)
        tot += torch.stack([out.loss, out.reconstruction, out.kl]) * x[sl].shape[0]
    return tot / x.shape[0]


# ------------------------------------------------------------------ plans
class TrainSplit:
    """The train split on the training device: ``x``, ``target``, ``library`` and, when the
    tensors are the whole cohort's (see :func:`_train_tensors`), the split's row numbers ``rows``."""

    def __init__(self, x, target, library, rows=None):
        self.x, self.target, self.library, self.rows = x, target, library, rows
        self.n = int(x.shape[0] if rows is None else len(rows))
        self.device = x.device

    def batch(self, idx):
        """``(x, target, library)`` of the split's samples ``idx``."""
        pick = idx if self.rows is None else self.rows[idx]
        xb = self.x[pick]
        tb = xb if self.target is self.x else self.target[pick]  # the target is the input unless nb
        return xb, tb, self.library[pick]


class Plan:
    """How :func:`train_vae` takes the steps of an epoch: optimizer, batches, precision, noise.

    The training loop (seeds, data, model, validation, early stopping, history,
    checkpoints) is the same for every plan; a plan gives :meth:`setup` (after
    the model is built), :meth:`train_epoch` (the epoch's steps; returns the
    summed ``(loss, recon, KL)`` and the samples seen), its part of the
    checkpoint (:meth:`state_dict` / :meth:`load_state_dict`) and of the run's
    identity (:meth:`fingerprint`) and info (:meth:`summary`).
    """

    desc = "train"
    #: ``train.precision`` recorded in the info (None: not recorded)
    precision = "32"
    #: validation batch size (None: the loop's, which depends on the device)
    eval_batch_size = None
    batch_size = None

    def check(self, model_config, precision):
        """Refuse settings the plan cannot train with (before anything is loaded)."""

    def remedy(self, lr):
        """The advice of a diverged run."""
        return f"lower train.lr (now {lr:g}) or check the input scaling"

    def setup(self, model, *, dev, n, batch_size, lr, weight_decay, seed, epochs):
        raise NotImplementedError

    def autocast(self):
        return contextlib.nullcontext()

    def train_epoch(self, model, data, warm):
        raise NotImplementedError

    def fingerprint(self):
        """Settings of the plan that belong to the run's identity (beyond the loop's)."""
        return []

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def finish(self, model):
        pass

    def summary(self):
        """Entries of the info dict."""
        return {}


class PlainPlan(Plan):
    """Minibatch Adam in float32: a seeded permutation of the train split per epoch, batches sliced from it."""

    def setup(self, model, *, dev, n, batch_size, lr, weight_decay, seed, epochs):
        self.opt = make_optimizer(model.parameters(), lr, weight_decay, dev)
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(seed)
        self.batch_size = max(1, min(int(batch_size), n))
        self.dev, self.n = dev, n

    def backward_step(self, loss):
        loss.backward()
        self.opt.step()

    def train_epoch(self, model, data, warm):
        bs, n = self.batch_size, self.n
        perm = torch.randperm(n, generator=self.gen, device=self.dev)
        acc = torch.zeros(3, device=self.dev)
        n_seen = 0
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            if idx.numel() < 2 and model.config["batch_norm"]:
                continue  # BatchNorm cannot normalise a batch of one
            xb, tb, lb = data.batch(idx)
            with self.autocast():
                out = model.loss(xb, tb, lb, beta=warm)
            self.opt.zero_grad(set_to_none=True)
            self.backward_step(out.loss)
            acc += torch.stack([out.loss.detach(), out.reconstruction.detach(), out.kl.detach()]) * idx.numel()
            n_seen += idx.numel()
        return acc, n_seen

    def state_dict(self):
        return {"optimizer": self.opt.state_dict(), "generator": self.gen.get_state(), "scaler": None}

    def load_state_dict(self, state):
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"].cpu())


class MixedPrecisionPlan(PlainPlan):
    """:class:`PlainPlan` under ``torch.autocast`` (``bf16``; ``16-mixed`` also scales the loss)."""

    def __init__(self, precision):
        self.precision = resolve_precision(precision)
        self.dtype = PRECISIONS[self.precision]

    def setup(self, model, **kw):
        super().setup(model, **kw)
        self.scaler = torch.amp.GradScaler(self.dev.type) if self.precision == "16-mixed" else None

    def autocast(self):
        return torch.autocast(self.dev.type, dtype=self.dtype)

    def backward_step(self, loss):
        if self.scaler is None:
            return super().backward_step(loss)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()

    def fingerprint(self):
        return [self.precision]

    def state_dict(self):
        return {**super().state_dict(), "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def precision_plan(precision="32"):
    """The plan of ``train.precision``: :class:`PlainPlan` for ``32``, else :class:`MixedPrecisionPlan`."""
    precision = resolve_precision(precision)
    return PlainPlan() if PRECISIONS[precision] is None else MixedPrecisionPlan(precision)


# ------------------------------------------------------------------ the loop
#: the defaults of train_vae are the config's (the schema is their one source)
_TRAIN = section_defaults("train")


def train_vae(
    cohort,
    *,
    model_config,
    epochs=_TRAIN["epochs"],
    batch_size=_TRAIN["batch_size"],
    lr=_TRAIN["lr"],
    weight_decay=_TRAIN["weight_decay"],
    beta=_TRAIN["beta"],
    kl_warmup_epochs=_TRAIN["kl_warmup_epochs"],
    patience=_TRAIN["patience"],
    min_delta=0.0,
    seed=_TRAIN["seed"],
    device=_TRAIN["device"],
    threads=1,
    deterministic=_TRAIN["deterministic"],
    init_state=None,
    progress=None,
    checkpoint=None,
    checkpoint_every=_TRAIN["checkpoint_every"],
    precision=str(_TRAIN["precision"]),
    plan=None,
):
    """Train a VAE on ``cohort``'s train split with early stopping on val loss.

    ``plan`` (a :class:`Plan`) takes the steps of each epoch; by default the plan
    of ``precision``: ``bf16`` or ``16-mixed`` runs the forward passes under
    ``torch.autocast`` on the training device (CPU or CUDA); ``16-mixed`` also
    scales the loss (``torch.amp.GradScaler``). DP-SGD is
    :class:`genovae.privacy.DPPlan`.

    With ``checkpoint`` (a path), the full training state (weights, optimizer,
    epoch, best weights, history, random number generator states, and the plan's
    state) is saved every ``checkpoint_every`` epochs; a later call with the same
    settings and data resumes from it and, on CPU, ends with the same model as an
    uninterrupted run.

    Returns (model on CPU, history DataFrame, info dict).
    """
    precision = resolve_precision(precision)
    if plan is None:
        plan = precision_plan(precision)
    plan.check(model_config, precision)
    if threads:
        torch.set_num_threads(int(threads))
    set_seeds(seed, deterministic)
    dev, dev_info = resolve_device(device)
    try:
        data = TrainSplit(*_train_tensors(cohort, dev))
        x_va, t_va, l_va = cohort.tensors("val", dev)
    except torch.OutOfMemoryError as exc:
        raise _oom(dev, batch_size, cohort) from exc
    n = data.n
    if n < 2:
        raise TrainingError("the train split has fewer than 2 samples")
    # model.hidden: auto is sized by the training samples and genes (genovae.loop.auto_hidden)
    n_genes = len(cohort.genes)
    model_config = {**model_config, "hidden": resolve_hidden(
        model_config.get("hidden", "auto"), n, n_genes, model_config.get("latent_dim", 10))}
    if cohort.n_covariates:  # analysis.batch: inputs end with the covariates' one-hot columns
        from .dataset import covariate_reference

        model_config.update(n_covariates=cohort.n_covariates,
                            covariate_reference=covariate_reference(cohort.covariates, cohort.mask("train")))
    model = VAE(n_genes=n_genes, **model_config).to(dev)
    if init_state is not None:
        model.load_state_dict(init_state)
    plan.setup(model, dev=dev, n=n, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
               epochs=epochs)
    bs = plan.batch_size
    # validation batches: large on a GPU; on the CPU smaller, which bounds the memory of the
    # likelihood's temporaries (n x genes each) at no cost in speed
    eval_bs = plan.eval_batch_size or (4096 if dev.type == "cuda" else 256)

    # hashing the data costs time: only runs that checkpoint need the fingerprint
    fingerprint = None
    if checkpoint:
        settings = [model_config, epochs, bs, lr, weight_decay, beta, kl_warmup_epochs, patience, min_delta, seed,
                    dev.type, *plan.fingerprint()]  # fingerprints of fp32 runs stay as before
        fingerprint = _fingerprint(*settings, data.x if data.rows is None else (data.x, data.rows), x_va,
                                   init_state)
    start, best, rows = 1, None, None
    resumed = _load_checkpoint(checkpoint, fingerprint, dev)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        plan.load_state_dict(resumed)
        torch.set_rng_state(resumed["torch_rng"])
        if dev.type == "cuda" and resumed.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(resumed["cuda_rng"], dev)
        best = (resumed["best_val"], resumed["best_epoch"], resumed["best_state"])
        rows = resumed["rows"]
        start = resumed["epoch"] + 1
        log.info("resumed from checkpoint %s after epoch %d", checkpoint, resumed["epoch"])
    book = EpochHistory(
        epochs=epochs, kl_warmup_epochs=kl_warmup_epochs, patience=patience, min_delta=min_delta,
        progress=progress, desc=plan.desc, remedy=plan.remedy(lr), start=start, best=best, rows=rows,
    )
    t0 = time.perf_counter()
    try:
        for epoch in range(start, epochs + 1):
            model.train()
            warm = beta * min(1.0, epoch / kl_warmup_epochs) if kl_warmup_epochs > 0 else beta
            acc, n_seen = plan.train_epoch(model, data, warm)
            with plan.autocast():
                val = evaluate_loss(model, x_va, t_va, l_va, beta=beta, batch_size=eval_bs)
            if book.end_epoch(epoch, warm, acc, n_seen, val, model):
                break
            if checkpoint and checkpoint_every and epoch % checkpoint_every == 0:
                _save_checkpoint(checkpoint, fingerprint, epoch, model, plan, dev, book.best, book.rows)
    except torch.OutOfMemoryError as exc:
        raise _oom(dev, bs, cohort) from exc
    best = book.finish(model)
    plan.finish(model)
    model.load_state_dict(best[2])
    model = model.cpu().eval()
    history = pd.DataFrame(book.rows)
    info = {
        "device": dev_info,
        "epochs_run": int(len(book.rows)),
        "best_epoch": int(best[1]),
        "best_val_loss": float(best[0]),
        "seconds": time.perf_counter() - t0,
        "seed": int(seed),
        "model": dict(model_config),  # as trained: model.hidden resolved
        "n_train": int(n),
    }
    if plan.precision is not None:
        info["precision"] = plan.precision
    info.update(threads=int(torch.get_num_threads()), torch=str(torch.__version__))
    info.update(plan.summary())
    return model, history, info


class EpochHistory:
    """End-of-epoch bookkeeping of :func:`train_vae`, whatever the plan: history and early stopping.

    Holds the history rows, the best ``(val loss, epoch, weights)`` and the
    progress bar. :meth:`end_epoch` reads the epoch's losses back (the one host
    synchronisation of an epoch), refuses NaN or infinite losses (``remedy`` is
    the advice of that error), records the row, updates the bar and tracks early
    stopping; :meth:`finish` closes the bar and gives the weights to keep.
    """

    def __init__(self, *, epochs, kl_warmup_epochs, patience, min_delta, progress, desc, remedy,
                 start=1, best=None, rows=None):
        self.kl_warmup_epochs, self.patience, self.min_delta = kl_warmup_epochs, patience, min_delta
        self.remedy = remedy
        self.best = (float("inf"), -1, None) if best is None else best
        self.rows = [] if rows is None else rows
        stream = progress if progress is not None else sys.stderr
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=epochs, initial=start - 1, file=stream, desc=desc, mininterval=1.0, ascii=True)
        except ImportError:  # pragma: no cover
            self.bar = None

    def end_epoch(self, epoch, warm, acc, n_seen, val, model):
        """Record epoch ``epoch`` (train loss sums ``acc`` over ``n_seen`` samples, val means ``val``).

        Returns True when early stopping ends training.
        """
        both = torch.cat([acc / max(n_seen, 1), val]).cpu().numpy()  # one sync per epoch
        row = dict(
            epoch=epoch,
            beta=warm,
            train_loss=both[0],
            train_recon=both[1],
            train_kl=both[2],
            val_loss=both[3],
            val_recon=both[4],
            val_kl=both[5],
        )
        if not np.all(np.isfinite(both)):
            raise TrainingError(
                f"training diverged at epoch {epoch}: the loss became NaN or infinite "
                f"(train loss {both[0]:g}, val loss {both[3]:g}); {self.remedy}"
            )
        self.rows.append(row)
        if self.bar is not None:
            self.bar.set_postfix(train=f"{both[0]:.4g}", val=f"{both[3]:.4g}", refresh=False)
            self.bar.update(1)
        # early stopping only once the KL weight has reached its final value
        if epoch >= self.kl_warmup_epochs:
            if row["val_loss"] < self.best[0] - self.min_delta:
                self.best = (row["val_loss"], epoch, copy.deepcopy(model.state_dict()))
            elif epoch - self.best[1] >= self.patience:
                log.info("early stop at epoch %d; best epoch %d", epoch, self.best[1])
                return True
        return False

    def finish(self, model):
        """Close the bar; return the best ``(val loss, epoch, weights)``."""
        if self.bar is not None:
            self.bar.close()
        if self.best[2] is None:  # warm-up longer than training: keep the last weights
            last = self.rows[-1]
            self.best = (last["val_loss"], last["epoch"], copy.deepcopy(model.state_dict()))
        return self.best


def _train_tensors(cohort, dev):
    """The train split as (x, target, library, rows).

    On the CPU, when the cohort's arrays are writable row-major float32 (as
    :func:`genovae.dataset.load_cohort` gives them), the tensors share their
    memory and ``rows`` holds the split's row numbers: batches are gathered
    from them directly, and the split is never copied (it would double the
    memory of training). Elsewhere, e.g. for a GPU, the split is copied to the
    device once and ``rows`` is None. The batches are the same either way.
    """
    inputs = cohort.inputs()  # x, or x and the covariates (analysis.batch)
    sparse_target = cohort.target is not inputs and not isinstance(cohort.target, np.ndarray)
    arrays = (inputs, cohort.library) if sparse_target else (inputs, cohort.target, cohort.library)
    if dev.type == "cpu" and all(
        isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
        for a in arrays
    ):
        x = torch.from_numpy(inputs)
        if sparse_target:  # sparse counts (nb): every row on the device, batches densified from them
            target = cohort.target_tensor(dev)
        else:
            target = x if cohort.target is inputs else torch.from_numpy(cohort.target)
        rows = torch.from_numpy(np.flatnonzero(cohort.mask("train")))
        return x, target, torch.from_numpy(cohort.library), rows
    return (*cohort.tensors("train", dev), None)


def _oom(dev, batch_size, cohort):
    n, g = cohort.x.shape
    return TrainingError(
        f"out of memory on {dev} training with batch_size {batch_size} on {n} samples x {g} genes "
        f"held on the device; lower train.batch_size, model.hidden or preprocess.n_top_genes, "
        f"or set train.device: cpu (on SLURM, a retry with more memory follows if retries are set)"
    )


def _fingerprint(*parts):
    """Identity of a training run: settings, data and initial weights."""
    import hashlib
    import json

    h = hashlib.sha256()
    *settings, x_tr, x_va, init_state = parts
    h.update(json.dumps([str(p) for p in settings]).encode())
    for t in (x_tr, x_va):
        if isinstance(t, tuple):  # (whole array, row numbers): the same bytes as the gathered rows
            whole, rows = t
            h.update(str((len(rows), *whole.shape[1:])).encode())
            for j in range(0, len(rows), 4096):
                h.update(_buffer(whole[rows[j : j + 4096]]))
            continue
        h.update(str(tuple(t.shape)).encode())
        h.update(_buffer(t))
    if init_state is not None:
        for k in sorted(init_state):
            h.update(k.encode())
            h.update(_buffer(init_state[k]))
    return h.hexdigest()


def _buffer(t):
    """The bytes of a tensor for hashing, without a copy when it is a contiguous CPU tensor."""
    a = np.ascontiguousarray(t.detach().cpu().numpy())
    return memoryview(a.reshape(-1).view(np.uint8)) if a.size else b""


def _save_checkpoint(path, fingerprint, epoch, model, plan, dev, best, rows):
    from .io import atomic_path

    state = {
        "fingerprint": fingerprint,
        "epoch": int(epoch),
        "model": model.state_dict(),
        **plan.state_dict(),  # optimizer, batch order generator, loss scale; DP: noise generator, accountant
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        "best_val": float(best[0]),
        "best_epoch": int(best[1]),
        "best_state": best[2],
        "rows": [{k: float(v) if k != "epoch" else int(v) for k, v in r.items()} for r in rows],
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path, fingerprint, dev):
    if not path or not os.path.exists(path):
        return None
    try:
        state = torch.load(path, map_location=dev, weights_only=True)
    except Exception as exc:  # a checkpoint we cannot read is ignored, never trusted
        log.warning("ignoring unreadable checkpoint %s (%s); training from the start", path, exc)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s: it belongs to other settings or data", path)
        return None
    state["torch_rng"] = state["torch_rng"].cpu()
    return state
