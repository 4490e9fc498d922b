"""A differential test of the HTTP/1.1 request path: one client byte stream of pipelined
requests of every shape, sent whole, a byte per write, split in two at every offset and
cut at random, must reach the origin as the same requests and come back as the same
responses, whatever the segmentation.

What it guards: the header scan sixteen and eight bytes a step (src/http/parse.c), the
head that keeps its read buffer when it came alone and is copied when more bytes follow it
(take_request in src/proxy/session_http.c), the pooled buffers behind both, and the
partial parse of whatever a read brought of the next head. Reads end at different bytes
under each segmentation, so every one of those paths meets every boundary of the stream.

The origin is a raw-socket server in this process (`RecordingOrigin`) that parses what keel
sends it by itself, records method, target, header list and de-chunked body of every
request, and answers each with `r<N>;seq=<x-seq>`, N counting the requests it received."""
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import SANITIZED
from wire import (TCHAR_ALNUM, TCHAR_OTHER, Listener, Reader, header_value, ows, random_token,
                  ready)

MAX_HEAD = 60 * 1024  # --max-request-headers-kb, default 60 (src/proxy/server.c)

# one access-log line per exchange, with what framing decides
LOG_FORMAT = ("%REQ(:METHOD)% %REQ(X-SEQ)% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% "
              "%DOWNSTREAM_HEADER_BYTES_RECEIVED% %REQ(:PATH)%\n")

# request headers keel does not pass on as they came (hop-by-hop, framing, regenerated)
NOT_FORWARDED = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                 b"upgrade", b"expect", b"transfer-encoding", b"content-length",
                 b"x-forwarded-for", b"x-keel-peer-metadata", b"traceparent", b"tracestate",
                 b"b3"}
# headers keel may add on the way upstream
ADDED = {b"x-request-id", b"x-forwarded-for", b"x-forwarded-proto", b"content-length",
         b"transfer-encoding", b"x-keel-peer-metadata", b"traceparent", b"tracestate", b"b3"}


def keel_added(name):
    n = name.lower()
    return n in ADDED or n.startswith(b"x-b3-") or n.startswith(b"x-envoy-")


TCHAR = TCHAR_ALNUM + TCHAR_OTHER

# ------------------------------------------------------------------ the origin


class Received:
    def __init__(self, method, target, version, headers, body, chunked, trailers):
        self.method, self.target, self.version = method, target, version
        self.headers, self.body, self.chunked, self.trailers = headers, body, chunked, trailers
        self.raw = []  # the header lines as they came

    def header(self, name):
        return [v for n, v in self.headers if n.lower() == name]


