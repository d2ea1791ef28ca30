"""mppool: python multiprocessing as people use it, for the shared memory
tests: a Pool of two workers maps a function over range(N) while the
parent counts the results in a multiprocessing.Value (shared memory in an
unlinked /dev/shm arena file the parent keeps open, guarded by a named
POSIX semaphore that is unlinked at once: "/dev/shm/sem.* (deleted)").

Report: {"pid":N}
Ticks:  "map I" for each result, in order; "done 1" once the map is over
        with the right sum and count. A wrong sum, count or result goes to
        stderr and the program exits 1.
"""

import multiprocessing as mp
import os
import sys
import time

N = 300


def square(x):
    time.sleep(0.02)
    return x * x


def main():
    os.write(1, ('{"pid":%d}\n' % os.getpid()).encode())
    count = mp.Value("i", 0)
    total = 0
    with mp.Pool(2) as pool:
        for i, r in enumerate(pool.imap(square, range(N))):
            if r != i * i:
                sys.stderr.write("result %d is %d, want %d\n" % (i, r, i * i))
                sys.exit(1)
            total += r
            with count.get_lock():
                count.value += 1
            os.write(1, b"tick map %d\n" % (i + 1))
    want = (N - 1) * N * (2 * N - 1) // 6
    if total != want or count.value != N:
        sys.stderr.write("sum %d count %d, want %d and %d\n" % (total, count.value, want, N))
        sys.exit(1)
    os.write(1, b"tick done 1\n")
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
