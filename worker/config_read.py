"""Reading a config: TOML text and `--set section.key=value` values, checked against the
sections (worker/sections.py) as they are merged in.

An unknown section or key is a one-line error that lists the valid ones and, for a typo or a
name another tool uses (learning_rate, num_epochs, ...), says "did you mean ...?". A value
of the wrong type names the key, what it got and the type it expects.
"""

import ast
import dataclasses
import tomllib
from difflib import get_close_matches

from .sections import SECTIONS


def read_toml(path):
    """A --config file -> its tables (a one-line error when it is missing or not TOML)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"config file {path}: no such file; expected a .toml file; "
            f"pass an existing file to --config"
        ) from None
    except OSError as e:
        raise OSError(
            f"config file {path}: {e.strerror or e}; expected a readable .toml "
            f"file; check the path and its permissions"
        ) from None
    return parse_toml(text, f"config file {path}")


def parse_toml(text, name):
    """TOML text -> its tables; `name` says where the text came from in an error."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(
            f"{name}: not valid TOML ({e}); expected sections such as "
            f"[train] with key = value lines; fix the file"
        ) from None


def parse_override(item):
    """'section.key=value' (one --set) -> {section: {key: value}}."""
    key, sep, text = item.partition("=")
    if not sep or "." not in key:
        raise ValueError(f"--set {item}: not section.key=value; expected e.g. --set train.epochs=5")
    section, name = key.strip().split(".", 1)
    return {section: {name: parse_value(text.strip())}}


def parse_value(text):
    """Python/TOML literals (1e-3, true, [100, 50], 'adam'); anything else is a string."""
    lowered = {"true": True, "false": False}.get(text.lower())
    if lowered is not None:
        return lowered
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def merge(values, new, source):
    """Check the tables `new` (from `source`) against the sections; store them in `values`."""
    for section, items in new.items():
        if section not in SECTIONS:
            raise ValueError(
                f"config section [{section}] ({source}): unknown; expected one "
                f"of {', '.join(SECTIONS)}{did_you_mean(section, SECTIONS)}"
            )
        if not isinstance(items, dict):
            raise ValueError(
                f"config section [{section}] ({source}): got a value; expected a table of keys"
            )
        valid = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        for key, value in items.items():
            if key not in valid:
                keys = [f"{section}.{k}" for k in valid]
                raise ValueError(
                    f"config key {section}.{key} ({source}): unknown; expected "
                    f"one of {', '.join(keys)}"
                    f"{did_you_mean(f'{section}.{key}', keys)}"
                )
            values[section][key] = typed(f"{section}.{key}", value, valid[key].type, source)


# Names other tools use, so that a user coming from them is pointed at ours.
SYNONYMS = {
    "learning_rate": "lr",
    "num_epochs": "epochs",
    "epoch": "epochs",
    "batch": "batch_size",
    "steps": "max_steps",
    "optimizer": "name",
    "model": "name",
}


def did_you_mean(name, valid):
    """'; did you mean train.epochs?' for the nearest valid name (typos and synonyms)."""
    section, _, key = name.rpartition(".")
    prefix = f"{section}." if section else ""
    keys = [v.removeprefix(prefix) for v in valid]
    synonyms = {k: v for k, v in SYNONYMS.items() if v in keys}
    near = get_close_matches(key, keys + list(synonyms), n=1, cutoff=0.6)
    return f"; did you mean {prefix}{synonyms.get(near[0], near[0])}?" if near else ""


def typed(key, value, annotation, source):
    """Check value against the field's annotation; ints are accepted where floats are."""
    allowed = getattr(annotation, "__args__", (annotation,))
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, bool):
        if bool in allowed:
            return value
    elif isinstance(value, int) and int in allowed:
        return value
    elif isinstance(value, int | float) and float in allowed:
        return float(value)
    elif isinstance(value, str | list) and type(value) in allowed:
        return value
    names = " or ".join(TYPE_NAMES.get(a, a.__name__) for a in allowed)
    raise ValueError(f"config key {key} ({source}): got {value!r}; expected {names}")


TYPE_NAMES = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    list: "a list",
    type(None): "unset",
}
