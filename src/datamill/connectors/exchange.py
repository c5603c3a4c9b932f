"""Swapping two folders in one atomic step: Linux ``renameat2(RENAME_EXCHANGE)``.

Python has no binding for it, so it is called through the C library. Where the kernel,
the C library or the file system lacks it, :func:`exchange_folders` answers False and the
caller publishes with two renames instead.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable
from functools import cache

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM}


@cache
def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    call.restype = ctypes.c_int
    found: Callable[..., int] = call
    return found


def exchange_folders(first: str, second: str) -> bool:
    """Swap the paths ``first`` and ``second`` (both must exist) atomically: a reader sees
    either the old or the new content at each path, never neither. False when this
    system cannot; an OSError for any other failure (e.g. a path that does not exist)."""
    call = _renameat2()
    if call is None:
        return False
    done = call(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), second)
