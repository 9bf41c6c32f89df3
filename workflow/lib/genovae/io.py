"""Reading tables and writing outputs atomically.

Readers accept TSV/CSV/TXT (optionally gzip-compressed) and Parquet. Every
failure is turned into an :class:`~genovae.errors.InputError` naming the file
(:func:`check_readable`, :func:`read_errors`). :func:`open_text` is the one way
text files, plain or gzip-compressed, are opened. The workflow's own
intermediate tables have one reader each (:func:`read_sample_sheet`,
:func:`read_gene_table`, :func:`read_split`, :func:`read_latent`,
:func:`read_reconstruction_errors`, :func:`read_risk`). Writers write to a
temporary file in the destination folder and rename it into place, so a killed
job never leaves a plausible partial file.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

TEXT_SUFFIXES = {".tsv": "\t", ".txt": "\t", ".tab": "\t", ".csv": ","}
PARQUET_SUFFIXES = {".parquet", ".pq"}


def _suffixes(path):
    parts = [s.lower() for s in Path(path).suffixes]
    compressed = bool(parts) and parts[-1] == ".gz"
    if compressed:
        parts = parts[:-1]
    return (parts[-1] if parts else ""), compressed


def table_format(path):
    """Return ('parquet', None) or ('text', separator) for a file name."""
    ext, _ = _suffixes(path)
    if ext in PARQUET_SUFFIXES:
        return "parquet", None
    if ext in TEXT_SUFFIXES:
        return "text", TEXT_SUFFIXES[ext]
    raise InputError(
        path,
        "unknown file type; use .tsv, .txt, .csv (optionally .gz) or .parquet",
    )


def sha256sum(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def compressed_by_name(path):
    """Whether the file name ends in .gz (how pandas decides to decompress a table)."""
    return _suffixes(path)[1]


def open_text(path, gzipped=None):
    """Open a text file for reading, plain or gzip-compressed (UTF-8, undecodable bytes replaced).

    A gzip file is recognised by its first two bytes. ``gzipped`` decides instead where the
    text must be what pandas reads, which decides by the name (:func:`compressed_by_name`).
    """
    if gzipped is None:
        with open(path, "rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def check_readable(path):
    """The path is a readable, non-empty file; else an InputError that says what it is instead."""
    p = Path(path)
    if not p.exists():
        raise InputError(path, "file not found")
    if p.is_dir():
        raise InputError(path, "is a folder, not a file")
    if not os.access(p, os.R_OK):
        raise InputError(path, "file is not readable (check its permissions)")
    if p.stat().st_size == 0:
        raise InputError(path, "file is empty")


def _sniff_text(path, sep):
    """Read the first line and catch a wrong delimiter before pandas does."""
    try:
        with open_text(path, gzipped=compressed_by_name(path)) as fh:
            first = fh.readline()
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(path, f"cannot be decompressed ({exc}); is the gzip file truncated?")
    if not first.strip():
        raise InputError(path, "the first line (header) is empty")
    other = "," if sep == "\t" else "\t"
    if sep not in first and other in first:
        names = {",": "comma", "\t": "tab"}
        raise InputError(
            path,
            f"the header has no {names[sep]} but has {names[other]}s: the file is "
            f"{names[other]}-separated but its name says {names[sep]}-separated; "
            f"rename it (.csv for comma, .tsv for tab)",
        )


@contextlib.contextmanager
def read_errors(path, empty):
    """Turn pandas' failures to parse a text table into an InputError naming ``path``.

    ``empty`` is the problem stated when the file has no header (pandas' EmptyDataError).
    """
    try:
        yield
    except pd.errors.ParserError as exc:
        msg = str(exc).strip().splitlines()[-1]
        raise InputError(path, f"rows have different numbers of fields ({msg})")
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"cannot be decompressed ({exc}); is the gzip file truncated?")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"is not UTF-8 text ({exc.reason}); is it a binary file?")
    except pd.errors.EmptyDataError:
        raise InputError(path, empty)


def read_table(path, index_col=None, dtype=None):
    """Read a TSV/CSV(.gz) or Parquet table as strings unless ``dtype`` says otherwise."""
    check_readable(path)
    kind, sep = table_format(path)
    if kind == "parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types
            raise InputError(path, f"cannot be read as Parquet ({exc})")
        if index_col is not None and isinstance(df.index, pd.RangeIndex) and len(df.columns):
            # a Parquet written by pandas keeps its index (named or not); else use the first column
            df = df.set_index(df.columns[0])
        return df
    _sniff_text(path, sep)
    try:
        with read_errors(path, empty="file has no columns"):
            return pd.read_csv(
                path,
                sep=sep,
                index_col=index_col,
                dtype=dtype,
                keep_default_na=False,
                na_values=[""],
                comment=None,
                low_memory=False,
            )
    except OSError as exc:  # not a gzip problem: read_errors has named those
        raise InputError(path, f"cannot be read ({exc})")


# ---------------------------------------------------------------- the workflow's own tables
#: how a reader below treats cells: "empty" -> only empty cells are missing (NaN), "NA" stays text;
#: "none" -> nothing is missing, empty cells are ""; "pandas" -> pandas' defaults (empty, NA, NaN, ...)
NA_MODES = ("empty", "none", "pandas")


def _read_own_tsv(path, dtype, na):
    if na not in NA_MODES:
        raise ValueError(f"na must be one of {NA_MODES}, not {na!r}")
    if na == "pandas":
        return pd.read_csv(path, sep="\t", dtype=dtype)
    if na == "none":
        return pd.read_csv(path, sep="\t", dtype=dtype, keep_default_na=False)
    return pd.read_csv(path, sep="\t", dtype=dtype, keep_default_na=False, na_values=[""])


def read_sample_sheet(path, na="empty"):
    """``results/{run}/data/samples.tsv`` (collect's sample sheet): every column as text."""
    return _read_own_tsv(path, str, na)


def read_gene_table(path, na="empty"):
    """``results/{run}/data/genes.tsv`` (collect's gene annotation, first column ``gene``): every column as text."""
    return _read_own_tsv(path, str, na)


def read_split(path, na="pandas"):
    """``results/{run}/preprocess/split.tsv``: sample_id, split and condition as text, library_size a number.

    The covariate columns (``covariate:<column>``, analysis.batch) are text as written, whatever
    ``na`` says: a batch called "NA" is a level, not a missing value (preprocess refuses blanks).
    """
    from collections import defaultdict

    frame = _read_own_tsv(path, defaultdict(lambda: str, library_size=float), na)
    covariates = [c for c in frame.columns if c.startswith("covariate:")]
    if covariates and na != "none":
        raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, usecols=covariates)
        frame[covariates] = raw[covariates]
    return frame


def read_latent(path, na="empty"):
    """``latent.tsv``: sample_id, split and condition as text, the latent means z1..zK as numbers."""
    return _read_own_tsv(path, {"sample_id": str, "split": str, "condition": str}, na)


def read_reconstruction_errors(path, na="empty"):
    """``reconstruction_error.tsv``: sample_id, split and condition as text, reconstruction_mse a number."""
    return _read_own_tsv(path, {"sample_id": str, "split": str, "condition": str}, na)


def read_risk(path, na="empty"):
    """``risk_genes.tsv``: gene ids as text; scores as numbers; annotation columns as pandas reads them."""
    return _read_own_tsv(path, {"gene": str}, na)


# ---------------------------------------------------------------- writing
#: SLURM job states (squeue's %T) of a job that is queued, running or still ending
SLURM_LIVE_STATES = frozenset({
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING",
    "STAGE_OUT", "RESIZING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
})
_HOLDER = re.compile(r"pid (?P<pid>[0-9]+) on (?P<host>\S+) since (?P<since>[^,]+)"
                     r"(?:, SLURM job (?P<job>[0-9_]+) named (?P<name>\S+))?")


def _lock_holder():
    """The line a lock's file keeps about its holder: pid, host, start time and, in a SLURM job,
    the job's id and name (the plugin names every job of one Snakemake run alike)."""
    text = (f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())}")
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        # inside a job step (srun) SLURM_JOB_NAME is the step's command; squeue knows the job's name
        text += f", SLURM job {job} named {slurm_job_field(job, '%j') or os.environ.get('SLURM_JOB_NAME') or '?'}"
    return text


