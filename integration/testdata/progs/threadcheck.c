/*
 * threadcheck: the main thread and 8 pthreads, each with its own value in a
 * __thread variable. Every tick each thread asks the kernel who it is and
 * reads its TLS value back, and puts both in its tick key, so the test sees
 * the process's own view of its pid, tids and TLS after a restore.
 *
 * Report: {"pid":N,"threads":N}
 * Ticks:  "NAME:PID:TID:TLS N" with NAME main, t0 … t7, PID = getpid(),
 *         TID = gettid(), TLS = the thread's __thread value in hex; N counts
 *         per thread. A TLS value that differs from the one the thread set
 *         is written to stderr and the program exits 1.
 */
#include "common.h"
#include <pthread.h>

#define NTHREADS 8

static __thread volatile unsigned long tls_value;
static pthread_barrier_t ready;

struct th {
	char name[8];
	unsigned long value;
};

static struct th ths[NTHREADS + 1];

static void loop(struct th *t)
{
	for (unsigned long n = 1;; n++) {
		unsigned long v = tls_value;
		if (v != t->value) {
			fprintf(stderr, "%s: tls value %#lx, want %#lx\n", t->name, v, t->value);
			exit(1);
		}
		emit("tick %s:%d:%d:%#lx %lu\n", t->name, getpid(), gettid(), v, n);
		pace();
	}
}

static void *run(void *arg)
{
	struct th *t = arg;
	tls_value = t->value;
	pthread_barrier_wait(&ready); /* every thread set its value */
	pthread_barrier_wait(&ready); /* the report is out */
	loop(t);
	return NULL;
}

int main(void)
{
	pthread_t pt;
	if ((errno = pthread_barrier_init(&ready, NULL, NTHREADS + 1)))
		die("pthread_barrier_init");
	strcpy(ths[0].name, "main");
	ths[0].value = 0xabc0000;
	tls_value = ths[0].value;
	for (int i = 1; i <= NTHREADS; i++) {
		snprintf(ths[i].name, sizeof ths[i].name, "t%d", i - 1);
		ths[i].value = 0xabc0000 + 0x111 * i;
		if ((errno = pthread_create(&pt, NULL, run, &ths[i])))
			die("pthread_create");
	}
	pthread_barrier_wait(&ready);
	emit("{\"pid\":%d,\"threads\":%d}\n", getpid(), NTHREADS + 1);
	pthread_barrier_wait(&ready);
	loop(&ths[0]);
	return 0;
}
