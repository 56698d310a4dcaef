"""Adapters registered under the ``crmbench.adapters`` entry-point group, picked by URL scheme.

Entry points are imported one at a time, on demand: an adapter whose client library is
missing fails alone, with a message naming the package.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from bench.adapters.base import Adapter
from bench.errors import UserError

GROUP = "crmbench.adapters"

_SECRET_NAME = re.compile(
    r"token|secret|passw|pwd|credential|signature|api_?key|access_?key|private"
    r"|(?:^|[_.\-])(?:key|sig|auth)(?:$|[_.\-])",
    re.IGNORECASE,
)


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        # The first distribution on sys.path wins, as with imports.
        found.setdefault(ep.name.lower(), ep)
    return found


def installed_schemes() -> list[str]:
    """URL schemes of the installed adapters, without importing any of them."""
    return sorted(_entry_points())


def scheme_of(url: str) -> str:
    """The adapter-selecting scheme of a target URL, lowercased."""
    scheme = urlsplit(url).scheme.lower()
    if not scheme or "://" not in url:
        raise UserError(
            f"target {url!r} is not a URL; expected SCHEME://..., with SCHEME one of "
            f"{', '.join(installed_schemes())}"
        )
    return scheme


def load_adapter(scheme: str) -> type[Adapter]:
    """Import the adapter class registered for ``scheme`` (and nothing else)."""
    points = _entry_points()
    ep = points.get(scheme.lower())
    if ep is None:
        raise UserError(
            f"no adapter for URL scheme {scheme!r}; installed: {', '.join(sorted(points))}"
        )
    try:
        cls: type[Adapter] = ep.load()
    except ImportError as exc:
        missing = exc.name or str(exc)
        raise UserError(
            f"adapter {scheme!r} ({ep.value}) needs the package {missing!r}, which is not "
            f"installed: pip install {missing.split('.')[0]}"
        ) from exc
    return cls


def adapter_classes() -> dict[str, type[Adapter]]:
    """Every installed adapter that imports, by scheme; broken ones are left out."""
    out: dict[str, type[Adapter]] = {}
    for scheme in installed_schemes():
        try:
            out[scheme] = load_adapter(scheme)
        except UserError:
            continue
    return out


def create_adapter(
    url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
) -> Adapter:
    """The adapter for a target URL, built but not opened; credentials come from ``env``."""
    return load_adapter(scheme_of(url)).from_url(url, env=env, run_id=run_id)


def redact_url(url: str) -> str:
    """``url`` without user info and without query parameters whose names look secret."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    kept = [
        piece for piece in parts.query.split("&")
        if piece and not _SECRET_NAME.search(unquote_plus(piece.partition("=")[0]))
    ]
    query = "&".join(kept)
    if netloc or "//" not in url:
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    # urlunsplit would turn noop://?x into noop:?x, which no longer parses the same way.
    return (
        f"{parts.scheme}://{parts.path}" + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


def describe_adapters() -> list[dict[str, Any]]:
    """Each installed adapter with its class path and declared capabilities (or load error)."""
    out: list[dict[str, Any]] = []
    for scheme, ep in sorted(_entry_points().items()):
        entry: dict[str, Any] = {"scheme": scheme, "class": ep.value}
        try:
            cls = load_adapter(scheme)
            entry["name"] = cls.name
            entry["capabilities"] = {
                cid: {"support": cap.support, "note": cap.note}
                for cid, cap in cls.capabilities.items()
            }
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        out.append(entry)
    return out
