/*
 * dumpref_account: private anonymous mappings that are not writable, with
 * and without VM_ACCOUNT ("ac" in VmFlags), with and without data.
 * mmap(2) charges a private writable mapping to the commit limit and sets
 * VM_ACCOUNT (Documentation/mm/overcommit-accounting.rst); mprotect(2) to
 * read-only keeps it only once the mapping has an anon_vma, i.e. was
 * written (mm/mprotect.c mprotect_fixup); a mapping read-only from birth
 * has none, even when written through /proc/self/mem. A restore must give
 * each the flag it had, and its data.
 *
 *   ro_untouched: mapped read-write, never written, made read-only (no ac)
 *   ro_written:   mapped read-write, written, made read-only (ac)
 *   ro_dropped:   mapped read-write, written, MADV_DONTNEED, made read-only
 *                 (ac, no page)
 *   ro_zeroed:    mapped read-write, written with zeros, made read-only (ac)
 *   none_written: mapped read-write, written, made PROT_NONE (ac)
 *   ro_born:      mapped read-only (no ac)
 *   ro_forced:    mapped read-only, written through /proc/self/mem (no ac)
 *   none_forced:  mapped PROT_NONE, written through /proc/self/mem (no ac)
 *
 * Report: {"pid":N,"ro_untouched":A,...} (addresses)
 * Ticks:  "ok N" after each check of the readable regions' data (a wrong
 *         byte is reported as FAIL on stderr, exit 1); the test reads the
 *         PROT_NONE ones through /proc/PID/mem.
 */
#include "common.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>

#define PG 4096UL
#define NPG 4

static char *region(int prot)
{
	/* A page of PROT_NONE on each side keeps the regions from merging. */
	char *p = mmap(NULL, (NPG + 2) * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	if (mmap(p + PG, NPG * PG, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
		die("mmap fixed");
	return p + PG;
}

static char byteat(size_t i, int seed) { return (char)(1 + (i * 7 + seed) % 251); }

static void fill(char *p, int seed)
{
	for (size_t i = 0; i < NPG * PG; i++)
		p[i] = byteat(i, seed);
}

static void expect(const char *name, const char *p, int seed)
{
	for (size_t i = 0; i < NPG * PG; i++) {
		char want = seed < 0 ? 0 : byteat(i, seed);
		if (p[i] != want)
			failf("%s byte %zu: %d, want %d", name, i, p[i], want);
	}
}

int main(void)
{
	const int rw = PROT_READ | PROT_WRITE;
	char *untouched = region(rw), *written = region(rw), *dropped = region(rw);
	char *zeroed = region(rw), *none = region(rw), *born = region(PROT_READ);
	char *forced = region(PROT_READ), *none_forced = region(PROT_NONE);
	fill(written, 1);
	fill(dropped, 2);
	fill(none, 3);
	memset(zeroed, 0, NPG * PG);
	if (madvise(dropped, NPG * PG, MADV_DONTNEED))
		die("madvise");
	if (mprotect(untouched, NPG * PG, PROT_READ) || mprotect(written, NPG * PG, PROT_READ) ||
	    mprotect(dropped, NPG * PG, PROT_READ) || mprotect(zeroed, NPG * PG, PROT_READ) ||
	    mprotect(none, NPG * PG, PROT_NONE))
		die("mprotect");
	/* A write through /proc/self/mem reaches a read-only page (FOLL_FORCE,
	 * proc(5)): the page is copied, the mapping stays unaccounted. */
	static char buf[NPG * PG];
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = byteat(i, 4);
	int fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die("open /proc/self/mem");
	if (pwrite(fd, buf, sizeof buf, (off_t)(uintptr_t)forced) != (ssize_t)sizeof buf)
		die("pwrite /proc/self/mem");
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = byteat(i, 5);
	if (pwrite(fd, buf, sizeof buf, (off_t)(uintptr_t)none_forced) != (ssize_t)sizeof buf)
		die("pwrite /proc/self/mem (PROT_NONE)");
	close(fd);
	emit("{\"pid\":%d,\"ro_untouched\":%lu,\"ro_written\":%lu,\"ro_dropped\":%lu,\"ro_zeroed\":%lu,"
	     "\"none_written\":%lu,\"ro_born\":%lu,\"ro_forced\":%lu,\"none_forced\":%lu}\n",
	     getpid(), (unsigned long)(uintptr_t)untouched, (unsigned long)(uintptr_t)written,
	     (unsigned long)(uintptr_t)dropped, (unsigned long)(uintptr_t)zeroed, (unsigned long)(uintptr_t)none,
	     (unsigned long)(uintptr_t)born, (unsigned long)(uintptr_t)forced, (unsigned long)(uintptr_t)none_forced);
	for (unsigned long n = 1;; n++) {
		expect("ro_untouched", untouched, -1);
		expect("ro_written", written, 1);
		expect("ro_dropped", dropped, -1);
		expect("ro_zeroed", zeroed, -1);
		expect("ro_born", born, -1);
		expect("ro_forced", forced, 4);
		tick("ok", n);
		pace();
	}
}
