"""What a `mpinet serve` /predict body may be, and the images made of it.

An image (PNG, JPEG, PGM/PPM, BMP, GIF or WebP: mpinet.data.images.NETWORK_FORMATS) of one
digit, or JSON {"inputs": [[784 pixels], ...]} / a 28x28 nested list. A body that is none of
these is an HttpError: 415 for its media type, 413 for its size, 400 for anything else, each
with a one-line message the client can act on.
"""

import json

from mpinet.data.images import NETWORK_FORMATS, ImageTooLarge, as_images, image_from_bytes

from .http import HttpError, printable

MAX_PIXELS = 2048 * 2048  # decoded pixels of an image: 413 above
# Media types whose body is sniffed (JSON if it starts with { or [, else an image): curl -d
# sends form-urlencoded, and many clients say octet-stream or nothing.
SNIFFED = ("", "application/octet-stream", "application/x-www-form-urlencoded", "text/plain")


def body_is_json(content_type, body):
    """JSON if the media type says so or the body starts like JSON (no image format starts
    with { or [); 415 for types that are neither an image nor JSON nor a generic one."""
    media = content_type.split(";", 1)[0].strip().lower()
    if "json" in media:
        return True
    if not media.startswith("image/") and media not in SNIFFED:
        raise HttpError(
            415,
            f"Content-Type {printable(media, 60)}: expected an image "
            f"(image/png, ...) or application/json; send the file itself as the "
            f"body (curl --data-binary @digit.png -H 'Content-Type: image/png')",
        )
    return body.lstrip()[:1] in (b"{", b"[")


def parse_inputs(body, is_json):
    """A request body -> images (n, 28, 28) in [0, 1], or HttpError 400 / 413."""
    try:
        if is_json:
            return json_images(body)
        return image_from_bytes(body, "body", NETWORK_FORMATS, MAX_PIXELS)[None]
    except ImageTooLarge as e:
        raise HttpError(413, str(e)) from None
    except ValueError as e:
        raise HttpError(400, str(e)) from None


def json_images(body):
    """A JSON body -> images (n, 28, 28) in [0, 1], or a one-line ValueError."""
    try:
        value = json.loads(body)
    except RecursionError:  # 100,000 nested [: the parser's recursion limit, not a bug
        raise ValueError(
            'body: JSON nested too deeply; expected {"inputs": [[784 numbers], ...]}'
        ) from None
    except ValueError as e:  # not JSON, not UTF-8, or an integer of over 4300 digits
        raise ValueError(f"body is not valid JSON ({printable(str(e), 120)})") from None
    if isinstance(value, dict):
        if "inputs" not in value:
            raise ValueError('JSON body: expected {"inputs": [...]} or a list of pixels')
        value = value["inputs"]
    depth, first = 0, value
    while isinstance(first, list) and first and depth < 4:
        depth, first = depth + 1, first[0]
    if depth > 3:
        raise ValueError("inputs: nested more than 3 deep; expected (n, 784) or (n, 28, 28)")
    try:
        return as_images(value, "inputs")
    except (TypeError, OverflowError):
        raise ValueError("inputs: expected numbers in nested lists") from None
