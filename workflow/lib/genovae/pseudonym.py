"""Keyed pseudonyms for sample ids (``privacy.pseudonymize``).

Every sample id is replaced, at the source (collect, simulate, apply_new), by
``"s_" + the first 16 hex digits of HMAC-SHA256(key, id)``, before anything is
written; every later file, plot, report and log therefore carries pseudonyms
only. The same key gives the same pseudonym for the same id in every run and
cohort (so a new cohort can be linked to the training cohort); without the key
the pseudonyms cannot be recomputed from ids, e.g. by trying likely ids.

The key is read from a file (``privacy.key_file``) or an environment variable
(``privacy.key_env``); it is never written anywhere. The id <-> pseudonym map
is written only to ``privacy.map_file`` (when set), readable by its owner only
(mode 0600).

Pseudonymisation is not anonymisation: expression profiles, sample-sheet
columns and the condition are still personal data, and whoever holds the key
or the map can re-identify every sample.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path

import pandas as pd

from . import io
from .errors import ConfigError, InputError

log = logging.getLogger(__name__)

PREFIX = "s_"
HEX_DIGITS = 16
MIN_KEY_LENGTH = 16
_KEY_HINT = "e.g. `openssl rand -hex 32 > genovae.key` (keep it outside results/ and out of version control)"


def read_key(key_file=None, key_env=None):
    """The pseudonymisation key as bytes, from exactly one of a file or an environment variable."""
    if bool(key_file) == bool(key_env):
        raise ConfigError(
            "privacy.key_file",
            "privacy.pseudonymize needs exactly one of privacy.key_file (a file holding the key) "
            "or privacy.key_env (the name of an environment variable holding it); " + _KEY_HINT,
        )
    if key_file:
        path = Path(key_file)
        if not path.is_file():
            raise ConfigError("privacy.key_file", f"{key_file}: file not found; create it, {_KEY_HINT}")
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError("privacy.key_file", f"{key_file}: cannot be read ({exc.strerror})")
        where = f"the key file {key_file}"
        key_name = "privacy.key_file"
    else:
        value = os.environ.get(key_env)
        if not value or not value.strip():
            raise ConfigError(
                "privacy.key_env",
                f"the environment variable {key_env} is not set or empty; export the key in it, {_KEY_HINT}",
            )
        key = value.strip().encode()
        where = f"the environment variable {key_env}"
        key_name = "privacy.key_env"
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            key_name,
            f"the key in {where} has {len(key)} characters; use at least {MIN_KEY_LENGTH} random ones, {_KEY_HINT}",
        )
    return key


def key_id(key):
    """A short public fingerprint of the key (HMAC of a constant): tells keys apart, reveals nothing."""
    return hmac.new(key, b"genovae key id", hashlib.sha256).hexdigest()[:12]


def pseudonym(key, sample_id):
    digest = hmac.new(key, str(sample_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:HEX_DIGITS]


def pseudonyms(key, ids):
    """{raw id: pseudonym} for ``ids``; two ids with one pseudonym stop the run."""
    mapping = {}
    seen = {}
    for raw in ids:
        raw = str(raw)
        p = pseudonym(key, raw)
        if p in seen and seen[p] != raw:  # 2^-64 per pair: practically never
            raise InputError("sample ids", "two sample ids have the same pseudonym; use another key")
        seen[p] = raw
        mapping[raw] = p
    return mapping


#: ids shorter than this, or made of digits and punctuation only, are not looked for in free text
MIN_SCRUB_LENGTH = 4


def scrubbable(sample_id):
    """Whether an id can be found in free text without hitting other words or numbers.

    Too short (fewer than ``MIN_SCRUB_LENGTH`` characters) or too guessable (no letter:
    ``17``, ``2021-03``) ids would also match ages, counts, dates and condition levels;
    such ids are replaced in the id column only.
    """
    sample_id = str(sample_id).strip()
    return len(sample_id) >= MIN_SCRUB_LENGTH and any(c.isalpha() for c in sample_id)


class Scrubber:
    """Replace raw ids inside free text (notes, warnings, sample-sheet cells) by their pseudonyms.

    An id is replaced where it stands as a token: not directly preceded or
    followed by a letter or digit (so ``PT01`` in ``/x/PT01.sorted.bam`` is
    replaced, in ``PT010`` it is not), in any case (``pt01`` too). Only
    :func:`scrubbable` ids are looked for; :attr:`unsafe` lists the others.
    """

    def __init__(self, mapping):
        self.mapping = {str(k): v for k, v in mapping.items()}
        safe = [i for i in self.mapping if scrubbable(i)]
        self.unsafe = [i for i in self.mapping if not scrubbable(i)]
        self.folded = {}
        for i in safe:  # ids that differ only in case are matched in their exact case only
            self.folded[i.casefold()] = None if i.casefold() in self.folded else self.mapping[i]
        ids = sorted(safe, key=len, reverse=True)
        self.pattern = (
            re.compile(
                r"(?<![A-Za-z0-9])(?:" + "|".join(re.escape(i) for i in ids) + r")(?![A-Za-z0-9])", re.IGNORECASE
            )
            if ids
            else None
        )

    def _replace(self, m):
        text = m.group(0)
        if text in self.mapping:
            return self.mapping[text]
        return self.folded.get(text.casefold()) or text

    def is_id(self, text):
        """Whether ``text`` (a whole cell) is a scrubbable id, in any case."""
        if not isinstance(text, str):
            return False
        text = text.strip()
        return (text in self.mapping and scrubbable(text)) or bool(self.folded.get(text.casefold()))

    def __call__(self, text):
        """Free text: every scrubbable id replaced where it stands as a token."""
        if self.pattern is None or not isinstance(text, str):
            return text
        return self.pattern.sub(self._replace, text)

    def inside(self, text):
        """A cell of a column that is not free text: ids inside longer text (a path, a title) are replaced;
        a cell that is just an id is kept (it is a value such as a condition level that equals an id)."""
        return text if self.is_id(text) else self(text)

    def column(self, values):
        """One text column of a sample sheet, scrubbed by its kind.

        * every non-empty cell is an id (a matched-sample column): each replaced by its pseudonym;
        * free text (some cell holds a space): ids replaced as tokens, also where a cell is just an id;
        * other text (levels, codes, paths): ids replaced inside longer cells only
          (:meth:`inside`), so a condition ``1``..``4`` or an age never becomes a pseudonym.
        """
        cells = [v for v in values if isinstance(v, str) and v.strip()]
        if cells and all(self.is_id(v) for v in cells):
            return values.map(lambda v: self(v.strip()) if isinstance(v, str) and v.strip() else v)
        if any(any(c.isspace() for c in v.strip()) for v in cells):
            return values.map(self)
        return values.map(self.inside)


def pseudonymize_sheet(sheet, mapping, id_column="sample_id"):
    """The sample sheet with pseudonymous ids, and raw ids scrubbed from its text (:meth:`Scrubber.column`)."""
    scrub = Scrubber(mapping)
    out = sheet.copy()
    out.index = pd.Index([mapping[str(i)] for i in sheet.index], name=sheet.index.name)
    for col in out.columns:
        if col == id_column:
            out[col] = out.index.to_numpy()
        elif out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = scrub.column(out[col])
    renamed = {c: scrub.inside(c) for c in out.columns if isinstance(c, str)}
    return out.rename(columns=renamed)


def pseudonymize_frame(df, mapping):
    """A frame (or :class:`~genovae.sparse.SparseMatrix`) indexed by raw sample id, re-indexed by
    pseudonym (the values are not copied)."""
    if hasattr(df, "with_index"):
        return df.with_index(pd.Index([mapping[str(i)] for i in df.index], name=df.index.name))
    return df.set_axis(pd.Index([mapping[str(i)] for i in df.index], name=df.index.name), axis=0)


def check_outside_results(path, key, results="results"):
    """Keys and id maps must not be stored with the results that are meant to be shared.

    Both paths are resolved first (relative to the working directory, ``..`` and symbolic
    links followed), so ``private/../results/x``, an absolute path and a link into
    ``results/`` are all caught.
    """
    where, inside = Path(path).resolve(), Path(results).resolve()
    if where == inside or inside in where.parents:
        raise ConfigError(key, f"{path}: must not be inside results/ (results are meant to be shared)")


def write_map(path, mapping):
    """Write the id <-> pseudonym map (TSV), readable and writable by its owner only (0600).

    The file is created with ``os.open(..., 0o600)`` under a temporary name and
    renamed into place, so it is never readable by others, not even while written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    io.remove_stale_tmp(path)
    tmp = path.with_name(f".{path.name}.{io.tmp_owner()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w") as fh:
            fh.write("sample_id\tpseudonym\n")
            for raw, p in mapping.items():
                fh.write(f"{raw}\t{p}\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Settings:
    """``privacy`` settings as passed to a rule (never the key itself)."""

    def __init__(self, pseudonymize=False, key_file=None, key_env=None, map_file=None, **_):
        self.pseudonymize = bool(pseudonymize)
        self.key_file = key_file
        self.key_env = key_env
        self.map_file = map_file

    def key(self):
        return read_key(self.key_file, self.key_env)


def apply_to_cohort(matrix, sheet, privacy, id_column="sample_id"):
    """Pseudonymise a matrix (index = ids) and its sample sheet (index = ids) with ``privacy``.

    Returns (matrix, sheet, mapping, scrubber, manifest entry); with pseudonymisation off,
    the inputs unchanged, an empty mapping and ``None`` for the scrubber.
    """
    s = Settings(**(privacy or {}))
    if not s.pseudonymize:
        return matrix, sheet, {}, None, {"pseudonymized": False}
    key = s.key()
    mapping = pseudonyms(key, list(sheet.index) if sheet is not None else list(matrix.index))
    extra = [i for i in matrix.index if str(i) not in mapping]
    if extra:
        mapping.update(pseudonyms(key, extra))
    matrix = pseudonymize_frame(matrix, mapping)
    if sheet is not None:
        sheet = pseudonymize_sheet(sheet, mapping, id_column)
    if s.map_file:
        check_outside_results(s.map_file, "privacy.map_file")
        write_map(s.map_file, mapping)
    entry = {"pseudonymized": True, "key_id": key_id(key), "id_map_written": bool(s.map_file)}
    scrub = Scrubber(mapping)
    if scrub.unsafe:
        entry["ids_replaced_in_id_column_only"] = len(scrub.unsafe)
        log.warning(
            "%d of %d sample ids are shorter than %d characters or have no letter (e.g. integer ids): they are "
            "replaced in the id column and the matrix, but not looked for in free text (notes, titles, paths), "
            "where they would also match numbers and levels; check those columns yourself (docs/privacy.md)",
            len(scrub.unsafe), len(mapping), MIN_SCRUB_LENGTH,
        )
    return matrix, sheet, mapping, scrub, entry
