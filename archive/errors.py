"""Errors raised while writing an archive.

Both are deliberately unrelated classes: a build that was cancelled is not a failure, so a
caller that maps :class:`ArchiveError` to a failed job never mistakes a cancellation for one.
"""

from __future__ import annotations


class ArchiveError(Exception):
    """The archive cannot be written as specified.

    Raised for an invalid :class:`~archive.models.ArchiveSpec` (no core file, duplicate file
    names, a batch whose column count does not match its file) and for a value that cannot be
    encoded as a cell. The message names the file, and for a bad value the row (its
    ``coreid``) and the column, so a user can act on it. Rows are never dropped silently.
    """

    def __init__(
        self,
        message: str,
        *,
        filename: str | None = None,
        coreid: str | None = None,
        column: str | None = None,
    ) -> None:
        super().__init__(message)
        #: The data file being written, when the error concerns one.
        self.filename = filename
        #: The ``coreid`` of the offending row, when the error concerns one value.
        self.coreid = coreid
        #: The header of the offending column, when the error concerns one value.
        self.column = column


class ArchiveCancelled(Exception):
    """``should_cancel`` returned True; the sink holds an incomplete archive to discard."""
