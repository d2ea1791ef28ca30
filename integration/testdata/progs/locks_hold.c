/*
 * locks_hold: holds file locks of the kind argv[1] names on the file argv[2]
 * (created if missing) and checks, before every tick, that it still holds
 * them exactly, looking from a second open file description of the file
 * (which it keeps open: closing any fd of the file would drop the
 * process's POSIX locks, fcntl(2)):
 *   flock    flock(LOCK_EX): a LOCK_EX|LOCK_NB through the second
 *            description fails with EWOULDBLOCK
 *   flocksh  flock(LOCK_SH): LOCK_EX|LOCK_NB through the second fails,
 *            LOCK_SH|LOCK_NB succeeds (then LOCK_UN)
 *   posix    fcntl(F_SETLK) write lock on bytes 10-29 and read lock on
 *            40-49: F_OFD_GETLK through the second description sees exactly
 *            these two, owned by this pid, and nothing on 30-39 or 50-
 *   ofd      fcntl(F_OFD_SETLK) write lock on bytes 100 to EOF: F_OFD_GETLK
 *            sees exactly it (pid -1), and nothing on 0-99
 *   setlkw   reports first, then waits in fcntl(F_SETLKW) for a write lock
 *            on the whole file (held by the test), then checks it as posix
 *   flockw   reports first, then waits in flock(LOCK_EX), then checks it as
 *            flock
 *
 * Report: {"pid":N,"fd":N} once the locks are held (fd: the locked one).
 * Ticks:  "main", after each check that passed. A failed check prints
 *         "lost: ..." on stderr and exits 3.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/file.h>

static int fd2;

static void lost(const char *what)
{
	fprintf(stderr, "lost: %s (errno %s)\n", what, strerror(errno));
	exit(3);
}

/* probe asks F_OFD_GETLK whether a write lock on [start, start+len) would
 * conflict, and checks the answer against type/pid/start/len. */
static void probe(off_t start, off_t len, short want_type, pid_t want_pid, off_t want_start, off_t want_len)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
	if (fcntl(fd2, F_OFD_GETLK, &fl) < 0)
		lost("F_OFD_GETLK");
	if (fl.l_type != want_type)
		lost(want_type == F_UNLCK ? "an unexpected lock is held" : "the lock type changed or the lock is gone");
	if (want_type == F_UNLCK)
		return;
	if (fl.l_pid != want_pid || fl.l_start != want_start || fl.l_len != want_len) {
		fprintf(stderr, "lost: lock is pid %d bytes %lld+%lld, want pid %d bytes %lld+%lld\n", fl.l_pid,
			(long long)fl.l_start, (long long)fl.l_len, want_pid, (long long)want_start, (long long)want_len);
		exit(3);
	}
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: locks_hold flock|flocksh|posix|ofd|setlkw|flockw FILE\n");
		return 2;
	}
	const char *kind = argv[1];
	int fd = open(argv[2], O_RDWR | O_CREAT, 0600);
	if (fd < 0)
		die("open");
	fd2 = open(argv[2], O_RDWR);
	if (fd2 < 0)
		die("open second");
	int k;
	if (strcmp(kind, "flock") == 0) {
		k = 0;
		if (flock(fd, LOCK_EX) < 0)
			die("flock");
	} else if (strcmp(kind, "flocksh") == 0) {
		k = 1;
		if (flock(fd, LOCK_SH) < 0)
			die("flock");
	} else if (strcmp(kind, "posix") == 0) {
		k = 2;
		struct flock w = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 20};
		struct flock r = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 40, .l_len = 10};
		if (fcntl(fd, F_SETLK, &w) < 0 || fcntl(fd, F_SETLK, &r) < 0)
			die("F_SETLK");
	} else if (strcmp(kind, "ofd") == 0) {
		k = 3;
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 0};
		if (fcntl(fd, F_OFD_SETLK, &fl) < 0)
			die("F_OFD_SETLK");
	} else if (strcmp(kind, "setlkw") == 0) {
		k = 4;
	} else if (strcmp(kind, "flockw") == 0) {
		k = 5;
	} else {
		fprintf(stderr, "unknown lock kind %s\n", kind);
		return 2;
	}
	emit("{\"pid\":%d,\"fd\":%d}\n", getpid(), fd);
	if (k == 4) {
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
		while (fcntl(fd, F_SETLKW, &fl) < 0)
			if (errno != EINTR)
				die("F_SETLKW");
	} else if (k == 5) {
		while (flock(fd, LOCK_EX) < 0)
			if (errno != EINTR)
				die("flock");
		k = 0;
	}
	for (unsigned long n = 1;; n++) {
		switch (k) {
		case 0:
		case 1:
			if (flock(fd2, LOCK_EX | LOCK_NB) == 0)
				lost("LOCK_EX through a second description succeeded");
			if (errno != EWOULDBLOCK)
				lost("LOCK_EX through a second description");
			if (k == 1) {
				if (flock(fd2, LOCK_SH | LOCK_NB) < 0)
					lost("LOCK_SH through a second description failed: the lock is exclusive");
				if (flock(fd2, LOCK_UN) < 0)
					lost("LOCK_UN");
			}
			break;
		case 2:
			probe(10, 20, F_WRLCK, getpid(), 10, 20);
			probe(40, 10, F_RDLCK, getpid(), 40, 10);
			probe(0, 10, F_UNLCK, 0, 0, 0);
			probe(30, 10, F_UNLCK, 0, 0, 0);
			probe(50, 0, F_UNLCK, 0, 0, 0);
			break;
		case 3:
			probe(0, 0, F_WRLCK, -1, 100, 0);
			probe(0, 100, F_UNLCK, 0, 0, 0);
			break;
		case 4:
			probe(0, 0, F_WRLCK, getpid(), 0, 0);
			break;
		}
		tick("main", n);
		pace();
	}
}
