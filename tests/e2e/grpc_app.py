"""A gRPC server for the HTTP/2 tests, on python3-grpcio's generic handlers (no stubs):
bytes in, bytes out. Usage: grpc_app.py PORT

  /keel.Echo/Unary   answers the request bytes
  /keel.Echo/Stream  bidirectional: answers each message, in order
  /keel.Echo/Fail    aborts with the status code named by the request (b"5" -> NOT_FOUND)
  /keel.Echo/Slow    sleeps the number of milliseconds the request names, then echoes
"""
import sys
import time
from concurrent import futures

import grpc


def unary(req, ctx):
    return req


def stream(reqs, ctx):
    for r in reqs:
        yield r


def fail(req, ctx):
    code = next(c for c in grpc.StatusCode if c.value[0] == int(req))
    ctx.abort(code, "failed as asked")


def slow(req, ctx):
    time.sleep(int(req) / 1000.0)
    return req


def ident(b):
    return b


def main():
    port = int(sys.argv[1])
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "Stream": grpc.stream_stream_rpc_method_handler(stream, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
        "Slow": grpc.unary_unary_rpc_method_handler(slow, ident, ident),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("keel.Echo", handlers),))
    server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
