#!/usr/bin/env python3
"""A small HTTP/1.1 origin server for the end-to-end tests, written on raw sockets so
that every byte it sends is under the test's control. Run as its own process:

    backend.py PORT [NAME]

Endpoints:
  GET  /status/N          status N; a short body unless N is 1xx/204/304
  GET  /conn              the id of this TCP connection (keep-alive reuse is visible)
  GET  /name              NAME from the command line (tells backends apart)
  GET  /healthz           200 "ok"
  GET  /drop              closes the connection without answering
  GET  /headers           the request head as received, as JSON {"line":..,"headers":[[k,v]..]}
  POST /echo              the request body back (Content-Length framing)
  POST /count             {"bytes": N, "sha256": ...} of the body (CL or chunked)
  GET  /chunked           a chunked body of several pieces
  GET  /big?n=N           N bytes of 'x' with Content-Length, written in 64 KiB pieces
  GET  /slow?ms=N         waits N ms, then 200
  GET  /eof               body delimited by closing the connection (no length)
  GET  /close             200 with Connection: close
  GET  /ws  (Upgrade)     101, then echoes raw bytes until EOF
  HEAD any                the GET head without a body
"""
import hashlib
import itertools
import json
import socket
import sys
import threading
import time
from urllib.parse import urlsplit, parse_qs

_conn_ids = itertools.count(1)
NAME = sys.argv[2] if len(sys.argv) > 2 else "backend"


def read_head(f):
    lines = []
    while True:
        line = f.readline(65536)
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            if not lines:
                continue
            return lines
        lines.append(line.rstrip(b"\r\n").decode("latin-1"))


def read_chunked(f):
    body = bytearray()
    while True:
        size = int(f.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while f.readline() not in (b"\r\n", b"\n", b""):
                pass
            return bytes(body)
        body += f.read(size)
        f.readline()


def respond(sock, status, body=b"", headers=(), reason="OK", length=True):
    head = "HTTP/1.1 %d %s\r\n" % (status, reason)
    for k, v in headers:
        head += "%s: %s\r\n" % (k, v)
    if length:
        head += "Content-Length: %d\r\n" % len(body)
    sock.sendall(head.encode() + b"\r\n" + body)


def serve(sock):
    conn_id = next(_conn_ids)
    f = sock.makefile("rb")
    try:
        while True:
            lines = read_head(f)
            if lines is None:
                return
            method, target, _ = lines[0].split(" ", 2)
            headers = [tuple(x.strip() for x in l.split(":", 1)) for l in lines[1:]]
            h = {k.lower(): v for k, v in headers}
            url = urlsplit(target)
            q = parse_qs(url.query)
            body = b""
            if h.get("transfer-encoding", "").lower() == "chunked":
                body = read_chunked(f)
            elif "content-length" in h:
                n = int(h["content-length"])
                if url.path == "/count":
                    hasher, got = hashlib.sha256(), 0
                    while got < n:
                        piece = f.read(min(65536, n - got))
                        if not piece:
                            return
                        hasher.update(piece)
                        got += len(piece)
                    body = None
                    count_result = {"bytes": got, "sha256": hasher.hexdigest()}
                else:
                    body = f.read(n)
            head_only = method == "HEAD"
            path = url.path
            if path.startswith("/status/"):
                code = int(path.split("/")[2])
                payload = b"" if code < 200 or code in (204, 304) else b"status %d\n" % code
                if code == 204 or code == 304:
                    respond(sock, code, b"", length=False, reason="X")
                else:
                    respond(sock, code, b"" if head_only else payload, reason="X",
                            headers=[("Content-Length", len(payload))] if head_only else (),
                            length=not head_only)
            elif path == "/drop":
                return  # close without a response
            elif path == "/healthz":
                respond(sock, 200, b"ok\n")
            elif path == "/name":
                respond(sock, 200, NAME.encode())
            elif path == "/conn":
                respond(sock, 200, b"%d" % conn_id)
            elif path == "/headers":
                respond(sock, 200, json.dumps({"line": lines[0], "headers": headers}).encode(),
                        headers=[("Content-Type", "application/json")])
            elif path == "/echo":
                respond(sock, 200, body)
            elif path == "/count":
                if body is not None:
                    count_result = {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
                respond(sock, 200, json.dumps(count_result).encode())
            elif path == "/chunked":
                sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for piece in (b"hello ", b"chunked ", b"world\n"):
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    time.sleep(0.01)
                sock.sendall(b"0\r\n\r\n")
            elif path == "/big":
                n = int(q.get("n", ["1048576"])[0])
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
                block = b"x" * 65536
                while n > 0:
                    sock.sendall(block[:n])
                    n -= min(n, 65536)
            elif path == "/slow":
                time.sleep(int(q.get("ms", ["1000"])[0]) / 1000)
                respond(sock, 200, b"slow\n")
            elif path == "/eof":
                sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end\n")
                return
            elif path == "/close":
                respond(sock, 200, b"bye\n", headers=[("Connection", "close")])
                return
            elif path == "/ws" and h.get("upgrade"):
                sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\n\r\n")
                while True:
                    data = f.read1(65536)
                    if not data:
                        return
                    sock.sendall(data)
            else:
                respond(sock, 404, b"no such path\n", reason="Not Found")
            if h.get("connection", "").lower() == "close":
                return
    except (ConnectionError, ValueError, OSError):
        return
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main():
    port = int(sys.argv[1])
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(512)
    while True:
        s, _ = ls.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(s,), daemon=True).start()


if __name__ == "__main__":
    main()
