#!/usr/bin/env python3
"""A TCP proxy that adds a fixed delay to every HTTP request, as a distant S3 would (bench/).

    latency_proxy.py --upstream 127.0.0.1:PORT [--delay-ms 30] [--listen 127.0.0.1:0]

Prints `port N` once listening, then proxies until killed. Per request, not per connection,
so keep-alive connections pay it on every request: HTTP/1.1 clients (ureq, Go's net/http) send
a request, wait for the whole answer, then send the next, so the first bytes from the client
after the server has spoken (or the first on a connection) begin a request, and only they wait
`delay` before being forwarded; the rest of a request's body and the answer pass at once. (A
client that pipelines, or an `Expect: 100-continue` exchange, would pay once per turn instead.)
One thread per direction per connection: a delay holds up only its own connection.
"""

import argparse
import os
import socket
import sys
import threading
import time


# LATENCY_PROXY_LOG=FILE: one line per request (monotonic time, method and path), to see
# which requests a run makes when (a diagnostic; the benchmarks leave it unset).
LOG = open(os.environ["LATENCY_PROXY_LOG"], "a", buffering=1) if os.environ.get(
    "LATENCY_PROXY_LOG") else None


def pipe(src, dst, before_send, after_send):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            before_send(data)
            dst.sendall(data)
            after_send()
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def serve(client, upstream, delay):
    try:
        server = socket.create_connection(upstream)
    except OSError:
        client.close()
        return
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    turn = {"server_spoke": True}  # the next client bytes begin a request

    def request_start(data=b""):
        if turn["server_spoke"]:
            turn["server_spoke"] = False
            if LOG:
                LOG.write(f"{time.monotonic():.3f} {data.split(b' HTTP/')[0][:160].decode('latin-1')}\n")
            time.sleep(delay)

    def server_spoke():
        turn["server_spoke"] = True

    up = threading.Thread(target=pipe, args=(client, server, request_start, lambda: None),
                          daemon=True)
    up.start()
    # Marked before the answer is forwarded, so the client's next request always sees it.
    pipe(server, client, lambda _data: server_spoke(), lambda: None)
    up.join()
    client.close()
    server.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--upstream", required=True, help="host:port of the S3 server")
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--delay-ms", type=float, default=30.0)
    a = p.parse_args()
    uh, up = a.upstream.rsplit(":", 1)
    lh, lp = a.listen.rsplit(":", 1)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((lh, int(lp)))
    ls.listen(1024)
    print("port", ls.getsockname()[1], flush=True)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c, (uh, int(up)), a.delay_ms / 1000.0),
                         daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
