"""The real `mpinet serve` process: SIGTERM/SIGINT drain the requests in flight and exit 0,
its memory stays bounded under concurrent worst-case images (peak RSS from /proc), and at
the open-file limit it refuses with 503 instead of spinning. Its log never holds a
traceback."""

import io
import json
import resource
import signal
import subprocess
import threading
import time

import pytest
from inference_support import connect, status
from PIL import Image, ImageDraw
from support import job_environment, mpinet_command

from mpinet.worker.connections import RESERVED_FDS

DIGIT = json.dumps([[0] * 784]).encode()


class Serving:
    """`mpinet serve CHECKPOINT --port 0`, its stderr collected by a thread (a full pipe
    would block the server's logging)."""

    def __init__(self, checkpoint, preexec_fn=None):
        self.proc = subprocess.Popen(
            mpinet_command() + ["serve", str(checkpoint), "--port", "0"],
            stderr=subprocess.PIPE,
            text=True,
            env=job_environment(),
            preexec_fn=preexec_fn,
        )
        self.lines, self.port = [], None
        started = threading.Event()
        threading.Thread(target=self._read, args=(started,), daemon=True).start()
        if not started.wait(30):
            self.proc.kill()
            pytest.fail(f"mpinet serve did not start: {self.lines}")

    def _read(self, started):
        for line in self.proc.stderr:
            self.lines.append(line)
            if " serving " in line and "http://127.0.0.1:" in line:
                self.port = int(line.split("http://127.0.0.1:")[1].split()[0])
                started.set()

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signal it (unless `sig` is None: already signalled) -> its exit code."""
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc.kill()

    def log(self):
        return "".join(self.lines)

    def status_file(self, key):
        """A field of /proc/PID/status in MB (VmRSS, VmHWM: the peak)."""
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024

    def cpu_seconds(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def upload(body, content_type="application/json"):
    return (
        f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()


def in_flight(port):
    with connect(port) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        text = b""
        while chunk := sock.recv(65536):
            text += chunk
    line = [ln for ln in text.decode().splitlines() if ln.startswith("mpinet_serve_requests_in")]
    return float(line[0].split()[1]) - 1  # less this request


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_accepting_and_answers_the_requests_in_flight(checkpoint, sig):
    server = Serving(checkpoint)
    uploads = [connect(server.port) for _ in range(4)]
    for sock in uploads:
        sock.sendall(upload(DIGIT) + DIGIT[:100])  # in flight: the rest comes later
    deadline = time.monotonic() + 10
    while in_flight(server.port) < 4:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    server.proc.send_signal(sig)
    deadline = time.monotonic() + 5
    while True:  # the listening socket closes at once
        try:
            connect(server.port).close()
        except ConnectionRefusedError:
            break
        assert time.monotonic() < deadline, "still accepting connections"
        time.sleep(0.05)
    for sock in uploads:
        sock.sendall(DIGIT[100:])
    assert [status(sock) for sock in uploads] == [200] * 4
    assert server.stop(None) == 0
    log = server.log()
    assert "stopping" in log and log.rstrip().endswith("stopped") and "Traceback" not in log


def worst_images():
    """The largest images accepted (2048x2048 = the 4 MP limit, RGBA: the most memory per
    decoded pixel), lossless WebP and PNG, and the 4096x4096 WebP bomb (refused)."""
    image = Image.new("RGBA", (2048, 2048), "white")
    ImageDraw.Draw(image).line((1024, 200, 1024, 1800), fill="black", width=160)
    found = []
    for fmt, size in (("WEBP", 2048), ("PNG", 2048), ("WEBP", 4096)):
        out = io.BytesIO()
        (image if size == 2048 else image.resize((size, size))).save(out, fmt, lossless=True)
        found.append(out.getvalue())
    return found


def test_memory_stays_bounded_under_16_concurrent_worst_case_images(checkpoint):
    webp, png, bomb = worst_images()
    server = Serving(checkpoint)
    try:
        before = server.status_file("VmRSS")
        socks = [connect(server.port) for _ in range(32)]
        bodies = [webp, png] * 8 + [bomb] * 16
        for sock, body in zip(socks, bodies, strict=True):  # all sent before any is answered
            sock.sendall(upload(body, "image/webp") + body)
        codes = [status(sock) for sock in socks]
        peak = server.status_file("VmHWM")
    finally:
        assert server.stop() == 0
    assert codes == [200] * 16 + [413] * 16, server.log()
    assert peak < 500, f"peak RSS {peak:.0f} MB (at the start {before:.0f} MB)"
    assert "Traceback" not in server.log()


def test_at_the_open_file_limit_it_refuses_with_503_instead_of_spinning(checkpoint):
    limit = RESERVED_FDS + 8  # room for 8 connections

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    server = Serving(checkpoint, preexec_fn=low_limit)
    try:
        assert "serving at most 8 connections" in server.log()
        socks = [connect(server.port) for _ in range(40)]
        time.sleep(0.5)  # the first 8 are accepted and idle, the others refused
        cpu = server.cpu_seconds()
        time.sleep(1.0)
        spent = server.cpu_seconds() - cpu
        codes = []
        for sock in socks:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            codes.append(status(sock))
            sock.close()
        with connect(server.port) as sock:  # served again once those have gone
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert status(sock) == 200
    finally:
        assert server.stop() == 0
    assert codes.count(200) == 8 and codes.count(503) == 32, codes
    assert spent < 0.3, f"{spent:.2f} s of CPU in 1 s with every slot taken"
    assert "Traceback" not in server.log()
