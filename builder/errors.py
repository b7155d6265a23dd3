"""The one exception type users see: what failed, where (a config key or a path), how to fix it."""

from __future__ import annotations


class MdbuildError(Exception):
    """A user-facing failure, printed as one line without a traceback."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(what)

    def __str__(self) -> str:
        return self.one_line()

    def one_line(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.fix:
            text += f" (fix: {self.fix})"
        return text


class Terminated(KeyboardInterrupt):
    """SIGTERM unwinds the build as Ctrl-C does: work directories are removed on the way out."""


class GateFailed(MdbuildError):
    """Verification found the artifact outside its tolerances; the report is kept for inspection."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (SDK errors carry pages of context)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


def missing_extra(package: str, extra: str, where: str) -> MdbuildError:
    return MdbuildError(
        f"the Python package '{package}' is not installed",
        where,
        f"pip install 'mdbuild[{extra}]'",
    )
