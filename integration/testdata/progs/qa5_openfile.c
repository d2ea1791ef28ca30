/*
 * qa5_openfile: holds argv[1] open for reading and keeps checking that it
 * still reads "x\n" from its start (pread).
 *
 * Report: {"pid":N}. Ticks: "ok". A failed check writes "FAIL ..." to
 * stderr and exits 1.
 */
#include "common.h"
#include <fcntl.h>

static int fd;

static void check(void)
{
	char b[4];
	if (pread(fd, b, sizeof b, 0) != 2 || memcmp(b, "x\n", 2))
		failf("fd %d does not read x", fd);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: qa5_openfile PATH\n");
		return 2;
	}
	fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open");
	check_forever(check);
}
