/*
 * qa7_mem (qa4's self-checking program, QA7 F1): fills many kinds of
 * mappings with patterns (brk heap, small anon, THP, 256 MiB dense,
 * argv[1] MiB sparse, MADV_DONTNEED holes, MAP_GROWSDOWN, mremap'd,
 * private mapping of file argv[2]/qa7file written, memfd, shared anon) and checks every page each
 * round. Once migrated (getpid() changed) it acts in the lazy phase:
 * MADV_DONTNEED and one-word writes on pages not yet arrived, mremap
 * MREMAP_FIXED of a region, mprotect of a PROT_NONE reservation, then a
 * fork (both write and check everything) and 4 threads checking.
 *
 * Report: {"pid":N}
 * Ticks:  "acted 1" once the parent, its child and the threads checked
 *         every page after acting; "round N" each round after.
 *         A page read wrong writes "BAD ..." then "FAIL ..." to stderr and
 *         exits with status 1 (the child's failure too).
 */
#include "common.h"
#include <stdint.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/stat.h>

#define PG 4096UL
enum { Z = 0, P = 1, F = 2 }; // page state: zero, pattern(seed,gen), file pattern
struct region {
	const char *name;
	char *base;
	size_t npages;
	uint64_t seed;
	unsigned char *st;   // per page state
	unsigned char *gen;  // per page generation
	int active;
};
#define MAXR 32
static struct region R[MAXR];
static int nr;
static long bad;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static inline uint64_t pat(uint64_t seed, size_t p, int gen, size_t w) {
	return (seed + p * 1315423911ULL + (uint64_t)gen * 0x100000001ULL) * 0x9E3779B97F4A7C15ULL + w;
}
static void fillpage(struct region *r, size_t p, int gen) {
	uint64_t *q = (uint64_t *)(r->base + p * PG);
	for (size_t w = 0; w < PG / 8; w++) q[w] = pat(r->seed, p, gen, w);
	r->st[p] = P; r->gen[p] = gen;
}
static void report(struct region *r, size_t p, size_t w, uint64_t got, uint64_t want, const char *who) {
	pthread_mutex_lock(&mu);
	if (bad < 20) {
		int allz = 1;
		uint64_t *q = (uint64_t *)(r->base + p * PG);
		for (size_t i = 0; i < PG / 8; i++) if (q[i]) { allz = 0; break; }
		fprintf(stderr, "BAD %s region %s page %zu (%p) word %zu got %016lx want %016lx state %d gen %d pagezero %d\n",
		       who, r->name, p, r->base + p * PG, w, got, want, r->st[p], r->gen[p], allz);
	}
	bad++;
	pthread_mutex_unlock(&mu);
}
static int checkpage(struct region *r, size_t p, const char *who) {
	uint64_t *q = (uint64_t *)(r->base + p * PG);
	for (size_t w = 0; w < PG / 8; w++) {
		uint64_t want = r->st[p] == Z ? 0 : r->st[p] == P ? pat(r->seed, p, r->gen[p], w) : pat(r->seed ^ 0xf11e, p, 0, w);
		if (q[w] != want) { report(r, p, w, q[w], want, who); return 1; }
	}
	return 0;
}
static long checkrange(struct region *r, size_t a, size_t b, const char *who) {
	long n = 0;
	for (size_t p = a; p < b; p++) {
		// skip verifying huge sparse zero ranges word by word: only sample
		if (r->st[p] == Z && r->npages > 100000 && (p % 61)) continue;
		n += checkpage(r, p, who);
	}
	return n;
}
static struct region *add(const char *name, char *base, size_t len, uint64_t seed) {
	struct region *r = &R[nr++];
	r->name = name; r->base = base; r->npages = len / PG; r->seed = seed; r->active = 1;
	r->st = calloc(r->npages, 1); r->gen = calloc(r->npages, 1);
	return r;
}
static char *anon(size_t len, int prot, int extra) {
	char *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | extra, -1, 0);
	if (p == MAP_FAILED) { perror("mmap"); exit(2); }
	return p;
}
static void fillall(struct region *r, int gen) { for (size_t p = 0; p < r->npages; p++) fillpage(r, p, gen); }

