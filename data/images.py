"""Digits from outside MNIST, made to look like MNIST: image files, .npy arrays, JSON lists.

MNIST's digits were made from scanned black-and-white NIST digits: each was scaled to fit
a 20x20 box keeping its aspect ratio (anti-aliasing gave grey levels), then placed in a
28x28 field so that its centre of mass is at the centre. A photo or a drawing of a digit,
usually dark ink on light paper, goes through the same steps here:

    grayscale -> light ink on dark (inverted if needed) -> background removed
    -> cropped to the ink -> scaled into 20x20 -> centred by centre of mass in 28x28

Every function returns floats in [0, 1] (1 = ink), shape (n, 28, 28) or (28, 28); a bad
input is a one-line ValueError naming it.
"""

import io
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

SIZE, BOX = 28, 20
MAX_SIDE = 4096  # pixels: larger images are refused before they are decoded
# What a digit image needs, and all `mpinet serve` opens from the network: each Pillow
# plugin is code run on the client's bytes (EPS would even run Ghostscript). PPM reads
# PGM and PBM; JPEG also multi-picture JPEG (MPO). No TIFF: libtiff writes its complaints
# about damaged files straight to stderr, and a digit is rarely a TIFF.
NETWORK_FORMATS = ("PNG", "JPEG", "PPM", "BMP", "GIF", "WEBP")
# A crafted file makes Pillow raise any of these while decoding; all mean "damaged".
DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    ZeroDivisionError,
    OverflowError,
)
# Pillow inflates PNG text chunks up to 64 MB per image by default: a 1 MiB upload of
# compressed text would cost that; 8 MB leaves room for large ICC profiles.
PngImagePlugin.MAX_TEXT_MEMORY = 8 * 2**20
# Pillow only warns between 89 and 179 megapixels; MAX_SIDE refuses those sizes anyway, so
# as an error the image is refused in one line instead of a warning on stderr.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
WORK_SIDE = 560  # pixels: larger images are scaled down to this first
MAX_IMAGE_BYTES = 20 * 2**20
MAX_ARRAY_BYTES = 512 * 2**20
INK = 0.2  # after stretching to [0, 1], pixels above this count as ink (JPEG noise stays out)
MIN_CONTRAST = 0.1  # ink and background closer than this: the image is blank


def load_image(path):
    """An image file (PNG, JPEG, PGM, anything Pillow reads) -> (28, 28) MNIST-style digit."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ValueError(
            f"{path}: {size / 2**20:.1f} MiB; expected an image of a digit of at "
            f"most {MAX_IMAGE_BYTES // 2**20} MiB; scale or crop it down"
        )
    return image_from_bytes(path.read_bytes(), str(path))


class ImageTooLarge(ValueError):
    """An image refused on its size, read from its header before it is decoded."""


def image_from_bytes(data, name="image", formats=None, max_pixels=None):
    """Encoded image bytes -> (28, 28) MNIST-style digit.

    formats: the Pillow formats tried (None: all); max_pixels: the most pixels decoded.
    """
    try:
        gray = grayscale(open_image(data, name, formats, max_pixels))
    except ImageTooLarge:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        expected = ", ".join(formats) if formats else "PNG, JPEG, PGM, ..."
        readable = "in a format accepted here" if formats else "Pillow can read"
        raise ValueError(
            f"{name}: not an image {readable}; expected {expected}; convert it to PNG"
        ) from None
    except DECODE_ERRORS as e:  # a truncated or damaged file
        raise ValueError(
            f"{name}: the image cannot be decoded ({' '.join(str(e).split())}); "
            f"expected a complete image file; save it again"
        ) from None
    return mnist_style(gray, name)


def open_image(data, name, formats=None, max_pixels=None):
    """A Pillow image with its size checked from the header: nothing decoded yet."""
    image = Image.open(io.BytesIO(data), formats=formats)
    width, height = image.size
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ImageTooLarge(
            f"{name}: {width}x{height} pixels; expected at most "
            f"{MAX_SIDE}x{MAX_SIDE}; scale it down"
        )
    # JPEG's DCT scaling decodes at 1/2, 1/4 or 1/8 of the size (a 12 MP photo costs
    # under 1 MP); a progressive JPEG's coefficients are still kept whole: its full size counts.
    if image.format in ("JPEG", "MPO"):
        image.draft("L", (WORK_SIDE, WORK_SIDE))
        if "progression" not in image.info:
            width, height = image.size
    if max_pixels and width * height > max_pixels:
        raise ImageTooLarge(
            f"{name}: {width}x{height} pixels ({width * height / 1e6:.1f} MP "
            f"to decode); expected at most {max_pixels / 1e6:.1f} MP; scale it "
            f"down"
        )
    return image


def grayscale(image):
    """A Pillow image -> float array in [0, 1]; transparency becomes background."""
    alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("LA" if alpha else "L")
    # The digit ends up 20x20: scaling a big photo down to WORK_SIDE first loses little
    # (unless the digit is a speck in it) and keeps the float copies below small, where a
    # 4096x4096 image would take 128 MB per copy.
    image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    if alpha:
        la = np.asarray(image, dtype=np.float64) / 255
        gray, alpha = la[..., 0], la[..., 1]
        if alpha.sum() == 0:
            return np.zeros_like(gray)
        # Drawn on a transparent canvas: lay it on the colour the strokes stand out from.
        ink_mean = float((gray * alpha).sum() / alpha.sum())
        background = 1.0 if ink_mean < 0.5 else 0.0
        return gray * alpha + background * (1 - alpha)
    return np.asarray(image, dtype=np.float64) / 255


def mnist_style(gray, name="image"):
    """A grayscale digit of any size (floats in [0, 1]) -> (28, 28), made as MNIST was."""
    x = light_on_dark(gray, name)
    rows, cols = np.nonzero(x > INK)
    x = x[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # crop to the ink
    return centre_by_mass(fit_box(x, BOX))


def light_on_dark(gray, name="image"):
    """Ink 1, background 0: inverted when the border (the background) is light."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    x = 1 - gray if background > 0.5 else gray
    background = min(background, 1 - background)
    contrast = float(x.max()) - background
    if contrast < MIN_CONTRAST:
        raise ValueError(
            f"{name}: the image is blank; expected a digit that stands out from "
            f"the background; pass an image with more contrast"
        )
    return np.clip((x - background) / contrast, 0, 1)


