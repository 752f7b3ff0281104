"""Weight initialisation (book chapter 6): He, Xavier or a fixed standard deviation."""

import numpy as np

CHOICES = "'he', 'xavier', 'relu', 'sigmoid' or a number"

# The book's spellings ('relu'/'he', 'sigmoid'/'xavier') both work.
ALIASES = {"relu": "he", "he": "he", "sigmoid": "xavier", "xavier": "xavier"}


def init_std(init, fan_in):
    """Standard deviation for a layer with `fan_in` inputs per output.

    'he' (alias 'relu'): sqrt(2 / fan_in); 'xavier' (alias 'sigmoid'): sqrt(1 / fan_in);
    a number: that fixed std (the book's 0.01 for SimpleConvNet).
    """
    if isinstance(init, bool):
        raise ValueError(f"model.init must be {CHOICES}, got {init!r}")
    if isinstance(init, int | float):
        if init <= 0:
            raise ValueError(f"init: a fixed std must be > 0, got {init}")
        return float(init)
    kind = ALIASES.get(str(init).lower())
    if kind is None:
        raise ValueError(f"model.init must be {CHOICES}, got {init!r}")
    return float(np.sqrt((2.0 if kind == "he" else 1.0) / fan_in))


def fill_normal_(w, std, rng):
    """Write std * N(0, 1) into w in place (w is a view into the parameter buffer)."""
    w[...] = std * rng.standard_normal(w.shape)
