/*
 * lazyfill N MIB: a tree of N processes (the root and N-1 children), each
 * with MIB MiB of its own populated anonymous memory (every page written:
 * memset to a byte of the process's own, its index in the first word).
 * The root reports {"pid","n"} once every member, itself included, has
 * filled its memory; then all sleep. For BenchmarkLazyTree.
 */
#include "common.h"
#include <fcntl.h>
#include <stdint.h>

static void fill(size_t mib, unsigned char tag)
{
	size_t n = mib << 20;
	unsigned char *p = malloc(n);
	if (!p && n) die("malloc");
	for (size_t off = 0; off < n; off += 4096) {
		memset(p + off, tag, 4096);
		*(uint64_t *)(p + off) = off / 4096;
	}
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: lazyfill N MIB\n");
		return 2;
	}
	int n = atoi(argv[1]);
	size_t mib = (size_t)atol(argv[2]);
	int rd[2];
	if (pipe2(rd, O_CLOEXEC)) die("pipe");
	for (int i = 1; i < n; i++) {
		pid_t c = fork();
		if (c < 0) die("fork");
		if (c == 0) {
			close(rd[0]);
			fill(mib, (unsigned char)(i + 1));
			char ch = 1;
			if (write(rd[1], &ch, 1) != 1) die("write ready");
			close(rd[1]);
			for (;;)
				pause();
		}
	}
	close(rd[1]);
	fill(mib, 1);
	for (int i = 1; i < n; i++) {
		char ch;
		if (read(rd[0], &ch, 1) != 1) die("read ready");
	}
	close(rd[0]);
	emit("{\"pid\":%d,\"n\":%d}\n", getpid(), n);
	for (;;)
		pause();
}
