"""The secret values this process was given (its storage options' keys, tokens, headers: what
workers never receive), masked in every line it prints or logs: the command line's error lines,
storage retry warnings, lease warnings, the viewer's log. Pure Python, so the command line can
use it without importing fsspec or Zarr."""

from __future__ import annotations

SECRETS: set[str] = set()
MIN_LENGTH = 4  # shorter values are not masked (a one-letter secret would mask every such letter)


def remember(value: str) -> None:
    """Mask ``value`` in every line this process prints or logs from now on."""
    if len(value) >= MIN_LENGTH:
        SECRETS.add(value)


def mask(text: str) -> str:
    """``text`` with every remembered secret replaced by ``***`` (longest first: a secret holding
    another is masked whole)."""
    for secret in sorted(SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
