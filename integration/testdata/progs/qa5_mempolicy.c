/*
 * qa5_mempolicy: a process bound to NUMA node 0 (set_mempolicy(2)
 * MPOL_BIND, as `numactl --membind=0` leaves it) keeps checking that
 * get_mempolicy(2) still says so. With argument "thread" a second thread
 * sets a policy of its own (MPOL_PREFERRED node 0) and sleeps.
 *
 * Report: {"pid":N}. Ticks: "ok". A failed check writes "FAIL ..." to
 * stderr and exits 1.
 */
#include "common.h"
#include <pthread.h>
#include <sys/syscall.h>

#define MPOL_PREFERRED 1
#define MPOL_BIND 2

static void *own_policy(void *arg)
{
	unsigned long node0 = 1;
	if (syscall(SYS_set_mempolicy, MPOL_PREFERRED, &node0, 64))
		die("set_mempolicy in thread");
	*(volatile int *)arg = 1;
	for (;;)
		pause();
	return NULL;
}

static void check(void)
{
	int mode = -1;
	unsigned long mask[16] = {0};
	if (syscall(SYS_get_mempolicy, &mode, mask, 1024, NULL, 0))
		die("get_mempolicy");
	if (mode != MPOL_BIND || mask[0] != 1)
		failf("memory policy %d nodes %#lx, want MPOL_BIND (2) nodes 0x1", mode, mask[0]);
}

int main(int argc, char **argv)
{
	unsigned long node0 = 1;
	if (syscall(SYS_set_mempolicy, MPOL_BIND, &node0, 64))
		die("set_mempolicy");
	if (argc > 1 && !strcmp(argv[1], "thread")) {
		static volatile int ready;
		pthread_t th;
		if (pthread_create(&th, NULL, own_policy, (void *)&ready))
			die("pthread_create");
		while (!ready)
			pace();
	}
	check_forever(check);
}
