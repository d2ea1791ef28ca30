/*
 * qa3_sleeprem: two threads each sleep S seconds (argv[1], default 4) in a
 * relative sleep that is given a rem pointer: nanosleep(&req, &rem) and
 * clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &rem), looping on EINTR with
 * req = rem as nanosleep(2) describes. A third thread ticks "up" every
 * 20 ms on absolute deadlines and keeps the longest gap between two ticks
 * (the time the process was frozen or did not exist) and when it began.
 *
 * A sleep interrupted by a dump must sleep what was left of it: when it
 * returns, its length minus S minus the gap is about 0. Started again
 * whole, it is the time slept before the gap. A sleeper whose excess is
 * more than half the time it had slept before the gap writes "FAIL ..." to
 * stderr and exits 1; otherwise it ticks its key ("nanosleep",
 * "clock_nanosleep") once and the program goes on ticking "up".
 *
 * Report: {"pid":N}.
 */
#include "common.h"
#include <pthread.h>
#include <stdatomic.h>

static long S = 4;
static double t0;
static _Atomic long gap_ns, gap_at_ns; /* longest gap, and its start since t0 */

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *ticker(void *arg)
{
	(void)arg;
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	double last = mono();
	for (unsigned long n = 1;; n++) {
		next.tv_nsec += 20 * 1000 * 1000;
		if (next.tv_nsec >= 1000000000) {
			next.tv_nsec -= 1000000000;
			next.tv_sec++;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
		double now = mono();
		if ((long)((now - last) * 1e9) > gap_ns) {
			gap_at_ns = (long)((last - t0) * 1e9);
			gap_ns = (long)((now - last) * 1e9);
		}
		last = now;
		tick("up", n);
	}
	return NULL;
}

static void judge(const char *key, double took)
{
	double gap = gap_ns / 1e9, before = gap_at_ns / 1e9;
	double excess = took - S - gap;
	if (excess > before / 2) {
		fprintf(stderr, "FAIL %s of %ld s took %.3f s with a gap of %.3f s after %.3f s: %.3f s too long, restarted whole\n",
			key, S, took, gap, before, excess);
		exit(1);
	}
	tick(key, 1);
}

static void *sleeper(void *arg)
{
	int clock = arg != NULL;
	struct timespec req = {S, 0}, rem;
	double start = mono();
	for (;;) {
		int err = clock ? clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &rem) : (nanosleep(&req, &rem) ? errno : 0);
		if (err == 0)
			break;
		if (err != EINTR) {
			errno = err;
			die("sleep");
		}
		req = rem;
	}
	judge(clock ? "clock_nanosleep" : "nanosleep", mono() - start);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		S = atol(argv[1]);
	t0 = mono();
	pthread_t th[3];
	if (pthread_create(&th[0], NULL, sleeper, NULL) || pthread_create(&th[1], NULL, sleeper, (void *)1) ||
	    pthread_create(&th[2], NULL, ticker, NULL))
		die("pthread_create");
	emit("{\"pid\":%d}\n", getpid());
	pthread_join(th[2], NULL);
	return 0;
}
