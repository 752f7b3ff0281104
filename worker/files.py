"""The run directory's .jsonl files: one JSON object per line, appended durably, read back.

Every write of a run's files goes through `written(path)` (mpinet.data.messages), which turns
any OSError into one line naming the file and what to do, and through the one atomic writer
(mpinet.data.atomic): a crash never leaves half a file, nor loses a line already appended.
`written` and `replace_text` are re-exported here for the worker's modules.
"""

import json
from pathlib import Path

from mpinet.data.atomic import append_line
from mpinet.data.atomic import replace_text as _replace_text
from mpinet.data.messages import written

__all__ = ["append_json", "read_jsonl", "replace_text", "run_file", "written"]


def replace_text(path, text):
    """Write `text` to `path` atomically (mpinet.data.atomic); an OSError is one line."""
    with written(path):
        _replace_text(path, text)


def append_json(path, row):
    """One JSON object as one more line of a .jsonl file, on disk when this returns."""
    with written(path):
        append_line(path, json.dumps(row))


def run_file(run_dir, name):
    """run_dir / name, or a one-line error: run_dir is not a run directory."""
    path = run_dir / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: no {name}; expected a run directory; pass one that "
            f"`mpinet train --run-dir` wrote"
        )
    return path


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
