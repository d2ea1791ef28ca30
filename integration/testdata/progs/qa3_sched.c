/*
 * qa3_sched: a program started as `taskset -c N chrt -b 0 ionice -c3`
 * would be, which sets that itself and keeps checking it: its CPU affinity
 * is the last CPU it may run on, its policy SCHED_BATCH, its I/O priority
 * the idle class, its timer slack 123456 ns; then it starts 3 threads,
 * which inherit all four. Each thread (and the main one) checks its own
 * every round and ticks ("ok", "t0".."t2"). A failed check writes
 * "FAIL ..." to stderr and exits 1.
 *
 * Report: {"pid":N,"cpu":N}.
 */
#include "common.h"
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define IOPRIO_IDLE (3 << 13)
#define SLACK 123456

static cpu_set_t want;


static void check(const char *who)
{
	cpu_set_t got;
	if (sched_getaffinity(0, sizeof got, &got) || !CPU_EQUAL(&got, &want))
		failf("%s: CPU affinity of %d CPUs, want the one CPU set", who, CPU_COUNT(&got));
	int pol = sched_getscheduler(0);
	if (pol != SCHED_BATCH)
		failf("%s: scheduling policy %d, want SCHED_BATCH (%d)", who, pol, SCHED_BATCH);
	long io = syscall(SYS_ioprio_get, 1, 0);
	if (io != IOPRIO_IDLE)
		failf("%s: I/O priority %#lx, want %#x (idle class)", who, io, IOPRIO_IDLE);
	int slack = prctl(PR_GET_TIMERSLACK);
	if (slack != SLACK)
		failf("%s: timer slack %d ns, want %d", who, slack, SLACK);
}

static void *thread(void *arg)
{
	char key[8];
	snprintf(key, sizeof key, "t%ld", (long)arg);
	for (unsigned long n = 1;; n++) {
		check(key);
		tick(key, n);
		pace();
	}
	return NULL;
}

int main(void)
{
	cpu_set_t all;
	if (sched_getaffinity(0, sizeof all, &all))
		die("sched_getaffinity");
	int cpu = -1;
	for (int i = 0; i < CPU_SETSIZE; i++)
		if (CPU_ISSET(i, &all))
			cpu = i;
	CPU_ZERO(&want);
	CPU_SET(cpu, &want);
	struct sched_param sp = {0};
	if (sched_setaffinity(0, sizeof want, &want) || sched_setscheduler(0, SCHED_BATCH, &sp) ||
	    syscall(SYS_ioprio_set, 1, 0, IOPRIO_IDLE) || prctl(PR_SET_TIMERSLACK, SLACK))
		die("set the scheduling attributes");
	check("main");
	emit("{\"pid\":%d,\"cpu\":%d}\n", getpid(), cpu);
	pthread_t th;
	for (long i = 0; i < 3; i++)
		if (pthread_create(&th, NULL, thread, (void *)i))
			die("pthread_create");
	for (unsigned long n = 1;; n++) {
		check("main");
		tick("ok", n);
		pace();
	}
}
