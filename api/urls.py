"""URLs as browsers parse them (the WHATWG URL standard, by ada): what a
redirect target, an ``Origin`` header or a profile image URL really names."""

from __future__ import annotations

from ada_url import URL


def origin_of(url: str) -> str | None:
    """The origin a browser computes for an absolute http(s) URL
    (``scheme://host[:port]``, normalised by the WHATWG URL rules: case,
    default ports, IDNA, IPv6 brackets); None for anything else."""
    parsed = parse_absolute(url)
    return None if parsed is None else parsed.origin


def parse_absolute(url: str) -> URL | None:
    """An absolute http(s) URL parsed as browsers parse it (ada, WHATWG), or None."""
    try:
        parsed = URL(url)
    except ValueError:
        return None
    if parsed.protocol not in ("http:", "https:") or not parsed.hostname:
        return None
    return parsed
