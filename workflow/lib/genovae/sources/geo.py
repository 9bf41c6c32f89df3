"""GEO series matrix files (``GSE..._series_matrix.txt.gz``): the expression table and the sample sheet."""

from __future__ import annotations

import zlib

import pandas as pd

from .. import io
from ..errors import InputError
from .common import Source, check_ids, note, read_text_table


def read_geo_series_matrix(path):
    """A GEO series matrix: the expression table and the ``!Sample_*`` sample sheet.

    Returns a :class:`Source` whose values are probes/genes (ID_REF) x samples
    (GSM ids; text, checked later) and whose sheet has ``sample_id`` (=
    geo_accession), ``title``, ``geo_accession``, the other single-valued
    ``!Sample_*`` fields, and one column per ``characteristics_ch1`` key
    ("disease state: AML" -> column ``disease state``).
    """
    io.check_readable(path)
    sample_lines, series = [], {}
    table, begun, ended, tables = [], False, False, 0
    try:
        with io.open_text(path) as fh:
            for line in fh:
                line = line.rstrip("\r\n")
                low = line.lower()
                if low.startswith("!series_matrix_table_begin"):
                    begun, tables = True, tables + 1
                    continue
                if low.startswith("!series_matrix_table_end"):
                    ended = True
                    continue
                if ended or tables > 1:  # after the first table: only look for another one
                    if line.startswith("!Sample_platform_id"):
                        sample_lines.append(("platform_id", [_unquote(f) for f in line.split("\t")[1:]]))
                    continue
                if begun:
                    if line.strip():
                        table.append(line)
                elif line.startswith("!Sample_"):
                    fields = line.split("\t")
                    sample_lines.append((fields[0][len("!Sample_"):], [_unquote(f) for f in fields[1:]]))
                elif line.startswith("!Series_"):
                    fields = line.split("\t")
                    series.setdefault(fields[0][len("!Series_"):], _unquote(fields[1]) if len(fields) > 1 else "")
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(path, f"cannot be decompressed ({exc}); is the gzip file truncated?")
    platforms = sorted({p for key, values in sample_lines if key == "platform_id" for p in values if p})
    if tables > 1 or len(platforms) > 1:
        raise InputError(
            path,
            f"holds {max(tables, len(platforms))} platform tables ({', '.join(platforms) or 'platforms not named'}); "
            "genovae reads one platform: use the series' per-platform file "
            "(GSE..-GPL.._series_matrix.txt.gz) as data.expression",
        )
    if not begun:
        raise InputError(
            path,
            "has no '!series_matrix_table_begin' line: not a GEO series matrix file "
            "(or a truncated one); set data.format if this is another kind of table",
        )
    if not ended:
        raise InputError(path, "has no '!series_matrix_table_end' line: the file is truncated")
    if len(table) < 2:
        raise InputError(
            path,
            "the series matrix table has no data rows; GEO leaves it empty for most RNA-seq series, "
            "whose counts are in the series' supplementary files: download those and use them as "
            "data.expression with data.samples",
        )
    frame = read_text_table(path, "\t", text="\n".join(table) + "\n")
    frame.columns = [str(c).strip().strip('"') for c in frame.columns]
    id_col = frame.columns[0]
    # .str keeps a missing ID_REF missing (astype(str) made it the id 'nan' with pandas 2)
    frame[id_col] = frame[id_col].str.strip('"')
    frame = frame.set_index(id_col)
    check_ids(path, frame.index, "probe/gene (ID_REF)")
    check_ids(path, frame.columns, "sample")
    sheet = _geo_sheet(path, sample_lines, list(frame.columns))
    notes = []
    note(
        notes,
        path,
        f"GEO series matrix {series.get('geo_accession', '')}: {frame.shape[0]} rows (ID_REF) x "
        f"{frame.shape[1]} samples; sample sheet from {len(sample_lines)} !Sample_ lines "
        f"({sheet.shape[1]} columns)",
    )
    frame.index.name = None
    return Source(values=frame, parser="geo-series-matrix", sheet=sheet, notes=notes)


def _unquote(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text


def _geo_sheet(path, sample_lines, columns):
    lines = dict()
    for key, values in sample_lines:
        lines.setdefault(key, []).append(values)
    if "geo_accession" not in lines:
        raise InputError(path, "has no '!Sample_geo_accession' line: cannot name the samples")
    ids = lines["geo_accession"][0]
    n = len(ids)
    for key, rows in lines.items():
        for values in rows:
            if len(values) != n:
                raise InputError(
                    path,
                    f"'!Sample_{key}' has {len(values)} values but there are {n} samples "
                    "(!Sample_geo_accession)",
                )
    sheet = {"sample_id": ids}
    for key in ("title", "geo_accession"):
        if key in lines:
            sheet[key] = lines[key][0]
    characteristics = {}
    for key, rows in lines.items():
        if key in sheet:
            continue
        if key.startswith("characteristics_ch"):
            channel = key[len("characteristics_"):]
            for values in rows:
                for i, cell in enumerate(values):
                    if not cell.strip():
                        continue
                    if ":" in cell:
                        name, value = (s.strip() for s in cell.split(":", 1))
                    else:
                        name, value = key, cell.strip()
                    if channel != "ch1":
                        name = f"{name} ({channel})"
                    column = characteristics.setdefault(name, [None] * n)
                    column[i] = value if column[i] is None else f"{column[i]}; {value}"
        elif len(rows) == 1:
            sheet[key] = rows[0]
        else:
            sheet[key] = ["; ".join(v for v in parts if v) for parts in zip(*rows)]
    for name, values in characteristics.items():
        key = name if name not in sheet else f"characteristics: {name}"
        sheet[key] = values
    df = pd.DataFrame(sheet, dtype=object)
    check_ids(path, df["sample_id"], "sample (!Sample_geo_accession)")
    return df.set_index("sample_id", drop=False)
