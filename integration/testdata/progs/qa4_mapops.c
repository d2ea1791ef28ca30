/*
 * qa4_mapops: memory-map operations on lazy memory that has not arrived
 * yet, right after the resume of a post-copy migration (lazy_ops covers
 * DONTNEED, munmap + mmap, mremap to a fixed address and fork). Eight
 * populated 8 MiB regions; once migrated (getpid() differs from the pid
 * at start; checked between regions, so the operations come first):
 *
 *   0  mremap(MREMAP_DONTUNMAP) of its second quarter elsewhere: the moved
 *      pages hold their pattern, the range left behind reads zeros
 *   1  mremap shrink to half, then grow back in place: the grown half
 *      reads zeros
 *   2  madvise(MADV_POPULATE_WRITE) over all of it
 *   3  mlock of all of it
 *   4  read(2) from a pipe into the middle of each of its first 64 pages
 *      (96 bytes equal to the pattern there): the rest of each page keeps
 *      its pattern
 *   5  one 8-byte store into each page (the same value): the rest keeps
 *      its pattern
 *   6  data made PROT_NONE before the dump, mprotect'd RW now
 *   7  untouched: verified last
 *
 * Report: {"pid":N}
 * Ticks: "ops 1" once the operations were done and checked; "round N"
 * after each full check. A failed check writes "FAIL ..." to stderr and
 * exits 1.
 */
#include "common.h"
#include <stdint.h>
#include <sys/mman.h>

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define MB (1UL << 20)
#define LEN (8 * MB)
#define NREG 8
#define PAGE 4096UL

static char *reg[NREG];
static char *moved; /* region 0's second quarter, after the DONTUNMAP move */

static inline uint64_t pat(int r, uint64_t off)
{
	return ((uint64_t)(r + 1) << 56) ^ (off * 0x9E3779B97F4A7C15ULL) ^ 0x5bd1e995;
}

/* check fails unless [p, p+len) holds region r's pattern from offset off,
 * or zeros if zero. */
static void check(const char *what, const char *p, size_t len, int r, uint64_t off, int zero)
{
	const uint64_t *q = (const uint64_t *)p;
	for (size_t w = 0; w < len / 8; w++) {
		uint64_t want = zero ? 0 : pat(r, off + w * 8);
		if (q[w] != want) {
			fprintf(stderr, "FAIL %s at %p (+%#zx): got %#llx, want %#llx\n", what, (void *)(p + w * 8), w * 8,
				(unsigned long long)q[w], (unsigned long long)want);
			exit(1);
		}
	}
}

static void operate(void)
{
	moved = mremap(reg[0] + LEN / 4, LEN / 4, LEN / 4, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
	if (moved == MAP_FAILED)
		die("mremap DONTUNMAP");
	if (mremap(reg[1], LEN, LEN / 2, 0) == MAP_FAILED || mremap(reg[1], LEN / 2, LEN, 0) == MAP_FAILED)
		die("mremap shrink and grow");
	if (madvise(reg[2], LEN, MADV_POPULATE_WRITE) != 0)
		die("madvise POPULATE_WRITE");
	if (mlock(reg[3], LEN) != 0)
		die("mlock");
	int fds[2];
	if (pipe(fds) != 0)
		die("pipe");
	for (unsigned long k = 0; k < 64; k++) {
		uint64_t b[12];
		uint64_t off = k * PAGE + 1000;
		for (int x = 0; x < 12; x++)
			b[x] = pat(4, off + 8 * x);
		if (write(fds[1], b, sizeof b) != sizeof b || read(fds[0], reg[4] + off, sizeof b) != sizeof b)
			die("pipe into lazy memory");
	}
	close(fds[0]);
	close(fds[1]);
	for (unsigned long off = 24; off < LEN; off += PAGE)
		*(volatile uint64_t *)(reg[5] + off) = pat(5, off);
	if (mprotect(reg[6], LEN, PROT_READ | PROT_WRITE) != 0)
		die("mprotect");
}

static void check_all(int acted)
{
	for (int r = 0; r < NREG; r++) {
		if (acted && r == 0) {
			check("0 low", reg[0], LEN / 4, 0, 0, 0);
			check("0 left behind", reg[0] + LEN / 4, LEN / 4, 0, 0, 1);
			check("0 moved", moved, LEN / 4, 0, LEN / 4, 0);
			check("0 high", reg[0] + LEN / 2, LEN / 2, 0, LEN / 2, 0);
		} else if (acted && r == 1) {
			check("1 kept", reg[1], LEN / 2, 1, 0, 0);
			check("1 grown", reg[1] + LEN / 2, LEN / 2, 1, 0, 1);
		} else if (r != 6 || acted) {
			check("region", reg[r], LEN, r, 0, 0);
		}
	}
}

int main(void)
{
	pid_t pid0 = getpid();
	for (int r = 0; r < NREG; r++) {
		reg[r] = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (reg[r] == MAP_FAILED)
			die("mmap");
		madvise(reg[r], LEN, MADV_NOHUGEPAGE);
		for (uint64_t off = 0; off < LEN; off += 8)
			*(uint64_t *)(reg[r] + off) = pat(r, off);
	}
	if (mprotect(reg[6], LEN, PROT_NONE) != 0)
		die("mprotect PROT_NONE");
	emit("{\"pid\":%d}\n", pid0);
	int acted = 0;
	for (unsigned long round = 1;; round++) {
		if (!acted && getpid() != pid0) {
			operate();
			acted = 1;
			check_all(1);
			tick("ops", 1);
		}
		check_all(acted);
		tick("round", round);
		pace();
	}
}
