/*
 * bench_workload: the process's own view of a post-copy migration, for
 * BenchmarkLazyTable. argv[1] is the memory in MiB (default 64).
 *
 * It fills that much anonymous memory (word j of page i is bench_word(i, j))
 * and runs a tick thread that wakes every 2 ms (absolute deadlines,
 * CLOCK_MONOTONIC) and measures the gap since its previous wake-up. The
 * thread notices the migration by its pid changing (lazycr restore
 * --new-pid): the gap of that tick is the freeze → resume time as the
 * process sees it. The main thread then touches every page once, in a
 * scattered order; a page mincore(2) says is not resident is a first touch
 * that faults, and the touch is timed (fault latency as the process sees
 * it: fault, fetch, install, wake). Every touched word is checked.
 *
 * Output: {"pid":N,"base":"0x..","pages":N} before the fill, "ready" after
 * it, and once every page was touched after the migration:
 *   {"resume_gap_ms":F,"max_gap_before_ms":F,"max_gap_after_ms":F,
 *    "faults":N,"fault_p50_us":F,"fault_p99_us":F,"fault_max_us":F,
 *    "walk_ms":F}
 * where max_gap_after_ms is the longest tick gap while the pages were
 * touched. Then it keeps ticking until killed. A wrong word writes
 * "FAIL ..." to stderr and exits with status 1.
 */
#include "common.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define PAGE 4096UL
#define WORDS (PAGE / sizeof(uint64_t))
#define TICK_NS 2000000L

static inline uint64_t bench_word(unsigned long page, unsigned long j)
{
	return (page * WORDS + j) ^ 0x5bd1e9955bd1e995ULL;
}

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static pid_t pid0;
static atomic_int migrated, walking;
static double resume_gap, max_before, max_after;

static void *ticker(void *arg)
{
	(void)arg;
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	double prev = mono();
	for (;;) {
		next.tv_nsec += TICK_NS;
		if (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
		double t = mono(), gap = t - prev;
		prev = t;
		if (!atomic_load(&migrated)) {
			if (syscall(SYS_getpid) != pid0) {
				resume_gap = gap;
				/* After a long freeze the deadlines are in the past:
				 * start again from now. */
				clock_gettime(CLOCK_MONOTONIC, &next);
				atomic_store(&migrated, 1);
			} else if (gap > max_before) {
				max_before = gap;
			}
		} else if (atomic_load(&walking) && gap > max_after) {
			max_after = gap;
		}
	}
	return NULL;
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	unsigned long mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
	unsigned long pages = mib * 256;
	pid0 = syscall(SYS_getpid);
	uint64_t *base = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		die("mmap");
	emit("{\"pid\":%d,\"base\":\"%p\",\"pages\":%lu}\n", pid0, (void *)base, pages);
	for (unsigned long i = 0; i < pages; i++)
		for (unsigned long j = 0; j < WORDS; j++)
			base[i * WORDS + j] = bench_word(i, j);
	pthread_t t;
	if (pthread_create(&t, NULL, ticker, NULL) != 0)
		die("pthread_create");
	emit("ready\n");
	/* Waiting for the migration is the program's business, not a test's
	 * synchronisation: poll the flag the tick thread sets. */
	while (!atomic_load(&migrated)) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	atomic_store(&walking, 1);
	/* Mapped after the resume: a new mapping is not lazy, so recording
	 * does not fault. */
	double *lat = mmap(NULL, pages * sizeof(double), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (lat == MAP_FAILED)
		die("mmap latencies");
	unsigned long stride = 7919, faults = 0;
	while (pages % stride == 0)
		stride += 2;
	double w0 = mono();
	for (unsigned long i = 0; i < pages; i++) {
		unsigned long k = i * stride % pages, j = (i * 31) % WORDS;
		volatile uint64_t *p = base + k * WORDS;
		unsigned char vec;
		if (mincore((void *)p, PAGE, &vec) < 0)
			die("mincore");
		double t0 = mono();
		uint64_t v = p[j];
		double t1 = mono();
		if (!(vec & 1))
			lat[faults++] = t1 - t0;
		if (v != bench_word(k, j)) {
			fprintf(stderr, "FAIL page %lu word %lu at %p: got %#llx, want %#llx\n", k, j, (void *)(p + j),
				(unsigned long long)v, (unsigned long long)bench_word(k, j));
			exit(1);
		}
	}
	double walk = mono() - w0;
	atomic_store(&walking, 0);
	double p50 = 0, p99 = 0, pmax = 0;
	if (faults > 0) {
		qsort(lat, faults, sizeof *lat, cmpd);
		p50 = lat[faults / 2] * 1e6;
		p99 = lat[faults * 99 / 100] * 1e6;
		pmax = lat[faults - 1] * 1e6;
	}
	emit("{\"resume_gap_ms\":%.3f,\"max_gap_before_ms\":%.3f,\"max_gap_after_ms\":%.3f,\"faults\":%lu,"
	     "\"fault_p50_us\":%.1f,\"fault_p99_us\":%.1f,\"fault_max_us\":%.1f,\"walk_ms\":%.1f}\n",
	     resume_gap * 1e3, max_before * 1e3, max_after * 1e3, faults, p50, p99, pmax, walk * 1e3);
	for (;;)
		pause();
}
