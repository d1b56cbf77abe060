"""Whole-file writes that a crash cannot leave half done.

The data goes to a temporary file beside the target, is flushed and fsynced, then renamed over
the target (``os.replace`` is atomic on POSIX and Windows): a reader sees the old file or the
new one, never a part, and after a power cut the new file's bytes are on disk before its name.
"""

from __future__ import annotations

import json
import os


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably; no temporary is left behind on error."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, data: dict) -> None:
    """``data`` as indented, key-sorted JSON with a final newline, written with ``write_atomic``."""
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
