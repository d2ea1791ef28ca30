"""qa2_dgramrecv: a syslog-like receiver. Binds a unix datagram socket at
argv[1] and reads numbered datagrams ("1", "2", ...); every 500th it
writes "tick seq N/500". A datagram out of order, repeated or missing
makes it write the gap to stderr and exit 1.

Protocol (integration/harness_test.go): the first line on stdout is
{"pid": N}; then only tick lines.
"""
import json
import os
import socket
import sys

s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
out = sys.stdout
out.write(json.dumps({"pid": os.getpid()}) + "\n")
out.flush()
last = 0
while True:
    n = int(s.recv(64))
    if n != last + 1:
        sys.stderr.write("datagram %d after %d\n" % (n, last))
        sys.exit(1)
    last = n
    if n % 500 == 0:
        out.write("tick seq %d\n" % (n // 500))
        out.flush()
