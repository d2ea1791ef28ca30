/*
 * qa8_sysv: a process keeping its data in a System V shared memory
 * segment of its own (shmget IPC_PRIVATE, 1 MiB, filled with pattern 8),
 * as postgres keeps its control segment. Every round it checks the
 * segment's bytes.
 *
 * Report: {"pid":N,"id":N}. Ticks: "ok". A failed check writes "FAIL ..."
 * to stderr and exits 1.
 */
#include "common.h"
#include <sys/ipc.h>
#include <sys/shm.h>

#define SEGSZ (1 << 20)

static unsigned char *seg;

static void check(void)
{
	for (unsigned long i = 0; i < SEGSZ; i += 4093)
		if (seg[i] != pattern(8, i))
			failf("segment byte %lu is %u, want %u", i, seg[i], pattern(8, i));
}

int main(void)
{
	int id = shmget(IPC_PRIVATE, SEGSZ, IPC_CREAT | 0600);
	if (id < 0)
		die("shmget");
	seg = shmat(id, NULL, 0);
	if (seg == (void *)-1)
		die("shmat");
	for (unsigned long i = 0; i < SEGSZ; i++)
		seg[i] = pattern(8, i);
	emit("{\"pid\":%d,\"id\":%d}\n", getpid(), id);
	for (unsigned long n = 1;; n++) {
		check();
		tick("ok", n);
		pace();
	}
}
