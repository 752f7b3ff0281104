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
    big = Image.fromarray(255 - digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
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


def connect(port, timeout=15):
    """A client socket to the server on 127.0.0.1:port."""
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def status(sock):
    """The status code of the next answer on `sock` (0: closed without one), read whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1])
