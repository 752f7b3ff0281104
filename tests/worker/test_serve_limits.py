"""`mpinet serve`'s bounds, observed from a client over 127.0.0.1: the timeouts (a silent,
slow or stalled client is cut off with 408 while others keep their latency), the
connection cap (503, then service again), threads that stay bounded."""

import json
import threading
import time

import pytest
from inference_support import connect, status

from mpinet.worker.http import Limits
from mpinet.worker.predict import Predictor
from mpinet.worker.serve import make_server

LIMITS = Limits(idle_timeout=0.5, header_timeout=1.0, body_timeout=1.0, max_connections=48)
GET = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
DIGIT = json.dumps([[0] * 784]).encode()
UPLOAD = (
    b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(DIGIT)).encode() + b"\r\n\r\n"
)


def serve(checkpoint, limits):
    server = make_server(Predictor(checkpoint), "127.0.0.1", 0, limits)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def port(checkpoint):
    server = serve(checkpoint, LIMITS)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def timed(port, data):
    with connect(port) as sock:
        start = time.monotonic()
        sock.sendall(data)
        return status(sock), time.monotonic() - start


def test_a_silent_new_connection_gets_408_after_the_idle_timeout(port):
    code, seconds = timed(port, b"")
    assert code == 408 and LIMITS.idle_timeout * 0.9 <= seconds < LIMITS.idle_timeout + 2


def test_an_idle_keep_alive_connection_is_closed_quietly(port):
    with connect(port) as sock:
        sock.sendall(GET)
        assert status(sock) == 200
        start = time.monotonic()
        assert sock.recv(65536) == b""  # closed, no unasked-for 408 on a reused connection
        assert LIMITS.idle_timeout * 0.9 <= time.monotonic() - start < LIMITS.idle_timeout + 2


def test_a_head_sent_a_byte_at_a_time_is_cut_off_at_the_header_timeout(port):
    with connect(port) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        sock.settimeout(0.1)
        answer = b""
        while not answer and time.monotonic() - start < LIMITS.header_timeout + 3:
            try:
                sock.sendall(b"a")  # always a byte in time: the deadline is for the head
                answer = sock.recv(65536)
            except TimeoutError:
                continue
        seconds = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"error"' in answer
    assert LIMITS.header_timeout * 0.9 <= seconds < LIMITS.header_timeout + 2


def test_stalled_uploads_are_cut_off_and_others_keep_their_latency(port):
    stalled = [connect(port) for _ in range(30)]
    start = time.monotonic()
    for sock in stalled:
        sock.sendall(UPLOAD + DIGIT[:100])  # and then nothing
    latencies = []
    for _ in range(10):
        code, seconds = timed(port, UPLOAD + DIGIT)
        assert code == 200
        latencies.append(seconds)
    assert max(latencies) < 0.5, latencies
    codes = [status(sock) for sock in stalled]
    seconds = time.monotonic() - start
    for sock in stalled:
        sock.close()
    assert codes == [408] * 30
    assert LIMITS.body_timeout * 0.9 <= seconds < LIMITS.body_timeout + 3


def wait_for(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.05)


def test_the_connection_cap_answers_503_at_once_and_threads_stay_bounded(checkpoint):
    limits = Limits(max_connections=4, idle_timeout=5.0)
    server = serve(checkpoint, limits)
    port = server.server_address[1]
    try:
        threads = threading.active_count()
        held = [connect(port) for _ in range(4)]
        wait_for(lambda: threading.active_count() == threads + 4)
        refused = [connect(port) for _ in range(200)]
        start = time.monotonic()
        codes = [status(sock) for sock in refused]
        assert codes == [503] * 200 and time.monotonic() - start < 3
        assert threading.active_count() <= threads + 4
        for sock in held + refused:
            sock.close()
        polled = []  # the held connections close asynchronously: a poll may be refused too
        wait_for(lambda: polled.append(timed(port, GET)[0]) or polled[-1] == 200)
        assert server.metrics.registry.get_sample_value(
            "mpinet_serve_requests_total", {"endpoint": "other", "code": "503"}
        ) == 200 + polled.count(503)
    finally:
        server.shutdown()
        server.server_close()


def test_drain_answers_in_flight_requests_and_closes_idle_ones(checkpoint):
    server = serve(checkpoint, Limits(idle_timeout=5.0, body_timeout=5.0))
    port = server.server_address[1]
    idle = connect(port)
    idle.sendall(GET)
    assert status(idle) == 200
    uploads = [connect(port) for _ in range(4)]
    for sock in uploads:
        sock.sendall(UPLOAD + DIGIT[:100])
    wait_for(
        lambda: server.metrics.registry.get_sample_value("mpinet_serve_requests_in_flight") == 4
    )
    server.shutdown()
    closing = threading.Thread(target=server.server_close)
    closing.start()
    assert idle.recv(65536) == b""  # an idle connection is closed at once
    with pytest.raises(ConnectionRefusedError):
        connect(port)  # no new connections
    for sock in uploads:
        sock.sendall(DIGIT[100:])
    assert [status(sock) for sock in uploads] == [200] * 4
    closing.join(timeout=5)
    assert not closing.is_alive()
