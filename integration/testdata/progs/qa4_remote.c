/*
 * qa4_remote: forked children of a process in its lazy phase, one reading
 * the other's memory from outside. argv[1] MiB of populated memory; once
 * migrated (getpid() differs from the pid at start), pairs in turn: fork A,
 * which waits 200 ms without touching its memory, then checks every word
 * of its slice; fork R, which reads 4 KiB of A's slice with
 * process_vm_readv(2) (its fault lands on A's userfaultfd under R's tid)
 * and exits. A must read its own data: A's pages must not read as zeros
 * once R is gone.
 *
 * Report: {"pid":N,"pairs":N}
 * Ticks:  "pair N" = pairs whose A checked its slice. A failed check
 *         writes "FAIL ..." to stderr and exits with status 1.
 */
#include "common.h"
#include <stdint.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>

#define MB (1UL << 20)
#define PAIRS 10

static inline uint64_t val(size_t w) { return (w * 0x9E3779B97F4A7C15ULL) ^ 0xabcdef; }

int main(int argc, char **argv)
{
	size_t len = (argc > 1 ? strtoul(argv[1], NULL, 10) : 64) * MB, nw = len / 8, slice = nw / PAIRS;
	uint64_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		die("mmap");
	madvise(m, len, MADV_NOHUGEPAGE);
	for (size_t w = 0; w < nw; w++)
		m[w] = val(w);
	pid_t pid0 = getpid();
	emit("{\"pid\":%d,\"pairs\":%d}\n", pid0, PAIRS);
	while (getpid() == pid0)
		pace();
	for (int k = 0; k < PAIRS; k++) {
		pid_t a = fork();
		if (a < 0)
			die("fork");
		if (a == 0) {
			struct timespec ts = {0, 200 * 1000 * 1000};
			nanosleep(&ts, NULL);
			for (size_t w = k * slice; w < (k + 1) * slice; w++)
				if (m[w] != val(w)) {
					fprintf(stderr, "FAIL pair %d: word %zu reads %#llx, want %#llx\n", k, w,
						(unsigned long long)m[w], (unsigned long long)val(w));
					_exit(1);
				}
			_exit(0);
		}
		pid_t r = fork();
		if (r < 0)
			die("fork");
		if (r == 0) {
			uint64_t buf[512];
			size_t w0 = k * slice + slice / 2;
			struct iovec l = {buf, sizeof buf}, rr = {m + w0, sizeof buf};
			if (process_vm_readv(a, &l, 1, &rr, 1, 0) != (ssize_t)sizeof buf)
				die("process_vm_readv");
			for (int i = 0; i < 512; i++)
				if (buf[i] != val(w0 + i)) {
					fprintf(stderr, "FAIL pair %d: read %#llx from the child, want %#llx\n", k,
						(unsigned long long)buf[i], (unsigned long long)val(w0 + i));
					_exit(1);
				}
			_exit(0);
		}
		int st;
		if (waitpid(r, &st, 0) != r || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			exit(1);
		if (waitpid(a, &st, 0) != a || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			exit(1);
		tick("pair", k + 1);
	}
	for (;;)
		pause();
}
