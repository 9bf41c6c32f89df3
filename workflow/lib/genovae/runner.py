"""Running a library function as a Snakemake rule: logging and clean errors.

:func:`run_rule` sends log records to the rule's ``log:`` file (and stderr),
turns a :class:`~genovae.errors.GenovaeError` into a short message naming the
file and the problem (no traceback), and removes any output the failed step may
have left, so that nothing half-written looks like a result.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from .errors import GenovaeError


def setup_logging(log_path=None, level=logging.INFO):
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    stream = None
    if log_path:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        stream = open(log_path, "a", buffering=1)
        handlers.append(logging.StreamHandler(stream))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    logging.captureWarnings(True)
    return stream


def _remove_outputs(paths):
    for p in paths:
        try:
            if os.path.isfile(p):
                os.unlink(p)
        except OSError:
            pass


#: errno -> what a one-line message calls it (:func:`os_error_message`)
OS_ERRORS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
}


def os_error_message(exc, outputs=()):
    """A one-line message for an OSError a user can fix (disk full, permission denied, read-only file
    system), naming the path: the error's own file name, else the folder of the step's first output; None
    for any other error (a bug: it keeps its traceback). pyarrow's write errors carry the errno only in
    their text ("[errno 28] ..."), which is read too."""
    if not isinstance(exc, OSError):
        return None
    code = exc.errno
    if code is None:
        import re

        m = re.search(r"\[errno (\d+)\]", str(exc), re.IGNORECASE)
        code = int(m.group(1)) if m else None
    what = OS_ERRORS.get(code)
    if what is None:
        return None
    path = exc.filename or (os.path.dirname(str(outputs[0])) or "." if outputs else None)
    return f"{what} at {path}" if path else what


def peak_rss_mb():
    """This process's peak resident memory so far, in MB (2^20 bytes); None where unknown.

    Linux: ``VmHWM`` of /proc/self/status (this program's own high-water mark; ``ru_maxrss``
    may also hold the peak of the process it was forked from).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 / 1024 if sys.platform == "darwin" else kb / 1024  # bytes on macOS, KB on Linux


def prepare_outputs(snakemake):
    """Before a step writes: every output must resolve inside the run's folder (``settings.output_root``;
    the id map excepted), and the temporary files a killed earlier attempt left next to them are removed."""
    from . import io
    from .settings import output_root

    config = getattr(snakemake, "config", None) or {}
    root = output_root(config, snakemake.rule) if config.get("run") else None
    if root is not None:
        root = module_prefix(snakemake, config) / root
    exempt = (config.get("privacy") or {}).get("map_file")
    folders = set()
    for path in snakemake.output:
        if root is not None and path != exempt:
            io.check_inside(path, root)
            folders.add(os.path.dirname(path))
        io.remove_stale_tmp(path)
    for folder in sorted(folders):
        io.remove_stale_tmp_in(folder)


def module_prefix(snakemake, config):
    """The folder Snakemake puts genovae's paths in when genovae is a module with ``prefix:``
    (``""`` otherwise), read off the rule's log: every genovae rule logs to ``results/{run}/logs/``."""
    log = str(snakemake.log[0]) if len(snakemake.log) else ""
    i = log.find(f"results/{config['run']}/logs/")
    return Path(log[:i]) if i > 0 and log[i - 1] == "/" else Path("")


def job_record_path(log_path):
    """The job record written beside a rule's log: ``logs/<name>.log`` -> ``logs/<name>.job.json``."""
    log_path = Path(log_path)
    return log_path.with_name(log_path.stem + ".job.json")


def write_job_record(log_path, rule, started, status, step=None):
    """Beside the log: the job's rule (and ``step``, in a job of several), start and end (UTC),
    seconds, status and true peak memory (MB: in a job of several steps, the job's peak so far).

    Read by provenance (``provenance.json``'s ``jobs``) and the benchmarks; Snakemake's own
    benchmark samples memory about once a second and can miss a short peak.
    """
    from . import io

    end = time.time()
    peak = peak_rss_mb()
    stamp = lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")  # noqa: E731
    try:
        io.write_json(job_record_path(log_path), {
            "rule": rule, **({"step": step} if step else {}), "status": status,
            "start": stamp(started), "end": stamp(end), "seconds": round(end - started, 3),
            "peak_memory_mb": None if peak is None else int(round(peak)),
        })
    except OSError:  # the record is a courtesy: never turn a finished job into a failed one
        pass


def run_rule(snakemake, step):
    """Call ``step(snakemake, log_stream)`` with logging and user-facing errors."""
    log_path = snakemake.log[0] if len(snakemake.log) else None
    run_steps(snakemake, [(None, log_path, step)])


def run_steps(snakemake, steps):
    """Run a job's ``steps``, ``(name, log path, step)`` each, in order, in this one process.

    Each step logs to its own file and writes its own job record beside it (rule apply_model: the
    steps that are jobs of their own in the per-step layout keep their logs). The first failure
    ends the job: every output of the job is removed, and the message names the rule and the step.
    """
    log = logging.getLogger("genovae")
    for i, (name, log_path, step) in enumerate(steps):
        what = snakemake.rule if name is None else f"{snakemake.rule} (step {name})"
        stream = setup_logging(log_path)
        log.info("rule %s started", what)
        if i == 0:
            try:
                prepare_outputs(snakemake)
            except GenovaeError as exc:  # nothing written, and nothing removed: the paths are not the run's
                _fail(log, f"genovae: rule {what} failed: {exc}")
        started = time.time()
        status = "failed"
        try:
            step(snakemake, stream)
            status = "ok"
            # the true peak of the job (Snakemake's benchmark: samples memory about once a second)
            peak = peak_rss_mb()
            log.info("rule %s finished%s", what, "" if peak is None else f" (peak memory {peak:.0f} MB)")
        except GenovaeError as exc:
            _remove_outputs(list(snakemake.output))
            _fail(log, f"genovae: rule {what} failed: {exc}")
        except Exception as exc:
            _remove_outputs(list(snakemake.output))
            problem = os_error_message(exc, list(snakemake.output))
            if problem is not None:  # disk full, permission denied: the user's to fix, no traceback
                _fail(log, f"genovae: rule {what} failed: {problem} ({exc.strerror or exc})")
            log.error("unexpected error in rule %s:\n%s", what, traceback.format_exc())
            raise
        finally:
            if log_path:
                write_job_record(log_path, snakemake.rule, started, status, name)
            if stream is not None:
                stream.flush()


def _fail(log, msg):
    log.error(msg)
    print("\n" + msg + "\n", file=sys.stderr, flush=True)
    sys.exit(1)
