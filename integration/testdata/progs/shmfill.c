/*
 * shmfill MIB [shared|private]: a parent and a child sharing MIB MiB of
 * anonymous shared memory (MAP_SHARED|MAP_ANONYMOUS, mapped before the
 * fork). The child writes every page (memset to 0x5a, the page index in
 * the first word) and tells the parent through a pipe; the parent then
 * reports {"pid","child","mib","shared"} and both sleep. For
 * BenchmarkLazyShm: the shared memory is written by a member other than
 * the one reporting, so the object's pages are present in the shmem file
 * and in the child's page tables only. With "private" the mapping is
 * MAP_PRIVATE instead (the child's own copy-on-write pages): the same
 * bytes in memory a lazy migration serves lazily, as the control.
 */
#include "common.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: shmfill MIB\n");
		return 2;
	}
	size_t n = (size_t)atol(argv[1]) << 20;
	int shared = argc < 3 || strcmp(argv[2], "private") != 0;
	unsigned char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) die("mmap");
	int rd[2];
	if (pipe2(rd, O_CLOEXEC)) die("pipe");
	pid_t c = fork();
	if (c < 0) die("fork");
	if (c == 0) {
		close(rd[0]);
		for (size_t off = 0; off < n; off += 4096) {
			memset(p + off, 0x5a, 4096);
			*(uint64_t *)(p + off) = off / 4096;
		}
		char x = 1;
		if (write(rd[1], &x, 1) != 1) die("write ready");
		close(rd[1]);
		for (;;)
			pause();
	}
	close(rd[1]);
	char x;
	ssize_t r;
	while ((r = read(rd[0], &x, 1)) < 0 && errno == EINTR)
		;
	if (r != 1) {
		fprintf(stderr, "parent: the child ended before filling its memory\n");
		return 1;
	}
	close(rd[0]);
	emit("{\"pid\":%d,\"child\":%d,\"mib\":%zu,\"shared\":%s}\n", (int)getpid(), (int)c, n >> 20, shared ? "true" : "false");
	for (;;)
		pause();
}
