"""A differential test of the HTTP/1.1 response path (upstream -> keel -> client): one
upstream keep-alive connection answers a pipelined sequence of requests with responses of
every shape, each written whole, a byte per write, split in two at every offset or cut at
random, and the client must get the same responses whatever the segmentation: the status
line and reason as sent, the header list in order minus what keel documents it drops
(hop-by-hop, those named in Connection, framing, x-envoy-upstream-service-time) plus what
it adds, the body bytes exactly (de-chunked where keel re-frames), framing that says one
thing, one service time of keel's own, one access-log line each.

What it guards: the response head parsed once complete (take_response_head in
src/proxy/session_http.c, src/http/parse.c), the head copied out of the upstream's read
buffer with its header ids (src/http/header_id.c), interim 1xx heads passed on before the
final one, the re-chunking of chunked, close-delimited and other-coded bodies with their
trailers (forward_response_body, src/http/chunked.c), HEAD/204/304 answers with no body,
and the pool: the whole sequence rides one upstream connection, which a FIN that came with
the last bytes of a response must take out of the pool.

The origin is a raw-socket server in this process (`ScriptOrigin`): it reads each request
keel sends it, records which connection it came on, and answers with the response the
request's x-seq names, written by that response's `Plan`."""
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import SANITIZED
from wire import Listener, Reader, header_value, ows, random_token, ready

# one access-log line per exchange: status, flags, body bytes, the service time keel set
# and the upstream connection it used
LOG_FORMAT = ("%REQ(:METHOD)% %REQ(X-SEQ)% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_SENT% "
              "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% %UPSTREAM_LOCAL_ADDRESS% "
              "%RESPONSE_CODE_DETAILS%\n")

# response headers keel does not pass on as they came (write_response_head): hop-by-hop
# (RFC 9110 §7.6.1), the framing it regenerates, the next hop's service time it replaces,
# and peer metadata (inbound, no mesh config)
DROPPED = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
           b"expect", b"transfer-encoding", b"content-length", b"x-envoy-upstream-service-time",
           b"x-keel-peer-metadata"}
# the headers keel writes itself, after the ones it passes on
KEEL_WRITES = {b"content-length", b"transfer-encoding", b"x-envoy-upstream-service-time",
               b"connection"}

RESERVED = DROPPED | KEEL_WRITES | {b"x-hop-drop", b"x-hop-also", b"x-seq"}

# ------------------------------------------------------------------ the origin


class Plan:
    """How the origin writes one response: cut at `cuts` (offsets, or (offset, pause)),
    `pause` seconds after each piece but the last; `stop`: only the first `stop` bytes;
    `fin`: shut the write side after the bytes, with `cork` in the segment of the last
    ones (TCP_CORK holds that segment until the FIN rides on it); `read_body`: False
    answers before reading the request body, then reads on until keel closes (with `fin`:
    closes at once, and its kernel resets the connection over the unread bytes)."""

    def __init__(self, cuts=(), pause=0.0, stop=None, fin=False, cork=False, read_body=True):
        self.cuts, self.pause, self.stop = list(cuts), pause, stop
        self.fin, self.cork, self.read_body = fin, cork, read_body

    def write(self, c, data):
        if self.stop is not None:
            data = data[:self.stop]
        if self.cork:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        prev = 0
        for cut in self.cuts + [len(data)]:
            cut, wait = cut if isinstance(cut, tuple) else (cut, self.pause)
            cut = min(cut, len(data))
            if cut > prev:
                c.sendall(data[prev:cut])
                prev = cut
                if wait and prev < len(data):
                    time.sleep(wait)
        if self.fin:
            c.shutdown(socket.SHUT_WR)


WHOLE = Plan()


class Record:
    def __init__(self, seq, method, target, body, conn, peer):
        self.seq, self.method, self.target, self.body = seq, method, target, body
        self.conn, self.peer = conn, peer


