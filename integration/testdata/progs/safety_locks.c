/*
 * safety_locks: holds one file lock of the kind argv[1] names on the file
 * argv[2] (created if missing):
 *   flock  flock(LOCK_EX)
 *   posix  fcntl(F_SETLK) write lock on bytes 10-29 (l_start 10, l_len 20)
 *   ofd    fcntl(F_OFD_SETLK) write lock on bytes 100 to EOF (l_len 0)
 *   lease  fcntl(F_SETLEASE, F_RDLCK) read lease (the file is opened O_RDONLY)
 *
 * Report: {"pid":N,"fd":N} once the lock is held.
 * Ticks:  "main".
 */
#include "common.h"
#include <fcntl.h>
#include <sys/file.h>

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: safety_locks flock|posix|ofd|lease FILE\n");
		return 2;
	}
	const char *kind = argv[1];
	int lease = strcmp(kind, "lease") == 0;
	int fd = open(argv[2], (lease ? O_RDONLY : O_RDWR) | O_CREAT, 0600);
	if (fd < 0)
		die("open");
	if (strcmp(kind, "flock") == 0) {
		if (flock(fd, LOCK_EX) < 0)
			die("flock");
	} else if (strcmp(kind, "posix") == 0) {
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 20};
		if (fcntl(fd, F_SETLK, &fl) < 0)
			die("F_SETLK");
	} else if (strcmp(kind, "ofd") == 0) {
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 0};
		if (fcntl(fd, F_OFD_SETLK, &fl) < 0)
			die("F_OFD_SETLK");
	} else if (lease) {
		if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0)
			die("F_SETLEASE");
	} else {
		fprintf(stderr, "unknown lock kind %s\n", kind);
		return 2;
	}
	emit("{\"pid\":%d,\"fd\":%d}\n", getpid(), fd);
	for (unsigned long n = 1;; n++) {
		tick("main", n);
		pace();
	}
}
