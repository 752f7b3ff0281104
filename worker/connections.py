"""The connections of `mpinet serve`: one thread per connection, at most
`limits.max_connections` of them, every read and write with a deadline, and a drain.

    accept loop -> full? answer 503 at once, close   -> else a thread: read a request
    (sockets.py), route it, read its body, answer it, log one line; keep-alive: the next one

A thread per connection keeps each request's code a plain top-to-bottom function; the cap
and the timeouts bound what that costs (a stalled client holds one thread for at most
`header_timeout` or `body_timeout`). Draining (SIGTERM): stop accepting, close idle
connections, let the requests in flight finish (up to `drain_timeout`).
"""

import errno
import logging
import os
import resource
import selectors
import socket
import threading
import time
from collections import deque

from .http import HttpError, encode, error_answer, json_answer, printable
from .sockets import Connection, Disconnected

log = logging.getLogger(__name__)
REFUSED_MAX = 32  # refused sockets lingering at once (each for up to a second)
RESERVED_FDS = 64 + REFUSED_MAX  # descriptors kept for the process itself and refusals
OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Server:
    """Listens on `address` and answers with `api` (route(request) -> handler(request))."""

    request_queue_size = 128  # the listen backlog: the default 5 resets bursts of clients

    def __init__(self, address, api, metrics, limits):
        self.api, self.metrics, self.limits = api, metrics, limits
        self.max_connections = connection_cap(limits.max_connections)
        self.socket = listen(address, self.request_queue_size)
        self.server_address = self.socket.getsockname()
        self.wake, self._wake_writer = os.pipe()  # readable once draining: idle waits end
        self.draining = False
        self._open = 0
        self._changed = threading.Condition()
        self._refused = deque()  # (socket, when to close it)
        self._last_warning = 0.0
        self._stop, self._stopped = threading.Event(), threading.Event()
        self._stopped.set()  # shutdown() before serve_forever() must not wait forever

    def serve_forever(self, poll_interval=0.2):
        self._stopped.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ)
                while not self._stop.is_set():
                    if selector.select(poll_interval):
                        self._accept()
                    self._sweep_refused()
        finally:
            self._stopped.set()

    def shutdown(self):
        """Stop the accept loop (from another thread) and wait until it has stopped."""
        self._stop.set()
        self._stopped.wait()

    def server_close(self):
        """Stop listening, then drain: -> the connections still open after drain_timeout."""
        self.socket.close()
        left = self.drain(self.limits.drain_timeout)
        for sock, _ in self._refused:
            sock.close()
        if not left:  # else a connection still running may wait on it: the process ends
            os.close(self.wake)
            os.close(self._wake_writer)
        return left

    def drain(self, timeout):
        self.draining = True
        os.write(self._wake_writer, b"x")  # never read: every idle wait sees it
        deadline = time.monotonic() + timeout
        with self._changed:
            self._changed.wait_for(lambda: self._open == 0, max(0.0, deadline - time.monotonic()))
            return self._open

    def _accept(self):
        try:
            sock, address = self.socket.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as e:
            if e.errno not in OUT_OF_FDS:
                raise
            self._warn(f"cannot accept a connection ({e.strerror}); waiting 0.1 s")
            time.sleep(0.1)  # the client waits in the backlog; retrying at once would spin
            return
        with self._changed:
            full = self._open >= self.max_connections
            if not full:
                self._open += 1
        if full or not self._start(sock, address[0]):
            self._refuse(sock, address[0])

    def _start(self, sock, client):
        self.metrics.connections.inc()
        try:
            threading.Thread(
                target=self._connection, args=(sock, client), daemon=True, name=f"conn-{client}"
            ).start()
        except RuntimeError:  # no thread to be had: refused like a full server
            self.metrics.connections.dec()
            self._closed()
            return False
        return True

    def _closed(self):
        with self._changed:
            self._open -= 1
            self._changed.notify_all()

    def _refuse(self, sock, client):
        """503 at once from the accept loop (no thread), then a second for the client to
        read it before the close: closing a socket with unread input would reset it."""
        error = HttpError(
            503,
            f"{self.max_connections} connections open, the limit; try again shortly",
            [("Retry-After", "1")],
        )
        self.metrics.observe("other", 503, 0.0)
        self._warn(f"{client}: refused: {self.max_connections} connections open, the limit")
        try:
            sock.setblocking(False)
            sock.send(encode(error_answer(error), keep_alive=False))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        self._refused.append((sock, time.monotonic() + 1.0))
        while len(self._refused) > REFUSED_MAX:
            self._refused.popleft()[0].close()

    def _sweep_refused(self):
        now, kept = time.monotonic(), deque()
        for sock, deadline in self._refused:
            if now < deadline and not at_end(sock):
                kept.append((sock, deadline))
            else:
                sock.close()
        self._refused = kept

    def _warn(self, message):
        """At most one warning a second: a flood of refusals must not flood the log."""
        now = time.monotonic()
        if now - self._last_warning >= 1.0:
            self._last_warning = now
            log.warning("%s", message)

    def _connection(self, sock, client):
        conn = Connection(sock, self.wake)
        served = 0
        try:
            while self._next(conn, client, served):
                served += 1
        except (OSError, Disconnected) as e:  # gone, reset, or not reading: one line
            log.info("%s disconnected (%s)", client, e.strerror or e)
        except Exception:  # a bug in this module: logged, and only this connection ends
            log.exception("%s: connection failed", client)
        finally:
            conn.close()
            self.metrics.connections.dec()
            self._closed()

    def _next(self, conn, client, served):
        """Wait for, read, answer and log one request; False: close the connection."""
        if not conn.wait(self.limits.idle_timeout):
            if served == 0 and not self.draining:  # a new connection that sends nothing
                error = HttpError(408, f"no request within {self.limits.idle_timeout:g} s")
                self._reply(conn, client, None, error_answer(error), time.perf_counter())
                conn.close(linger=1.0)
            return False
        start = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            request, answer, line = self._handle(conn)
            if answer is None:
                return False  # closed cleanly before a new request
            complete = request is not None and request.complete
            keep = complete and request.keep_alive and not self.draining
            self._reply(conn, client, request, answer, start, keep, line)
        finally:
            self.metrics.in_flight.dec()
        if not keep:  # unread input: linger, so that the client reads the answer
            conn.close(linger=0.0 if complete else 2.0)
        return keep

    def _handle(self, conn):
        """-> (request or None, answer or None at a clean close, the line to log)."""
        request = None
        try:
            request = conn.read_request(self.limits)
            if request is None:
                return None, None, ""
            handler = self.api.route(request)  # before the body: a refusal needs none
            request.body = self._body(conn, request)
            return request, handler(request), ""
        except HttpError as e:
            return request, error_answer(e), e.line or "-"
        except (OSError, Disconnected):
            raise  # the client's side: _connection logs it
        except Exception:  # a bug, not bad input: its traceback is logged, the answer is 500
            log.exception("request %s failed", request and printable(request.target))
            return request, json_answer(500, {"error": "internal error; see the server's log"}), "-"

    def _body(self, conn, request):
        if request.length is None:
            return None
        if request.length > self.limits.max_body:
            raise HttpError(
                413, f"body of {request.length} bytes; the limit is {self.limits.max_body}"
            )
        if request.header("expect") and request.version == "HTTP/1.1":
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\n", self.limits.send_timeout)
        return conn.read_body(request.length, self.limits)

    def _reply(self, conn, client, request, answer, start, keep=False, line="-"):
        seconds = time.perf_counter() - start
        endpoint = self.api.endpoint(request) if request else "other"
        # Counted before the answer leaves: a client that got it finds it in /metrics.
        self.metrics.observe(endpoint, answer.code, seconds)
        shown = f"{request.method} {printable(request.target)}" if request else line
        log.info('%s "%s" %d %.1f ms', client, shown, answer.code, 1e3 * seconds)
        head = request is not None and request.method == "HEAD"
        conn.send(
            encode(answer, keep, request.version if request else "HTTP/1.1", head),
            self.limits.send_timeout,
        )


def at_end(sock):
    """Drop what a refused client sent; True once it has closed (or failed)."""
    try:
        for _ in range(16):
            if not sock.recv(65536):
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    return False


def listen(address, backlog):
    try:
        sock = socket.create_server(address, backlog=backlog)
    except OSError as e:
        host, port = address
        raise OSError(f"serve: cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.setblocking(False)
    return sock


def connection_cap(wanted):
    """`wanted`, or fewer when the open-file limit cannot hold that many sockets (raised
    towards the hard limit first): at the limit accept() fails, and a loop retrying it spins."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    cap = wanted if soft == resource.RLIM_INFINITY else min(wanted, soft - RESERVED_FDS)
    if cap < 1:
        raise OSError(
            f"serve: the open-file limit (ulimit -n) is {soft}; expected at least "
            f"{RESERVED_FDS + 1}; raise it"
        )
    if cap < wanted:
        log.warning("serving at most %d connections: the open-file limit is %d", cap, soft)
    return cap
