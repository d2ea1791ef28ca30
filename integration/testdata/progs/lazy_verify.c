/*
 * lazy_verify: anonymous memory that keeps checking itself, for post-copy
 * migration tests. argv[1] is the size in MiB (default 64). Word j of page i
 * holds lazy_word(i, j), a value derived from the page index, so a page that
 * arrives at the wrong address, stale or zero is caught and named.
 *
 * Report: {"pid":N,"base":"0x..","pages":N}, written before the fill
 * Ticks:  "verify N" = number of full verifications that passed (the
 *         first one follows the fill). A failed
 *         verification writes "verify FAIL page X word J: got V, want W" to
 *         stderr and exits with status 1.
 */
#include "common.h"
#include <stdint.h>
#include <sys/mman.h>

#define PAGE 4096UL
#define WORDS (PAGE / sizeof(uint64_t))

static inline uint64_t lazy_word(unsigned long page, unsigned long j)
{
	return (page * WORDS + j) ^ 0x9e3779b97f4a7c15ULL;
}

int main(int argc, char **argv)
{
	unsigned long mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
	unsigned long pages = mib * 256;
	uint64_t *base = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		die("mmap");
	/* The report comes first: filling a GiB takes a while on a busy machine. */
	emit("{\"pid\":%d,\"base\":\"%p\",\"pages\":%lu}\n", getpid(), (void *)base, pages);
	for (unsigned long i = 0; i < pages; i++)
		for (unsigned long j = 0; j < WORDS; j++)
			base[i * WORDS + j] = lazy_word(i, j);

	for (unsigned long n = 1;; n++) {
		for (unsigned long i = 0; i < pages; i++) {
			volatile uint64_t *p = base + i * WORDS;
			for (unsigned long j = 0; j < WORDS; j++) {
				uint64_t v = p[j];
				if (v != lazy_word(i, j)) {
					fprintf(stderr, "verify FAIL page %lu word %lu at %p: got %#llx, want %#llx\n", i, j,
						(void *)(p + j), (unsigned long long)v, (unsigned long long)lazy_word(i, j));
					exit(1);
				}
			}
		}
		tick("verify", n);
		pace();
	}
}
