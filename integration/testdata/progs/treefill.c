/*
 * treefill N MIB: a tree of N processes (the root and N-1 children), each
 * with MIB MiB of its own populated memory. The root reports {"pid","n"}
 * once every child has filled its memory, then all sleep.
 */
#include "common.h"
#include <fcntl.h>

static void fill_and_sleep(size_t mib, int ready)
{
	unsigned char *p = malloc(mib << 20);
	if (!p && mib) die("malloc");
	for (size_t i = 0; i < mib << 20; i++)
		p[i] = pattern(getpid() & 0xff, i);
	if (ready >= 0) {
		char c = 1;
		if (write(ready, &c, 1) != 1) die("write ready");
		close(ready);
	}
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: treefill N MIB\n");
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
			fill_and_sleep(mib, rd[1]);
		}
	}
	close(rd[1]);
	for (int i = 1; i < n; i++) {
		char c;
		if (read(rd[0], &c, 1) != 1) die("read ready");
	}
	close(rd[0]);
	emit("{\"pid\":%d,\"n\":%d}\n", getpid(), n);
	fill_and_sleep(mib, -1);
}
