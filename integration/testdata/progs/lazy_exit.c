/*
 * lazy_exit: a program that ends soon after a post-copy migration, for the
 * tests of a process that exits while most of its memory is still on the
 * source. argv[1] is the size in MiB, argv[2] the mode, argv[3] a file
 * whose appearance lets it go on (the test creates it while the original
 * is frozen, so only the migrated copy sees it). Word j of page i holds
 * lazy_word(i, j).
 *
 * Report: {"pid":N,"pages":N}, after the fill; then tick "ready 1".
 * quit: once the file is there it checks 64 pages spread over its memory,
 *       ticks "ran 1" and exits with status 7 (the rest is never read).
 * fork: once the file is there it forks and ticks "child PID"; the parent
 *       exits with status 0 at once; the child waits until its parent is
 *       gone, checks every word of its memory, ticks "verified 1", then
 *       ticks "alive N" until killed.
 * forkwait: as fork, but the child also waits for the file GOFILE2 (the
 *       go file's name with "2" appended) before it checks its memory.
 * exec: once the file is there it ticks "exec 1" and runs /bin/sleep 600
 *       in its place (execve: its memory is no longer needed).
 * A wrong word writes "verify FAIL page X word J: got V, want W" to stderr
 * and exits with status 1.
 */
#include "common.h"
#include <stdint.h>
#include <sys/mman.h>

#define PAGE 4096UL
#define WORDS (PAGE / sizeof(uint64_t))

static inline uint64_t lazy_word(unsigned long page, unsigned long j)
{
	return (page * WORDS + j) ^ 0x9e3779b97f4a7c15ULL;
}

static void check(uint64_t *base, unsigned long i)
{
	volatile uint64_t *p = base + i * WORDS;
	for (unsigned long j = 0; j < WORDS; j++) {
		uint64_t v = p[j];
		if (v != lazy_word(i, j)) {
			fprintf(stderr, "verify FAIL page %lu word %lu at %p: got %#llx, want %#llx\n", i, j,
				(void *)(p + j), (unsigned long long)v, (unsigned long long)lazy_word(i, j));
			exit(1);
		}
	}
}

static void nap(void)
{
	struct timespec ts = {0, 1000 * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: lazy_exit MIB quit|fork GOFILE\n");
		return 2;
	}
	unsigned long pages = strtoul(argv[1], NULL, 10) * 256;
	const char *mode = argv[2], *gofile = argv[3];
	uint64_t *base = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		die("mmap");
	for (unsigned long i = 0; i < pages; i++)
		for (unsigned long j = 0; j < WORDS; j++)
			base[i * WORDS + j] = lazy_word(i, j);
	emit("{\"pid\":%d,\"pages\":%lu}\n", getpid(), pages);
	tick("ready", 1);
	while (access(gofile, F_OK) != 0)
		nap();
	if (strcmp(mode, "quit") == 0) {
		for (unsigned long k = 0; k < 64; k++)
			check(base, k * (pages / 64));
		tick("ran", 1);
		return 7;
	}
	if (strcmp(mode, "exec") == 0) {
		tick("exec", 1);
		execl("/bin/sleep", "sleep", "600", (char *)NULL);
		die("execl /bin/sleep");
	}
	pid_t parent = getpid();
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child > 0) {
		tick("child", (unsigned long)child);
		return 0;
	}
	while (getppid() == parent)
		nap();
	if (strcmp(mode, "forkwait") == 0) {
		char go2[4096];
		snprintf(go2, sizeof go2, "%s2", gofile);
		while (access(go2, F_OK) != 0)
			nap();
	}
	for (unsigned long i = 0; i < pages; i++)
		check(base, i);
	tick("verified", 1);
	for (unsigned long n = 1;; n++) {
		tick("alive", n);
		pace();
	}
}
