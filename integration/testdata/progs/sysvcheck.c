/*
 * sysvcheck: a parent and a child that share two System V shm segments
 * attached before the fork: one with a key (3 pages and 100 bytes, mode
 * 0640) and one IPC_PRIVATE that the parent marks for destruction
 * (IPC_RMID) once both have it attached. The child writes a counter into
 * each; the parent ticks for each segment whenever it sees the counter
 * move on, and checks on every round what shmctl(IPC_STAT) says of both
 * (id, key, size, mode, SHM_DEST, two attaches each) and the pattern it
 * wrote past the first page of the keyed one.
 *
 * Report: {"pid":N,"child":N,"id":N,"key":N,"private":N}
 * Ticks:  parent: "sysv", "private"; child: "writer".
 */
#include "common.h"
#include <fcntl.h>
#include <sys/ipc.h>
#include <sys/shm.h>

#define PG 4096UL
#define SIZE (3 * PG + 100)

static void check(int id, key_t key, size_t size, int mode, int dest, const char *what)
{
	struct shmid_ds d;
	if (shmctl(id, IPC_STAT, &d)) {
		fprintf(stderr, "%s: shmctl(%d, IPC_STAT): %s\n", what, id, strerror(errno));
		exit(1);
	}
	if (d.shm_perm.__key != key || d.shm_segsz != size || (int)(d.shm_perm.mode & 0777) != mode ||
	    !!(d.shm_perm.mode & SHM_DEST) != dest || d.shm_nattch != 2) {
		fprintf(stderr, "%s: segment %d: key %#x size %zu mode %#o nattch %lu, want key %#x size %zu mode %#o dest %d nattch 2\n",
			what, id, d.shm_perm.__key, d.shm_segsz, d.shm_perm.mode, (unsigned long)d.shm_nattch, key, size, mode, dest);
		exit(1);
	}
}

int main(void)
{
	key_t key = 0x4c430000 | (getpid() & 0xffff);
	int id = shmget(key, SIZE, IPC_CREAT | IPC_EXCL | 0640);
	if (id < 0)
		die("shmget key");
	unsigned char *s = shmat(id, NULL, 0);
	if (s == (void *)-1)
		die("shmat key");
	for (unsigned long i = 0; i < 2 * PG; i++)
		s[PG + i] = pattern(9, i);
	int pid2 = shmget(IPC_PRIVATE, PG, 0600);
	if (pid2 < 0)
		die("shmget private");
	volatile unsigned long *p = shmat(pid2, NULL, 0);
	if (p == (void *)-1)
		die("shmat private");
	volatile unsigned long *a = (volatile unsigned long *)s;
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
			a[1] = n;
			p[3] = n;
			tick("writer", n);
			pace();
		}
	}
	if (shmctl(pid2, IPC_RMID, NULL))
		die("shmctl IPC_RMID");
	emit("{\"pid\":%d,\"child\":%d,\"id\":%d,\"key\":%d,\"private\":%d}\n", getpid(), c, id, key, pid2);
	close(go[0]);
	close(go[1]);
	unsigned long seen[2] = {0}, ticks[2] = {0};
	for (;;) {
		check(id, key, SIZE, 0640, 0, "keyed");
		check(pid2, IPC_PRIVATE, PG, 0600, 1, "private");
		for (unsigned long i = 0; i < 2 * PG; i++)
			if (s[PG + i] != pattern(9, i)) {
				fprintf(stderr, "keyed: byte %lu is %u, want %u\n", PG + i, s[PG + i], pattern(9, i));
				exit(1);
			}
		unsigned long now[2] = {a[1], p[3]};
		const char *keys[] = {"sysv", "private"};
		for (int i = 0; i < 2; i++)
			if (now[i] > seen[i]) {
				seen[i] = now[i];
				tick(keys[i], ++ticks[i]);
			}
		pace();
	}
}
