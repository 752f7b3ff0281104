"""What an attribute's value may be: Rule (a type, then a range check) and the validators
the schema's tables use (schema.py), plus the text form of a NumPy generator's state.

A value is checked as h5py reads it, made plain first (plain()): a bool is never an int, a
float is finite, JSON and TOML text must parse to what the rule wants.
"""

import json
import math
import tomllib
from dataclasses import dataclass
from datetime import datetime

import numpy as np

# The bit generators a NumPy Generator may hold: a stored state is tried on a fresh one.
BIT_GENERATORS = {
    "PCG64": np.random.PCG64,
    "PCG64DXSM": np.random.PCG64DXSM,
    "MT19937": np.random.MT19937,
    "Philox": np.random.Philox,
    "SFC64": np.random.SFC64,
}


@dataclass(frozen=True)
class Rule:
    """What one attribute must be: a Python type as h5py reads it, then a range check."""

    kind: type  # int, float or str
    expected: str  # for the message: "an integer >= 0"
    valid: object = None  # value -> truthy when it is in range; None: any value of `kind`

    def fits(self, value):
        if not _of_kind(value, self.kind):
            return False
        return self.valid is None or bool(self.valid(value))


def _of_kind(value, kind):
    if isinstance(value, bool | np.bool_):
        return False  # a bool is an int to Python; never to this schema
    if kind is float:
        return isinstance(value, float) and math.isfinite(value)
    return isinstance(value, kind)


def is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def json_text(check):
    """A validator of JSON text whose parsed value must pass `check`."""

    def valid(text):
        try:
            return check(json.loads(text))
        except ValueError:
            return False

    return valid


def toml_text(text):
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def iso_time(text):
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def world_sizes(value):
    return (
        isinstance(value, list)
        and len(value) >= 1
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in value)
    )


def running_sums(value):
    """Per rank: the training loss sum, correct count and sample count since the last eval."""
    return (
        isinstance(value, list)
        and len(value) >= 1
        and all(
            isinstance(r, list) and len(r) == 3 and all(is_number(x) and x >= 0 for x in r)
            for r in value
        )
    )


def rng_states(value):
    """Per rank: a bit generator's state (an object, or rng_state()'s JSON text of one) that a
    fresh generator of its kind accepts."""
    return isinstance(value, list) and len(value) >= 1 and all(map(_rng_state, value))


def _rng_state(state):
    if isinstance(state, str):  # each state as JSON text of its own (rng_state()), as the
        try:  # training loop of formats 1 and 2 writes it
            state = json.loads(state)
        except ValueError:
            return False
    kind = BIT_GENERATORS.get(state.get("bit_generator")) if isinstance(state, dict) else None
    if kind is None:
        return False
    try:
        kind(0).state = state
    except (ValueError, TypeError, KeyError, OverflowError):
        return False
    return True


# -- values as a message names them, and as h5py reads them ------------------------------


def describe(value, rule=None, limit=60):
    """'-3', "'abc'", 'the text \'600\'': what an attribute holds, short, for a message;
    its type is named when it is not the one `rule` wants."""
    if isinstance(value, bool | np.bool_):
        return f"a boolean {bool(value)}"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    if rule is not None and isinstance(value, rule.kind):
        return text
    kinds = {int: "an integer", float: "a float", str: "the text"}
    return f"{kinds.get(type(value), 'a ' + type(value).__name__)} {text}"


def plain(value):
    """An attribute as h5py reads it -> a plain Python value (str, int, float, bool)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


# -- random number generators -------------------------------------------------------------


def rng_state(rng):
    """A NumPy Generator's state as JSON text (for meta): the stream continues after restore."""
    return json.dumps(rng.bit_generator.state)


def set_rng_state(rng, state):
    """Put a state back into `rng` (in place: holders keep the object): rng_state()'s JSON
    text, or the state object itself (an element of meta["dropout_rngs"])."""
    rng.bit_generator.state = json.loads(state) if isinstance(state, str) else state
