# Helpers shared by all stages - config and sample-sheet validation, paths,
# the params each rule depends on, and the retrain loop's input function.
import json
import os
import sys
from pathlib import Path

import pandas as pd
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

# Every path of genovae's own files is relative to this file, not to workflow.basedir (the
# importing workflow's directory when genovae is used as a module).
GENOVAE_RULES = workflow.current_basedir
if GENOVAE_RULES.is_local:
    # a local checkout (or module snakefile: "path/to/genovae/Snakefile"): its library;
    # a remote module (github(...)) needs genovae installed (pip install, see docs/usage.md)
    sys.path.insert(0, str(Path(GENOVAE_RULES.get_path_or_uri(secret_free=True)).parent / "lib"))
from genovae.errors import GenovaeError  # noqa: E402
from genovae.io import read_split  # noqa: E402
from genovae.loop import continues_after  # noqa: E402
from genovae.risk import contrast_names  # noqa: E402
from genovae.settings import load_settings  # noqa: E402
from genovae.sources import download_sizes, expected_sha256, is_url, probe  # noqa: E402

GENOVAE_DIR = (
    Path(GENOVAE_RULES.get_path_or_uri(secret_free=True)).parents[1]
    if GENOVAE_RULES.is_local
    else None
)


def demo_data_from_genovae():
    """Run elsewhere without a config (snakemake -s path/to/genovae/Snakefile), genovae reads its
    own demo config: its relative data paths are genovae's files, not the working directory's."""
    own = globals().get("OWN_DEMO_CONFIG")  # set by the Snakefile
    if not own or workflow.overwrite_configfiles or workflow.modifier.skip_configfile:
        return
    if GENOVAE_DIR is None:
        return
    data = config.get("data") or {}
    for key in ("expression", "samples", "genes"):
        value = data.get(key)
        if isinstance(value, str) and not is_url(value) and not Path(value).is_absolute():
            data[key] = str(GENOVAE_DIR / value)


demo_data_from_genovae()


def config_error(key, problem):
    raise WorkflowError(f"genovae config error: '{key}': {problem}")


# Every default, type and cross-key check of the config lives in genovae.settings.
# S holds one typed section per config section; config gets the defaults filled in.
try:
    S = load_settings(config)
except GenovaeError as exc:
    raise WorkflowError(f"genovae {exc}")
config.update(S.config)

R = S.results
SIMULATE = S.simulate_source

# Used as a module with `prefix:` (or `replace_prefix:`), Snakemake moves every relative input,
# output and log path of genovae's rules under the prefix; what genovae itself reads or passes
# as params must look there too, and the user's data paths must stay where the user put them.
IN_MODULE = workflow.modifier.is_module
_PATH_MODIFIER = workflow.modifier.path_modifier
IN_PREFIXED_MODULE = _PATH_MODIFIER.replace_prefix(R) != R


def on_disk(path):
    """Where a results path (f"{R}/...") lies on disk: under the module's prefix, if any."""
    return _PATH_MODIFIER.replace_prefix(path)


def validate_sample_sheet():
    """Schema-check the sample sheet when it is a readable local file.

    Unreadable or malformed files are left to the collect step, which names the
    file and the problem in its error message.
    """
    path = S.data.samples
    if SIMULATE or not path or not Path(path).is_file():
        return
    sep = "," if ".csv" in Path(path).suffixes else "\t"
    try:
        sheet = pd.read_csv(path, sep=sep, dtype=str)
    except Exception:
        return
    if "sample_id" in sheet.columns:
        validate(sheet.dropna(subset=["sample_id"]), "../schemas/samples.schema.yaml")


validate_sample_sheet()


# ----------------------------------------------------------------- inputs
def collect_inputs():
    if SIMULATE:
        return {}
    inputs = {"expression": input_file(S.expression_location())}
    for key in ("samples", "genes"):
        if getattr(S.data, key):
            inputs[key] = input_file(getattr(S.data, key))
    return inputs


def input_file(location):
    """A local path, or an http(s) URL that Snakemake's HTTP storage plugin fetches.

    Downloads are kept in .snakemake/storage/http/ (or --local-storage-prefix) and
    fetched again only when the server's copy is newer.
    """
    if is_url(location):
        return storage.http(location, keep_local=True)
    # a module's prefix applies to genovae's results, not to the user's data
    return local(location) if IN_PREFIXED_MODULE else location


def previous_model(wildcards):
    """Round r > 1 with warm start begins from round r-1's weights."""
    r = int(wildcards.round)
    if r > 1 and S.retrain.strategy == "warm_start":
        return f"{R}/rounds/{r - 1}/model.pt"
    return []


