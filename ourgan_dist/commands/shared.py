"""What several commands share: JSON options, the seed types and the render progress bar.

Below both ``cli.py`` and the command modules, so that each command module imports on its own.
"""

from __future__ import annotations

import json

import click

from ..errors import UserError

# A render's noise is keyed by its seed's low 64 bits (noise.SEED_LIMIT, which a test keeps equal
# to this): seed 2**64 would render the same bytes as seed 0, so seeds stop below it.
RENDER_SEED_LIMIT = 1 << 64
# Training derives its generators' seeds from the seed by arithmetic (seed * 7919 + ..., seed + 2),
# and torch's generators take seeds below 2**64: training seeds stop well below that, at 2**48.
TRAIN_SEED_LIMIT = 1 << 48


class Seed(click.ParamType):
    """A seed: a whole number in [0, limit), refused outside it with the range and the reason."""

    name = "seed"

    def __init__(self, limit: int, why: str):
        self.limit, self.why = limit, why

    def get_metavar(self, param, ctx=None) -> str:  # noqa: ARG002 - click's signature
        return f"0..2**{self.limit.bit_length() - 1}-1"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        else:
            try:
                n = int(str(value).strip(), 10)
            except ValueError:
                self.fail(f"{value!r} is not a whole number", param, ctx)
        if not 0 <= n < self.limit:
            self.fail(
                f"{n} is outside the seeds 0 to {self.limit - 1} (2**{self.limit.bit_length() - 1} - 1): {self.why}", param, ctx
            )
        return n


RENDER_SEED = Seed(
    RENDER_SEED_LIMIT, "a render's noise is keyed by 64 bits of the seed, so a larger seed would repeat a smaller one's image"
)
TRAIN_SEED = Seed(TRAIN_SEED_LIMIT, "training derives its random generators' seeds from it, which must stay below 2**64")


# --storage-options from the environment when the command line gives none: a command line shows
# in `ps` and shell history, an environment variable or a file does not (docs/safety.md)
STORAGE_OPTIONS_ENV = "OURGAN_STORAGE_OPTIONS"


def json_option(text: str | None, name: str, env: str | None = None) -> dict:
    """The JSON object given to an option such as --storage-options ({} when none); a `UserError` else.

    ``text`` is the JSON itself or ``@PATH``, a file holding it. When the option is not given,
    the environment variable ``env`` (if named and set) is read the same way: the command line
    wins over the environment."""
    import os

    source = name
    if not text and env and os.environ.get(env, "").strip():
        text, source = os.environ[env], f"{env} (the environment; {name} not given)"
    if not text:
        return {}
    if text.startswith("@"):
        path = os.path.expanduser(text[1:])
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise UserError(
                f"{source}: cannot read the options file {path!r} ({e.strerror or e}); give "
                f"@PATH of a JSON file, e.g. {name} @storage.json"
            ) from None
        except UnicodeDecodeError:
            raise UserError(f"{source}: the options file {path!r} is not UTF-8 text; it should hold a JSON object") from None
        source = f"{source} (file {path!r})"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{source}: not valid JSON ({e.msg}); e.g. {name} '{{\"anon\": false}}' or {name} @options.json") from None
    if not isinstance(value, dict):
        raise UserError(f"{source}: expected a JSON object")
    return value


def remember_secrets(options: dict) -> None:
    """Note every string value of ``options`` that workers would not receive (a key, a secret, a
    token, a header: anything off ``worker_access.WORKER_OPTIONS``), so that an error line that
    quotes one (a storage library's "Invalid type for parameter SSECustomerKey, value: ...") is
    printed or logged with it masked (``masking``)."""
    from ..engine.executors.worker_access import for_worker_options
    from ..masking import remember

    missing = object()

    def collect(value, kept) -> None:  # kept: what workers get at this place, ``missing`` if nothing
        if isinstance(value, str):
            if kept is missing or kept != value:
                remember(value)  # not for workers, or given to them only without its user:password@
        elif isinstance(value, dict):
            for k, v in value.items():
                collect(v, kept.get(k, missing) if isinstance(kept, dict) else missing)
        elif isinstance(value, (list, tuple)):
            for v in value:
                collect(v, missing)

    collect(options, for_worker_options(options))


def storage_options_option(text: str | None) -> dict:
    """--storage-options: the option's JSON or @FILE, else OURGAN_STORAGE_OPTIONS (JSON or @FILE).
    Its values that are not for workers are remembered, to be masked in error lines."""
    options = json_option(text, "--storage-options", env=STORAGE_OPTIONS_ENV)
    remember_secrets(options)
    return options


def progress_bar(p):
    """An `on_progress` callback: the cost-weighted task bar of ``progress.progress_bar``."""
    from ..engine.progress import progress_bar as bar

    return bar(p)
