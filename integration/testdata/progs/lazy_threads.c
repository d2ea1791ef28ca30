/*
 * lazy_threads: 8 threads, each filling and then endlessly re-verifying its
 * own anonymous region (argv[1] MiB per thread, default 8), for post-copy
 * migration tests: faults of several threads at once.
 *
 * Report: {"pid":N,"threads":8}
 * Ticks:  "tK N" (K = 0…7) = full verifications of thread K's region. A
 *         wrong word writes "tK FAIL page X word J: got V, want W" to stderr
 *         and the program exits with status 1.
 */
#include "common.h"
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>

#define NTHREADS 8
#define PAGE 4096UL
#define WORDS (PAGE / sizeof(uint64_t))

static unsigned long pages;
static pthread_barrier_t ready;

static inline uint64_t word(unsigned k, unsigned long page, unsigned long j)
{
	return ((uint64_t)k << 56) ^ (page * WORDS + j) ^ 0x5851f42d4c957f2dULL;
}

static void *run(void *arg)
{
	unsigned k = (unsigned)(uintptr_t)arg;
	char key[8];
	snprintf(key, sizeof key, "t%u", k);
	uint64_t *base = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		die("mmap");
	for (unsigned long i = 0; i < pages; i++)
		for (unsigned long j = 0; j < WORDS; j++)
			base[i * WORDS + j] = word(k, i, j);
	pthread_barrier_wait(&ready); /* every region is filled */
	pthread_barrier_wait(&ready); /* the report is out */
	for (unsigned long n = 1;; n++) {
		for (unsigned long i = 0; i < pages; i++) {
			volatile uint64_t *p = base + i * WORDS;
			for (unsigned long j = 0; j < WORDS; j++) {
				uint64_t v = p[j];
				if (v != word(k, i, j)) {
					fprintf(stderr, "%s FAIL page %lu word %lu at %p: got %#llx, want %#llx\n", key, i, j,
						(void *)(p + j), (unsigned long long)v, (unsigned long long)word(k, i, j));
					exit(1);
				}
			}
		}
		tick(key, n);
		pace();
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pages = (argc > 1 ? strtoul(argv[1], NULL, 10) : 8) * 256;
	if ((errno = pthread_barrier_init(&ready, NULL, NTHREADS + 1)))
		die("pthread_barrier_init");
	for (unsigned k = 0; k < NTHREADS; k++) {
		pthread_t pt;
		if ((errno = pthread_create(&pt, NULL, run, (void *)(uintptr_t)k)))
			die("pthread_create");
	}
	pthread_barrier_wait(&ready);
	emit("{\"pid\":%d,\"threads\":%d}\n", getpid(), NTHREADS);
	pthread_barrier_wait(&ready);
	for (;;)
		pause();
}