def loop_decisions(wildcards):
    """Walk rounds 1..max_rounds through the decide checkpoint.

    Each round's decision is read only after its checkpoint has run; the loop
    stops at the first passing round or at retrain.max_rounds.
    """
    max_rounds = S.retrain.max_rounds
    decisions, read = [], []
    for r in range(1, max_rounds + 1):
        path = f"{R}/rounds/{r}/decision.json"
        if not Path(on_disk(path)).exists():
            # a round not decided yet is a plain input: Snakemake schedules it even
            # when the outputs downstream exist (e.g. after raising max_rounds), and
            # re-evaluates this function once the checkpoint has run
            decisions.append(path)
            break
        checkpoints.decide.get(round=r)  # raises until round r is decided
        decisions.append(path)  # as declared: Snakemake adds a module's prefix to inputs
        with open(on_disk(path)) as fh:
            read.append(json.load(fh))
        if not continues_after(read, max_rounds, S.retrain.stop_without_improvement):
            break
    return decisions


def loop_models(wildcards):
    return [d.replace("decision.json", "model.pt") for d in loop_decisions(wildcards)]


def loop_infos(wildcards):
    return [d.replace("decision.json", "train_info.json") for d in loop_decisions(wildcards)]


def loop_histories(wildcards):
    return [d.replace("decision.json", "history.tsv") for d in loop_decisions(wildcards)]


def loop_metrics(wildcards):
    return [d.replace("decision.json", "metrics.json") for d in loop_decisions(wildcards)]


def selected_model_inputs():
    """What applying the selected model reads: the model, the transform, the cohort."""
    return {
        "model": f"{R}/model/model.pt",
        "features": f"{R}/preprocess/features.parquet",
        "split": f"{R}/preprocess/split.tsv",
        "matrix": f"{R}/data/matrix.parquet",
        "transform": f"{R}/preprocess/transform.json",
    }


def contrast_tables(wildcards):
    """The risk_genes jobs, one per contrast (numbered 1..n as genovae.risk.contrasts orders them).

    The contrasts follow from the preprocessed cohort's condition groups, so they are
    known once the preprocess checkpoint has run.
    """
    split = checkpoints.preprocess.get().output.split
    condition = read_split(split)["condition"].astype(str)
    n = len(contrast_names(condition, S.analysis.case, S.analysis.control))
    numbers = range(1, n + 1)
    return {
        "risk": expand(f"{R}/risk/{{contrast}}/risk_genes.tsv", contrast=numbers),
        "dims": expand(f"{R}/risk/{{contrast}}/latent_dims.tsv", contrast=numbers),
        "routes": expand(f"{R}/risk/{{contrast}}/route.json", contrast=numbers),
    }


# ----------------------------------------------------------------- params
# What each job depends on comes from genovae.settings (S.<rule>_params()); rules
# call those directly. Only the wildcard-dependent ones need a function here.
def round_params(round_):
    """Model config and training settings of one round (the retrain plan changes them per round).

    An adaptive or search round r > 1 reads round r-1's decision (its settings and diagnosis,
    or the study's draw): it is
    read as a file, not an input, so that a decide rerun (e.g. a new retrain.threshold) that
    writes the same diagnosis retrains nothing; the loop asks for round r only once round
    r-1's checkpoint has run.
    """
    r = int(round_)
    previous = None
    if r > 1 and S.retrain.strategy in ("adaptive", "search"):
        path = Path(on_disk(f"{R}/rounds/{r - 1}/decision.json"))
        if path.is_file():
            with open(path) as fh:
                previous = json.load(fh)
    try:
        return S.round_params(r, previous)
    except GenovaeError as exc:
        raise WorkflowError(f"genovae {exc}")


def train_params(wildcards):
    """Training settings of one round (the retrain plan changes them per round)."""
    return round_params(wildcards.round)["train"]


def model_params(wildcards):
    """Model config of one round (model.hidden may be auto; adaptive rounds change it)."""
    return round_params(wildcards.round)["model"]


def new_data_params(wildcards):
    """The new cohort's settings and the run's saved model, used as they are.

    The model and transform are params, not inputs: apply_new never re-runs decide,
    select_model or training (e.g. after a threshold change), it applies what the run
    selected. The model's checksum makes apply_new rerun when the run's model changes.
    """
    return with_download_sizes(
        S.new_data_params(on_disk(f"{R}/model/model.pt"), on_disk(f"{R}/preprocess/transform.json"))
    )


def with_download_sizes(params):
    """Params plus, when inputs are http(s) URLs, the byte length each server declares.

    The job compares its downloaded copy with it, so a download cut short is refused; a server
    that declares no length needs data.sha256 (genovae.sources.download_sizes). Without URLs the
    params are unchanged. A refused URL stops the run with one line.
    """
    origins = params.get("origins") or {}
    if not any(is_url(v) for v in origins.values()):
        return params
    try:
        sizes = download_sizes(origins, expected_sha256(params.get("sha256")), probe=probe_download)
    except GenovaeError as exc:
        raise WorkflowError(f"genovae: {exc}") from None
    return dict(params, download_sizes=sizes)


