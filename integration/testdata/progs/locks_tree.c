/*
 * locks_tree: a root and a child holding file locks, each checking that it
 * still holds its own, from a second open file description it keeps open
 * (closing any fd of a file drops the process's POSIX locks, fcntl(2)):
 *   - the root opens argv[1] O_RDWR, takes flock(LOCK_EX) on it and a
 *     POSIX write lock on its bytes 0-9, then forks the child, which so
 *     shares the open file description and its flock (an flock belongs to
 *     the description), but not the POSIX lock (it belongs to the root);
 *   - the child opens argv[2] and takes a POSIX write lock on bytes 5-14.
 * The root checks that LOCK_EX|LOCK_NB through its second description of
 * argv[1] fails and that F_OFD_GETLK there sees its own POSIX lock (its
 * pid, 0-9); the child checks F_OFD_GETLK on argv[2] sees its lock (its
 * pid, 5-14) and that the shared flock still keeps a second description
 * of argv[1] out.
 * Report: {"pid":N,"child":N}. Ticks "root" and "child" after each check
 * that passed; a failed check prints "lost: ..." on stderr and exits 3.
 */
#include "common.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>

static void lost(const char *who, const char *what)
{
	fprintf(stderr, "lost: %s: %s (%s)\n", who, what, strerror(errno));
	exit(3);
}

static void probe(const char *who, int fd, pid_t pid, off_t start, off_t len)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		lost(who, "F_OFD_GETLK");
	if (fl.l_type != F_WRLCK || fl.l_pid != pid || fl.l_start != start || fl.l_len != len) {
		fprintf(stderr, "lost: %s: lock is type %d pid %d bytes %lld+%lld, want write pid %d bytes %lld+%lld\n", who,
			fl.l_type, fl.l_pid, (long long)fl.l_start, (long long)fl.l_len, pid, (long long)start, (long long)len);
		exit(3);
	}
}

static void flocked(const char *who, int fd)
{
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		lost(who, "LOCK_EX through a second description succeeded");
	if (errno != EWOULDBLOCK)
		lost(who, "LOCK_EX through a second description");
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: locks_tree FILE1 FILE2\n");
		return 2;
	}
	int f = open(argv[1], O_RDWR | O_CREAT, 0600);
	int f2 = open(argv[1], O_RDWR);
	if (f < 0 || f2 < 0)
		die("open");
	struct flock w = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
	if (flock(f, LOCK_EX) < 0 || fcntl(f, F_SETLK, &w) < 0)
		die("lock");
	int go[2];
	if (pipe(go) < 0)
		die("pipe");
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(go[1]);
		int g = open(argv[2], O_RDWR | O_CREAT, 0600);
		int g2 = open(argv[2], O_RDWR);
		if (g < 0 || g2 < 0)
			die("open");
		struct flock cw = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 10};
		if (fcntl(g, F_SETLK, &cw) < 0)
			die("child lock");
		char c;
		while (read(go[0], &c, 1) < 0 && errno == EINTR)
			;
		close(go[0]);
		for (unsigned long n = 1;; n++) {
			probe("child", g2, getpid(), 5, 10);
			flocked("child", f2);
			tick("child", n);
			pace();
		}
	}
	close(go[0]);
	/* The child's lock is taken before it reads EOF: wait until it is. */
	int g2 = -1;
	for (;;) {
		g2 = open(argv[2], O_RDWR);
		if (g2 >= 0) {
			struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
			if (fcntl(g2, F_OFD_GETLK, &fl) < 0)
				die("F_OFD_GETLK");
			close(g2);
			if (fl.l_type != F_UNLCK)
				break;
		}
		pace();
	}
	emit("{\"pid\":%d,\"child\":%d}\n", getpid(), child);
	close(go[1]);
	for (unsigned long n = 1;; n++) {
		probe("root", f2, getpid(), 0, 10);
		flocked("root", f2);
		tick("root", n);
		pace();
	}
}
