/*
 * qa5_mdwe: a process with memory-deny-write-execute (prctl(2)
 * PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN), as systemd's
 * MemoryDenyWriteExecute= sets it. Every round it checks that
 * PR_GET_MDWE still says so and that making a writable page executable is
 * still refused (mprotect EACCES).
 *
 * Report: {"pid":N}. Ticks: "ok". A failed check writes "FAIL ..." to
 * stderr and exits 1; exit 77 when the kernel has no PR_SET_MDWE.
 */
#include "common.h"
#include <sys/mman.h>
#include <sys/prctl.h>

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_GET_MDWE 66
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif

static char *page;

static void check(void)
{
	int v = prctl(PR_GET_MDWE, 0, 0, 0, 0);
	if (v != PR_MDWE_REFUSE_EXEC_GAIN)
		failf("PR_GET_MDWE %d, want %d", v, PR_MDWE_REFUSE_EXEC_GAIN);
	if (mprotect(page, 4096, PROT_READ | PROT_EXEC) == 0)
		failf("mprotect of a writable page to PROT_EXEC succeeded");
	if (errno != EACCES)
		failf("mprotect of a writable page to PROT_EXEC: %s, want EACCES", strerror(errno));
}

int main(void)
{
	page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		die("mmap");
	page[0] = 1;
	if (prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0)) {
		if (errno == EINVAL)
			exit(77);
		die("prctl PR_SET_MDWE");
	}
	check_forever(check);
}