class RecordingOrigin(Listener):
    """Keep-alive HTTP/1.1 origin: parses each request strictly as keel frames it, records
    it, answers `r<N>;seq=<x-seq>` with a Content-Length."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = []
        self.errors = []
        super().__init__(128)

    def _serve(self, c):
        r = Reader(c)
        with c:
            while True:
                try:
                    head = r.until(b"\r\n\r\n")
                except (EOFError, OSError):
                    return
                try:
                    rec = self._parse(r, head)
                except (EOFError, OSError):
                    self.errors.append("connection ended inside a request: %r" % head[:200])
                    return
                except ValueError as e:
                    self.errors.append("%s in %r" % (e, head[:200]))
                    return
                with self.lock:
                    n = len(self.records)
                    self.records.append(rec)
                seq = (rec.header(b"x-seq") or [b"-"])[0]
                body = b"r%d;seq=%s" % (n, seq)
                try:
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                except OSError:
                    return

    @staticmethod
    def _parse(r, head):
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise ValueError("bad request line")
        headers, raw = [], []
        for line in lines[1:]:
            name, colon, rest = line.partition(b":")
            if not colon or not name or name.strip(TCHAR) or b"\r" in line or b"\n" in line:
                raise ValueError("bad header line %r" % line[:80])
            headers.append((name, rest.strip(b" \t")))
            raw.append(line)
        rec = Received(parts[0], parts[1], parts[2], headers, b"", False, [])
        rec.raw = raw
        te, cl = rec.header(b"transfer-encoding"), rec.header(b"content-length")
        if te and cl:
            raise ValueError("both Transfer-Encoding and Content-Length")
        if te:
            if te != [b"chunked"]:
                raise ValueError("transfer-encoding %r" % te)
            rec.chunked = True
            body = b""
            while True:
                size_line = r.until(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    break
                body += r.exact(size)
                if r.exact(2) != b"\r\n":
                    raise ValueError("no CRLF after chunk data")
            while True:
                t = r.until(b"\r\n")
                if t == b"":
                    break
                rec.trailers.append(t)
            rec.body = body
        elif cl:
            if len(cl) != 1:
                raise ValueError("content-length %r" % cl)
            rec.body = r.exact(int(cl[0]))
        return rec

    def close(self):
        self.ls.close()


@pytest.fixture
def origin():
    o = RecordingOrigin()
    yield o
    o.close()


# ------------------------------------------------------------------ the requests


class Req:
    """One request of a stream: its bytes on the wire and what the origin must receive.
    `status`: 200 (answered by the origin), 431 (refused by keel, then the connection
    closes) or None (after a refusal: never read by keel)."""

    def __init__(self, seq, method, target, headers, prefix=b"", body=b"", chunks=None,
                 trailers=(), fwd_target=None, fwd_host=None, status=200, expect_100=False):
        self.seq = seq
        self.method = method
        self.status = status
        self.expect_100 = expect_100
        head = prefix + method + b" " + target + b" HTTP/1.1\r\n"
        head += b"".join(n + b":" + v + b"\r\n" for n, v in headers) + b"\r\n"
        self.head_len = len(head)
        wire_body = body
        if chunks is not None:
            wire_body = b"".join(b"%s%s\r\n%s\r\n" % (size, ext, data) for size, ext, data in chunks)
            wire_body += b"0;last=1\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"
            body = b"".join(data for _, _, data in chunks)
        self.wire = head + wire_body
        self.body = body
        self.chunked = chunks is not None
        self.has_cl = any(n.lower() == b"content-length" for n, _ in headers)
        self.trailers = list(trailers)
        self.fwd_target = fwd_target or target
        self.fwd_headers = []  # (name, value without OWS)
        self.raw_lines = {}    # (name, value) -> the lines as sent
        for n, v in headers:
            ln = n.lower()
            if ln in NOT_FORWARDED or ln.startswith(b"x-b3-"):
                continue
            self.raw_lines.setdefault((n, v.strip(b" \t")), set()).add(n + b":" + v)
            v = v.strip(b" \t")
            if ln == b"host" and fwd_host is not None:
                v = fwd_host
            self.fwd_headers.append((n, v))


RESERVED = NOT_FORWARDED | ADDED | {b"host", b"x-seq"}


def header_name(rng, n):
    while True:
        name = random_token(rng, n)
        if name.lower() not in RESERVED and not keel_added(name):
            return name


def names_request(seq, rng, lengths):
    headers = [(b"Host", b" svc.local"), (b"x-seq", b" " + seq)]
    for n in lengths:
        headers.append((header_name(rng, n), ows(rng) + header_value(rng, rng.randrange(0, 41)) + ows(rng)))
        headers.append((header_name(rng, n), b" " + header_value(rng, n)))
    headers.append((b"X-Empty", b""))
    headers.append((b"X-Tab-Edges", b"\t\tinner\tvalue\t \t"))
    return Req(seq, b"GET", b"/names?" + seq, headers)


def sized_request(seq, total, status=200, close=False):
    """A GET whose head (request line to the empty line) is exactly `total` bytes."""
    start = [(b"Host", b" svc.local"), (b"x-seq", b" " + seq)]
    if close:
        start.append((b"Connection", b" close"))
    line = b"GET /big HTTP/1.1\r\n"
    fixed = len(line) + sum(len(n) + 1 + len(v) + 2 for n, v in start) + 2
    pads, left, i = [], total - fixed, 0
    pattern = bytes(range(0x80, 0x100)) + b"padding\tvalue "
    while left > 0:
        size = min(left, 2000)
        if 0 < left - size < 16:  # the last one must hold its name
            size = left - 16
        name = b"X-Pad-%03d" % i
        vlen = size - len(name) - 4
        value = (pattern * (vlen // len(pattern) + 1))[:vlen - 1] + b"z"
        pads.append((name, b" " + value))
        left -= size
        i += 1
    r = Req(seq, b"GET", b"/big", start + pads, status=status)
    assert r.head_len == total, (r.head_len, total)
    return r


def full_stream(tag):
    """Every shape, pipelined; the last request is over the head limit, and one more after
    it must never reach the origin."""
    rng = random.Random(20240611)
    s = lambda i: b"%s-%d" % (tag.encode(), i)
    cl_body = bytes(range(256)) + b"\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n" + b"\x00\xff" * 70
    chunks = [(b"1a", b";ext=1", b"abcdefghijklmnopqrstuvwxyz"),
              (b"000A", b';name="q v";x', b"\r\n0\r\n\r\nGET"),
              (b"f", b" ;sp", b"\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e"),
              (b"1", b"", b"\n"),
              (b"40", b";a=b;c=d;e=f", bytes(range(0x40, 0x80)))]
    reqs = [
        Req(s(0), b"GET", b"/plain?a=1&b=%20", [(b"Host", b" svc.local"), (b"x-seq", b" " + s(0)),
                                                  (b"User-Agent", b" seg/1"), (b"Accept", b" */*")]),
        Req(s(1), b"POST", b"/cl", [(b"Host", b" svc.local"), (b"x-seq", b" " + s(1)),
                                    (b"Content-Type", b" application/octet-stream"),
                                    (b"Content-Length", b" %d" % len(cl_body))], body=cl_body),
        Req(s(2), b"POST", b"/chunked", [(b"Host", b" svc.local"), (b"Transfer-Encoding", b" chunked"),
                                         (b"x-seq", b" " + s(2))],
            prefix=b"\r\n", chunks=chunks, trailers=[b"X-Trailer-One: t1", b"X-Trailer-Two:\tt2"]),
        names_request(s(3), rng, range(1, 41)),
        Req(s(4), b"GET", b"http://abs.example:8080/abs/path?q=1",
            [(b"Host", b" ignored.example"), (b"x-seq", b" " + s(4))],
            fwd_target=b"/abs/path?q=1", fwd_host=b"abs.example:8080"),
        Req(s(5), b"GET", b"http://abs.example?only=query", [(b"x-seq", b" " + s(5)), (b"Host", b" ignored")],
            fwd_target=b"/?only=query", fwd_host=b"abs.example"),
        Req(s(6), b"PUT", b"/expect", [(b"Host", b" svc.local"), (b"x-seq", b" " + s(6)),
                                       (b"Expect", b" 100-continue"), (b"Content-Length", b" 5")],
            body=b"hello", expect_100=True),
        sized_request(s(7), MAX_HEAD),
        Req(s(8), b"DELETE", b"/after-big", [(b"Host", b" svc.local"), (b"x-seq", b" " + s(8)),
                                             (b"Content-Length", b" 0")]),
        sized_request(s(9), MAX_HEAD + 3, status=431),  # its header lines: 60 KiB + 1 byte
        Req(s(10), b"GET", b"/never", [(b"Host", b" svc.local"), (b"x-seq", b" " + s(10))], status=None),
    ]
    return reqs


def short_stream(tag):
    """The small shapes (no big heads), ending in Connection: close: split at every offset."""
    rng = random.Random(7)
    s = lambda i: b"%s-%d" % (tag.encode(), i)
    return [
        Req(s(0), b"PRI", b"/pri", [(b"Host", b" svc.local"), (b"x-seq", b" " + s(0))]),
        Req(s(1), b"POST", b"/cl", [(b"Host", b" h"), (b"Content-Length", b" 11"), (b"x-seq", b" " + s(1))],
            body=b"GET / HTTP/"),
        Req(s(2), b"POST", b"/ch", [(b"Host", b" h"), (b"x-seq", b" " + s(2)),
                                    (b"Transfer-Encoding", b" chunked")],
            chunks=[(b"3", b";e=1", b"a\r\n"), (b"0B", b"", b"0\r\n\r\nxxxxxx")], trailers=[b"T: 1"]),
        Req(s(3), b"GET", b"http://abs.example?q", [(b"Host", b" x"), (b"x-seq", b" " + s(3))],
            fwd_target=b"/?q", fwd_host=b"abs.example"),
        names_request(s(4), rng, [7, 8, 9, 15, 16, 17]),
        Req(s(5), b"GET", b"/last", [(b"Host", b" h"), (b"x-seq", b" " + s(5)), (b"Connection", b" close")]),
    ]


# ------------------------------------------------------------------ driving and checking


def parse_responses(out):
    """[(status, headers, body)] of the final responses in out, plus the 1xx count
    before each and any bytes left over."""
    res = []
    interim = 0
    while out:
        head, sep, rest = out.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1]) if lines[0].startswith(b"HTTP/1.1 ") else -1
        headers = [(n.strip().lower(), v.strip()) for n, _, v in (l.partition(b":") for l in lines[1:])]
        if 100 <= status < 200:
            interim += 1
            out = rest
            continue
        cl = [v for n, v in headers if n == b"content-length"]
        if status < 0 or len(cl) != 1 or len(rest) < int(cl[0]):
            break
        n = int(cl[0])
        res.append((status, headers, rest[:n], interim))
        interim = 0
        out = rest[n:]
    return res, out


def send_stream(port, stream, cuts, pause=0.0, shut=False, timeout=20.0):
    """Send stream cut at the offsets `cuts` (one write per piece, TCP_NODELAY, `pause`
    seconds after each, or (offset, pause) for a pause of its own), read concurrently until
    keel closes. Returns (bytes, end): end is "eof", "reset" or "timeout"."""
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    got, end = [], ["timeout"]

    def read():
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    end[0] = "eof"
                    return
                got.append(data)
        except ConnectionResetError:
            end[0] = "reset"
        except OSError:
            return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    prev = 0
    try:
        for cut in list(cuts) + [len(stream)]:
            cut, wait = cut if isinstance(cut, tuple) else (cut, pause)
            if cut > prev:
                c.sendall(stream[prev:cut])
                prev = cut
                if wait:
                    time.sleep(wait)
        if shut:
            c.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # keel closed after a refusal while we were still sending: allowed
    t.join(timeout)
    c.close()
    return b"".join(got), end[0]


def check_exchange(o, reqs, out, end, where):
    """The client got one response per answered request, in order, each naming the
    origin's record of exactly that request; the refused one last; nothing else."""
    res, rest = parse_responses(out)
    want = [r for r in reqs if r.status is not None]
    assert [st for st, _, _, _ in res] == [r.status for r in want], (where, res, rest[:300])
    assert rest == b"", (where, rest[:300])
    # keel closes after the last response; after a refusal, bytes of ours it never read
    # may turn its close into a reset (what it sent before still arrives first)
    assert end == "eof" or (end == "reset" and want[-1].status != 200), (where, end)
    assert not o.errors, (where, o.errors)
    for r, (status, headers, body, interim) in zip(want, res):
        conn = [v.lower() for n, v in headers if n == b"connection"]
        last = r is want[-1]
        assert conn == ([b"close"] if last else []), (where, r.seq, headers)
        assert interim <= (1 if r.expect_100 else 0), (where, r.seq, interim)
        if r.status != 200:
            continue
        n, _, seq = body.partition(b";seq=")
        assert n.startswith(b"r") and seq == r.seq, (where, r.seq, body)
        check_received(o.records[int(n[1:])], r, where)


