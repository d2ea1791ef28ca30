"""mppipe: python multiprocessing.Pipe between a parent and a forked
Process, a socket pair split across the two (duplex Pipe() is
socketpair(2), each process keeping one end after the fork).

The parent sends a batch of counters, the child answers each with its
square, and the parent checks every answer. Several messages are in
flight in each direction most of the time.

Report: {"pid":P,"child":C}
Ticks:  "pipe N" every 100 answers. A wrong or missing answer goes to
        stderr and the program exits 1.
"""

import multiprocessing as mp
import os
import sys
import time

BATCH = 8


def child(conn):
    want = 1
    while True:
        v = conn.recv()
        if v != want:
            sys.stderr.write("child got %d, want %d\n" % (v, want))
            sys.exit(1)
        want += 1
        conn.send(v * v)
        time.sleep(0.001)


def main():
    ctx = mp.get_context("fork")
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=child, args=(theirs,), daemon=True)
    p.start()
    theirs.close()
    os.write(1, ('{"pid":%d,"child":%d}\n' % (os.getpid(), p.pid)).encode())
    sent, got = 0, 0
    while True:
        while sent - got < BATCH:
            sent += 1
            mine.send(sent)
        r = mine.recv()
        got += 1
        if r != got * got:
            sys.stderr.write("answer %d is %d, want %d\n" % (got, r, got * got))
            sys.exit(1)
        if got % 100 == 0:
            os.write(1, b"tick pipe %d\n" % (got // 100))
        time.sleep(0.001)


if __name__ == "__main__":
    main()
