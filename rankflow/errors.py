"""The base of every error a user can act on.

A :class:`RankflowError` means bad input, bad configuration or a failed check: its message
names the file, key, column or check and what was expected. The CLI prints it as one line
(no traceback) and exits with :attr:`RankflowError.exit_code`; Prefect tasks do not retry it,
because the same input fails the same way again. Anything else is a bug or a transient failure.
"""

from __future__ import annotations


class RankflowError(Exception):
    """A user-facing error; the message alone tells the user what to fix."""

    exit_code: int = 1


class ConfigError(RankflowError, ValueError):
    """A configuration file or setting that does not match its schema; names file and key."""

    exit_code = 2


class LockedError(RankflowError):
    """Another run holds the lock on a shared resource of this state directory."""
