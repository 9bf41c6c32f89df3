"""genovae: variational autoencoders for gene-expression cohorts.

The Snakemake workflow in this repository calls into this package; every rule's
script is a thin adapter around one function here. Modules are named after the
behaviour they own:

- ``settings``: the validated config: schema defaults, types, cross-key checks, one
  typed section per config section (the Snakefile loads it first).
- ``config``: typing of ``--config`` strings, the run's saved config.
- ``runner``: runs a library step as a Snakemake rule (logging, clean errors).
- ``io``: reading expression matrices and sample sheets, atomic writes.
- ``collect``: validation of the inputs into one canonical matrix + manifest.
- ``sources``: every input format, one module each (plain tables and Parquet, GEO
  series matrix, featureCounts, Salmon, .h5ad read with anndata), format detection, GEO download
  URLs, sha256 checks of downloads.
- ``export``: ``latent.h5ad`` with the run's results for scanpy/scverse (written with anndata).
- ``simulate``: synthetic negative-binomial cohorts with planted genes.
- ``preprocess``: stratified split and the train-fitted transform.
- ``model``: the VAE module and its likelihoods.
- ``train``: the training loop (device, seeds, early stopping, history).
- ``evaluate``: per-round metrics and the retrain decision.
- ``pca``: PCA of the training rows without copying them (the baseline, label
  metrics, synthetic-cohort utility).
- ``labels``: how well latent means (vs PCA) separate the sample labels.
- ``loop``: the retrain loop's logic (round settings, metric directions, decision,
  selection), torch-free; ``rounds``: its rule steps (train, evaluate, decide, select).
- ``apply``: latent space, reconstruction errors, held-out test metrics.
- ``risk``: condition-associated ("risk") gene ranking.
- ``plots``: figures for the report; ``annotation``: gene names (symbols) for people.
- ``verdict``: is the selected model good enough, why not, what to try.
- ``overview``: overview.html and the report's landing page.
- ``pseudonym``: keyed pseudonyms for sample ids (``privacy.pseudonymize``).
- ``privacy``: differentially private training (DP-SGD) and its budget across rounds.
- ``synthetic``: synthetic cohorts from the selected model and their evaluation.
"""

__version__ = "0.1.0"
