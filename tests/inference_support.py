"""Helpers for the inference tests (importable as `inference_support`, like support.py)."""

import io
import json
import urllib.error
import urllib.request

from PIL import Image, ImageOps

N_DIGITS = 12


def as_png(digit, scale=5, fmt="PNG", mode="L"):
    """An MNIST digit drawn as a photo of paper would show it: dark ink on light, larger,
    off-centre, in a wider canvas."""
    big = Image.fromarray(255 - digit).resize((28 * scale, 28 * scale),
                                              Image.Resampling.BICUBIC)
    canvas = Image.new("L", (28 * scale + 90, 28 * scale + 30), 235)
    canvas.paste(big, (70, 5))
    if mode == "RGBA":  # black ink, opaque where the ink is: paper transparent
        black = Image.new("L", canvas.size, 0)
        canvas = Image.merge("RGBA", [black, black, black, ImageOps.invert(canvas)])
    out = io.BytesIO()
    canvas.save(out, fmt)
    return out.getvalue()


def request(url, body=None, content_type="application/octet-stream"):
    """(status, body as JSON or text); an HTTP error status is returned, not raised."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=20) as response:
            code, data = response.status, response.read()
    except urllib.error.HTTPError as e:
        code, data = e.code, e.read()
    text = data.decode()
    return code, json.loads(text) if text.startswith("{") else text


def metric(text, name, **labels):
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
