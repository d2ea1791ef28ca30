/*
 * lazy_halfzero: anonymous memory of which half the pages hold only zero
 * bytes, populated (written), for the post-copy test of pages the source
 * sends as zeros. argv[1] is the size in MiB (default 64). In the first
 * half of the memory every odd page is zero; in the second half every odd
 * run of 16 pages. Word j of a data page i holds half_word(i, j), never 0.
 * Every page is written (the zero pages are written with zeros after a
 * non-zero word), so each is a populated page of the process, not a hole.
 *
 * Report: {"pid":N,"base":"0x..","pages":N,"zero_pages":N}
 * Ticks:  "verify N" = number of full verifications that passed (every
 *         word of every page, zeros included). A failed verification
 *         writes "verify FAIL ..." to stderr and exits with status 1.
 */
#include "common.h"
#include <stdint.h>
#include <sys/mman.h>

#define PAGE 4096UL
#define WORDS (PAGE / sizeof(uint64_t))

static inline uint64_t half_word(unsigned long page, unsigned long j)
{
	return ((page * WORDS + j) ^ 0x6a09e667f3bcc909ULL) | 1;
}

static unsigned long pages;

static int is_zero(unsigned long i)
{
	return i < pages / 2 ? i % 2 == 1 : (i / 16) % 2 == 1;
}

int main(int argc, char **argv)
{
	unsigned long mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
	pages = mib * 256;
	uint64_t *base = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		die("mmap");
	unsigned long zeros = 0;
	for (unsigned long i = 0; i < pages; i++) {
		uint64_t *p = base + i * WORDS;
		if (is_zero(i)) {
			zeros++;
			p[0] = 1; /* a write fault: a page of its own */
			memset(p, 0, PAGE);
			continue;
		}
		for (unsigned long j = 0; j < WORDS; j++)
			p[j] = half_word(i, j);
	}
	emit("{\"pid\":%d,\"base\":\"%p\",\"pages\":%lu,\"zero_pages\":%lu}\n", getpid(), (void *)base, pages, zeros);
	for (unsigned long n = 1;; n++) {
		for (unsigned long i = 0; i < pages; i++) {
			volatile uint64_t *p = base + i * WORDS;
			for (unsigned long j = 0; j < WORDS; j++) {
				uint64_t v = p[j], want = is_zero(i) ? 0 : half_word(i, j);
				if (v != want) {
					fprintf(stderr, "verify FAIL page %lu word %lu at %p: got %#llx, want %#llx\n", i, j,
						(void *)(p + j), (unsigned long long)v, (unsigned long long)want);
					exit(1);
				}
			}
		}
		tick("verify", n);
		pace();
	}
}
