"""What can go wrong with an archive, each naming the archive and the files concerned."""

from __future__ import annotations

from collections.abc import Sequence

from resurgo.errors import Damaged, OperationFailed, Undecryptable

_NOT_THIS_COPY = (
    "do not trust this copy: restore from another copy of the recovery set, or an older set"
)


class ArchiveError(OperationFailed):
    """An archive or manifest could not be written or read."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        archive: str | None = None,
        paths: Sequence[str] = (),
    ) -> None:
        super().__init__(message, hint)
        self.archive = archive
        self.paths = tuple(paths)


class ArchiveDamaged(ArchiveError, Damaged):
    """The bytes of an archive or manifest are not what was saved (corrupt, truncated)."""

    def __init__(self, archive: str, why: str, paths: Sequence[str] = ()) -> None:
        self.why = why
        where = f" (at {', '.join(paths)})" if paths else ""
        super().__init__(
            f"archive {archive} is damaged: {why}{where}",
            _NOT_THIS_COPY,
            archive=archive,
            paths=paths,
        )


class DecryptionFailed(ArchiveError, Undecryptable):
    """An encrypted archive without (the right) age identity."""

    def __init__(self, archive: str, why: str) -> None:
        super().__init__(
            f"cannot decrypt {archive}: {why}",
            "give the age identity file (the secret key) whose recipient the set was saved for",
            archive=archive,
        )


class UnsafePath(ArchiveError):
    """An archive that would write outside the target directory."""

    def __init__(self, archive: str, path: str, why: str) -> None:
        super().__init__(
            f"archive {archive} holds an unsafe entry {path}: {why}; nothing is written there",
            _NOT_THIS_COPY,
            archive=archive,
            paths=(path,),
        )


class RestoreFailed(ArchiveError):
    """The target refused a write (full disk, unsupported feature, permission)."""


class SaveFailed(ArchiveError):
    """The tree could not be read or the archive could not be written."""
