"""Apply the selected model: latent means and errors, test metrics, risk genes per contrast.

One step per rule (``latent``, ``test_metrics``, ``risk_genes`` for each contrast, ``risk_table``;
rule ``apply_model`` runs them, every contrast included, in one process) and ``apply_new_data`` for
rule ``apply_new``; the computations are in evaluate, labels and risk.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .evaluate import encode, fit_pca, reconstruct_blocks, split_metrics


def latent_and_errors(model, cohort, transform):
    """Latent means and reconstruction MSE (preprocessed space) of every sample, in blocks."""
    mus, errs = [], []
    for _, x, pred, mu, _ in reconstruct_blocks(model, cohort, transform, np.arange(len(cohort.sample_ids))):
        mus.append(mu)
        errs.append(((pred - x) ** 2).mean(axis=1))
    return np.concatenate(mus), np.concatenate(errs)


def latent_table(model, cohort, transform):
    """Latent means of every sample plus split/condition, and per-sample errors."""
    mu, err = latent_and_errors(model, cohort, transform)
    latent = pd.DataFrame(mu, columns=[f"z{i + 1}" for i in range(mu.shape[1])])
    latent.insert(0, "sample_id", cohort.sample_ids)
    latent.insert(1, "split", cohort.split)
    latent.insert(2, "condition", cohort.condition)
    errors = pd.DataFrame(
        {
            "sample_id": cohort.sample_ids,
            "split": cohort.split,
            "condition": cohort.condition,
            "reconstruction_mse": err,
        }
    )
    return latent, errors


def label_metrics(model, cohort, labels, pca=None, batch=(), condition=None, plain=None):
    """VAE latent means vs PCA (same dimension, fitted on train), side by side.

    ``scope`` ``all``: cross-validated structure over all samples (labels were
    never used in training); ``test``: classifiers fitted on train + validation
    samples, scored on the held-out test samples. The ``batch`` labels (analysis.batch)
    get batch-mixing scores within the ``condition``'s groups; ``plain``, a model of the
    same settings trained without the covariates, is the representation ``vae_plain``.
    """
    from .labels import compare, compare_heldout  # scikit-learn: only the steps that need it load it

    pca = pca if pca is not None else fit_pca(cohort, model.config["latent_dim"])
    reps = {"vae": encode(model, cohort.inputs())[0]}
    if plain is not None:
        reps["vae_plain"] = encode(plain, cohort.x)[0]
    reps["pca"] = pca.transform(cohort.x)
    test = cohort.mask("test")
    groups = labels.get(condition) if condition else None
    rows = [{"scope": "all", **r} for r in compare(reps, labels, batch=batch, groups=groups)]
    if test.any():
        rows += [{"scope": "test", **r} for r in compare_heldout(reps, labels, ~test, test)]
    cols = ["label", "scope", "representation", "n", "groups", "silhouette", "knn_accuracy",
            "logreg_auc", "logreg_balanced_accuracy", *(["batch_mixing", "batch_asw"] if batch else [])]
    df = pd.DataFrame(rows)
    return df[[c for c in cols if c in df.columns]]


def test_metrics(model, cohort, transform, pca=None):
    """Held-out metrics, computed once, for the selected model only."""
    if not cohort.mask("test").any():
        return {}
    return split_metrics(model, cohort, transform, "test", pca=pca)


#: the files every step that applies the selected model reads (the rules' selected_model_inputs())
MODEL_FILES = ("model", "features", "split", "matrix", "transform")


def model_files(sm):
    """The selected model's files from a rule's ``snakemake`` object, as keyword arguments."""
    return {key: sm.input[key] for key in MODEL_FILES}


# -- each step from a job's ``snakemake`` object: the same call in its own job (per-step job layout)
# and in rule apply_model (merged), whose outputs and params carry the same names
def latent_job(sm, _log=None):
    """Rule ``latent``'s step."""
    latent_step(**model_files(sm), out_latent=sm.output.latent, out_errors=sm.output.errors, threads=sm.threads)


def test_metrics_job(sm, _log=None):
    """Rule ``test_metrics``'s step."""
    test_metrics_step(**model_files(sm), samples=sm.input.samples, out_test=sm.output.test,
                      out_labels=sm.output.labels, threads=sm.threads, **sm.params.labels)


def risk_job(sm, _log=None):
    """Rule ``risk_genes``'s step: the contrast of wildcard ``contrast``."""
    risk_step(**model_files(sm), genes=sm.input.genes, contrast=int(sm.wildcards.contrast), out_risk=sm.output.risk,
              out_dims=sm.output.dims, out_route=sm.output.route, threads=sm.threads, **sm.params.risk)


