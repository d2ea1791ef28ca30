"""qa2_httpserve: a Python ThreadingHTTPServer on 127.0.0.1 (an ephemeral
port) with HTTP/1.1 keep-alive, serving GET /blob: BLOB_SIZE bytes where
byte i is (7*i + (i >> 8)) & 0xff (the test computes the same).

Protocol (integration/harness_test.go): the first line on stdout is
{"pid": N, "port": P}; nothing else is written to stdout (the request log
goes to stderr).
"""
import http.server
import json
import os
import socketserver
import sys

BLOB_SIZE = 300000
BLOB = bytes((7 * i + (i >> 8)) & 0xFF for i in range(BLOB_SIZE))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path != "/blob":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BLOB)))
        self.send_header("X-Pid", str(os.getpid()))
        self.end_headers()
        self.wfile.write(BLOB)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


srv = Server(("127.0.0.1", 0), Handler)
sys.stdout.write(json.dumps({"pid": os.getpid(), "port": srv.server_address[1]}) + "\n")
sys.stdout.flush()
srv.serve_forever()
