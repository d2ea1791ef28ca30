/*
 * guardcheck: guard pages (madvise(2) MADV_GUARD_INSTALL, Linux 6.13+)
 * that the process keeps checking itself. argv[1] is a directory for its
 * file; argv[2], if given, is "lock": mlockall(MCL_CURRENT) after the
 * guards are in (the kernel locks the VMAs; populating stops at a guard),
 * or "shmanon": also a MAP_SHARED|MAP_ANONYMOUS mapping of 4 written
 * pages with a guard at page 1 (which the dump must refuse).
 *
 *   anon   a private anonymous mapping of 256 pages, every page written,
 *          guards at pages 3, 8-9 and 255;
 *   hole   a private anonymous mapping of 8 pages never written, a guard
 *          at page 4;
 *   priv   a MAP_PRIVATE mapping of a 16-page file, pages 0-7 written
 *          (copied on write), guards at pages 5 and 12;
 *   shared a MAP_SHARED mapping of the same file, guard at page 2.
 *
 * Each check reads and writes every guard page under sigsetjmp: each access
 * must raise SIGSEGV (siglongjmp back); every other page must hold its data
 * (pattern), and the guard pages must show in /proc/self/pagemap (bit 58).
 *
 * Report: {"pid":N}. Ticks: "ok" = checks passed. A failed check writes
 * "FAIL ..." to stderr and exits 1.
 */
#include "common.h"
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>

#define PG 4096UL
#ifndef MADV_GUARD_INSTALL /* include/uapi/asm-generic/mman-common.h, 6.13 */
#define MADV_GUARD_INSTALL 102
#endif

static void fail(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	fprintf(stderr, "FAIL %s\n", buf);
	exit(1);
}

struct region {
	const char *name;
	unsigned char *p;
	unsigned long npages;
	unsigned tag;     /* pattern tag of the data */
	int data_pages;   /* pages [0, data_pages) hold pattern(tag), the rest zero or file data */
	int guards[5];    /* guard pages, -1 ends */
};

static struct region regions[5];
static int nregions;
static unsigned char file_byte(unsigned long i) { return pattern(77, i); }

static sigjmp_buf jb;
static volatile sig_atomic_t segv;

static void on_segv(int sig)
{
	(void)sig;
	segv++;
	siglongjmp(jb, 1);
}

static int is_guard(struct region *r, unsigned long pg)
{
	for (int i = 0; r->guards[i] >= 0; i++)
		if ((unsigned long)r->guards[i] == pg)
			return 1;
	return 0;
}

/* want is what page pg of r must hold at offset i. */
static unsigned char want(struct region *r, unsigned long pg, unsigned long i)
{
	unsigned long off = pg * PG + i;
	if ((long)pg < r->data_pages)
		return pattern(r->tag, off);
	if (r->tag == 0)
		return 0;
	return file_byte(off); /* a file mapping's page not written here */
}

static void guard(struct region *r, int pg)
{
	if (madvise(r->p + pg * PG, PG, MADV_GUARD_INSTALL))
		die("madvise(MADV_GUARD_INSTALL)");
}

/* touch_guard reads and writes guard page pg of r at a: both must fault. */
static void touch_guard(struct region *r, unsigned long pg, volatile unsigned char *a)
{
	sig_atomic_t before = segv;
	if (!sigsetjmp(jb, 1)) {
		(void)a[7];
		fail("%s page %lu: a read of the guard page did not fault", r->name, pg);
	}
	if (!sigsetjmp(jb, 1)) {
		a[PG - 1] = 1;
		fail("%s page %lu: a write to the guard page did not fault", r->name, pg);
	}
	if (segv != before + 2)
		fail("%s page %lu: %d SIGSEGVs, want 2", r->name, pg, (int)(segv - before));
}

static int locked; /* mlockall(MCL_CURRENT) was called */

/* vmflags copies the VmFlags line of addr's mapping in /proc/self/smaps. */
static void vmflags(void *addr, char *out, size_t len)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		die("open smaps");
	char line[1024];
	int in = 0;
	out[0] = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, ':') > strchr(line, ' ')) {
			in = (uintptr_t)addr >= s && (uintptr_t)addr < e;
			continue;
		}
		if (in && !strncmp(line, "VmFlags:", 8)) {
			size_t n = strlen(line + 8);
			if (n >= len)
				n = len - 1;
			memcpy(out, line + 8, n);
			out[n] = 0;
			break;
		}
	}
	fclose(f);
}

