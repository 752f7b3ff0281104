"""Writing a file so that a crash, a full disk or Ctrl-C never leaves half of it: one guarantee.

Every file mpinet writes (data files, run directories, plots, exports, checkpoint pointers)
goes through here. A replaced file is written under a fresh temporary name in the same
directory, flushed and fsynced, renamed onto its name (os.replace: atomic), and then the
directory is fsynced, so the rename itself survives a power cut. Readers see the old file
or the new one, never a mixture; on any exception the temporary file is removed and the old
file is left as it was. An appended line is written, flushed and fsynced before the call
returns.

    with replacing(path) as tmp:        # any writer that takes a path: h5py, savefig, ...
        h5py.File(tmp, "w") ...
    replace_text(path, text)            # small text files (config.toml, summary.json)
    append_line(path, line)             # one more line of a .jsonl file

Standard library only, so that every package of mpinet may import it.
"""

import os
import secrets
from contextlib import contextmanager
from pathlib import Path

TEMPORARY_GLOB = ".*.tmp"  # what temporary_path() names look like, for clean-ups


def temporary_path(target) -> Path:
    """A fresh hidden name beside `target`: renaming it onto `target` is then atomic."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def replacing(path):
    """Yield a temporary path beside `path` to write the new file to; when the block ends
    without an exception, that file replaces `path` durably (fsync, rename, fsync of the
    directory). On an exception it is removed and `path` stays as it was."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        fsync_path(tmp)  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    finally:  # also on Ctrl-C; after a successful rename there is nothing left to remove
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)  # the rename itself survives a power cut


def replace_text(path, text):
    """Replace the file at `path` by `text` (UTF-8), atomically and durably."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def append_line(path, line):
    """Append `line` (a newline is added) to the file at `path`; it is on disk on return."""
    path = Path(path)
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    if new:
        fsync_path(path.parent)  # the new file's name, too


def fsync_path(path):
    """Flush a file, or a directory's entries (a rename, an unlink), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not os.path.isdir(path):
            raise  # some file systems refuse fsync on a directory: the rename stays atomic
    finally:
        os.close(fd)