def check_received(rec, r, where):
    ctx = (where, r.seq)
    assert (rec.method, rec.target, rec.version) == (r.method, r.fwd_target, b"HTTP/1.1"), ctx
    # Expect: keel answers it; whether it is passed on is test_expect_not_forwarded's
    mine = [i for i, (n, _) in enumerate(rec.headers) if not keel_added(n) and n.lower() != b"expect"]
    client = [rec.headers[i] for i in mine]
    assert client == r.fwd_headers, (ctx, [h for h in client if h not in r.fwd_headers][:5],
                                     [h for h in r.fwd_headers if h not in client][:5])
    # each line either rewritten as "name: value" or passed on exactly as it came
    for i in mine:
        n, v = rec.headers[i]
        assert rec.raw[i] == n + b": " + v or rec.raw[i] in r.raw_lines.get((n, v), ()), (ctx, rec.raw[i])
    assert len(rec.header(b"x-request-id")) == 1, ctx
    assert rec.body == r.body, (ctx, rec.body[:100], r.body[:100])
    if r.chunked:
        assert rec.chunked, ctx
        assert rec.trailers in ([], r.trailers), (ctx, rec.trailers)
    elif r.has_cl:  # Content-Length: 0 too is forwarded
        assert rec.header(b"content-length") == [b"%d" % len(r.body)], ctx
    else:
        assert not rec.header(b"content-length") and not rec.header(b"transfer-encoding"), ctx