def risk_all_job(sm, _log=None):
    """Rule ``apply_model``'s risk genes: every contrast, joined as rule ``risk_table`` joins them."""
    risk_all_step(**model_files(sm), genes=sm.input.genes, out_risk=sm.output.risk, out_dims=sm.output.dims,
                  out_routes=sm.output.routes, threads=sm.threads, **sm.params.risk)


def _load(model, features, split, matrix, transform, threads):
    """(model, saved blob, transform, cohort) of the selected model, with torch on ``threads`` threads."""
    import torch

    from .dataset import load_cohort
    from .model import load_model
    from .preprocess import Transform

    torch.set_num_threads(int(threads))
    vae, blob = load_model(model)
    return vae, blob, Transform.load(transform), load_cohort(features, split, matrix, vae.likelihood)


def latent_step(*, model, features, split, matrix, transform, out_latent, out_errors, threads=1):
    """Rule ``latent``: every sample's latent means and reconstruction error."""
    from . import io

    vae, _, t, cohort = _load(model, features, split, matrix, transform, threads)
    latent, errors = latent_table(vae, cohort, t)
    io.write_tsv(out_latent, latent)
    io.write_tsv(out_errors, errors)


def plain_model(vae, blob, cohort, threads=1):
    """The selected model's settings trained again without the covariates (analysis.batch): the
    reference that shows what conditioning on the batch changed. None for a DP model: another
    training run would spend privacy budget the run did not grant."""
    from .train import train_vae

    info = blob.get("info") or {}
    settings = dict(info.get("settings") or {})
    if settings.pop("dp", None):
        return None
    settings.pop("warm_start", None)
    config = {k: v for k, v in (info.get("model") or vae.config).items()
              if k not in ("n_genes", "n_covariates", "covariate_reference")}
    plain = without_covariates(cohort)
    return train_vae(plain, model_config=config, threads=threads, **settings)[0]


def without_covariates(cohort):
    """The cohort as a model without covariates sees it."""
    from dataclasses import replace

    return replace(cohort, covariates=None, covariate_spec=[], _inputs=None)


def test_metrics_step(
    *, model, features, split, matrix, transform, samples, out_test, out_labels, condition, labels=(), batch=(),
    threads=1,
):
    """Rule ``test_metrics``: the selected model on validation and held-out test samples, and the
    label structure of its latent space against PCA's."""
    from . import io
    from .dataset import load_labels

    vae, blob, t, cohort = _load(model, features, split, matrix, transform, threads)
    pca = fit_pca(cohort, vae.config["latent_dim"])  # once for the three uses below
    test = {
        "round": blob["round"],
        **split_metrics(vae, cohort, t, "val", pca=pca),
        **test_metrics(vae, cohort, t, pca=pca),
    }
    plain = plain_model(vae, blob, cohort, threads) if cohort.n_covariates else None
    lab = load_labels(samples, cohort.sample_ids, condition, labels)
    label_table = label_metrics(vae, cohort, lab, pca=pca, batch=batch, condition=condition, plain=plain)
    test["labels"] = label_table.to_dict(orient="records")
    io.write_tsv(out_labels, label_table)
    io.write_json(out_test, test)


def risk_step(
    *, model, features, split, matrix, transform, genes, contrast, out_risk, out_dims, out_route, case=None,
    control=None, latent_fdr=0.05, risk_fdr=0.05, lfc_delta=0.25, vae_draws=32, vae_permutations=49, seed=0,
    threads=1,
):
    """Rule ``risk_genes``: both routes of contrast number ``contrast`` (1-based, in the order of
    :func:`genovae.risk.contrasts`): the VAE route on the modelled genes, the classical route on every
    collected gene of ``matrix``; ``out_route`` says whether the VAE route called genes or abstained."""
    from . import io
    from .de import classical_route
    from .errors import InputError
    from .preprocess import Transform
    from .risk import annotate, contrasts, rank_contrast

    # the classical route first, from the split alone: the collected matrix (every gene) and the
    # model's cohort are never in memory together
    groups = io.read_split(split)
    every = contrasts(groups["condition"].to_numpy(), case, control)
    if not 1 <= int(contrast) <= len(every):
        raise InputError(split, f"contrast {contrast} was asked for, but the cohort has {len(every)}; rerun the workflow")
    name, case_m, ctrl_m = every[int(contrast) - 1]
    classical, info = classical_route(matrix, Transform.load(transform), groups["sample_id"].to_numpy(),
                                      groups["library_size"].to_numpy(dtype=np.float64), case_m, ctrl_m)
    del groups
    vae, _, t, cohort = _load(model, features, split, matrix, transform, threads)
    name, case_m, ctrl_m = contrasts(cohort.condition, case, control)[int(contrast) - 1]
    risk, dims, route = rank_contrast(
        vae, cohort, t, name, case_m, ctrl_m, latent_fdr, classical=classical, draws=vae_draws,
        permutations=vae_permutations, lfc_delta=lfc_delta, risk_fdr=risk_fdr, seed=int(seed) + int(contrast),
    )
    route["classical"] = info
    route["vae_settings"] = {"draws": vae_draws, "permutations": vae_permutations, "lfc_delta": lfc_delta,
                             "risk_fdr": risk_fdr, "latent_fdr": latent_fdr}
    risk = annotate(risk, io.read_gene_table(genes, na="none").set_index("gene"))
    io.write_tsv(out_risk, risk)
    io.write_tsv(out_dims, dims)
    io.write_json(out_route, route)


