/*
 * sparse_thp: a large MADV_HUGEPAGE reservation with little data in it, the
 * case where an image used to be the size of the huge pages rather than of
 * the data. argv: reservation in GiB (default 16), pieces (default 64),
 * piece size in KiB (default 64), read-only MiB (default 64).
 *
 * Piece k (k < pieces) is written with pattern(k) at the start of every
 * stride = reservation/pieces bytes: each lands in its own transparent huge
 * page, whose other pages hold zeros the program never wrote. The last
 * read-only MiB of the reservation are only read (mapping the huge zero
 * page). Everything else is never touched.
 *
 * Report: {"pid":N,"base":"0x..","len":N,"pieces":N,"piece":N,"anon_huge_kb":N}
 *         where anon_huge_kb is AnonHugePages of the reservation (smaps),
 *         written after the fill.
 * Ticks:  "verify N" = full verifications that passed: every piece, the rest
 *         of every piece's huge page (zero), the read-only MiB (zero, one
 *         word per page) and one word per 2 MiB of the whole reservation
 *         (zero unless in a piece). A failure writes "verify FAIL ..." to
 *         stderr and exits with status 1.
 */
#include "common.h"
#include <stdint.h>
#include <sys/mman.h>

#define PAGE 4096UL
#define HUGE (2UL << 20)

static unsigned char *base;
static unsigned long len, pieces, piece, stride, ro;

static void fail(const char *what, unsigned char *p, unsigned got, unsigned want)
{
	fprintf(stderr, "verify FAIL %s at %p (offset %#lx): %#x, want %#x\n", what, (void *)p,
		(unsigned long)(p - base), got, want);
	exit(1);
}

/* in_piece reports whether offset off lies in a piece. */
static int in_piece(unsigned long off)
{
	return off % stride < piece && off / stride < pieces;
}

static void verify(void)
{
	for (unsigned long k = 0; k < pieces; k++) {
		volatile unsigned char *p = base + k * stride;
		for (unsigned long i = 0; i < piece; i++)
			if (p[i] != pattern(k, i))
				fail("piece", (unsigned char *)p + i, p[i], pattern(k, i));
		/* The rest of the piece's huge page. */
		unsigned long end = (k * stride + piece + HUGE - 1) / HUGE * HUGE - k * stride;
		for (unsigned long i = piece; i < end; i++)
			if (p[i] != 0)
				fail("huge page", (unsigned char *)p + i, p[i], 0);
	}
	for (unsigned long off = len - ro; off < len; off += PAGE)
		if (((volatile unsigned char *)base)[off] != 0)
			fail("read-only", base + off, base[off], 0);
	for (unsigned long off = HUGE / 2; off < len; off += HUGE)
		if (!in_piece(off) && ((volatile unsigned char *)base)[off] != 0)
			fail("untouched", base + off, base[off], 0);
}

/* anon_huge_kb is AnonHugePages of the mapping at base, from smaps. */
static unsigned long anon_huge_kb(void)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		die("open smaps");
	char line[512];
	int in = 0;
	unsigned long kb = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = s == (unsigned long)base;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %lu kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

int main(int argc, char **argv)
{
	len = (argc > 1 ? strtoul(argv[1], NULL, 10) : 16) << 30;
	pieces = argc > 2 ? strtoul(argv[2], NULL, 10) : 64;
	piece = (argc > 3 ? strtoul(argv[3], NULL, 10) : 64) << 10;
	ro = (argc > 4 ? strtoul(argv[4], NULL, 10) : 64) << 20;
	if (pieces == 0 || len / pieces < HUGE || piece > HUGE || ro > len / 2)
		die("bad arguments");
	stride = len / pieces / HUGE * HUGE;
	/* Aligned to a huge page, so that each piece lies in one. */
	unsigned char *m = mmap(NULL, len + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		die("mmap");
	base = (unsigned char *)(((unsigned long)m + HUGE - 1) & ~(HUGE - 1));
	if ((base > m && munmap(m, base - m) < 0) || munmap(base + len, m + HUGE - base) < 0)
		die("munmap");
	if (madvise(base, len, MADV_HUGEPAGE) < 0)
		die("madvise");
	for (unsigned long k = 0; k < pieces; k++)
		for (unsigned long i = 0; i < piece; i++)
			base[k * stride + i] = pattern(k, i);
	verify();
	emit("{\"pid\":%d,\"base\":\"%p\",\"len\":%lu,\"pieces\":%lu,\"piece\":%lu,\"anon_huge_kb\":%lu}\n",
	     getpid(), (void *)base, len, pieces, piece, anon_huge_kb());
	for (unsigned long n = 1;; n++) {
		verify();
		tick("verify", n);
		pace();
	}
}