def expected_log(reqs):
    lines = []
    for r in reqs:
        if r.status == 200:
            lines.append("%s %s 200 - %d %d %s" % (r.method.decode(), r.seq.decode(), len(r.body),
                                                   r.head_len, r.fwd_target.decode()))
        elif r.status is not None:  # refused before a request was parsed: no method, no header
            lines.append(("- - %d DPE 0" % r.status, "bytes"))
    return lines


def check_log(k, before, reqs, where):
    want = expected_log(reqs)
    lines = k.log_lines(before + len(want), timeout=5)[before:]
    assert len(lines) == len(want), (where, lines[-5:])
    for line, w in zip(lines, want):
        if isinstance(w, tuple):  # the refusal: its head byte count is what keel had read
            assert line.startswith(w[0] + " "), (where, line)
        else:
            assert line == w, (where, line, w)
    return before + len(want)


def start(keel, o, io):
    extra = ["--access-log-format", LOG_FORMAT]
    if io != "uring":
        extra += ["--io-uring", io]
    return keel(*extra, upstream=o.port)


IO_MODES = ["uring", "off"]


def run_full(k, o, reqs, cuts, pause, where, log_before):
    stream = b"".join(r.wire for r in reqs)
    out, end = send_stream(k.inbound, stream, cuts, pause=pause)
    check_exchange(o, reqs, out, end, where)
    return check_log(k, log_before, reqs, where)