def risk_all_step(*, model, features, split, matrix, transform, genes, out_risk, out_dims, out_routes, case=None,
                  control=None, **settings):
    """Rule ``apply_model``'s risk genes: :func:`risk_step` for every contrast, into a temporary folder
    beside ``out_risk``, joined by :func:`risk_table_step`: the files the per-step layout's
    ``risk_genes`` and ``risk_table`` jobs write, computed by the same code with the same seeds."""
    import logging
    import shutil
    import tempfile

    from . import io
    from .risk import contrasts

    n = len(contrasts(io.read_split(split)["condition"].to_numpy(), case, control))
    tmp = tempfile.mkdtemp(prefix=".risk_genes.", dir=os.path.dirname(os.path.abspath(out_risk)))
    try:
        numbers = range(1, n + 1)
        parts = {kind: [os.path.join(tmp, f"{c}.{kind}") for c in numbers] for kind in ("risk", "dims", "route")}
        for c in numbers:
            logging.getLogger("genovae").info("risk genes: contrast %d of %d", c, n)
            risk_step(model=model, features=features, split=split, matrix=matrix, transform=transform, genes=genes,
                      contrast=c, out_risk=parts["risk"][c - 1], out_dims=parts["dims"][c - 1],
                      out_route=parts["route"][c - 1], case=case, control=control, **settings)
        risk_table_step(risk=parts["risk"], dims=parts["dims"], routes=parts["route"], out_risk=out_risk,
                        out_dims=out_dims, out_routes=out_routes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def risk_table_step(*, risk, dims, routes, out_risk, out_dims, out_routes):
    """Rule ``risk_table``: the contrasts' tables, in contrast order, as one table each (text, exact),
    and the routes' summaries as one list."""
    from . import io

    io.concat_tsv(list(risk), out_risk)
    io.concat_tsv(list(dims), out_dims)
    io.write_json(out_routes, [io.read_json(p) for p in routes])


def apply_new_data(
    *,
    model,
    transform,
    expression,
    samples=None,
    orientation="samples_by_genes",
    format="auto",
    layer=None,
    sha256=None,
    origins=None,
    download_sizes=None,
    model_sha256=None,
    out_latent,
    out_errors,
    out_manifest,
    out_predictions=None,
    threads=1,
    privacy=None,
):
    """Encode a new cohort with the saved transform and model, without retraining.

    The new data may come in every format ``data`` accepts (tables, GEO series matrix,
    featureCounts, Salmon, .h5ad; a downloaded URL) and goes through the same checks as
    collect, with the value type the model was trained on. It must contain every gene the
    model was trained on (extra genes are ignored), else the run stops with an error naming
    the file and the missing genes. ``model`` and ``transform`` are the run's saved files,
    used as they are (``model_sha256``, when given, must still match: the model has not
    changed since the job was planned).
    """
    import torch

    from . import io
    from .collect import check_values, read_inputs
    from .dataset import Cohort
    from .errors import InputError
    from .model import load_model
    from .preprocess import Transform
    from .pseudonym import apply_to_cohort
    from .sparse import SparseMatrix

    for path, what in ((model, "trained model"), (transform, "fitted transform")):
        if not os.path.isfile(path):
            raise InputError(
                path,
                f"the run's {what} is missing: apply_new applies a finished run's saved model; "
                "run the workflow with the same --configfile first",
            )
    if model_sha256 and io.sha256sum(model) != model_sha256:
        raise InputError(model, "the model changed while apply_new was planned; run apply_new again")
    torch.set_num_threads(int(threads))
    vae, blob = load_model(model)
    t = Transform.load(transform)
    files = {"expression": expression, "samples": samples}
    raw, sheet, sheet_path, source, fmt, notes, expected = read_inputs(
        files, orientation=orientation, value_type=t.value_type, format=format, layer=layer, sha256=sha256,
        origins=origins, download_sizes=download_sizes, section="new_data",
    )
    check_values(raw, t.value_type, expression)
    missing = [g for g in t.genes if g not in raw.columns]
    if missing:
        raise InputError(
            expression,
            f"{len(missing)} of the {len(t.genes)} genes of the trained model are missing "
            f"(e.g. {', '.join(missing[:5])}); the new data must measure every model gene",
        )
    if sheet is not None:
        unknown = [s for s in raw.index if s not in sheet.index]
        if unknown:
            raise InputError(
                sheet_path, f"{len(unknown)} sample(s) of {expression} are not listed, e.g. {unknown[:5]}"
            )
        sheet = sheet.loc[raw.index]
    # privacy.pseudonymize: keyed pseudonyms (same key as the training cohort) before anything is written
    raw, sheet, _, _, pseudonymized = apply_to_cohort(raw, sheet, privacy)
    n_genes_given = raw.shape[1]
    if isinstance(raw, SparseMatrix):  # a sparse cohort: library sizes from all genes, the model's genes dense
        library_all = raw.row_sums()
        raw = raw.take_columns(raw.columns.get_indexer(t.genes)).to_frame()
    else:
        library_all = raw.to_numpy(dtype=np.float64).sum(axis=1)
    x = np.ascontiguousarray(t.apply(raw, library_size=library_all).to_numpy(dtype=np.float32))
    n = len(raw)
    spec = blob.get("covariates") or []
    covariates = None
    if spec:  # analysis.batch: the new samples' batches, among the levels the model was trained on
        from .dataset import one_hot

        if sheet is None:
            raise InputError(
                expression, f"the model is conditioned on {[s['column'] for s in spec]} (analysis.batch): "
                "set new_data.samples to a sample sheet with these columns"
            )
        covariates = one_hot(sheet, spec, sheet_path)
    new = Cohort(
        sample_ids=raw.index.to_numpy(),
        split=np.full(n, "new", dtype=object),
        condition=np.full(n, "", dtype=object),
        x=x,
        target=x,
        library=raw[t.genes].to_numpy(dtype=np.float64).sum(axis=1).astype(np.float32),
        library_all=library_all,
        genes=list(t.genes),
        covariates=covariates,
        covariate_spec=spec,
    )
    mu, err = latent_and_errors(vae, new, t)
    latent = pd.DataFrame(mu, columns=[f"z{i + 1}" for i in range(mu.shape[1])])
    latent.insert(0, "sample_id", raw.index.to_numpy())
    errors = pd.DataFrame({"sample_id": raw.index.to_numpy(), "reconstruction_mse": err})
    if sheet is not None:
        extra = sheet.drop(columns=["sample_id"], errors="ignore").loc[raw.index].reset_index(drop=True)
        latent = pd.concat([latent.iloc[:, :1], extra, latent.iloc[:, 1:]], axis=1)
        errors = pd.concat([errors.iloc[:, :1], extra, errors.iloc[:, 1:]], axis=1)
    origins = origins or {}
    manifest = {
        "model": str(model),
        "model_sha256": io.sha256sum(model),
        "model_round": blob["round"],
        "transform": str(transform),
        "format": fmt,
        "notes": notes,
        "inputs": [
            {"role": "expression", "path": str(expression), "sha256": io.sha256sum(expression),
             **({"origin": origins["expression"]} if origins.get("expression") else {})},
            *([{"role": "samples", "path": str(samples), "sha256": io.sha256sum(samples),
                **({"origin": origins["samples"]} if origins.get("samples") else {})}] if samples else []),
        ],
        "n_samples": int(len(raw)),
        "genes_used": len(t.genes),
        "genes_ignored": int(n_genes_given - len(t.genes)),
        "privacy": pseudonymized,
    }
    if out_predictions:
        # analysis.predict: the condition of each new sample, by the classifier saved with the model
        from pathlib import Path

        from .predict import predict_new

        classifier = Path(model).parent / "classifier.joblib"
        if not classifier.is_file():
            raise InputError(classifier, "no saved classifier: run the workflow with analysis.predict: true first")
        predictions = predict_new(classifier, mu, raw.index.to_numpy())
        manifest["classifier"] = {"path": str(classifier), "sha256": io.sha256sum(classifier)}
        io.write_tsv(out_predictions, predictions)
    io.write_tsv(out_latent, latent)
    io.write_tsv(out_errors, errors)
    io.write_json(out_manifest, manifest)
    return manifest
