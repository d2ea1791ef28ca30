/*
 * shmbig MIB: a parent and a child sharing MIB MiB of anonymous shared
 * memory (MAP_SHARED|MAP_ANONYMOUS, mapped before the fork), for
 * TestLazySkeletonBigShm: a lazy skeleton larger than 256 MiB. The child
 * fills every page with pattern(page index, offset) and tells the parent
 * through a pipe; the parent reports {"pid","child","mib"}. Then the child
 * bumps a counter in the last page's last word and ticks "writer"; the
 * parent checks every page in full, round after round, ticks "verified"
 * after each round, and ticks "shared" whenever it sees the child's
 * counter move on (so it stops when the memory is no longer shared). A
 * wrong byte is reported on stderr and ends the parent with status 3.
 */
#include "common.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>

#define PG 4096UL

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: shmbig MIB\n");
		return 2;
	}
	size_t n = (size_t)atol(argv[1]) << 20;
	unsigned char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) die("mmap");
	volatile uint64_t *counter = (volatile uint64_t *)(p + n - 8);
	int rd[2], go[2];
	if (pipe2(rd, O_CLOEXEC) || pipe2(go, O_CLOEXEC)) die("pipe");
	pid_t c = fork();
	if (c < 0) die("fork");
	char x;
	ssize_t r;
	if (c == 0) {
		close(rd[0]);
		close(go[1]);
		for (size_t off = 0; off < n; off += PG)
			for (size_t i = 0; i < PG; i++)
				p[off + i] = pattern((unsigned)(off / PG), i);
		*counter = 0;
		x = 1;
		if (write(rd[1], &x, 1) != 1) die("write ready");
		close(rd[1]);
		/* Tick only once the parent's report is out (the first line). */
		while ((r = read(go[0], &x, 1)) < 0 && errno == EINTR)
			;
		close(go[0]);
		for (unsigned long k = 1;; k++) {
			*counter = k;
			tick("writer", k);
			pace();
		}
	}
	close(rd[1]);
	close(go[0]);
	while ((r = read(rd[0], &x, 1)) < 0 && errno == EINTR)
		;
	if (r != 1) {
		fprintf(stderr, "parent: the child ended before filling its memory\n");
		return 1;
	}
	close(rd[0]);
	emit("{\"pid\":%d,\"child\":%d,\"mib\":%zu}\n", (int)getpid(), (int)c, n >> 20);
	if (write(go[1], &x, 1) != 1) die("write go");
	close(go[1]);
	uint64_t seen = 0;
	unsigned long shared = 0;
	for (unsigned long round = 1;; round++) {
		for (size_t off = 0; off < n; off += PG) {
			size_t end = off + PG == n ? PG - 8 : PG; /* the counter */
			for (size_t i = 0; i < end; i++) {
				if (p[off + i] != pattern((unsigned)(off / PG), i)) {
					fprintf(stderr, "parent: byte %zu of page %zu is %#x, want %#x\n",
						i, off / PG, p[off + i], pattern((unsigned)(off / PG), i));
					return 3;
				}
			}
		}
		tick("verified", round);
		uint64_t now = *counter;
		if (now != seen) {
			seen = now;
			tick("shared", ++shared);
		}
	}
}