def probe_download(url):
    """What the server says about url (genovae.sources.probe), asked once per URL.

    Asked when the Snakefile is read, before Snakemake's HTTP plugin downloads anything: a
    redirect to a non-http(s) target, an unreachable server or an HTTP error stop the run with
    one line. A cluster job asks again only as a hint (None on a fault): its node may have no
    network.
    """
    if url not in _PROBED:
        try:
            _PROBED[url] = probe(url)
        except GenovaeError:
            if workflow.is_main_process:
                raise
            _PROBED[url] = None
    return _PROBED[url]


_PROBED = {}


# collect's params, asked for when the Snakefile is read: before Snakemake's HTTP plugin meets a
# URL of data (those of new_data are asked for in new_data_inputs, when apply_new runs)
COLLECT_PARAMS = with_download_sizes(S.collect_params())


# -------------------------------------------------------------- resources
# What a training job asks the scheduler for (config section resources:). They
# never change results, so they are not params: switching the GPU on or off
# reruns nothing.
def train_gpus():
    """1 with resources.gpu (SLURM --gpus=1; locally counted against --resources gpu=N), else 0."""
    return 1 if S.resources.gpu else 0


def train_gpu_model():
    """GPU type with resources.gpu (SLURM --gpus=<model>:1); None leaves the resource unset."""
    res = S.resources
    return res.gpu_model if res.gpu and res.gpu_model else None


def cohort_size():
    """What sizes the memory and time requests (genovae.resources): {shape: (samples, genes),
    sparse_mb: a sparse cohort's CSR MB or None}, from collect's manifest once it exists, else
    the simulate settings or the expression file's size."""
    from genovae.resources import estimated_shape, estimated_sparse_mb

    path = Path(on_disk(f"{R}/data/manifest.json"))
    manifest = None
    if path.is_file():
        with open(path) as fh:
            manifest = json.load(fh)
    simulate, expression = cohort_sources()
    return {
        "shape": estimated_shape(manifest, simulate, expression),
        "sparse_mb": estimated_sparse_mb(manifest, expression),
    }


def cohort_sources():
    """What tells the cohort's size before collect: (the simulate settings, the expression file)."""
    if S.simulate_source:
        return S.simulate.asdict(), None
    return None, S.data.expression


def merged_jobs():
    """The job layout (resources.job_layout): True for the merged one (each round's training job
    also evaluates it, one job applies the selected model), False for one job per step. Under auto
    it follows the cohort's size as known before collect, so that it stays the same from one run
    to the next (genovae.resources.merged_jobs)."""
    from genovae.resources import estimated_shape, merged_jobs as merged

    return merged(S.resources.job_layout, estimated_shape(None, *cohort_sources()))


MERGED_JOBS = merged_jobs()


def apply_model_logs():
    """The apply_model job's logs: one per step, where the per-step layout's jobs keep theirs
    (every contrast's risk genes in one)."""
    steps = ["latent", "test_metrics", "risk_genes"]
    steps += ["predict"] if S.analysis.predict else []
    steps += ["loadings"] if S.analysis.loadings else []
    return {step: f"{R}/logs/{step}.log" for step in steps}


def job_threads():
    """CPU threads of the training and apply jobs: train.threads, or from the size of a training
    step when it is `auto` (genovae.resources.auto_threads; from the config alone)."""
    from genovae.resources import auto_threads

    if S.train.threads == "auto":
        return auto_threads(S.train.batch_size, S.preprocess.n_top_genes)
    return S.train.threads


THREADS = job_threads()


def job_mem_mb(rule):
    """The memory request of a job of ``rule`` (MB; attempt n asks n times), from measured peaks
    scaled with the cohort (genovae.resources). Never a param: it changes no result."""
    from genovae.resources import mem_mb

    def request(wildcards, attempt):
        size, top = cohort_size(), S.preprocess.n_top_genes
        return mem_mb(rule, size["shape"], top, attempt, size["sparse_mb"])

    return request


def job_runtime(rule):
    """The time request of a job of ``rule`` (minutes; attempt n asks n times)."""
    from genovae.resources import runtime_min

    def request(wildcards, attempt):
        size, top = cohort_size(), S.preprocess.n_top_genes
        return runtime_min(rule, size["shape"], top, attempt, size["sparse_mb"])

    return request


# ------------------------------------------------------------ new cohort
NEW = S.new_data.name


def new_data_inputs(wildcards):
    location = S.new_data_location()
    if not location:
        config_error("new_data.expression", "set it to the new cohort's matrix to run apply_new")
    samples = S.new_data.samples
    # asked before Snakemake's HTTP plugin meets the URLs (see with_download_sizes)
    with_download_sizes(
        {"origins": {"expression": location, "samples": samples}, "sha256": S.new_data.sha256}
    )
    return {
        "expression": input_file(location),
        **({"samples": input_file(samples)} if samples else {}),
    }