# ------------------------------------------------------------------ the tests


@pytest.mark.parametrize("io", IO_MODES)
def test_pipelined_stream_in_one_write(keel, origin, io):
    k = start(keel, origin, io)
    log = 0
    for rep in range(3):  # again on the same worker: pooled buffers come back dirty
        reqs = full_stream("one%d" % rep)
        log = run_full(k, origin, reqs, [], 0, "one write #%d" % rep, log)
    ready(k)


@pytest.mark.parametrize("io", IO_MODES)
def test_pipelined_stream_one_byte_per_write(keel, origin, io):
    k = start(keel, origin, io)
    reqs = full_stream("byte")
    stream = b"".join(r.wire for r in reqs)
    # every byte its own segment up to the big heads, which go a byte at a time around
    # their ends only (the limit checks), and in 512-byte writes in their middle
    cuts, i = [], 0
    big = [(len(b"".join(r.wire for r in reqs[:j])), len(reqs[j].wire))
           for j in range(len(reqs)) if reqs[j].head_len >= MAX_HEAD]
    while i < len(stream):
        step = 1
        for startb, size in big:
            if startb + 64 <= i < startb + size - 300:
                step = 512
        i += step
        cuts.append(i)
    # a pause after each: most bytes get a read of their own
    run_full(k, origin, reqs, cuts[:-1], 0.0001, "byte per write", 0)
    ready(k)


