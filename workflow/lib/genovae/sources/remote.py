"""Where a file comes from: http(s) URLs, GEO download URLs, and sha256 checks of (downloaded) files.

Light on purpose (no pandas at import): the Snakefile uses these names when it is parsed.
"""

from __future__ import annotations

import os
import re

from ..errors import ConfigError, InputError

GEO_URL = "https://ftp.ncbi.nlm.nih.gov/geo/series/{stub}/{acc}/matrix/{acc}_series_matrix.txt.gz"


def is_url(location):
    return isinstance(location, str) and location.lower().startswith(("http://", "https://"))


def geo_series_url(accession):
    """NCBI's download URL of a GEO series matrix, e.g. GSE1234 ->
    https://ftp.ncbi.nlm.nih.gov/geo/series/GSE1nnn/GSE1234/matrix/GSE1234_series_matrix.txt.gz

    Series with several platforms have one file per platform
    (``GSE1234-GPL96_series_matrix.txt.gz``); give that file's URL as
    ``data.expression`` instead.
    """
    acc = str(accession).strip().upper()
    m = re.fullmatch(r"GSE(\d+)", acc)
    if not m:
        raise ConfigError("data.geo", f"{accession!r} is not a GEO series accession (GSE followed by digits)")
    digits = m.group(1)
    stub = f"GSE{digits[:-3]}nnn"
    return GEO_URL.format(stub=stub, acc=acc)


def expected_sha256(value):
    """``data.sha256`` as {role: lower-case hex}; a plain string is the expression file's."""
    if not value:
        return {}
    if isinstance(value, str):
        value = {"expression": value}
    return {role: str(h).strip().lower() for role, h in value.items() if h}


def verify_sha256(path, expected, origin=None, discard=False):
    """Compare a file's sha256 with the expected one; on a mismatch optionally delete it.

    ``origin`` is where the file came from (a URL), named in the message with
    the local copy. ``discard`` removes the (downloaded) local copy, so that a
    bad download is neither used nor kept: the next run fetches it again.
    """
    from ..io import sha256sum  # genovae.io imports pandas: only when a file is checked

    actual = sha256sum(path)
    if actual == expected.lower():
        return actual
    if discard:
        try:
            os.unlink(path)
            what = f"the downloaded copy {path} is deleted and not used"
        except OSError:
            what = f"the downloaded copy {path} is not used"
    else:
        what = "the file is not used"
    raise InputError(
        origin or path,
        f"sha256 mismatch: expected {expected.lower()}, got {actual}; {what} "
        "(check data.sha256, or whether the file changed at its source)",
    )
