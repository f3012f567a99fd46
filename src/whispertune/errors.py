"""Errors that whispertune reports to the user as one clear line (CLI exit code 2), and the one boundary that
turns OS and library failures a user can cause into them.

`user_error_for(exc)` is that boundary: an `OSError` whose errno a user causes (read-only or full disk, no
permission, a symlink loop, a name too long, a file where a directory belongs...) becomes one line naming the
file and the fix; so does such an errno met inside a library error (its message or its cause), and a corrupt
safetensors file. Anything else is not a user's doing and is left to the CLI's `internal error` line.
Libraries often do not say which file they were reading: `reading(subject)` wraps such a call so that the
line names `subject` (a model, processor or adapter directory).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """A problem with the user's input, config or machine; the CLI prints it without a traceback."""

    exit_code = 2


class ConfigError(UserError):
    """An unknown key, a wrong type or a value outside the accepted set in a config or flag."""


class AudioError(UserError):
    """An audio file that cannot be used; `reason` is a short machine-readable tag for reports."""

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


class HardwareError(UserError):
    """A requested mode (quantization, precision) that this machine cannot run."""


# errno -> what the user can do about it (the message starts with the OS's own words, e.g. "No space left on device")
_OS_FIXES: dict[int, str] = {
    errno.EROFS: "write to a directory on a writable disk",
    errno.EACCES: "fix its permissions or use another path",
    errno.EPERM: "fix its permissions or use another path",
    errno.ENOSPC: "free some space or write to another disk",
    errno.EDQUOT: "free some space or write to another disk",
    errno.ELOOP: "a symlink loop? fix or remove the link",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file; use another path",
    errno.EISDIR: "name a file, not a directory",
    errno.EEXIST: "a file of that name is in the way; use another path",
    errno.EIO: "a failing disk or network file system? check it",
    errno.EMFILE: "raise the limit of open files (ulimit -n)",
}


def os_error_message(exc: OSError, subject: str | None = None) -> str | None:
    """`<file>: <the OS's words>; <fix>` for an errno a user causes, else None."""
    fix = _OS_FIXES.get(exc.errno or -1)
    if fix is None:
        return None
    where = exc.filename or subject
    what = f"{exc.strerror or os.strerror(exc.errno)}; {fix}"
    return f"{where}: {what}" if where else what


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _errno_in_text(text: str) -> int | None:
    """A known errno named in a library's message (Rust's `Os { code: 28, ... }`, C++ `strerror` texts)."""
    for code in _OS_FIXES:
        if os.strerror(code) in text:
            return code
    return None


def user_error_for(exc: BaseException, subject: str | None = None) -> UserError | None:
    """The one-line `UserError` a failure maps to (see the module docstring), or None for a bug."""
    for link in _chain(exc):
        if isinstance(link, UserError):
            return link
        if isinstance(link, OSError):
            message = os_error_message(link, subject)
            if message:
                return UserError(message)
    detail = " ".join(str(exc).split())[:300]
    code = _errno_in_text(str(exc))
    if code is not None:
        return UserError(f"{os_error_message(OSError(code, os.strerror(code)), subject)} ({detail})")
    if isinstance(exc, RuntimeError) and "inline_container" in str(exc) and (
            "unexpected pos" in str(exc) or "failed writing" in str(exc)):
        # torch.save's zip writer reports a short write (full disk, file size limit) without an errno
        where = f"{subject}: " if subject else ""
        return UserError(f"{where}torch could not finish writing a file ({detail}): the disk is probably full or "
                         "a file size limit was reached; free space or choose another output directory, then "
                         "resume with --resume (the last complete checkpoint is kept)")
    if type(exc).__name__ == "SafetensorError":
        where = f"{subject}: " if subject else ""
        return UserError(f"{where}a safetensors file is corrupt or truncated ({detail}); re-download or re-export it")
    if subject is not None and isinstance(exc, (OSError, json.JSONDecodeError, UnicodeDecodeError)):
        return UserError(f"cannot load {subject} ({detail}); check the name, or re-download or re-save it")
    return None


@contextmanager
def reading(subject: str) -> Iterator[None]:
    """Map the failures of a library call that reads `subject` with `user_error_for(exc, subject)`."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        mapped = user_error_for(exc, subject)
        if mapped is None:
            raise
        raise mapped from exc