def test_short_stream_split_at_every_offset(keel, origin):
    k = start(keel, origin, "uring")
    probe = short_stream("s0000")
    n = len(b"".join(r.wire for r in probe))
    log_before = 0

    def one(i):
        reqs = short_stream("s%04d" % i)
        stream = b"".join(r.wire for r in reqs)
        assert len(stream) == n
        out, end = send_stream(k.inbound, stream, [i], pause=0.003)
        check_exchange(origin, reqs, out, end, "split at %d" % i)
        return reqs

    with ThreadPoolExecutor(8) as pool:
        all_reqs = list(pool.map(one, range(1, n)))
    # one line per request, whichever connection it came on
    want = sorted(l for reqs in all_reqs for l in expected_log(reqs))
    lines = k.log_lines(log_before + len(want), timeout=10)
    assert sorted(lines) == want
    assert len(origin.records) == len(want)
    ready(k)


@pytest.mark.parametrize("io", IO_MODES)
def test_random_segmentations(keel, origin, io):
    k = start(keel, origin, io)
    rng = random.Random(0x5e9)
    log = 0
    for run in range(20 if SANITIZED else 40):
        reqs = full_stream("rnd%02d" % run)
        stream = b"".join(r.wire for r in reqs)
        cuts, i = [], 0
        while i < len(stream):
            x = rng.random()
            i += rng.randint(1, 3) if x < 0.3 else rng.randint(1, 64) if x < 0.75 else rng.randint(1, 8192)
            cuts.append((i, 0.0002) if rng.random() < 0.05 else i)
        log = run_full(k, origin, reqs, cuts[:-1], 0, "random run %d" % run, log)
    ready(k)


def test_fin_with_the_last_pipelined_request(keel, origin):
    """The client's FIN comes in the segment that ends the last request. keel takes a
    half-close for the client leaving (Envoy's DC; README, test_hostile_io.py
    test_client_half_close_is_ended_like_envoy): the connection must end at once, every
    response the client got must be whole, right and in order, what reached the origin
    must be exactly those requests (plus at most the one cut off), and the log says DC
    for the one cut off."""
    k = start(keel, origin, "uring")
    log = 0
    for run in range(8):
        reqs = short_stream("fin%d" % run)[:-1]  # no Connection: close: the FIN ends it
        stream = b"".join(r.wire for r in reqs)
        rec_before = len(origin.records)
        t0 = time.time()
        # run 0: all of it and the FIN in one segment; then the FIN with the last piece of a
        # byte-at-a-time tail, the head of the stream in one write
        cuts = [] if run == 0 else list(range(len(stream) - 8 * run, len(stream)))
        out, end = send_stream(k.inbound, stream, cuts, shut=True, timeout=5)
        assert end == "eof" and time.time() - t0 < 2.0, ("run", run, "keel waited on a half-closed client")
        res, rest = parse_responses(out)
        assert rest == b"", (run, rest[:200])
        assert len(res) <= len(reqs)
        for r, (status, headers, body, _) in zip(reqs, res):
            assert status == 200 and body.endswith(b";seq=" + r.seq), (run, r.seq, body)
            check_received(origin.records[int(body.split(b";")[0][1:])], r, "fin run %d" % run)
        got = origin.records[rec_before:]
        assert len(res) <= len(got) <= len(res) + 1, (run, len(res), len(got))
        for r, rec in zip(reqs, got):
            check_received(rec, r, "fin run %d" % run)
        lines = k.log_lines(log + len(res), timeout=3)
        time.sleep(0.1)
        lines = k.log_lines(log + len(res), timeout=3)[log:]
        assert [l.split(" ")[1:4] for l in lines[:len(res)]] == \
            [[r.seq.decode(), "200", "-"] for r in reqs[:len(res)]], (run, lines)
        assert len(lines) <= min(len(res) + 1, len(reqs)), (run, lines)
        if len(lines) > len(res):
            assert lines[-1].split(" ")[1:4] == [reqs[len(res)].seq.decode(), "0", "DC"], (run, lines)
        log += len(lines)
    assert not origin.errors, origin.errors
    # the same requests with Connection: close and no FIN are all answered
    reqs = short_stream("nofin")
    out, end = send_stream(k.inbound, b"".join(r.wire for r in reqs), [])
    check_exchange(origin, reqs, out, end, "no fin")
    ready(k)


