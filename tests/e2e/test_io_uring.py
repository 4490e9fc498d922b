"""Sockets read and written through io_uring (the default: multishot recvs and a loop
turn's writes in one call), writes only batched (`--io-uring writes`) and read(2)/write(2)
(`--io-uring off`) serve the same bytes: pipelined requests answered in order, a client
that stops reading for a while and then takes 8 MiB, a 1 MiB upload, a WebSocket tunnel,
and a reply followed by a close. The rest of the suite runs with the default."""
import hashlib
import json
import os
import re
import socket
import time

import pytest

from conftest import raw_exchange

STARTUP_LINE = {"on": "sockets read and written through io_uring (a loop turn: one call)",
                "writes": "socket writes batched per loop turn (io_uring)"}
# valgrind cannot let a thread sleep in io_uring_enter: under it keel keeps read(2) and says
# so (the unit tests, one thread, run the ring reads under valgrind all the same)
UNDER_VALGRIND = "valgrind" in os.environ.get("KEEL_WRAPPER", "")


def read_response(sock):
    """One HTTP/1.1 response with a Content-Length: (status, body)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    status = int(head.split(b" ", 2)[1])
    length = int([l.split(b":", 1)[1] for l in head.split(b"\r\n")
                  if l.lower().startswith(b"content-length:")][0])
    body = b""
    while len(body) < length:
        chunk = sock.recv(min(1 << 20, length - len(body)))
        assert chunk
        body += chunk
    return status, body


@pytest.mark.parametrize("mode", ["on", "writes", "off"])
def test_ring_and_plain_io_serve_the_same_bytes(keel, backend, mode):
    k = keel("--io-uring", mode, upstream=backend)
    deadline = time.time() + 5
    while "workers, admin on" not in k.proc.output() and time.time() < deadline:
        time.sleep(0.02)
    expect = "writes" if mode == "on" and UNDER_VALGRIND else mode
    for m, line in STARTUP_LINE.items():
        assert (line in k.proc.output()) == (m == expect), k.proc.output()
    assert ("under valgrind" in k.proc.output()) == (expect != mode), k.proc.output()

    # three requests in one segment: three answers, in order
    s = socket.create_connection(("127.0.0.1", k.inbound), timeout=10)
    s.sendall(b"".join(b"GET /status/%d HTTP/1.1\r\nHost: a\r\n\r\n" % c for c in (200, 201, 404)))
    assert [read_response(s)[0] for _ in range(3)] == [200, 201, 404]

    # a client that stops reading: keel meets a full socket, then the rest flows
    n = 8 << 20
    s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % n)
    time.sleep(0.5)
    status, body = read_response(s)
    assert status == 200 and len(body) == n and body == b"x" * n

    # 1 MiB up, on the same connection
    blob = os.urandom(1 << 20)
    s.sendall(b"POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(blob) + blob)
    status, body = read_response(s)
    assert json.loads(body) == {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    s.close()

    # a WebSocket tunnel echoes both ways
    w = socket.create_connection(("127.0.0.1", k.inbound), timeout=10)
    w.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += w.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    frame = os.urandom(300000)
    w.sendall(frame)
    got = b""
    while len(got) < len(frame):
        chunk = w.recv(65536)
        assert chunk
        got += chunk
    assert got == frame
    w.close()

    # a local reply followed by a close: written before the close, not lost with it
    out = raw_exchange(k.inbound, b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out
    assert b"connection: close" in out.lower()

    # one access-log line per exchange, the bytes sent as counted after the batched sends
    lines = k.log_lines(7)
    # Istio's format: ... "METHOD PATH PROTO" CODE FLAGS DETAILS TERM "-" RECEIVED SENT ...
    fields = [re.search(r'" (\d{3}) \S+ \S+ \S+ "[^"]*" (\d+) (\d+) ', l).groups() for l in lines]
    codes = [f[0] for f in fields]
    assert codes[:5] == ["200", "201", "404", "200", "200"], lines
    assert sorted(codes[5:]) == ["101", "400"], lines  # the tunnel logs when it ends
    assert fields[3][2] == str(n) and fields[4][1] == str(len(blob)), lines
