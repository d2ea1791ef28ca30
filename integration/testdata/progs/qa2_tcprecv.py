"""qa2_tcprecv: accepts one TCP connection on 127.0.0.1 (an ephemeral
port), reads it to the end while hashing it, then answers "N MD5HEX\n"
on the same connection and closes it.

Protocol (integration/harness_test.go): the first line on stdout is
{"pid": N, "port": P}; nothing else is written to stdout.
"""
import hashlib
import json
import os
import socket
import sys

l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen()
sys.stdout.write(json.dumps({"pid": os.getpid(), "port": l.getsockname()[1]}) + "\n")
sys.stdout.flush()
c, _ = l.accept()
h = hashlib.md5()
n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    h.update(d)
    n += len(d)
c.sendall(("%d %s\n" % (n, h.hexdigest())).encode())
c.close()