def fit_box(x, box):
    """Scale x so that its longer side is `box` pixels, keeping the aspect ratio."""
    h, w = x.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # Pillow wants (w, h)
    image = Image.fromarray(x.astype(np.float32), mode="F")
    return np.clip(np.asarray(image.resize(size, Image.Resampling.LANCZOS), np.float64), 0, 1)


def centre_by_mass(x, size=SIZE):
    """Place x in a size x size field with its centre of mass at the centre (kept inside)."""
    h, w = x.shape
    rows, cols = np.indices(x.shape)
    mass = x.sum()
    cy, cx = (rows * x).sum() / mass, (cols * x).sum() / mass
    centre = size / 2  # as in MNIST: its digits' mean centre of mass is at pixel (14, 14)
    top = int(np.clip(round(centre - cy), 0, size - h))
    left = int(np.clip(round(centre - cx), 0, size - w))
    out = np.zeros((size, size))
    out[top : top + h, left : left + w] = x
    return out


def load_array(path):
    """A .npy file of digits -> (n, 28, 28) floats in [0, 1]."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_ARRAY_BYTES:
        raise ValueError(
            f"{path}: {size / 2**20:.0f} MiB; expected at most "
            f"{MAX_ARRAY_BYTES // 2**20} MiB; split it into smaller .npy files"
        )
    try:
        array = np.load(path, allow_pickle=False)  # never unpickle a file from elsewhere
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(
            f"{path}: not a readable .npy array ({e}); expected a file written "
            f"by numpy.save; save the array again"
        ) from None
    return as_images(array, str(path))


def as_images(array, name="array"):
    """Pixels as uint8/ints 0..255 or floats 0..1, shaped (n, 28, 28), (n, 784), (28, 28)
    or (784,) -> (n, 28, 28) floats in [0, 1]."""
    try:
        array = np.asarray(array)
    except ValueError:  # nested lists of unequal lengths
        raise ValueError(
            f"{name}: rows of unequal length; expected a rectangular array; make "
            f"every row 784 (or 28 x 28) numbers"
        ) from None
    if array.dtype.kind not in "uif":
        raise ValueError(
            f"{name}: dtype {array.dtype}; expected numbers (uint8 0..255 or "
            f"floats 0..1); convert the array"
        )
    shapes = {(SIZE, SIZE): 1, (SIZE * SIZE,): 1}
    if array.shape in shapes:
        array = array.reshape(1, SIZE, SIZE)
    elif array.ndim in (2, 3) and array.shape[1:] in shapes and len(array) > 0:
        array = array.reshape(len(array), SIZE, SIZE)
    else:
        raise ValueError(
            f"{name}: shape {array.shape}; expected (n, 28, 28) or (n, 784) with n >= 1; reshape it"
        )
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
            raise ValueError(
                f"{name}: float pixels outside 0..1 (or not finite); expected "
                f"0..1; scale them (or pass uint8 0..255)"
            )
        return array.astype(np.float64)
    if array.min() < 0 or array.max() > 255:
        raise ValueError(
            f"{name}: integer pixels {array.min()}..{array.max()}; expected "
            f"0..255; clip or rescale them"
        )
    return array.astype(np.float64) / 255
