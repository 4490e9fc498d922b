"""Raw HTTP/1.1 on sockets for the segmentation tests (test_stream_segmentation.py,
test_response_segmentation.py): a buffered reader, a listener with a thread per
connection, random header names and values, and keel's liveness check."""
import socket
import threading

from conftest import http_get

TCHAR_ALNUM = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
TCHAR_OTHER = b"!#$%&'*+.^_`|~"
VALUE_BYTES = bytes(range(0x21, 0x7f)) + bytes(range(0x80, 0x100))


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def until(self, delim):
        while delim not in self.buf:
            self._fill()
        out, _, self.buf = self.buf.partition(delim)
        return out

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class Listener:
    """A server thread per connection on 127.0.0.1: subclasses say what `_serve` does."""

    def __init__(self, backlog):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(backlog)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def close(self):
        self.ls.close()


def random_token(rng, n):
    """n token bytes, mostly letters, digits and '-', a quarter the other tchars."""
    return bytes(rng.choice(TCHAR_ALNUM if rng.random() < 0.75 else TCHAR_OTHER)
                 for _ in range(n))


def header_value(rng, n):
    """n bytes of field-content: visible ASCII, obs-text 0x80-0xFF, inner SP and HTAB."""
    if n == 0:
        return b""
    v = bytearray(rng.choice(VALUE_BYTES) for _ in range(n))
    for i in range(1, n - 1):
        if rng.random() < 0.12:
            v[i] = rng.choice(b" \t")
    return bytes(v)


def ows(rng):
    return rng.choice([b"", b" ", b"\t", b" \t ", b"  "])


def ready(k):
    assert k.proc.p.poll() is None, k.proc.output()[-3000:]
    assert http_get("http://127.0.0.1:%d/ready" % k.admin)[0] == 200
