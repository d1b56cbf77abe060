"""What several commands share: JSON options and the render progress bar.

Below both ``cli.py`` and the command modules, so that each command module imports on its own.
"""

from __future__ import annotations

import json
import sys

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
    """An `on_progress` callback drawing a tqdm bar of tasks and MP/s on stderr (the bar starts with the first task)."""
    from tqdm import tqdm

    bar = None
    pixels = 0

    def update(report, n, total):
        nonlocal bar, pixels
        if bar is None:
            bar = tqdm(total=total, unit="task", file=sys.stderr, dynamic_ncols=True)
        pixels += report.pixels
        bar.set_postfix_str(f"{report.key} {pixels / 1e6 / max(1e-9, bar.format_dict['elapsed']):.2f} MP/s",
                            refresh=False)
        bar.update(1)
        if n == total:
            bar.close()

    return update