def slurm_job_field(job_id, field, timeout=30):
    """One squeue field (e.g. ``%T``, the state) of SLURM job ``job_id``; None when squeue is not
    here, does not answer or no longer knows the job (it has ended)."""
    import subprocess

    if not shutil.which("squeue"):
        return None
    try:
        proc = subprocess.run(["squeue", "--noheader", "--jobs", str(job_id), f"--format={field}"],
                              capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    words = proc.stdout.split()
    return words[0] if proc.returncode == 0 and words else None


def slurm_job_state(job_id):
    """squeue's state of SLURM job ``job_id`` (e.g. ``RUNNING``); None once squeue no longer knows it."""
    return slurm_job_field(job_id, "%T")


def _still_running_elsewhere(holder, wait_s=60.0):
    """True if the lock's last holder ran on another host as a SLURM job that squeue still shows
    alive. ``flock`` settles it on one host; across hosts some network file systems do not share
    it, so the job's state is asked (a job still ending, COMPLETING, is given ``wait_s`` seconds)."""
    m = _HOLDER.match(holder)
    if not m or not m.group("job") or m.group("host") == socket.gethostname():
        return False
    if m.group("job") == os.environ.get("SLURM_JOB_ID"):  # this job itself, requeued
        return False
    deadline = time.monotonic() + wait_s
    while True:
        state = slurm_job_state(m.group("job"))
        if state != "COMPLETING" or time.monotonic() > deadline:
            return state in SLURM_LIVE_STATES
        time.sleep(2)


def _how_to_stop(holder):
    """The command that stops a lock's holder, as the user types it."""
    m = _HOLDER.match(holder)
    if not m:
        return "stop that process"
    if m.group("job"):
        return (f"cancel it with `scancel {m.group('job')}` (every job of that run: "
                f"`scancel --name {m.group('name')}`)")
    return f"stop it with `kill {m.group('pid')}` on {m.group('host')}"


@contextlib.contextmanager
def exclusive_lock(path, what):
    """Hold an exclusive lock on ``path`` while ``what`` runs; refuse at once if a live process holds it.

    The lock (``flock``) dies with its process, so only a job that is really still running blocks:
    e.g. the training job of a Snakemake that was killed with ``kill -9`` or interrupted twice (its
    jobs live on) while a rerun starts the same round. The file keeps the holder's pid, host, start
    time and SLURM job, for the message, which says what to type to stop it. ``flock`` is per host on
    some network file systems, so a holder on another host that was a SLURM job is also looked up with
    ``squeue``: while that job is alive, the lock is refused too.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")

    def refuse(holder):
        return InputError(path, f"{what} is already running ({holder}): an earlier run left it going (e.g. "
                                f"Snakemake was killed or interrupted twice; its job was not). Wait for it to "
                                f"end or {_how_to_stop(holder)}, then run again")

    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise refuse(fh.read().strip() or "another process") from None
        fh.seek(0)
        previous = fh.read().strip()
        if previous and _still_running_elsewhere(previous):
            raise refuse(previous)
        fh.seek(0)
        fh.truncate()
        fh.write(_lock_holder())
        fh.flush()
        yield
    finally:
        fh.close()


def check_inside(path, root):
    """``path`` resolved (``..`` and symbolic links followed) if it lies inside ``root`` (also resolved);
    else an InputError: a run writes nothing outside its own results folder."""
    where, inside = Path(path).resolve(), Path(root).resolve()
    if where != inside and inside not in where.parents:
        raise InputError(path, f"resolves to {where}, outside {root}/ (where this step may write); not written")
    return where


def umask():
    """The process's umask, read without changing it where Linux tells it (/proc/self/status)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: this host, as temporary file names carry it (letters, digits and _ only)
_HOST = "".join(c if c.isascii() and c.isalnum() else "_" for c in socket.gethostname())[:32] or "host"
#: a temporary file of another host is stale once untouched this long (its process cannot be asked)
STALE_ELSEWHERE_S = 24 * 3600


def tmp_owner():
    """``{host}-{pid}``: how a temporary file names the process writing it."""
    return f"{_HOST}-{os.getpid()}"


_TMP_NEW = re.compile(r"\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>[0-9]+)\.[A-Za-z0-9_]+\.tmp")
#: older genovae versions: mkstemp's ``.{name}.{8 random}.tmp``; the id map's ``.{name}.{pid}.tmp``
_TMP_OLD = re.compile(r"\.(?P<name>.+)\.(?:[a-z0-9_]{8}|[0-9]+)\.tmp")


def _tmp_target(tmp):
    """(target name, host, pid) of a temporary file of :func:`atomic_path` (host and pid None for the older
    names that do not say who writes them); None for any other file."""
    m = _TMP_NEW.fullmatch(tmp.name)
    if m:
        return m.group("name"), m.group("host"), int(m.group("pid"))
    m = _TMP_OLD.fullmatch(tmp.name)
    return (m.group("name"), None, None) if m else None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _remove_if_stale(tmp, host, pid):
    """A temporary file is stale when its process (named in it) no longer runs on this host, when it
    names no process (older genovae versions), or when it is another host's and untouched for a day."""
    try:
        if host is None:
            stale = True
        elif host == _HOST:
            stale = not _alive(pid)
        else:
            stale = time.time() - tmp.stat().st_mtime > STALE_ELSEWHERE_S
        if stale and tmp.is_file():
            tmp.unlink()
            return True
    except OSError:
        pass
    return False


def remove_stale_tmp(path):
    """Remove the temporary files of :func:`atomic_path` for ``path`` that writers which died left
    (see :func:`_remove_if_stale`); returns the paths removed."""
    path = Path(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        found = _tmp_target(tmp)
        if found and found[0] == path.name and _remove_if_stale(tmp, found[1], found[2]):
            removed.append(tmp)
    return removed


def remove_stale_tmp_in(folder):
    """:func:`remove_stale_tmp` for every file of ``folder`` (not below it): also the temporary files of
    files that are no declared output, such as a killed training job's ``.train_checkpoint.pt.*.tmp``."""
    removed = []
    try:
        candidates = list(Path(folder).glob(".*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        found = _tmp_target(tmp)
        if found and _remove_if_stale(tmp, found[1], found[2]):
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path, mode=None):
    """Yield a temporary path next to ``path``; rename onto it on success.

    The file gets ``mode``, by default the one of any new file (0666 less the umask), not
    mkstemp's 0600. Stale temporary files of ``path`` are removed first (:func:`remove_stale_tmp`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{tmp_owner()}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask() if mode is None else mode)
    finally:
        os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # e.g. a write that found the disk full: name the file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path, text):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path, obj):
    write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_tsv(path, df, index=False, float_format="%.6g"):
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=index, float_format=float_format)


def concat_tsv(paths, out):
    """Write the TSV files ``paths`` (same header) as one table: the first header, then every body, as text.

    Exact: no value is parsed or re-formatted (per-contrast tables merged into one).
    """
    header, bodies = None, []
    for path in paths:
        with open(path) as fh:
            head = fh.readline()
            if header is not None and head != header:
                raise ValueError(f"{path}: its columns differ from {paths[0]}'s; cannot merge the tables")
            header = head
            bodies.append(fh.read())
    if header is None:
        raise ValueError("no tables to merge")
    with atomic_path(out) as tmp, open(tmp, "w") as fh:
        fh.write(header)
        for body in bodies:
            fh.write(body if not body or body.endswith("\n") else body + "\n")


def write_matrix(path, df):
    """Write a samples x genes float32 matrix as Parquet (index = sample ids).

    A :class:`genovae.sparse.SparseMatrix` is written in the long (sparse) layout of
    :func:`genovae.sparse.write`; :func:`read_matrix` reads either.
    """
    from . import sparse

    if isinstance(df, sparse.SparseMatrix):
        with atomic_path(path) as tmp:
            sparse.write(tmp, df.astype(np.float32))
        return
    out = df.astype(np.float32, copy=False)
    out.index.name = "sample_id"
    out.columns = out.columns.astype(str)
    with atomic_path(path) as tmp:
        out.to_parquet(tmp, engine="pyarrow", index=True)


#: columns read from Parquet at a time by :func:`read_matrix`. Arrow's per-column read buffers
#: cost several times the column's values: 1,024 columns of 11,000 samples lifted the peak by
#: ~290 MB for 45 MB of data, 256 columns by ~75 MB (and read faster); see BENCHMARKS.md
COLUMN_CHUNK = 256


def read_matrix(path, columns=None):
    """Read a canonical matrix written by :func:`write_matrix` as float32.

    The values are read with pyarrow ``COLUMN_CHUNK`` columns at a time into one
    preallocated column-major float32 array that backs the returned DataFrame
    (the layout pandas itself uses): peak memory is the matrix plus one chunk,
    not the matrix twice (Arrow table + pandas copy). ``columns`` reads only
    those genes, in that order. A sparse cohort (the long layout of
    :mod:`genovae.sparse`) is returned as a :class:`~genovae.sparse.SparseMatrix`.
    """
    from . import sparse

    if sparse.is_sparse_file(path):
        return sparse.read(path, columns)
    index, names, values = read_matrix_values(path, columns)
    return pd.DataFrame(values, index=index, columns=names, copy=False)


def matrix_genes(path):
    """The gene (column) names of a matrix written by :func:`write_matrix`, without its values."""
    import pyarrow.parquet as pq

    from . import sparse

    if sparse.is_sparse_file(path):
        return sparse.names(path)[1].astype(str)
    schema = pq.read_schema(path)
    index_cols = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
    return pd.Index([n for n in schema.names if n not in index_cols], dtype=object).astype(str)


def read_matrix_values(path, columns=None, order="F"):
    """(sample index, gene index, writable float32 values) of a matrix written by :func:`write_matrix`.

    ``order="C"`` gives row-major values (one sample's genes contiguous), read
    through a buffer of one column chunk: no second copy of the matrix either.
    """
    import pyarrow.parquet as pq

    from . import sparse

    if sparse.is_sparse_file(path):  # a sparse cohort: only the genes asked for are read and densified
        m = sparse.read(path, columns)
        return m.index.astype(str), m.columns.astype(str), m.column_values(order=order)
    pf = pq.ParquetFile(path)
    meta = pf.schema_arrow.pandas_metadata or {}
    index_cols = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    if len(index_cols) != 1:  # not written by write_matrix: let pandas interpret it
        df = pd.read_parquet(path, columns=None if columns is None else list(columns))
        values = np.array(df.to_numpy(dtype=np.float32), order=order)
        return df.index.astype(str), df.columns.astype(str), values
    names = [c for c in pf.schema_arrow.names if c != index_cols[0]]
    if columns is not None:
        columns = [str(c) for c in columns]
        missing = sorted(set(columns) - set(names))
        if missing:
            raise KeyError(f"{path}: no column(s) {missing[:5]}")
        names = columns
    index_name = next((c.get("name") for c in meta.get("columns", []) if c.get("field_name") == index_cols[0]),
                      index_cols[0])
    index = pd.Index(pf.read(columns=index_cols).column(0).to_pandas().astype(str).to_numpy(), name=index_name)
    n = pf.metadata.num_rows
    values = np.empty((n, len(names)), dtype=np.float32, order=order)
    for j in range(0, len(names), COLUMN_CHUNK):
        chunk = pf.read(columns=names[j : j + COLUMN_CHUNK], use_threads=False)
        if order == "F":
            for k, col in enumerate(chunk.columns):
                values[:, j + k] = col.to_numpy()
        else:
            buf = np.empty((n, chunk.num_columns), dtype=np.float32, order="F")
            for k, col in enumerate(chunk.columns):
                buf[:, k] = col.to_numpy()
            values[:, j : j + chunk.num_columns] = buf
            del buf
        del chunk
        release_arrow_memory()
    del pf
    release_arrow_memory(trim=True)
    return index, pd.Index(names, dtype=object).astype(str), values


def release_arrow_memory(trim=False):
    """Hand memory that pyarrow's allocator keeps cached after a read back to the system.

    Without this, the cached buffers of a chunked read stay in the process's RSS
    (hundreds of MB for a wide matrix) although nothing uses them. ``trim`` also
    returns the C heap's free pages (glibc ``malloc_trim``; e.g. the metadata of
    a file with 20,000 columns), where that exists.
    """
    import pyarrow as pa

    pool = pa.default_memory_pool()
    if hasattr(pool, "release_unused"):
        pool.release_unused()
    if trim:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


def to_jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def read_json(path):
    with open(path) as fh:
        return json.load(fh)
