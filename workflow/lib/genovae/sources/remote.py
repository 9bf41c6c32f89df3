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


#: HTTP statuses that redirect (requests' own list)
REDIRECT_STATUSES = (301, 302, 303, 307, 308)


def probe(url, timeout=30, max_redirects=10):
    """What the server says about ``url`` before anything is downloaded, checked as a user would want.

    A HEAD request, with redirects followed here one by one so that each target is checked: only
    http(s) targets are followed (a redirect to ``file://`` or another scheme is refused without
    reading anything). Returns ``{"url": final URL, "length": declared bytes or None, "framed": the
    body is chunked (its end is marked), "encoded": a Content-Encoding (the stored copy is decoded,
    so its size is not the declared one)}``. Network faults and HTTP errors are an
    :class:`InputError` naming the URL, never a traceback.
    """
    from urllib.parse import urljoin

    import requests

    current = url
    for _ in range(max_redirects + 1):
        try:
            r = requests.head(current, allow_redirects=False, timeout=timeout)
            if r.status_code in (403, 405, 501):  # servers that refuse HEAD: ask with a GET, read nothing
                r.close()
                r = requests.get(current, allow_redirects=False, timeout=timeout, stream=True)
            r.close()
        except requests.RequestException as exc:
            raise InputError(url, f"cannot be downloaded: {_network_reason(exc)}") from None
        if r.status_code in REDIRECT_STATUSES:
            target = urljoin(current, r.headers.get("Location", ""))
            if not is_url(target):
                raise InputError(url, f"redirects to {target!r}: only http(s) redirects are followed, nothing "
                                      "was read from it")
            current = target
            continue
        if r.status_code >= 400:
            raise InputError(url, f"the server answered HTTP {r.status_code} {r.reason or ''}".rstrip())
        headers = {k.lower(): v for k, v in r.headers.items()}
        length = headers.get("content-length", "")
        return {
            "url": current,
            "length": int(length) if length.strip().isdigit() else None,
            "framed": "chunked" in headers.get("transfer-encoding", "").lower(),
            "encoded": bool(headers.get("content-encoding")),
        }
    raise InputError(url, f"more than {max_redirects} redirects")


def _network_reason(exc):
    """requests' nested message in a few words: e.g. ``ConnectionError ([Errno 111] Connection refused)``."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    detail = errno.group(0) if errno else re.sub(r"\s+", " ", text)[:200]
    return f"{type(exc).__name__} ({detail})"


def download_sizes(origins, expected, probe=probe):
    """{role: the byte length its server declares} for the http(s) inputs among ``origins``.

    Collect compares the downloaded copy with it: a download cut short is refused even when the
    transfer itself did not say so. A server that declares no length (and does not mark the end of a
    chunked body) leaves a cut-short copy indistinguishable from the whole file: that input needs
    ``data.sha256`` (``expected``), else it is refused. ``probe`` may return None (unknown: e.g. a
    cluster job whose node has no network), which checks nothing.
    """
    sizes = {}
    for role, origin in origins.items():
        if not is_url(origin):
            continue
        info = probe(origin)
        sizes[role] = info["length"] if info and info["length"] is not None and not info["encoded"] else None
        if info and info["length"] is None and not info["framed"] and role not in expected:
            raise InputError(origin, "the server declares no length, so a download cut short could not be told "
                                     f"from the whole file; set data.sha256.{role} to the file's sha256 "
                                     "(sha256sum), or download it and give its local path")
    return sizes


def check_download_size(path, declared, origin):
    """A downloaded copy whose size is not the declared one is deleted and refused."""
    actual = os.path.getsize(path)
    if declared is None or actual == declared:
        return
    try:
        os.unlink(path)
    except OSError:
        pass
    raise InputError(origin, f"the download is {actual:,} bytes but the server declared {declared:,}: it was cut "
                             f"short (or the file changed meanwhile); the copy {path} is deleted and not used, "
                             "run again")