class ScriptOrigin(Listener):
    """Keep-alive HTTP/1.1 origin: reads each request keel sends (Content-Length bodies),
    records it with its connection, and answers with the response `script` holds for its
    x-seq, written by that response's plan. A response that ends in the close (or a plan
    with a FIN) ends the connection."""

    def __init__(self):
        self.lock = threading.Lock()
        self.script = {}   # x-seq -> (Resp, Plan)
        self.records = []
        self.errors = []
        self.conns = 0
        self.closed_by_keel = []  # connection numbers keel closed after an early answer
        super().__init__(128)

    def answer(self, seq, resp, plan=WHOLE):
        self.script[seq] = (resp, plan)

    def record(self, seq):
        with self.lock:
            return [r for r in self.records if r.seq == seq]

    def _serve(self, c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            self.conns += 1
            conn = self.conns
        peer = "%s:%d" % c.getpeername()
        r = Reader(c)
        with c:
            while True:
                try:
                    head = r.until(b"\r\n\r\n")
                except (EOFError, OSError):
                    return
                lines = head.split(b"\r\n")
                method, target, _ = lines[0].split(b" ")
                hdrs = [(n.strip().lower(), v.strip()) for n, _, v in
                        (l.partition(b":") for l in lines[1:])]
                seq = next((v for n, v in hdrs if n == b"x-seq"), b"-")
                cl = next((int(v) for n, v in hdrs if n == b"content-length"), 0)
                item = self.script.get(seq)
                if item is None:
                    self.errors.append("no response scripted for %r (%r)" % (seq, lines[0]))
                    return
                resp, plan = item
                body = b""
                try:
                    if plan.read_body:
                        body = r.exact(cl)
                except (EOFError, OSError):
                    self.errors.append("connection ended inside the body of %r" % seq)
                    return
                with self.lock:
                    self.records.append(Record(seq, method, target, body, conn, peer))
                try:
                    plan.write(c, resp.wire)
                except OSError:
                    return
                if plan.fin or resp.framing == "eof":
                    if not plan.fin:
                        c.shutdown(socket.SHUT_WR)
                    return  # with a request body unread, the close is a reset
                if not plan.read_body:  # what keel sends after an early answer, to its close
                    try:
                        while c.recv(65536):
                            pass
                    except OSError:
                        pass
                    self.closed_by_keel.append(conn)
                    return


@pytest.fixture
def origin():
    o = ScriptOrigin()
    yield o
    o.close()


# ------------------------------------------------------------------ requests and responses


class Req:
    def __init__(self, seq, method=b"GET", path=b"/", headers=(), body=b"", close=False,
                 version=b"HTTP/1.1"):
        self.seq, self.method, self.version, self.body = seq, method, version, body
        hs = [(b"Host", b"svc.local"), (b"x-seq", seq)] + list(headers)
        if body:
            hs.append((b"Content-Length", b"%d" % len(body)))
        if close:
            hs.append((b"Connection", b"close"))
        self.wire = (method + b" " + path + b" " + version + b"\r\n" +
                     b"".join(n + b": " + v + b"\r\n" for n, v in hs) + b"\r\n" + body)


class Resp:
    """One scripted response: the bytes the origin writes and what the client must get.
    framing: "length", "chunked" (chunks and trailers), "eof" (the close ends the body) or
    "none" (no body by its status or the request's method)."""

    def __init__(self, status_line, headers, body=b"", chunks=None, trailers=(), interim=(),
                 framing=None, eol=b"\r\n", head=False):
        self.status_line = status_line
        self.status = int(status_line[9:12])
        self.headers = list(headers)
        self.interim = list(interim)
        self.trailers = list(trailers)
        wire_body = body
        if chunks is not None:
            for size, _, data in chunks:
                assert int(size, 16) == len(data), (size, data)
            wire_body = b"".join(size + ext + b"\r\n" + data + b"\r\n"
                                 for size, ext, data in chunks)
            wire_body += b"0;last=1\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"
            body = b"".join(data for _, _, data in chunks)
        if framing is None:
            framing = ("none" if head or self.status in (204, 304) else
                       "chunked" if chunks is not None else
                       "length" if self.header(b"content-length") else "eof")
        self.framing = framing
        self.body = b"" if framing == "none" else body
        self.wire = (b"".join(self.interim) + status_line + eol +
                     b"".join(n + b":" + v + eol for n, v in self.headers) + eol +
                     (b"" if framing == "none" else wire_body))
        # what the client must see of it
        code, _, reason = status_line[9:].partition(b" ")
        self.want_status_line = b"HTTP/1.1 " + code + b" " + reason
        nominated = set()
        for v in self.header(b"connection"):
            nominated |= {t.strip(b" \t").lower() for t in v.split(b",")}
        self.want_passed = [(n, v.strip(b" \t")) for n, v in self.headers
                            if n.lower() not in DROPPED and n.lower() not in nominated
                            and n.lower() not in KEEL_WRITES]
        codings = [t.strip(b" \t") for v in self.header(b"transfer-encoding")
                   for t in v.split(b",") if t.strip(b" \t")]
        self.want_te = b", ".join([c for c in codings if c.lower() != b"chunked"] + [b"chunked"])

    def header(self, name):
        return [v.strip(b" \t") for n, v in self.headers if n.lower() == name]


def header_name(rng, n):
    while True:
        name = random_token(rng, n)
        if name.lower() not in RESERVED and not name.lower().startswith(b"x-envoy-"):
            return name


def names_headers(rng, lengths):
    """Two headers of each name length (one with OWS and a value of any length, one
    plain), the hostile ones in between: a Connection naming two headers (one of them
    twice, in another case), hop-by-hop headers, two service times from the origin,
    duplicates, an empty value, tabs at the edges."""
    special = [(b"Connection", b" X-Hop-Drop, Keep-Alive"), (b"X-Hop-Drop", b" secret"),
               (b"X-Envoy-Upstream-Service-Time", b" from-the-origin"),
               (b"Keep-Alive", b" timeout=5"),
               (b"Set-Cookie", b" a=1; Path=/"), (b"x-hop-drop", b" again"),
               (b"Proxy-Connection", b" keep-alive"), (b"Set-Cookie", b" b=2"), (b"X-Empty", b""),
               (b"connection", b"x-hop-also"), (b"x-envoy-upstream-service-time", b" 99999"),
               (b"X-Hop-Also", b" dropped too"), (b"X-Tab-Edges", b"\t\tinner\tvalue\t \t"),
               (b"TE", b" trailers"), (b"Trailer", b" X-Never"), (b"Upgrade", b" h2c")]
    hs = [(b"Content-Type", b" application/octet-stream")]
    for i, n in enumerate(lengths):
        value = ows(rng) + header_value(rng, rng.randrange(0, 41)) + ows(rng)
        hs.append((header_name(rng, n), value))
        hs.append((header_name(rng, n), b" " + header_value(rng, n)))
        if i < len(special):
            hs.append(special[i])
    hs += special[len(lengths):]
    return hs


FAKE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfake!"
CHUNKS = [(b"1a", b";ext=1", b"abcdefghijklmnopqrstuvwxyz"),
          (b"000A", b';name="q v";x', b"\r\n0\r\n\r\nHTT"),
          (b"F", b" ;sp", bytes(range(0x80, 0x8f))),
          (b"1", b"", b"\n"),
          (b"40", b";a=b;c=d", bytes(range(0x40, 0x80)))]


def full_script(tag):
    """Every response shape, in the order the client asks for them; all on one upstream
    connection but the last, which ends it (close-delimited)."""
    rng = random.Random(20240612)
    s = lambda i: b"%s-%d" % (tag.encode(), i)
    cl_body = bytes(range(256)) + b"\r\n\r\n" + FAKE_HEAD + b"\r\n0\r\n\r\n" + b"\x00\xff" * 50
    eof_body = b"until the close\r\n0\r\n\r\n" + FAKE_HEAD + bytes(range(256))
    return [
        (Req(s(0), path=b"/cl"),
         Resp(b"HTTP/1.1 200 OK", [(b"Content-Type", b" text/plain"), (b"X-Dup", b" one"),
                                   (b"Content-Length", b" %d" % len(cl_body)), (b"X-Dup", b" two"),
                                   (b"Cache-Control", b"no-store")], body=cl_body)),
        (Req(s(1), path=b"/chunked"),
         Resp(b"HTTP/1.1 200 OK", [(b"Trailer", b" X-Trailer-One, X-Trailer-Two"),
                                   (b"Transfer-Encoding", b" Chunked"), (b"X-After-Te", b" 1")],
              chunks=CHUNKS, trailers=[b"X-Trailer-One: t1", b"X-Trailer-Two:\tt2"])),
        (Req(s(2), method=b"HEAD", path=b"/head"),
         Resp(b"HTTP/1.1 200 OK", [(b"ETag", b' "h1"'), (b"Content-Length", b" 12345"),
                                   (b"X-Head", b" yes")], head=True)),
        (Req(s(3), path=b"/nocontent"),
         Resp(b"HTTP/1.1 204 No Content", [(b"X-A", b" 1")])),
        (Req(s(4), path=b"/notmodified", headers=[(b"If-None-Match", b'"v1"')]),
         Resp(b"HTTP/1.1 304 Not Modified", [(b"ETag", b' "v1"'), (b"Content-Length", b" 999")])),
        (Req(s(5), path=b"/early"),
         Resp(b"HTTP/1.1 200 OK", [(b"Content-Length", b" 5")], body=b"hints",
              interim=[b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"])),
        (Req(s(6), path=b"/continue"),
         Resp(b"HTTP/1.1 201 ", [(b"Content-Length", b" 0")],
              interim=[b"HTTP/1.1 100 Continue\r\n\r\n"])),
        (Req(s(7), path=b"/names"),
         Resp(b"HTTP/1.1 200 Fine\tand dandy \x80\xff", names_headers(rng, range(1, 41)) +
              [(b"Content-Length", b" 7")], body=b"names!\n")),
        (Req(s(8), path=b"/gzip"),
         Resp(b"HTTP/1.1 200 OK", [(b"Transfer-Encoding", b" gzip"),
                                   (b"Transfer-Encoding", b" chunked")],
              chunks=[(b"5", b"", b"GZIP1"), (b"3", b"", b"GZ2")])),
        (Req(s(9), path=b"/dupcl"),
         Resp(b"HTTP/1.1 200 OK", [(b"Content-Length", b" 7"), (b"X-Mid", b" m"),
                                   (b"content-length", b"7")], body=b"seven!!")),
        (Req(s(10), path=b"/lf"),
         Resp(b"HTTP/1.1 200 OK", [(b"X-Lf", b" bare"), (b"Content-Length", b" 3")], body=b"abc",
              eol=b"\n")),
        (Req(s(11), path=b"/v10"),
         Resp(b"HTTP/1.0 200 OK", [(b"Connection", b" keep-alive"), (b"Content-Length", b" 4")],
              body=b"v1.0")),
        (Req(s(12), method=b"PUT", path=b"/expect", headers=[(b"Expect", b"100-continue")],
             body=b"hello"),
         Resp(b"HTTP/1.1 202", [(b"Content-Length", b" 2")], body=b"ok",
              interim=[b"HTTP/1.1 100 Continue\r\n\r\n"])),
        (Req(s(13), path=b"/last", close=True),
         Resp(b"HTTP/1.1 200 OK", [(b"X-Last", b" eof")], body=eof_body)),
    ]


def short_script(tag):
    """The small shapes, for a split at every offset."""
    rng = random.Random(7)
    s = lambda i: b"%s-%d" % (tag.encode(), i)
    return [
        (Req(s(0), path=b"/cl"),
         Resp(b"HTTP/1.1 200 OK", [(b"Content-Length", b" %d" % (4 + len(FAKE_HEAD)))],
              body=b"\r\n\r\n" + FAKE_HEAD)),
        (Req(s(1), path=b"/chunked"),
         Resp(b"HTTP/1.1 200 OK", [(b"Transfer-Encoding", b" gzip, chunked")],
              chunks=[(b"3", b";e=1", b"a\r\n"), (b"0B", b"", b"0\r\n\r\nxxxxxx")],
              trailers=[b"T: 1"])),
        (Req(s(2), method=b"HEAD", path=b"/head"),
         Resp(b"HTTP/1.1 200 OK", [(b"Content-Length", b" 10")], head=True)),
        (Req(s(3), path=b"/early"),
         Resp(b"HTTP/1.1 200 OK", [(b"Content-Length", b" 1")], body=b"!",
              interim=[b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"])),
        (Req(s(4), path=b"/names"),
         Resp(b"HTTP/1.1 299 \x80", names_headers(rng, [1, 7, 8, 9, 15, 16, 17, 29]) +
              [(b"Content-Length", b" 0")])),
        (Req(s(5), path=b"/last", close=True),
         Resp(b"HTTP/1.1 200 OK", [(b"X-Last", b" eof")], body=b"0\r\n\r\nend")),
    ]


# ------------------------------------------------------------------ the client


def send_stream(port, data, timeout=10.0):
    """Send data in one write, read until keel closes. Returns (bytes, end): end is
    "eof", "reset" or "timeout"."""
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    got, end = [], "timeout"
    try:
        c.sendall(data)
        while True:
            chunk = c.recv(65536)
            if not chunk:
                end = "eof"
                break
            got.append(chunk)
    except ConnectionResetError:
        end = "reset"
    except socket.timeout:
        pass
    c.close()
    return b"".join(got), end


class Got:
    def __init__(self):
        self.interim, self.lines, self.trailers = [], [], []
        self.body, self.complete = b"", False

    def values(self, name):
        return [v for n, v in self.headers if n.lower() == name]


def dechunk(out, pos):
    """(body, trailers, end position) of a chunked body at pos, or None if incomplete."""
    body = b""
    while True:
        nl = out.find(b"\r\n", pos)
        if nl < 0:
            return None
        size = int(out[pos:nl].split(b";")[0], 16)
        pos = nl + 2
        if size == 0:
            break
        if len(out) < pos + size + 2:
            return None
        body += out[pos:pos + size]
        assert out[pos + size:pos + size + 2] == b"\r\n", out[pos:pos + size + 2]
        pos += size + 2
    trailers = []
    while True:
        nl = out.find(b"\r\n", pos)
        if nl < 0:
            return None
        line, pos = out[pos:nl], nl + 2
        if line == b"":
            return body, trailers, pos
        trailers.append(line)


def parse_responses(out, reqs):
    """What the client got for each request, read as an HTTP/1.1 client reads it:
    interim heads, the final head, then the body its framing says. Stops at the first
    incomplete one; returns the list and the bytes left over."""
    got, pos = [], 0
    for req in reqs:
        g = Got()
        while True:
            end = out.find(b"\r\n\r\n", pos)
            if end < 0:
                got.append(g)
                return got, b""
            head, pos = out[pos:end], end + 4
            if head[9:10] == b"1" and head[9:12] != b"101":
                g.interim.append(head + b"\r\n\r\n")
                continue
            break
        lines = head.split(b"\r\n")
        g.status_line, g.lines = lines[0], lines[1:]
        g.status = int(lines[0][9:12])
        g.headers = [(n, v.strip(b" \t")) for n, _, v in (l.partition(b":") for l in g.lines)]
        te, cl = g.values(b"transfer-encoding"), g.values(b"content-length")
        if req.method == b"HEAD" or g.status in (204, 304):
            g.framing = "none"
        elif te:
            g.framing = "chunked"
            r = dechunk(out, pos)
            if r is None:
                got.append(g)
                return got, out[pos:]
            g.body, g.trailers, pos = r
        elif cl:
            g.framing = "length"
            if len(out) < pos + int(cl[0]):
                g.body = out[pos:]
                got.append(g)
                return got, b""
            g.body, pos = out[pos:pos + int(cl[0])], pos + int(cl[0])
        else:
            g.framing = "close"
            g.body, pos = out[pos:], len(out)
        g.complete = True
        got.append(g)
    return got, out[pos:]


def check_response(g, req, resp, last, where, minor=1):
    ctx = (where, req.seq)
    assert g.complete, (ctx, g.__dict__)
    # interim responses: passed on to HTTP/1.1 clients as they came; for a request with
    # Expect, one 100 (keel's own, or the origin's when keel sent none), never two
    if minor == 0:
        assert g.interim == [], ctx
    elif b"/expect" in req.wire.split(b"\r\n")[0]:
        assert g.interim == [b"HTTP/1.1 100 Continue\r\n\r\n"], (ctx, g.interim)
    else:
        assert g.interim == resp.interim, (ctx, g.interim)
    assert g.status_line == resp.want_status_line, (ctx, g.status_line)
    passed = [(n, v) for n, v in g.headers if n.lower() not in KEEL_WRITES]
    assert passed == resp.want_passed, (ctx, [h for h in passed if h not in resp.want_passed][:5],
                                        [h for h in resp.want_passed if h not in passed][:5])
    for line, (n, v) in zip(g.lines, g.headers):  # every line written "name: value"
        assert line == n + b": " + v, (ctx, line)
    # framing: one of content-length, transfer-encoding: chunked, the close
    cl, te = g.values(b"content-length"), g.values(b"transfer-encoding")
    conn = [v.lower() for v in g.values(b"connection")]
    if resp.framing == "none":  # HEAD and 304 keep the length they describe
        assert g.framing == "none" and te == [], ctx
        assert cl == resp.header(b"content-length"), (ctx, cl)
    elif resp.framing == "length":
        assert g.framing == "length" and cl == [b"%d" % len(resp.body)] and te == [], (ctx, cl, te)
    elif minor == 1:  # chunked and close-delimited bodies are chunked toward HTTP/1.1
        assert g.framing == "chunked" and te == [resp.want_te] and cl == [], (ctx, cl, te)
    else:
        assert g.framing == "close" and te == [] and cl == [] and conn == [b"close"], (ctx, g.lines)
    assert g.body == resp.body, (ctx, g.body[:200], resp.body[:200])
    want_trailers = resp.trailers if g.framing == "chunked" and resp.framing == "chunked" else []
    assert g.trailers == want_trailers, (ctx, g.trailers)
    st = g.values(b"x-envoy-upstream-service-time")
    assert len(st) == 1 and st[0].isdigit(), (ctx, st)
    if minor == 1:
        assert conn == ([b"close"] if last else []), (ctx, conn)


def check_log(k, before, pairs, got, origin, where):
    """One line per request, in order: status, no flag, the body bytes, the service time
    the client saw, the upstream connection the origin saw the request on."""
    lines = k.log_lines(before + len(pairs), timeout=5)[before:]
    assert len(lines) == len(pairs), (where, lines[-5:])
    for line, (req, resp), g in zip(lines, pairs, got):
        rec = origin.record(req.seq)
        assert len(rec) == 1, (where, req.seq, len(rec))
        want = "%s %s %d - %d %s %s via_upstream" % (
            req.method.decode(), req.seq.decode(), resp.status, len(resp.body),
            g.values(b"x-envoy-upstream-service-time")[0].decode(), rec[0].peer)
        assert line == want, (where, line, want)
    return before + len(pairs)


def run_script(k, origin, pairs, plans, where, log_before):
    """Pipeline the requests, each answered by its plan; check everything; return the
    log position after them."""
    for (req, resp), plan in zip(pairs, plans):
        origin.answer(req.seq, resp, plan)
    out, end = send_stream(k.inbound, b"".join(req.wire for req, _ in pairs))
    got, rest = parse_responses(out, [req for req, _ in pairs])
    assert len(got) == len(pairs) and rest == b"", (where, len(got), rest[:300], out[-300:])
    assert end == "eof", (where, end)
    assert not origin.errors, (where, origin.errors)
    for i, (g, (req, resp)) in enumerate(zip(got, pairs)):
        check_response(g, req, resp, i == len(pairs) - 1, where)
        rec = origin.record(req.seq)
        assert len(rec) == 1 and rec[0].method == req.method and rec[0].body == req.body, \
            (where, req.seq, [(r.method, r.body) for r in rec])
    # every request of the sequence on one upstream connection (each one ends clean and
    # the pool hands it back); the close-delimited last response ends it
    conns = {origin.record(req.seq)[0].conn for req, _ in pairs}
    assert len(conns) == 1, (where, [(req.seq, origin.record(req.seq)[0].conn) for req, _ in pairs])
    return check_log(k, log_before, pairs, got, origin, where)


def start(keel, o, io="uring"):
    extra = ["--access-log-format", LOG_FORMAT]
    if io != "uring":
        extra += ["--io-uring", io]
    return keel(*extra, upstream=o.port)


IO_MODES = ["uring", "off"]

# ------------------------------------------------------------------ the sequence


@pytest.mark.parametrize("io", IO_MODES)
def test_response_sequence_in_one_write_each(keel, origin, io):
    k = start(keel, origin, io)
    log = 0
    for rep in range(3):  # again on the same worker: pooled buffers come back dirty
        pairs = full_script("one%d" % rep)
        log = run_script(k, origin, pairs, [WHOLE] * len(pairs), "one write #%d" % rep, log)
    assert origin.conns == 3
    ready(k)


@pytest.mark.parametrize("io", IO_MODES)
def test_response_sequence_one_byte_per_write(keel, origin, io):
    k = start(keel, origin, io)
    pairs = full_script("byte")
    plans = [Plan(cuts=range(1, len(resp.wire)), pause=0.0001) for _, resp in pairs]
    run_script(k, origin, pairs, plans, "byte per write", 0)
    ready(k)


def test_short_sequence_split_at_every_offset(keel, origin):
    """The short sequence's responses as one byte stream, split in two at each offset in
    turn (the piece after the cut 3 ms later); each split on its own client connection."""
    k = start(keel, origin)
    probe = short_script("s0000")
    sizes = [len(resp.wire) for _, resp in probe]
    total = sum(sizes)

    def one(i):
        pairs = short_script("s%04d" % i)
        assert [len(resp.wire) for _, resp in pairs] == sizes
        plans, at = [], 0
        for size in sizes:
            plans.append(Plan(cuts=[(i - at, 0.003)]) if at < i < at + size else WHOLE)
            at += size
        for (req, resp), plan in zip(pairs, plans):
            origin.answer(req.seq, resp, plan)
        out, end = send_stream(k.inbound, b"".join(req.wire for req, _ in pairs))
        got, rest = parse_responses(out, [req for req, _ in pairs])
        where = "split at %d" % i
        assert len(got) == len(pairs) and rest == b"" and end == "eof", (where, end, out[-300:])
        for j, (g, (req, resp)) in enumerate(zip(got, pairs)):
            check_response(g, req, resp, j == len(pairs) - 1, where)
        return [(req, resp, g) for g, (req, resp) in zip(got, pairs)]

    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(one, range(1, total)))
    assert not origin.errors, origin.errors[:5]
    # one line per request, whichever connection it came on, naming the upstream
    # connection the origin saw it on
    want = sorted("%s %s %d - %d %s %s via_upstream" % (
        req.method.decode(), req.seq.decode(), resp.status, len(resp.body),
        g.values(b"x-envoy-upstream-service-time")[0].decode(), origin.record(req.seq)[0].peer)
        for run in runs for req, resp, g in run)
    lines = k.log_lines(len(want), timeout=10)
    assert sorted(lines) == want
    ready(k)


@pytest.mark.parametrize("io", IO_MODES)
def test_random_segmentations(keel, origin, io):
    k = start(keel, origin, io)
    rng = random.Random(0x7e5)
    log = 0
    for run in range(10 if SANITIZED else 20):
        pairs = full_script("rnd%02d" % run)
        plans = []
        for _, resp in pairs:
            cuts, i = [], 0
            while i < len(resp.wire):
                x = rng.random()
                i += (rng.randint(1, 3) if x < 0.3 else rng.randint(1, 64) if x < 0.75 else
                      rng.randint(1, 4096))
                cuts.append((i, 0.0002) if rng.random() < 0.05 else i)
            plans.append(Plan(cuts=cuts[:-1]))
        log = run_script(k, origin, pairs, plans, "random run %d" % run, log)
    ready(k)


# ------------------------------------------------------------------ hostile upstreams


@pytest.mark.parametrize("framing", ["length", "chunked", "eof"])
@pytest.mark.parametrize("io", IO_MODES)
def test_fin_with_the_last_bytes_leaves_the_pool(keel, origin, io, framing):
    """The origin's FIN rides on the segment that ends a response (for "eof", the head
    with no body). The response is whole, and the connection must not go back to the
    pool: the POST pipelined behind it (which keel may not send twice, so never retries)
    goes on a fresh connection and is answered 200, 20 times out of 20, never 503 UC from
    a dead pooled connection (which it is when the FIN comes 20 ms later instead)."""
    k = start(keel, origin, io)
    log = 0
    for run in range(20):
        t = "fin%d" % run
        if framing == "length":
            first = Resp(b"HTTP/1.1 200 OK", [(b"Content-Length", b" 4")], body=b"last")
        elif framing == "chunked":
            first = Resp(b"HTTP/1.1 200 OK", [(b"Transfer-Encoding", b" chunked")],
                         chunks=[(b"4", b"", b"last")])
        else:  # the FIN is the end: an empty close-delimited body, head and FIN together
            first = Resp(b"HTTP/1.1 200 OK", [(b"X-Empty-Body", b" 1")])
        pairs = [(Req(b"%s-0" % t.encode(), path=b"/fin"), first),
                 (Req(b"%s-1" % t.encode(), method=b"POST", path=b"/after", body=b"hello"),
                  Resp(b"HTTP/1.1 200 OK", [(b"Content-Length", b" 5")], body=b"after")),
                 (Req(b"%s-2" % t.encode(), path=b"/end", close=True),
                  Resp(b"HTTP/1.1 200 OK", [(b"Content-Length", b" 3")], body=b"end"))]
        plans = [Plan(fin=True, cork=True), WHOLE, WHOLE]
        for (req, resp), plan in zip(pairs, plans):
            origin.answer(req.seq, resp, plan)
        out, end = send_stream(k.inbound, b"".join(req.wire for req, _ in pairs))
        got, rest = parse_responses(out, [req for req, _ in pairs])
        assert [g.complete and g.status for g in got] == [200, 200, 200], (run, out[:600])
        for i, (g, (req, resp)) in enumerate(zip(got, pairs)):
            check_response(g, req, resp, i == 2, "fin run %d" % run)
        r0, r1 = origin.record(pairs[0][0].seq), origin.record(pairs[1][0].seq)
        assert len(r0) == 1 and len(r1) == 1 and r1[0].conn != r0[0].conn, run
        assert r1[0].body == b"hello"
        lines = k.log_lines(log + 3)[log:]
        assert [l.split(" ")[2:4] for l in lines] == [["200", "-"]] * 3, (run, lines)
        log += 3
    assert not origin.errors, origin.errors
    ready(k)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
TRUNCATED = {
    # where the FIN comes: the response, how many bytes of it after the head the origin
    # writes (None: inside the head), and the body bytes keel can pass on before it
    "head": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", None, 0),
    "length-body": (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"y" * 100000,
                    3000, 3000),
    "chunk-data": (CHUNKED_HEAD + b"1000\r\n" + b"z" * 4096 + b"\r\n0\r\n\r\n", 6 + 100, 100),
    "chunk-boundary": (CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n\r\n", 10, 5),
    "trailers": (CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", 10 + 3 + 8, 5),
}


@pytest.mark.parametrize("where", list(TRUNCATED))
def test_fin_inside_a_response(keel, origin, where):
    """The origin closes inside a response. Before the head is complete: 503 UC, as
    README's table says. After it: the client's connection is closed at once without
    the end its framing promises (no last chunk, fewer bytes than the length), logged
    `UC upstream_reset_after_response_started{connection_termination}` (RELIABILITY.md)."""
    k = start(keel, origin)
    wire, after_head, sent = TRUNCATED[where]
    head_len = wire.index(b"\r\n\r\n") + 4
    stop = head_len - 20 if after_head is None else head_len + after_head
    # a 503 keeps a keep-alive connection: the request before a head says close
    req = Req(b"cut-" + where.encode(), path=b"/cut", close=where == "head")
    resp = Resp(b"HTTP/1.1 200 OK", [])
    resp.wire = wire
    origin.answer(req.seq, resp, Plan(stop=stop, fin=True))
    t0 = time.time()
    out, end = send_stream(k.inbound, req.wire, timeout=5)
    assert end in ("eof", "reset") and time.time() - t0 < 2.0, (where, end, "client left hanging")
    line = k.log_lines(1)[-1]
    if where == "head":
        assert out.startswith(b"HTTP/1.1 503 "), out[:200]
        assert line.split(" ")[2:4] == ["503", "UC"], line
        assert line.endswith(" upstream_reset_before_response_started{connection_termination}"), \
            line
    else:
        got, _ = parse_responses(out, [req])
        assert got[0].status == 200 and not got[0].complete, (where, out[-200:])
        if where != "length-body":  # no end of the chunked body the origin never sent
            assert not out.endswith(b"\r\n\r\n"), out[-60:]
            assert b"\r\n0\r\n\r\n" not in out.partition(b"\r\n\r\n")[2], out[-60:]
        assert line.split(" ")[2:5] == ["200", "UC", str(sent)], line
        assert line.endswith(" upstream_reset_after_response_started{connection_termination}"), line
    # the next client is served on a fresh connection
    req2 = Req(b"cut-next-" + where.encode(), path=b"/next", close=True)
    origin.answer(req2.seq, Resp(b"HTTP/1.1 200 OK", [(b"Content-Length", b" 2")], body=b"ok"))
    out, end = send_stream(k.inbound, req2.wire)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\nok"), out
    assert not origin.errors, origin.errors
    ready(k)


def early_answer(keel, origin):
    """The origin answers a POST after its head, without reading the 200000-byte body of
    which the client sent 1000 bytes. Returns (keel, the client socket, the response
    bytes, the request's seq)."""
    k = start(keel, origin)
    seq = b"early-0"
    origin.answer(seq, Resp(b"HTTP/1.1 200 OK", [(b"Content-Length", b" 5")], body=b"early"),
                  Plan(read_body=False))
    c = socket.create_connection(("127.0.0.1", k.inbound), timeout=5)
    c.sendall(b"POST /upload HTTP/1.1\r\nHost: svc.local\r\nx-seq: early-0\r\n"
              b"Content-Length: 200000\r\n\r\n" + b"b" * 1000)
    out = b""
    while not out.endswith(b"\r\n\r\nearly"):
        chunk = c.recv(65536)
        assert chunk, out
        out += chunk
    return k, c, out, seq


def test_response_before_the_request_body(keel, origin):
    """The whole response reaches the client; then keel ends the client connection (the
    rest of the body is not a request: the GET inside it never reaches the origin) and
    the upstream one (the origin has not read what keel sent it)."""
    k, c, out, seq = early_answer(keel, origin)
    got, rest = parse_responses(out, [Req(seq)])
    assert got[0].complete and got[0].status == 200 and got[0].body == b"early" and rest == b""
    end = "timeout"
    try:
        c.sendall(b"b" * 1000 +
                  b"\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\nx-seq: early-1\r\n\r\n")
        c.settimeout(3)
        end = "eof" if c.recv(65536) == b"" else "more"
    except (ConnectionResetError, BrokenPipeError):
        end = "reset"
    except socket.timeout:
        pass
    c.close()
    assert end in ("eof", "reset"), end
    deadline = time.time() + 3
    while not origin.closed_by_keel and time.time() < deadline:
        time.sleep(0.02)
    assert origin.closed_by_keel == [1], \
        "keel kept the upstream connection of an unfinished request"
    assert [r.target for r in origin.records] == [b"/upload"], [r.target for r in origin.records]
    assert not origin.errors, origin.errors
    line = k.log_lines(1)[-1]
    assert line.split(" ")[:5] == ["POST", "early-0", "200", "-", "5"], line
    ready(k)


def test_response_before_the_request_body_announces_the_close(keel, origin):
    """keel closes the client connection after a response that came before the request
    body was complete, so it must say so in that response, as it does in its own replies
    in the same state and as Envoy does (a response before the request is complete on
    HTTP/1 drains the connection and sets `connection: close`). Without it the client has
    no sign that it should stop sending the body (RFC 9112 §9.6). It used to be missing."""
    k, c, out, _ = early_answer(keel, origin)
    c.close()
    head = out.partition(b"\r\n\r\n")[0].lower()
    assert b"\r\nconnection: close" in head, out


def test_http10_client_gets_close_delimited_body(keel, origin):
    """Toward an HTTP/1.0 client: a Content-Length response keeps the connection when the
    client asked to (connection: keep-alive); a chunked one with trailers, after a 103,
    is sent without the 103, de-chunked, without trailers, ended by the close."""
    k = start(keel, origin)
    r0 = Req(b"ten-0", path=b"/cl", headers=[(b"Connection", b"keep-alive")], version=b"HTTP/1.0")
    p0 = Resp(b"HTTP/1.1 200 OK", [(b"X-A", b" a"), (b"Content-Length", b" 3")], body=b"abc")
    r1 = Req(b"ten-1", path=b"/chunked", version=b"HTTP/1.0")
    p1 = Resp(b"HTTP/1.1 200 OK", [(b"Transfer-Encoding", b" chunked"), (b"X-B", b" b")],
              chunks=CHUNKS, trailers=[b"X-Trailer: t"],
              interim=[b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"])
    origin.answer(r0.seq, p0)
    origin.answer(r1.seq, p1)
    out, end = send_stream(k.inbound, r0.wire + r1.wire)
    got, rest = parse_responses(out, [r0, r1])
    assert end == "eof" and len(got) == 2 and rest == b"", (end, out[-300:])
    assert [v.lower() for v in got[0].values(b"connection")] == [b"keep-alive"], got[0].lines
    check_response(got[0], r0, p0, False, "1.0 keep-alive", minor=0)
    check_response(got[1], r1, p1, True, "1.0 close-delimited", minor=0)
    assert origin.record(r0.seq)[0].conn == origin.record(r1.seq)[0].conn
    lines = k.log_lines(2)
    assert [l.split(" ")[1:5] for l in lines] == [["ten-0", "200", "-", "3"],
                                                  ["ten-1", "200", "-", str(len(p1.body))]], lines
    ready(k)


# ------------------------------------------------------------------ bugs found here


def test_every_header_named_in_connection_is_dropped(keel, origin):
    """RFC 9110 §7.6.1: a proxy removes every field a Connection header names. keel used to
    keep only the first 8 tokens: h9 and h10 reached the client."""
    k = start(keel, origin)
    names = [b"h%d" % i for i in range(1, 11)]
    resp = Resp(b"HTTP/1.1 200 OK", [(b"Connection", b" " + b", ".join(names))] +
                [(n, b" hop-only") for n in names] +
                [(b"X-Kept", b" yes"), (b"Content-Length", b" 2")], body=b"ok")
    req = Req(b"conn-0", close=True)
    origin.answer(req.seq, resp)
    out, _ = send_stream(k.inbound, req.wire)
    got, _ = parse_responses(out, [req])
    assert got[0].status == 200, out
    passed = [n for n, _ in got[0].headers if n.lower() not in KEEL_WRITES]
    assert passed == [b"X-Kept"], got[0].lines


@pytest.mark.parametrize("bad", [b"X-T: a\rb", b"X-T: a\x7fb"])
def test_trailer_with_bare_cr_or_del_is_not_passed_on(keel, origin, bad):
    """A bare CR (RFC 9112 §2.2) or DEL in a trailer line. keel refuses both in a response
    head (502 UPE, test_http_rfc.py test_bad_bytes_in_upstream_head_are_502); in a trailer,
    once the response has begun, the exchange ends with UPE and the line is not passed on.
    Trailer lines used to be copied to the client as they came."""
    k = start(keel, origin)
    resp = Resp(b"HTTP/1.1 200 OK", [(b"Transfer-Encoding", b" chunked")],
                chunks=[(b"2", b"", b"ok")], trailers=[bad])
    req = Req(b"trailer-0", close=True)
    origin.answer(req.seq, resp)
    out, end = send_stream(k.inbound, req.wire)
    assert end in ("eof", "reset"), end
    assert b"X-T" not in out and not out.endswith(b"0\r\n\r\n"), out  # never whole
    line = k.log_lines(1)[-1]
    assert " UPE " in line and "protocol_error" in line, line


def test_request_the_origin_read_is_not_sent_again(keel, origin):
    """The origin reads a POST on a pooled connection and closes it without an answer.
    keel used to send the POST again on a fresh connection (it took the close for an idle
    close that crossed the request), so the origin executed it twice. Only idempotent
    methods are retried now (RFC 9110 §9.2.2); the POST gets 503 UC, as from Envoy."""
    k = start(keel, origin)
    warm = Req(b"again-0", path=b"/warm")
    post = Req(b"again-1", method=b"POST", path=b"/charge", headers=[(b"Content-Length", b"0")],
               close=True)
    origin.answer(warm.seq, Resp(b"HTTP/1.1 200 OK", [(b"Content-Length", b" 2")], body=b"ok"))
    origin.answer(post.seq, Resp(b"HTTP/1.1 200 OK", [(b"Content-Length", b" 2")], body=b"ok"),
                  Plan(stop=0, fin=True))
    out, end = send_stream(k.inbound, warm.wire + post.wire)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and end == "eof", out
    assert origin.record(warm.seq)[0].conn == origin.record(post.seq)[0].conn  # pooled
    assert len(origin.record(post.seq)) == 1, "the origin got the POST %d times" % len(
        origin.record(post.seq))
    assert b"\r\n\r\nokHTTP/1.1 503 " in out, out
