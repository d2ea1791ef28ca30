"""counter: a Python workload for the restore tests.

State lives only in the interpreter's memory: a counter and a dict that maps
every count so far to its square. Every 100 ms the program checks the dict
against the counter, increments, and prints the counter.

Report: {"pid":N}
Ticks:  "count N". A dict that disagrees with the counter is written to
        stderr and the program exits 1.
"""

import os
import sys
import time


def main():
    os.write(1, ('{"pid":%d}\n' % os.getpid()).encode())
    count = 0
    squares = {}
    while True:
        probes = (1, max(count // 2, 1), count) if count else ()
        if len(squares) != count or any(squares.get(k) != k * k for k in probes):
            sys.stderr.write("dict has %d entries for count %d\n" % (len(squares), count))
            sys.exit(1)
        count += 1
        squares[count] = count * count
        os.write(1, b"tick count %d\n" % count)
        time.sleep(0.1)


main()
