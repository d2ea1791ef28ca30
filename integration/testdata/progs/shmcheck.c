/*
 * shmcheck: a parent and a child that share memory created before the
 * fork — anonymous shared memory (MAP_SHARED|MAP_ANONYMOUS, 4 pages), a
 * memfd mapped shared and closed (sealed against growing and shrinking), a
 * POSIX shm segment mapped and unlinked ("/dev/shm/NAME (deleted)"), a
 * named POSIX semaphore unlinked after sem_open (as python multiprocessing
 * does) — and a second mapping of the anonymous memory the parent makes
 * with mremap(old_size 0) after the fork. The child writes a counter into
 * each object and posts the semaphore; the parent ticks for each object
 * whenever it sees the child's counter move on there (so a tick stops as
 * soon as the memory is no longer shared), checks that a write through the
 * alias reads back through the first mapping, and both check the pattern
 * the parent wrote into page 1 before the fork; the parent also checks
 * the memfd's and the shm segment's sizes (not page multiples).
 *
 * Report: {"pid":N,"child":N}
 * Ticks:  parent: "anon", "memfd", "devshm", "sem", "alias";
 *         child: "writer".
 */
#include "common.h"
#include <fcntl.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define PG 4096UL
#define ANON_PAGES 4
#define MEMFD_SIZE (2 * PG - 50)
#define DEVSHM_SIZE 100

/* check_size checks the size of the object mapped at p (len bytes). */
static void check_size(const volatile void *p, unsigned long len, off_t want, const char *what)
{
	char path[128];
	struct stat st;
	snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", (unsigned long)p, (unsigned long)p + len);
	if (stat(path, &st)) {
		fprintf(stderr, "parent: stat %s: %s\n", path, strerror(errno));
		exit(1);
	}
	if (st.st_size != want) {
		fprintf(stderr, "parent: the %s is %ld bytes, want %ld\n", what, (long)st.st_size, (long)want);
		exit(1);
	}
}

static void check_pattern(const unsigned char *p, const char *who)
{
	for (unsigned long i = 0; i < PG; i++)
		if (p[PG + i] != pattern(7, i)) {
			fprintf(stderr, "%s: anon page 1 byte %lu is %u, want %u\n", who, i, p[PG + i], pattern(7, i));
			exit(1);
		}
}

int main(void)
{
	unsigned char *anon = mmap(NULL, ANON_PAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (anon == MAP_FAILED)
		die("mmap anon");
	for (unsigned long i = 0; i < PG; i++)
		anon[PG + i] = pattern(7, i);

	int mfd = memfd_create("shmcheck", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0 || ftruncate(mfd, MEMFD_SIZE))
		die("memfd");
	volatile unsigned long *mem = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (mem == MAP_FAILED)
		die("mmap memfd");
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK))
		die("seal memfd");
	close(mfd);

	char name[64];
	snprintf(name, sizeof name, "/shmcheck-%d", getpid());
	int sfd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (sfd < 0 || ftruncate(sfd, DEVSHM_SIZE))
		die("shm_open");
	volatile unsigned long *dev = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
	if (dev == MAP_FAILED)
		die("mmap shm");
	close(sfd);
	shm_unlink(name);

	snprintf(name, sizeof name, "/shmcheck-sem-%d", getpid());
	sem_t *sem = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
	if (sem == SEM_FAILED)
		die("sem_open");
	sem_unlink(name);

	volatile unsigned long *a = (volatile unsigned long *)anon;
	int go[2];
	if (pipe2(go, O_CLOEXEC))
		die("pipe");
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		char b;
		close(go[1]);
		/* The report is the first line: start once it is out. */
		while (read(go[0], &b, 1) < 0 && errno == EINTR)
			;
		close(go[0]);
		for (unsigned long n = 1;; n++) {
			a[0] = n;
			a[3 * PG / sizeof(long)] = n;
			mem[PG / sizeof(long)] = n;
			dev[1] = n;
			if (sem_post(sem))
				die("sem_post");
			check_pattern(anon, "child");
			tick("writer", n);
			pace();
		}
	}
	volatile unsigned long *alias = mremap(anon, 0, ANON_PAGES * PG, MREMAP_MAYMOVE);
	if (alias == MAP_FAILED)
		die("mremap alias");
	emit("{\"pid\":%d,\"child\":%d}\n", getpid(), c);
	close(go[0]);
	close(go[1]);
	unsigned long seen[4] = {0}, ticks[5] = {0};
	for (;;) {
		unsigned long now[4] = {a[3 * PG / sizeof(long)], mem[PG / sizeof(long)], dev[1], 0};
		const char *keys[] = {"anon", "memfd", "devshm"};
		for (int i = 0; i < 3; i++)
			if (now[i] > seen[i]) {
				seen[i] = now[i];
				tick(keys[i], ++ticks[i]);
			}
		if (sem_trywait(sem) == 0)
			tick("sem", ++ticks[3]);
		else if (errno != EAGAIN && errno != EINTR)
			die("sem_trywait");
		ticks[4]++;
		alias[PG / sizeof(long) * 2 + 1] = ticks[4];
		if (a[PG / sizeof(long) * 2 + 1] != ticks[4]) {
			fprintf(stderr, "parent: wrote %lu through the alias, read %lu through the first mapping\n", ticks[4], a[PG / sizeof(long) * 2 + 1]);
			exit(1);
		}
		tick("alias", ticks[4]);
		check_pattern(anon, "parent");
		check_size(mem, 2 * PG, MEMFD_SIZE, "memfd");
		check_size(dev, PG, DEVSHM_SIZE, "shm segment");
		pace();
	}
}
