/*
 * fill: a restore benchmark workload. argv[1] is the populated memory in MiB,
 * argv[2] the number of anonymous VMAs it is spread over (separated by
 * one-page holes so the kernel cannot merge them). Every page is written.
 *
 * Report: {"pid":N,"vmas":N,"bytes":N}
 * Ticks:  "main".
 */
#include "common.h"
#include <sys/mman.h>

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: fill MIB NVMAS\n");
		return 2;
	}
	const unsigned long page = 4096;
	unsigned long total = strtoul(argv[1], NULL, 10) << 20;
	unsigned long nvmas = strtoul(argv[2], NULL, 10);
	if (nvmas == 0 || total < nvmas * page) {
		fprintf(stderr, "fill: need at least one page per VMA\n");
		return 2;
	}
	unsigned long seg = total / nvmas / page * page;
	unsigned long stride = seg + page;
	unsigned char *base = mmap(NULL, nvmas * stride, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		die("mmap");
	for (unsigned long i = 0; i < nvmas; i++) {
		unsigned char *s = base + i * stride;
		if (munmap(s + seg, page) < 0)
			die("munmap hole");
		memset(s, (int)(i + 1), seg);
	}
	emit("{\"pid\":%d,\"vmas\":%lu,\"bytes\":%lu}\n", getpid(), nvmas, nvmas * seg);
	for (unsigned long n = 1;; n++) {
		tick("main", n);
		pace();
	}
}
