/*
 * lazy_holes: anonymous memory with holes, for the post-copy test of pages
 * the source never had (ABSENT). argv[1] is the size in MiB of the holed
 * mapping (default 96). It is cut in chunks of 64 pages: even chunks are
 * data (word j of page i holds hole_word(i, j), never 0), odd chunks are
 * holes: never written; every fourth chunk (i/64 % 4 == 3) is read once
 * (it maps the shared zero page), and the last 8 pages of each data chunk
 * are written and then dropped with madvise(MADV_DONTNEED), so they read
 * as zeros again. A second mapping of 1 GiB has only its first 1 MiB
 * written (data): a sparse reservation.
 *
 * Every round checks every word of both mappings (holes must read zero),
 * then writes a hole page of the round (a first touch of a page the
 * source never had), checks it and drops it again (MADV_DONTNEED).
 *
 * Report: {"pid":N,"base":"0x..","pages":N,"hole_pages":N}
 * Ticks:  "verify N" = number of full verifications that passed. A failed
 *         verification writes "verify FAIL ..." to stderr and exits 1.
 */
#include "common.h"
#include <stdint.h>
#include <sys/mman.h>

#define PAGE 4096UL
#define WORDS (PAGE / sizeof(uint64_t))
#define CHUNK 64UL
#define DROPPED 8UL
#define SPARSE (1024UL << 20)
#define SPARSE_DATA (1UL << 20)

static inline uint64_t hole_word(unsigned long page, unsigned long j)
{
	return ((page * WORDS + j) ^ 0x3c6ef372fe94f82bULL) | 1;
}

static unsigned long pages;

/* hole reports whether page i of the holed mapping reads as zeros. */
static int hole(unsigned long i)
{
	return (i / CHUNK) % 2 == 1 || i % CHUNK >= CHUNK - DROPPED;
}

static void check(volatile uint64_t *p, unsigned long i, int zero, const char *what)
{
	for (unsigned long j = 0; j < WORDS; j++) {
		uint64_t v = p[j], want = zero ? 0 : hole_word(i, j);
		if (v != want) {
			fprintf(stderr, "verify FAIL %s page %lu word %lu at %p: got %#llx, want %#llx\n", what, i, j,
				(void *)(p + j), (unsigned long long)v, (unsigned long long)want);
			exit(1);
		}
	}
}

int main(int argc, char **argv)
{
	unsigned long mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 96;
	pages = mib * 256;
	uint64_t *base = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t *sparse = mmap(NULL, SPARSE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED || sparse == MAP_FAILED)
		die("mmap");
	/* No transparent huge pages: a hole must stay a hole. */
	if (madvise(base, pages * PAGE, MADV_NOHUGEPAGE) || madvise(sparse, SPARSE, MADV_NOHUGEPAGE))
		die("madvise NOHUGEPAGE");
	unsigned long holes = 0;
	volatile uint64_t sink = 0;
	for (unsigned long i = 0; i < pages; i++) {
		uint64_t *p = base + i * WORDS;
		if ((i / CHUNK) % 2 == 1) {
			holes++;
			if ((i / CHUNK) % 4 == 3)
				sink += p[0]; /* read: the shared zero page */
			continue;
		}
		for (unsigned long j = 0; j < WORDS; j++)
			p[j] = hole_word(i, j);
		if (i % CHUNK >= CHUNK - DROPPED) {
			holes++;
			if (madvise(p, PAGE, MADV_DONTNEED))
				die("madvise DONTNEED");
		}
	}
	for (unsigned long i = 0; i < SPARSE_DATA / PAGE; i++)
		for (unsigned long j = 0; j < WORDS; j++)
			sparse[i * WORDS + j] = hole_word(i, j);
	emit("{\"pid\":%d,\"base\":\"%p\",\"pages\":%lu,\"hole_pages\":%lu}\n", getpid(), (void *)base, pages, holes);
	for (unsigned long n = 1;; n++) {
		for (unsigned long i = 0; i < pages; i++)
			check(base + i * WORDS, i, hole(i), "holed");
		for (unsigned long i = 0; i < SPARSE / PAGE; i += (i < SPARSE_DATA / PAGE ? 1 : 61))
			check(sparse + i * WORDS, i, i >= SPARSE_DATA / PAGE, "sparse");
		/* A first write into a hole, then a hole again. */
		unsigned long h = CHUNK * (2 * (n % (pages / CHUNK / 2)) + 1) + n % CHUNK;
		uint64_t *p = base + h * WORDS;
		for (unsigned long j = 0; j < WORDS; j++)
			p[j] = hole_word(h, j);
		check(p, h, 0, "written hole");
		if (madvise(p, PAGE, MADV_DONTNEED))
			die("madvise DONTNEED");
		check(p, h, 1, "dropped hole");
		(void)sink;
		tick("verify", n);
		pace();
	}
}
