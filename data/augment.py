"""Chapter 8's suggestion: enlarge the training set by shifting and rotating images a little.

Each image gets its own random integer shift of up to `shift` pixels along each axis and
its own rotation of up to `rotate` degrees about the image centre. The whole batch is moved
at once: for every output pixel we compute where it comes from in the input image and read
it there by bilinear interpolation; pixels that come from outside the image are black (0).
Everything is computed in the images' own dtype, so float32 batches stay float32.
"""

import numpy as np

DEFAULTS = {"shift": 0, "rotate": 0.0}  # both off: augmentation is opt-in


def check_augment(augment):
    """Validate a config value such as {"shift": 2, "rotate": 10.0}; None when it does nothing."""
    if not augment:
        return None
    if not isinstance(augment, dict):
        raise ValueError(f"augment {augment!r}: expected a table like {{shift = 2, rotate = 10.0}}")
    unknown = sorted(set(augment) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"augment: unknown key {unknown[0]!r}; valid keys: shift, rotate")
    shift, rotate = augment.get("shift", 0), augment.get("rotate", 0.0)
    if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= 14:
        raise ValueError(f"augment: shift {shift!r}, expected a whole number of pixels, 0..14")
    if isinstance(rotate, bool) or not isinstance(rotate, int | float) or not 0 <= rotate <= 180:
        raise ValueError(f"augment: rotate {rotate!r}, expected degrees, 0..180")
    if shift == 0 and rotate == 0:
        return None
    return {"shift": shift, "rotate": float(rotate)}


def draw(rng, n, shift, rotate):
    """Random parameters for n images: row shifts, column shifts (ints) and angles (degrees)."""
    dy = rng.integers(-shift, shift, size=n, endpoint=True)
    dx = rng.integers(-shift, shift, size=n, endpoint=True)
    degrees = rng.uniform(-rotate, rotate, size=n)
    return dy, dx, degrees


def shift_rotate(images, dy, dx, degrees):
    """Images (n, h, w) each rotated by degrees[i] about the centre, then moved by (dy, dx)[i]."""
    n, h, w = images.shape
    dtype = images.dtype
    theta = np.deg2rad(np.asarray(degrees, dtype=dtype))[:, None, None]
    cos, sin = np.cos(theta), np.sin(theta)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    rows, cols = np.mgrid[0:h, 0:w].astype(dtype)
    # Undo the move for every output pixel: subtract the shift, then rotate back by -theta.
    y = rows - (cy + np.asarray(dy, dtype=dtype))[:, None, None]
    x = cols - (cx + np.asarray(dx, dtype=dtype))[:, None, None]
    src_y = cos * y + sin * x + cy
    src_x = cos * x - sin * y + cx
    return bilinear(images, src_y, src_x)


def bilinear(images, src_y, src_x):
    """Sample images (n, h, w) at fractional positions (n, h, w); outside the image reads 0."""
    n, h, w = images.shape
    # A one-pixel black frame; positions are clamped onto it, so outside reads 0.
    framed = np.zeros((n, h + 2, w + 2), images.dtype)
    framed[:, 1:-1, 1:-1] = images
    y = np.clip(src_y, -1, h) + 1  # now a position in the framed image: 0 .. h + 1
    x = np.clip(src_x, -1, w) + 1
    y0 = np.minimum(np.floor(y), h)  # the top-left neighbour; y0 + 1 is still in the frame
    x0 = np.minimum(np.floor(x), w)
    wy, wx = y - y0, x - x0  # how far towards the bottom/right neighbours
    # Index the four neighbours in the flattened batch: image i starts at i * framed size.
    stride = w + 2
    top_left = (y0 * stride + x0).astype(np.intp)
    top_left += (np.arange(n) * (h + 2) * stride)[:, None, None]
    flat = framed.reshape(-1)
    a, b = flat[top_left], flat[top_left + 1]
    c, d = flat[top_left + stride], flat[top_left + stride + 1]
    top = a + wx * (b - a)
    bottom = c + wx * (d - c)
    return top + wy * (bottom - top)
