/*
 * qa5_mempolicy: a process bound to NUMA node 0 (set_mempolicy(2)
 * MPOL_BIND, as `numactl --membind=0` leaves it) keeps checking that
 * get_mempolicy(2) still says so.
 *
 * Report: {"pid":N}. Ticks: "ok". A failed check writes "FAIL ..." to
 * stderr and exits 1.
 */
#include "common.h"
#include <sys/syscall.h>

#define MPOL_BIND 2

static void check(void)
{
	int mode = -1;
	unsigned long mask[16] = {0};
	if (syscall(SYS_get_mempolicy, &mode, mask, 1024, NULL, 0))
		die("get_mempolicy");
	if (mode != MPOL_BIND || mask[0] != 1)
		failf("memory policy %d nodes %#lx, want MPOL_BIND (2) nodes 0x1", mode, mask[0]);
}

int main(void)
{
	unsigned long node0 = 1;
	if (syscall(SYS_set_mempolicy, MPOL_BIND, &node0, 64))
		die("set_mempolicy");
	check_forever(check);
}