struct targ { struct region *r; size_t a, b; long n; };
static void *tverify(void *x) {
	struct targ *t = x;
	t->n = checkrange(t->r, t->a, t->b, "thread");
	// and write while others read
	for (size_t p = t->a; p < t->b; p += 97) fillpage(t->r, p, 5);
	t->n += checkrange(t->r, t->a, t->b, "thread2");
	return NULL;
}

int main(int argc, char **argv) {
	size_t sparsemb = argc > 1 ? (size_t)atol(argv[1]) : 1536;
	pid_t pid0 = getpid();
	// heap via brk
	char *h = sbrk(0); size_t hl = 8 << 20; if (sbrk(hl) == (void *)-1) { perror("sbrk"); return 2; }
	h = (char *)(((uintptr_t)h + PG - 1) & ~(PG - 1)); hl -= PG;
	fillall(add("heap", h, hl, 11), 0);
	static const size_t sizes[] = { 1, 2, 16, 255, 513 };
	for (int i = 0; i < 5; i++) fillall(add("small", anon(sizes[i] * PG, PROT_READ | PROT_WRITE, 0), sizes[i] * PG, 100 + i), 0);
	// THP-eligible
	char *t = anon(8 << 20, PROT_READ | PROT_WRITE, 0);
	char *ta = (char *)(((uintptr_t)t + (2 << 20) - 1) & ~((2UL << 20) - 1));
	madvise(ta, 4 << 20, MADV_HUGEPAGE);
	struct region *thp = add("thp", ta, 4 << 20, 20);
	fillall(thp, 0);
	// big dense
	struct region *big = add("big256", anon(256 << 20, PROT_READ | PROT_WRITE, 0), 256 << 20, 30);
	fillall(big, 0);
	// sparse huge
	struct region *sp = add("sparse", anon(sparsemb << 20, PROT_READ | PROT_WRITE, MAP_NORESERVE), sparsemb << 20, 40);
	for (size_t p = 0; p < sp->npages; p += 256) fillpage(sp, p, 0);
	for (size_t p = 5; p < sp->npages; p += 4099) { volatile char c = sp->base[p * PG]; (void)c; } // zero-page reads
	// holes
	struct region *ho = add("holes", anon(16 << 20, PROT_READ | PROT_WRITE, 0), 16 << 20, 50);
	fillall(ho, 0);
	for (size_t p = 0; p < ho->npages; p += 3) { madvise(ho->base + p * PG, PG, MADV_DONTNEED); ho->st[p] = Z; }
	// growsdown
	char *g = anon(1 << 20, PROT_READ | PROT_WRITE, MAP_GROWSDOWN);
	fillall(add("growsdown", g, 1 << 20, 60), 0);
	// mremap'd (grown and moved)
	char *m = anon(8 << 20, PROT_READ | PROT_WRITE, 0);
	memset(m, 0x5a, 8 << 20);
	char *blocker = anon(PG, PROT_READ, 0); (void)blocker;
	m = mremap(m, 8 << 20, 32 << 20, MREMAP_MAYMOVE);
	if (m == MAP_FAILED) { perror("mremap"); return 2; }
	struct region *mr = add("mremapped", m, 32 << 20, 70);
	for (size_t p = 0; p < mr->npages; p += 2) fillpage(mr, p, 0);
	for (size_t p = 1; p < mr->npages; p += 2) if (p >= 2048) mr->st[p] = Z; else { fillpage(mr, p, 0); }
	// private file mapping written to
	char fpath[4096]; snprintf(fpath, sizeof fpath, "%s/qa7file", argc > 2 ? argv[2] : "/tmp");
	int fd = open(fpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) die("open file");
	size_t fl = 4 << 20; char *fb = malloc(fl);
	for (size_t p = 0; p < fl / PG; p++) for (size_t w = 0; w < PG / 8; w++) ((uint64_t *)(fb + p * PG))[w] = pat(80 ^ 0xf11e, p, 0, w);
	if (write(fd, fb, fl) != (ssize_t)fl) { perror("write"); return 2; }
	free(fb);
	char *fm = mmap(NULL, fl, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	close(fd);
	struct region *fr = add("privfile", fm, fl, 80);
	for (size_t p = 0; p < fr->npages; p++) { if (p % 2) fillpage(fr, p, 0); else fr->st[p] = F; }
	// PROT_NONE reservation, opened after the migration
	char *pn = anon(64 << 20, PROT_NONE, MAP_NORESERVE);
	// memfd shared
	int mfd = memfd_create("qa4", 0); ftruncate(mfd, 8 << 20);
	char *mf = mmap(NULL, 8 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	fillall(add("memfd", mf, 8 << 20, 90), 0);
	// shared anonymous
	char *sa = mmap(NULL, 8 << 20, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	fillall(add("sharedanon", sa, 8 << 20, 95), 0);

	emit("{\"pid\":%d}\n", pid0);
	int acted = 0;
	for (long round = 1;; round++) {
		int migrated = getpid() != pid0;
		if (migrated && !acted) {
			acted = 1;
			// a: DONTNEED unfetched pages; partial writes to unfetched pages
			madvise(big->base + 1000 * PG, 100 * PG, MADV_DONTNEED);
			for (size_t p = 1000; p < 1100; p++) big->st[p] = Z;
			for (size_t p = 2000; p < 2100; p++) {
				uint64_t *q = (uint64_t *)(big->base + p * PG);
				q[7] = 0; // one word: the rest must stay
			}
			for (size_t p = 2000; p < 2100; p++) {
				uint64_t *q = (uint64_t *)(big->base + p * PG);
				if (q[7] != 0) report(big, p, 7, q[7], 0, "partial");
				q[7] = pat(big->seed, p, 0, 7);
			}
			// sparse: DONTNEED a populated page, read absent pages
			madvise(sp->base + 256 * PG, PG, MADV_DONTNEED); sp->st[256] = Z;
			// b: move the mremapped region
			char *nm = mremap(mr->base, 32 << 20, 32 << 20, MREMAP_MAYMOVE | MREMAP_FIXED, pn + (16 << 20));
			if (nm == MAP_FAILED) { perror("mremap fixed"); } else mr->base = nm;
			// c: open the rest of the PROT_NONE reservation
			if (mprotect(pn, 16 << 20, PROT_READ | PROT_WRITE)) perror("mprotect");
			struct region *pr = add("protnone", pn, 16 << 20, 99);
			for (size_t p = 0; p < pr->npages; p += 3) fillpage(pr, p, 1);
			// d: fork, both write and verify
			pid_t c = fork();
			if (c == 0) {
				long n = 0;
				for (size_t p = 0; p < sp->npages; p += 512) fillpage(sp, p, 3);
				for (size_t p = 3000; p < 6000; p++) fillpage(big, p, 3);
				for (int i = 0; i < nr; i++) n += checkrange(&R[i], 0, R[i].npages, "child");
				if (n)
					fprintf(stderr, "FAIL child %d: %ld pages read wrong\n", getpid(), n);
				_exit(n ? 1 : 0);
			}
			for (size_t p = 3000; p < 6000; p++) fillpage(big, p, 4);
			for (size_t p = 128; p < sp->npages; p += 512) fillpage(sp, p, 4);
			// e: threads
			pthread_t th[4]; struct targ ta4[4];
			for (int i = 0; i < 4; i++) {
				ta4[i] = (struct targ){ big, big->npages * i / 4, big->npages * (i + 1) / 4, 0 };
				pthread_create(&th[i], NULL, tverify, &ta4[i]);
			}
			long n = 0;
			for (int i = 0; i < nr; i++) if (&R[i] != big) n += checkrange(&R[i], 0, R[i].npages, "parent");
			for (int i = 0; i < 4; i++) { pthread_join(th[i], NULL); n += ta4[i].n; }
			int status = -1;
			if (waitpid(c, &status, 0) != c)
				die("waitpid");
			if (n || !WIFEXITED(status) || WEXITSTATUS(status)) {
				fprintf(stderr, "FAIL parent %d: %ld pages read wrong, child status %#x\n", getpid(), n, status);
				exit(1);
			}
			tick("acted", 1);
		}
		long n = 0;
		for (int i = 0; i < nr; i++) n += checkrange(&R[i], 0, R[i].npages, "round");
		if (n) {
			fprintf(stderr, "FAIL round %ld: %ld pages read wrong\n", round, n);
			exit(1);
		}
		if (acted)
			tick("round", round);
		usleep(200000);
	}
}