static void check(void)
{
	if (locked) {
		char fl[256];
		for (int k = 0; k < nregions; k++) {
			vmflags(regions[k].p, fl, sizeof fl);
			if (!strstr(fl, " lo"))
				fail("%s: VmFlags%s lacks lo after mlockall(MCL_CURRENT)", regions[k].name, fl);
		}
	}
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pm < 0)
		die("open pagemap");
	for (int k = 0; k < nregions; k++) {
		struct region *r = &regions[k];
		for (unsigned long pg = 0; pg < r->npages; pg++) {
			volatile unsigned char *a = r->p + pg * PG;
			if (!is_guard(r, pg)) {
				for (unsigned long i = 0; i < PG; i += 511)
					if (a[i] != want(r, pg, i))
						fail("%s page %lu offset %lu: %#x, want %#x", r->name, pg, i, a[i], want(r, pg, i));
				continue;
			}
			uint64_t e = 0;
			if (pread(pm, &e, 8, ((uintptr_t)a / PG) * 8) != 8)
				die("read pagemap");
			if (!(e & (1ULL << 58)))
				fail("%s page %lu: pagemap entry %#llx lacks the guard bit 58", r->name, pg, (unsigned long long)e);
			touch_guard(r, pg, a);
		}
	}
	close(pm);
}

static unsigned char *map(unsigned long len, int prot, int flags, int fd)
{
	void *p = mmap(NULL, len, prot, flags, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: guardcheck DIR [lock]\n");
		return 2;
	}
	struct sigaction sa = {0};
	sa.sa_handler = on_segv;
	sa.sa_flags = SA_NODEFER;
	if (sigaction(SIGSEGV, &sa, NULL))
		die("sigaction");

	struct region *r = &regions[nregions++];
	*r = (struct region){"anon", NULL, 256, 1, 256, {3, 8, 9, 255, -1}};
	r->p = map(r->npages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	for (unsigned long i = 0; i < r->npages * PG; i++)
		r->p[i] = pattern(r->tag, i);
	for (int i = 0; r->guards[i] >= 0; i++)
		guard(r, r->guards[i]);

	r = &regions[nregions++];
	*r = (struct region){"hole", NULL, 8, 0, 0, {4, -1}};
	r->p = map(r->npages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	guard(r, 4);

	char path[512];
	snprintf(path, sizeof path, "%s/guarded", argv[1]);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die("open file");
	static unsigned char fbuf[16 * PG];
	for (unsigned long i = 0; i < sizeof fbuf; i++)
		fbuf[i] = file_byte(i);
	if (write(fd, fbuf, sizeof fbuf) != (ssize_t)sizeof fbuf)
		die("write file");

	r = &regions[nregions++];
	*r = (struct region){"priv", NULL, 16, 2, 8, {5, 12, -1}};
	r->p = map(r->npages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd);
	for (unsigned long i = 0; i < 8 * PG; i++)
		r->p[i] = pattern(r->tag, i);
	guard(r, 5);
	guard(r, 12);

	r = &regions[nregions++];
	*r = (struct region){"shared", NULL, 16, 77, 0, {2, -1}};
	r->p = map(r->npages * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
	guard(r, 2);
	close(fd);

	if (argc > 2 && !strcmp(argv[2], "shmanon")) {
		r = &regions[nregions++];
		*r = (struct region){"shmanon", NULL, 4, 3, 4, {1, -1}};
		r->p = map(r->npages * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1);
		for (unsigned long i = 0; i < r->npages * PG; i++)
			r->p[i] = pattern(r->tag, i);
		guard(r, 1);
	}
	if (argc > 2 && !strcmp(argv[2], "lock")) {
		if (mlockall(MCL_CURRENT))
			die("mlockall");
		locked = 1;
	}

	check();
	emit("{\"pid\":%d}\n", getpid());
	for (unsigned long n = 1;; n++) {
		check();
		tick("ok", n);
		struct timespec ts = {0, 20 * 1000 * 1000};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
}
