"""The run directory's small files, and what an OS error while writing them says.

HDF5 reports a full disk as a multi-line dump ("Can't synchronously write data (file write
failed: time = ..., errno = 28, error message = 'No space left on device', buf = 0x...");
a user needs the cause, the file and what to do, in one line. Every write of a run's files
goes through `written(path)`, which turns any OSError into that line.
"""

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path

ADVICE = {
    errno.ENOSPC: "free space on that device, or choose another --run-dir",
    errno.EDQUOT: "free space in your quota, or choose another --run-dir",
    errno.EROFS: "the file system is read-only; choose another --run-dir",
    errno.EACCES: "check the directory's permissions, or choose another --run-dir",
    errno.EPERM: "check the directory's permissions, or choose another --run-dir",
}


def os_error_line(error, path):
    """'<path>: No space left on device; expected room to write it; free space ...'."""
    code = getattr(error, "errno", None)
    cause = os.strerror(code) if code else " ".join(str(error).split())[:200]
    advice = ADVICE.get(code, "check the path and the disk, then run again")
    return f"{path}: {cause}; expected to write it; {advice}"


@contextmanager
def written(path):
    """Writes inside the block that fail with an OSError raise one line naming `path`."""
    try:
        yield Path(path)
    except OSError as e:
        raise OSError(os_error_line(e, path)) from None


def replace_text(path, text):
    """Write `text` to `path` through a temporary name: never half a file under its name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with written(path):
        try:
            tmp.write_text(text)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)


def append_json(path, row):
    """One JSON object as one more line of a .jsonl file."""
    with written(path), open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_jsonl(path, up_to_step=None):
    """The rows of a .jsonl file (those with step <= up_to_step), [] when it is missing."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise ValueError(
                f"{path}: line {number} is {line[:40]!r}; expected one JSON "
                f"object per line; remove the line or the file"
            )
        if up_to_step is None or row.get("step", 0) <= up_to_step:
            rows.append(row)
    return rows