@pytest.mark.parametrize("total", [MAX_HEAD, MAX_HEAD + 1, MAX_HEAD + 2, MAX_HEAD + 3])
def test_head_size_limit_does_not_depend_on_segmentation(keel, origin, total):
    """A head of `total` bytes gets the same answer whether it arrives in one read or with
    its last one or two bytes in a later one: the limit is a property of the bytes.
    MAX_HEAD + 2 is the edge: header lines of exactly 60 KiB, then the empty line, which
    is not counted. With its CR alone in a read, keel holds 61441 bytes, more than the
    limit, and used to answer 431 there (the need-more path counted that CR)."""
    k = start(keel, origin, "uring")
    answers = []
    for tail in (0, 1, 2):
        req = sized_request(b"lim-%d-%d" % (total, tail), total, close=True)
        cuts = [len(req.wire) - tail] if tail else []
        out, end = send_stream(k.inbound, req.wire, cuts, pause=0.05, timeout=3)
        answers.append(out.split(b"\r\n", 1)[0])
    assert answers[0] == answers[1] == answers[2], (total, answers)
    if total <= MAX_HEAD:
        assert answers[0] == b"HTTP/1.1 200 OK", answers
    if total >= MAX_HEAD + 3:  # header lines over 60 KiB
        assert answers[0] == b"HTTP/1.1 431 Request Header Fields Too Large", answers
    ready(k)


class SplitResponder(Listener):
    """An origin that answers each request with `self.answer`, written in two pieces cut
    at `self.cut` (0: one write) with a pause between them."""

    def __init__(self):
        self.answer, self.cut = b"", 0
        super().__init__(16)

    def _serve(self, c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        r = Reader(c)
        with c:
            try:
                while True:
                    r.until(b"\r\n\r\n")
                    answer, cut = self.answer, self.cut
                    if cut:
                        c.sendall(answer[:cut])
                        time.sleep(0.05)
                        c.sendall(answer[cut:])
                    else:
                        c.sendall(answer)
            except (EOFError, OSError):
                return


@pytest.mark.parametrize("total", [MAX_HEAD + 1, MAX_HEAD + 2, MAX_HEAD + 3])
def test_response_head_size_limit_does_not_depend_on_segmentation(keel, total):
    """The same edge on the way back: a response head whose header lines are exactly
    60 KiB is passed on however it is split (it used to be a 502 when its final LF came
    in a later read)."""
    o = SplitResponder()
    k = keel(upstream=o.port)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
    pad = total - len(head) - len(b"X-Pad: \r\n\r\n")
    o.answer = head + b"X-Pad: " + b"p" * pad + b"\r\n\r\n" + b"ok"
    answers = []
    for tail in (0, 1, 2):
        o.cut = total - tail if tail else 0
        out, end = send_stream(k.inbound, b"GET /r HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                               [], timeout=3)
        answers.append(out.split(b"\r\n", 1)[0])
    o.ls.close()
    assert answers[0] == answers[1] == answers[2], (total, answers)
    ready(k)
