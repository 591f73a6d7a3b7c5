"""gevent's StreamServer echo server for scripts/bench: a greenlet per client.

Binds 127.0.0.1 on a free port with a 4,096 backlog (as every peer) and prints
`port N` as its first line; serves until killed.
"""

import sys

from gevent.server import StreamServer

BUF = 1024  # bytes per recv, as every peer


def echo(sock, _address):
    while True:
        data = sock.recv(BUF)
        if not data:
            break
        sock.sendall(data)


server = StreamServer(("127.0.0.1", 0), echo, backlog=4096)
server.start()
print("port", server.server_port, flush=True)
server.serve_forever()
