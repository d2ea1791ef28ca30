/*
 * qa7_forkpush: children forked while the target's push reader installs
 * the parent's pages. argv[1] MiB of populated memory; once migrated
 * (getpid() differs from the pid at start), FORKS times at once: drop a
 * page of a scratch region (MADV_DONTNEED: a REMOVE event), move a 16 MiB
 * region (mremap: a REMAP event), then fork a
 * child that checks every word of the memory (most of it not yet
 * arrived: it comes by the push or by the child's faults) and exits. A
 * child must read the parent's data, never zeros (QA7 F1: a pushed piece
 * retried after EAGAIN was installed in the parent only, after the fork,
 * and the child's copy of the parent's state said it was there).
 *
 * Report: {"pid":N,"forks":N}
 * Ticks:  "fork N" = children (in fork order) that checked all the memory. A failed
 *         check writes "FAIL ..." to stderr and exits with status 1.
 */
#include "common.h"
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define MB (1UL << 20)
#define FORKS 12

static inline uint64_t val(size_t w) { return (w * 0x9E3779B97F4A7C15ULL) ^ 0x5eed; }

int main(int argc, char **argv)
{
	size_t len = (argc > 1 ? strtoul(argv[1], NULL, 10) : 64) * MB, nw = len / 8;
	uint64_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		die("mmap");
	for (size_t w = 0; w < nw; w++)
		m[w] = val(w);
	/* A scratch region whose pages are dropped just before each fork:
	 * the REMOVE event makes pushed pieces fail with EAGAIN (retried). */
	char *s = mmap(NULL, FORKS * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s == MAP_FAILED)
		die("mmap scratch");
	memset(s, 1, FORKS * 4096);
	/* A 16 MiB region moved (mremap MREMAP_FIXED) before each fork, to
	 * and fro: a REMAP event (QA7 F3: a copy by the stale translation
	 * failed with ENOENT and the process was killed). */
	size_t ml = 16 * MB;
	char *mv = mmap(NULL, 2 * ml, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mv == MAP_FAILED)
		die("mmap move");
	memset(mv, 2, 2 * ml);
	char *at = mv, *other = mv + ml;
	if (munmap(other, ml))
		die("munmap");
	pid_t pid0 = getpid();
	emit("{\"pid\":%d,\"forks\":%d}\n", pid0, FORKS);
	while (getpid() == pid0)
		pace();
	pid_t kids[FORKS];
	for (int k = 0; k < FORKS; k++) {
		if (madvise(s + k * 4096, 4096, MADV_DONTNEED))
			die("madvise");
		char *to = mremap(at, ml, ml, MREMAP_MAYMOVE | MREMAP_FIXED, other);
		if (to == MAP_FAILED)
			die("mremap");
		other = at;
		at = to;
		pid_t c = fork();
		if (c < 0)
			die("fork");
		if (c == 0) {
			size_t zero = 0, badw = 0, first = nw;
			for (size_t w = 0; w < nw; w++)
				if (m[w] != val(w)) {
					badw++;
					zero += m[w] == 0;
					if (first == nw)
						first = w;
				}
			if (badw) {
				fprintf(stderr, "FAIL child %d: %zu words wrong (%zu zero), first word %zu reads %#llx, want %#llx\n",
					k, badw, zero, first, (unsigned long long)m[first], (unsigned long long)val(first));
				_exit(1);
			}
			_exit(0);
		}
		kids[k] = c;
	}
	for (int k = 0; k < FORKS; k++) {
		int st;
		if (waitpid(kids[k], &st, 0) != kids[k] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			exit(1);
		tick("fork", k + 1);
	}
	for (;;)
		pause();
}
