"""Human-readable device names from user-agent strings (ua-parser's regexes)."""

from __future__ import annotations

from functools import lru_cache

from ua_parser import parse

UNKNOWN_DEVICE = "Unknown device"


@lru_cache(maxsize=4096)
def describe_device(user_agent: str | None) -> str:
    """``"Chrome 120 on Mac OS X"``-style name; the cache keeps hot paths cheap."""
    if not user_agent:
        return UNKNOWN_DEVICE
    result = parse(user_agent)
    browser = result.user_agent
    os = result.os
    device = result.device
    parts: list[str] = []
    if browser and browser.family != "Other":
        parts.append(f"{browser.family} {browser.major}" if browser.major else browser.family)
    if os and os.family != "Other":
        parts.append(f"on {os.family}")
    if device and device.family not in ("Other", "Mac", "") and not parts:
        parts.append(device.family)
    return " ".join(parts) if parts else UNKNOWN_DEVICE