def pseudonym_map_output():
    """The id map as a declared output of collect/simulate (when written)."""
    p = S.privacy
    if not (p.pseudonymize and p.map_file):
        return {}
    # the user's path, never under a module's prefix
    return {"id_map": local(p.map_file) if IN_PREFIXED_MODULE else p.map_file}


def dp_round_infos(wildcards):
    """With DP, decide of round r reads the training info (privacy spent) of rounds 1..r."""
    if not S.privacy.dp.enabled:
        return []
    return [f"{R}/rounds/{r}/train_info.json" for r in range(1, int(wildcards.round) + 1)]


def search_history(wildcards):
    """With retrain.strategy search, decide of round r reads the decisions of rounds 1..r-1:
    the study's earlier trials (genovae.search)."""
    if S.retrain.strategy != "search":
        return []
    return [f"{R}/rounds/{r}/decision.json" for r in range(1, int(wildcards.round))]


def synthetic_metrics():
    """generate's metrics as an input of summarize, with generate.enabled."""
    return f"{R}/synthetic/metrics.json" if S.generate.enabled else []


def optional_result(name, enabled):
    """results/{run}/<name> as an input when its feature is enabled, else nothing."""
    return f"{R}/{name}" if enabled else []


def prediction_metrics():
    """predict's metrics as an input of summarize, with analysis.predict."""
    return f"{R}/prediction_metrics.tsv" if S.analysis.predict else []


def truth_file():
    return f"{R}/data/truth.tsv" if SIMULATE else []


def final_outputs():
    return [
        f"{R}/config.yaml",
        f"{R}/overview.html",
        f"{R}/summary.json",
        f"{R}/latent.tsv",
        f"{R}/reconstruction_error.tsv",
        f"{R}/risk_genes.tsv",
        f"{R}/plots/loss_curves.png",
        f"{R}/provenance.json",
        f"{R}/latent.h5ad",
        *([f"{R}/predictions.tsv", f"{R}/plots/reliability.png"] if S.analysis.predict else []),
        *([f"{R}/latent_loadings.tsv"] if S.analysis.loadings else []),
    ]


def end_of_run_message():
    """The verdict, the warnings and the next commands (with the run's own config)."""
    from genovae.verdict import end_of_run_text

    results = on_disk(R)
    summary = Path(f"{results}/summary.json")
    if not summary.is_file():
        return f"\ngenovae: run '{S.run}': no summary yet ({summary} is missing).\n"
    with open(summary) as fh:
        text = end_of_run_text(json.load(fh), results, f"{results}/config.yaml")
    return f"\n{text}\n"


def cancel_idle_scheduler_timers():
    """Let Snakemake exit when the run ends, not up to a second later.

    Snakemake's job scheduler re-arms a threading.Timer (its job rate limit's timespan, 1 s by
    default) after each pass; the timers are not daemons, so the finished process waits for the
    last one: 0.9-1.4 s of every run's wall time (a fifth of a tiny run's; measured on the demo).
    Called when the run has ended (onsuccess, onerror), when no pass is left to schedule; only
    the scheduler's own pending timers are cancelled (what they would do is release a semaphore
    no one waits on any more).
    """
    import threading

    for thread in threading.enumerate():
        function = getattr(thread, "function", None)
        if isinstance(thread, threading.Timer) and "_schedule_reevalutation" in getattr(
            function, "__qualname__", ""
        ):
            thread.cancel()


def landing_page():
    """The report's landing page: the verdict once the run has one, else a note saying it is missing."""
    # relative to the Snakefile (report: resolves paths against the file that declares it)
    if Path(on_disk(f"{R}/report/landing.html")).is_file():
        page = "workflow/report/workflow.rst"
    else:
        page = "workflow/report/workflow_unfinished.rst"
    if IN_MODULE and GENOVAE_RULES.is_local:
        return module_landing_page(page)
    return page


def module_landing_page(page):
    """As a module, the report renders the landing page with the importer's config and reads files
    relative to the importer's directory: write the page with this run's folder filled in, in
    .snakemake/genovae/, and return its absolute path."""
    template = (Path(GENOVAE_RULES.get_path_or_uri(secret_free=True)).parents[1] / page).read_text()
    text = template.replace('results/{{ snakemake.config["run"] }}', on_disk(R))
    text = text.replace('{{ snakemake.config["run"] }}', S.run)
    name = "_".join(Path(on_disk(R)).parts + (Path(page).name,))
    out = Path(".snakemake", "genovae", name).resolve()
    if not out.is_file() or out.read_text() != text:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
    return str(out)
