"""What several commands share: JSON options and the render progress bar.

Below both ``cli.py`` and the command modules, so that each command module imports on its own.
"""

from __future__ import annotations

import json

from ..errors import UserError


def json_option(text: str | None, name: str) -> dict:
    """The JSON object given to an option such as --storage-options ({} when none); a `UserError` else."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{name}: not valid JSON ({e.msg}); e.g. {name} '{{\"anon\": false}}'") from None
    if not isinstance(value, dict):
        raise UserError(f"{name}: expected a JSON object")
    return value


def progress_bar(p):
    """An `on_progress` callback: the cost-weighted task bar of ``progress.progress_bar``."""
    from ..progress import progress_bar as bar

    return bar(p)
