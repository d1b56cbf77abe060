"""Error types. A ``UserError`` is something the user can fix: the CLI prints its one line."""

from __future__ import annotations


def some_names(names: list[str], shown: int = 3) -> str:
    """The first ``shown`` of ``names`` for a one-line message: "a, b, c, ..."."""
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2 (no traceback)."""


class ConfigError(UserError, ValueError):
    """A configuration value breaks a rule; the message names the field, the value and the rule."""


class PlanError(UserError, ValueError):
    """A render cannot be planned as asked (size, tile, halo, chunk)."""


class CheckpointError(UserError):
    """A model directory or checkpoint file is missing, corrupt, unsafe or of another version."""


class StoreError(UserError):
    """The output store is missing, not ours, incomplete, in use or not writable."""


class MisalignedWriteError(ValueError):
    """A write that does not cover whole chunks: refused, because it would be a read-modify-write
    of a chunk that another task may also write (a lost-update race)."""


class TileError(RuntimeError):
    """A tile task failed; carries the tile key so the failing subregion is known."""

    def __init__(self, key: object, cause: BaseException):
        super().__init__(f"tile {key} failed: {type(cause).__name__}: {cause}")
        self.key = key
        self.cause = cause

    def __reduce__(self):  # keep it picklable across Ray workers
        return (TileError, (self.key, self.cause))
