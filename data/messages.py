"""An exception as one line: the form every mpinet error message takes, defined once.

A user error reads `<subject>: <found>; expected <what>; <what to do>` on ONE line. Errors
from libraries do not: HDF5 reports a full disk as a multi-line dump ("Can't synchronously
write data (file write failed: time = ..., errno = 28, error message = 'No space left on
device', buf = 0x...)"). `one_line` folds any exception into one line; `os_error_line` turns
an OSError met while writing a file into the cause, the file and what to do, and `written`
applies it to a block of writes.

Standard library only, so that every package of mpinet may import it.
"""

import errno
import os
from contextlib import contextmanager
from pathlib import Path

ADVICE = {
    errno.ENOSPC: "free space on that device, or choose another {option}",
    errno.EDQUOT: "free space in your quota, or choose another {option}",
    errno.EROFS: "the file system is read-only; choose another {option}",
    errno.EACCES: "check the directory's permissions, or choose another {option}",
    errno.EPERM: "check the directory's permissions, or choose another {option}",
}


def one_line(error):
    """The exception's message with its whitespace folded to single spaces (its type's name
    when it has no message)."""
    return " ".join(str(error).split()) or type(error).__name__


def os_error_line(error, path, option="--run-dir"):
    """'<path>: No space left on device; expected to write it; free space ...'; `option`
    is the flag that chooses another place to write."""
    code = getattr(error, "errno", None)
    cause = os.strerror(code) if code else one_line(error)[:200]
    advice = ADVICE.get(code, "check the path and the disk, then run again")
    return f"{path}: {cause}; expected to write it; {advice.format(option=option)}"


@contextmanager
def written(path, option="--run-dir"):
    """Writes inside the block that fail with an OSError raise one line naming `path`."""
    try:
        yield Path(path)
    except OSError as e:
        raise OSError(os_error_line(e, path, option)) from None
