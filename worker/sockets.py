"""One client's socket for `mpinet serve`: a request's head and body read with deadlines,
an answer sent, the connection closed so that the client reads the answer, not a reset.

Every read has a deadline (http.Limits), so a slow or stalled client holds its thread for a
bounded time only; a head that cannot fit is refused (414, 431) as soon as that is known,
not once the client has sent it all.
"""

import re
import select
import socket
import time

from .http import HttpError, parse_head, printable

HEAD_END = re.compile(rb"\r?\n\r?\n")


class Disconnected(ConnectionError):
    """The client closed its side in the middle of a request: there is no one to answer."""


class Connection:
    """A client's socket and the bytes read from it but not yet used; every read has a
    deadline, so a slow or stalled client holds its thread for a bounded time only."""

    def __init__(self, sock, wake):
        self.sock, self.wake = sock, wake  # wake: readable once the server drains
        self.buffer = bytearray()

    def wait(self, timeout):
        """True when a request starts (or the client closed); False after `timeout`
        seconds of silence, or at once when the server drains."""
        if self.buffer:
            return True
        poller = select.poll()  # not select(): descriptors above 1023 are fine
        poller.register(self.sock, select.POLLIN)
        poller.register(self.wake, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(max(0, timeout) * 1000)}
        return self.wake not in ready and self.sock.fileno() in ready

    def read_request(self, limits):
        """The next request's head -> Request; None when the client closed cleanly."""
        deadline = time.monotonic() + limits.header_timeout
        scanned, head = 0, self.buffer
        try:
            while not (end := HEAD_END.search(self.buffer, max(0, scanned - 3))):
                check_head_size(self.buffer, limits)
                scanned = len(self.buffer)
                if not self.fill(deadline, limits.header_timeout, "the request's head"):
                    if self.buffer:
                        raise Disconnected("closed the connection in the middle of a request")
                    return None
                if self.buffer[:1] in (b"\r", b"\n"):  # blank lines before a request: skipped
                    del self.buffer[: len(self.buffer) - len(self.buffer.lstrip(b"\r\n"))]
                    scanned = 0
            head = bytes(self.buffer[: end.start()])
            del self.buffer[: end.end()]
            return parse_head(head, limits)
        except HttpError as e:
            e.line = printable(bytes(head.split(b"\n", 1)[0].rstrip(b"\r")).decode("latin-1"))
            raise

    def read_body(self, length, limits):
        deadline = time.monotonic() + limits.body_timeout
        while len(self.buffer) < length:
            if not self.fill(deadline, limits.body_timeout, "the body"):
                raise Disconnected("closed the connection in the middle of a request")
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body

    def fill(self, deadline, timeout, what):
        """Read more into the buffer; False when the client has closed its side."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HttpError(408, f"{what} not received within {timeout:g} s")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise HttpError(408, f"{what} not received within {timeout:g} s") from None
        self.buffer += data
        return bool(data)

    def send(self, data, timeout):
        self.sock.settimeout(timeout)
        self.sock.sendall(data)

    def close(self, linger=0.0, limit=16 * 2**20):
        """Close; with `linger`, first read and drop what the client still sends (for up to
        `linger` seconds or `limit` bytes), so that it reads the answer, not a reset."""
        try:
            if linger:
                self.sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + linger
                while limit > 0 and (remaining := deadline - time.monotonic()) > 0:
                    self.sock.settimeout(remaining)
                    data = self.sock.recv(65536)
                    if not data:
                        break
                    limit -= len(data)
        except OSError:
            pass  # the client has gone: nothing left to protect
        finally:
            self.sock.close()


def check_head_size(buffer, limits):
    """414 or 431 as soon as the head cannot fit, not once the client has sent it all."""
    first_line = buffer.find(b"\n")
    if first_line > limits.max_line or (first_line < 0 and len(buffer) > limits.max_line):
        raise HttpError(414, f"request line over {limits.max_line} bytes")
    if len(buffer) > limits.max_head:
        raise HttpError(431, f"request head over {limits.max_head} bytes")
