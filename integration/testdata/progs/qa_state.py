"""qa_state: a Python workload holding state a real service holds.

A 200k-entry dict, a 16 MiB random bytearray with its sha256, 8 threads each
counting under a lock with a thread-local value, and (with a port argument)
a ThreadingHTTPServer on 127.0.0.1 answering GET / with its own verdict.

Usage: qa_state.py [serve]
Report: {"pid":N,"port":P}  (port 0 without "serve")
Ticks:  "tick ok N" from the main thread after each self-check that passed;
        "tick tK N" from thread K. A failed check is written to stderr and
        the program exits 1.
"""

import hashlib
import http.server
import json
import os
import sys
import threading
import time

d = {i: str(i) * 10 for i in range(200000)}
blob = bytearray(os.urandom(1 << 24))
digest = hashlib.sha256(blob).hexdigest()
counts = [0] * 8
lock = threading.Lock()


def emit(s):
    os.write(1, s.encode())


def fail(why):
    sys.stderr.write("qa_state: " + why + "\n")
    sys.stderr.flush()
    os._exit(1)


def check():
    if hashlib.sha256(blob).hexdigest() != digest:
        return "blob changed"
    if len(d) != 200000 or d[123456] != "123456" * 10 or d[199999] != "199999" * 10:
        return "dict changed"
    return None


def worker(k):
    local = threading.local()
    local.k = k
    n = 0
    while True:
        with lock:
            counts[k] += 1
            n = counts[k]
        if local.k != k:
            fail("thread %d: thread-local value is %r" % (k, local.k))
        emit("tick t%d %d\n" % (k, n))
        time.sleep(0.02)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        why = check()
        body = json.dumps({"ok": why is None, "why": why, "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    port = 0
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        port = srv.server_address[1]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    emit('{"pid":%d,"port":%d}\n' % (os.getpid(), port))
    for k in range(8):
        threading.Thread(target=worker, args=(k,), daemon=True).start()
    n = 0
    while True:
        why = check()
        if why:
            fail(why)
        n += 1
        emit("tick ok %d\n" % n)
        time.sleep(0.05)


main()
