/*
 * lazy_ops: memory operations during the lazy phase of a post-copy
 * migration. A pool of argv[1] (default 64) populated 1 MiB chunks; round r
 * works on chunk r % chunks, so right after a resume each round meets memory
 * that has not arrived yet. Each chunk has four 256 KiB parts:
 *
 *   A  madvise(MADV_DONTNEED) untouched, then it must read zeros
 *   B  munmap + mmap again at the same address: zeros
 *   C  mremap to another address (a reserved scratch range): the moved
 *      pages must hold their pattern
 *   D  once migrated (getpid() differs from the pid at start, so the dump
 *      never sees a child): fork, and the child verifies D's pattern and
 *      exits 0 or 1; before that, D is verified in place
 *
 * At the end of the round A and B are checked for zeros once more (a late
 * fill with stale source data shows up here) and every part is refilled.
 *
 * Report: {"pid":N,"pool":"0x..","chunks":N}
 * Ticks:  "round N" = rounds that passed every check; "fork N" = rounds whose
 *         forked child verified D. A failed check writes "round N FAIL ..."
 *         to stderr and exits with status 1.
 */
#include "common.h"
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PAGE 4096UL
#define WORDS (PAGE / sizeof(uint64_t))
#define NCHUNK_DEFAULT 64
#define PART (256UL * 1024)
#define CHUNK (4 * PART)
#define PART_WORDS (PART / sizeof(uint64_t))

static unsigned long round_no;

static inline uint64_t word(unsigned long c, unsigned part, unsigned long j)
{
	return ((uint64_t)c << 40) ^ ((uint64_t)part << 32) ^ j ^ 0xd1b54a32d192ed03ULL;
}

static void fail(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	fprintf(stderr, "round %lu FAIL %s\n", round_no, buf);
	exit(1);
}

static void fill(uint64_t *p, unsigned long c, unsigned part)
{
	for (unsigned long j = 0; j < PART_WORDS; j++)
		p[j] = word(c, part, j);
}

/* check returns the index of the first wrong word, or -1. */
static long check(volatile uint64_t *p, unsigned long c, unsigned part)
{
	for (unsigned long j = 0; j < PART_WORDS; j++)
		if (p[j] != word(c, part, j))
			return (long)j;
	return -1;
}

static void check_zero(volatile uint64_t *p, const char *what)
{
	for (unsigned long j = 0; j < PART_WORDS; j++)
		if (p[j] != 0)
			fail("%s: page %lu word %lu at %p is %#llx, want 0", what, j / WORDS, j % WORDS,
			     (void *)(p + j), (unsigned long long)p[j]);
}

static void check_pattern(volatile uint64_t *p, unsigned long c, unsigned part, const char *what)
{
	long j = check(p, c, part);
	if (j >= 0)
		fail("%s: page %lu word %lu at %p is %#llx, want %#llx", what, j / WORDS, j % WORDS, (void *)(p + j),
		     (unsigned long long)p[j], (unsigned long long)word(c, part, j));
}

static void *map_fixed(void *addr, int prot, int flags)
{
	void *p = mmap(addr, PART, prot, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
	if (p == MAP_FAILED)
		fail("mmap %p: %s", addr, strerror(errno));
	if (p != addr)
		fail("mmap %p returned %p", addr, p);
	return p;
}

int main(int argc, char **argv)
{
	unsigned long nchunk = argc > 1 ? strtoul(argv[1], NULL, 10) : NCHUNK_DEFAULT;
	pid_t pid0 = getpid();
	unsigned char *pool = mmap(NULL, nchunk * CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pool == MAP_FAILED)
		die("mmap pool");
	void *scratch = mmap(NULL, PART, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (scratch == MAP_FAILED)
		die("mmap scratch");
	for (unsigned long c = 0; c < nchunk; c++)
		for (unsigned part = 0; part < 4; part++)
			fill((uint64_t *)(pool + c * CHUNK + part * PART), c, part);

	emit("{\"pid\":%d,\"pool\":\"%p\",\"chunks\":%lu}\n", pid0, (void *)pool, nchunk);

	unsigned long forks = 0;
	for (round_no = 1;; round_no++) {
		unsigned long c = round_no % nchunk;
		uint64_t *a = (uint64_t *)(pool + c * CHUNK);
		uint64_t *b = (uint64_t *)(pool + c * CHUNK + PART);
		uint64_t *cc = (uint64_t *)(pool + c * CHUNK + 2 * PART);
		uint64_t *d = (uint64_t *)(pool + c * CHUNK + 3 * PART);

		if (madvise(a, PART, MADV_DONTNEED) < 0)
			fail("madvise %p MADV_DONTNEED: %s", (void *)a, strerror(errno));
		check_zero(a, "after MADV_DONTNEED");

		if (munmap(b, PART) < 0)
			fail("munmap %p: %s", (void *)b, strerror(errno));
		map_fixed(b, PROT_READ | PROT_WRITE, MAP_FIXED_NOREPLACE);
		check_zero(b, "after munmap+mmap");

		void *moved = mremap(cc, PART, PART, MREMAP_MAYMOVE | MREMAP_FIXED, scratch);
		if (moved == MAP_FAILED)
			fail("mremap %p to %p: %s", (void *)cc, scratch, strerror(errno));
		if (moved != scratch)
			fail("mremap %p to %p moved it to %p", (void *)cc, scratch, moved);
		check_pattern(moved, c, 2, "after mremap");
		map_fixed(cc, PROT_READ | PROT_WRITE, MAP_FIXED_NOREPLACE);
		check_zero(cc, "the range mremap left, mapped again");
		map_fixed(scratch, PROT_NONE, MAP_FIXED); /* drop the moved pages, keep the reservation */

		int migrated = getpid() != pid0;
		if (migrated) {
			pid_t child = fork();
			if (child < 0)
				fail("fork: %s", strerror(errno));
			if (child == 0) {
				long j = check(d, c, 3);
				if (j >= 0) {
					fprintf(stderr, "round %lu FAIL forked child: page %ld word %ld at %p is %#llx, want %#llx\n",
						round_no, j / (long)WORDS, j % (long)WORDS, (void *)(d + j),
						(unsigned long long)d[j], (unsigned long long)word(c, 3, j));
					_exit(1);
				}
				_exit(0);
			}
			int st;
			while (waitpid(child, &st, 0) < 0)
				if (errno != EINTR)
					fail("waitpid %d: %s", child, strerror(errno));
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
				fail("forked child %d checking %p: wait status %#x", child, (void *)d, st);
			forks++;
		} else {
			check_pattern(d, c, 3, "in place");
		}

		check_zero(a, "after MADV_DONTNEED, end of round");
		check_zero(b, "after munmap+mmap, end of round");
		fill(a, c, 0);
		fill(b, c, 1);
		fill(cc, c, 2);
		tick("round", round_no);
		if (migrated)
			tick("fork", forks);
		pace();
	}
}
