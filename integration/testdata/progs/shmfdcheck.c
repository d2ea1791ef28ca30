/*
 * shmfdcheck: shared memory that is both mapped and held as an fd, shared
 * by a parent and a child: a memfd (sealed against shrinking) and an
 * unlinked file under /dev/shm (as python multiprocessing's heap arenas
 * are), each mapped shared and kept open before the fork. The child writes
 * a counter into the memfd through its mapping and into the /dev/shm file
 * with pwrite(2) on its fd; the parent reads the memfd with pread(2) and
 * the file through its mapping, and ticks whenever a counter moves on —
 * so fd and mapping must be one object in both processes. The parent also
 * checks the memfd's size and seals.
 *
 * Report: {"pid":N,"child":N}
 * Ticks:  parent: "memfd", "devshm"; child: "writer".
 */
#include "common.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define PG 4096UL

int main(void)
{
	int mfd = memfd_create("shmfd", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0 || ftruncate(mfd, 2 * PG))
		die("memfd");
	volatile unsigned long *mem = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (mem == MAP_FAILED)
		die("mmap memfd");
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK))
		die("seal");
	mem[PG / sizeof(long) + 7] = 0x5eed;

	char path[] = "/dev/shm/shmfdcheck-XXXXXX";
	int sfd = mkstemp(path);
	if (sfd < 0 || unlink(path) || ftruncate(sfd, PG))
		die("mkstemp");
	volatile unsigned long *dev = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
	if (dev == MAP_FAILED)
		die("mmap shm file");

	int go[2];
	if (pipe2(go, O_CLOEXEC))
		die("pipe");
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		char b;
		close(go[1]);
		while (read(go[0], &b, 1) < 0 && errno == EINTR)
			;
		close(go[0]);
		for (unsigned long n = 1;; n++) {
			mem[3] = n;
			if (pwrite(sfd, &n, sizeof n, 16) != sizeof n)
				die("pwrite");
			tick("writer", n);
			pace();
		}
	}
	emit("{\"pid\":%d,\"child\":%d}\n", getpid(), c);
	close(go[0]);
	close(go[1]);
	unsigned long seen[2] = {0}, ticks[2] = {0};
	for (;;) {
		unsigned long now[2], seed;
		if (pread(mfd, &now[0], sizeof now[0], 3 * sizeof(long)) != sizeof now[0] ||
		    pread(mfd, &seed, sizeof seed, PG + 7 * sizeof(long)) != sizeof seed)
			die("pread memfd");
		now[1] = dev[2];
		if (seed != 0x5eed) {
			fprintf(stderr, "memfd: read %#lx at page 1, want 0x5eed\n", seed);
			exit(1);
		}
		struct stat st;
		if (fstat(mfd, &st))
			die("fstat");
		int seals = fcntl(mfd, F_GET_SEALS);
		if (st.st_size != 2 * PG || seals != F_SEAL_SHRINK) {
			fprintf(stderr, "memfd: %ld bytes, seals %#x; want %lu, %#x\n", (long)st.st_size, seals, 2 * PG, F_SEAL_SHRINK);
			exit(1);
		}
		const char *keys[] = {"memfd", "devshm"};
		for (int i = 0; i < 2; i++)
			if (now[i] > seen[i]) {
				seen[i] = now[i];
				tick(keys[i], ++ticks[i]);
			}
		pace();
	}
}
