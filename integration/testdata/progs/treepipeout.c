/*
 * treepipeout: two members of a tree write into one pipe that a process
 * outside the tree (the test) reads.
 *
 * The test passes both ends of its pipe: fd 3 the read end, fd 4 the
 * write end, and keeps only the read end itself. The root forks a child;
 * both keep both ends (so neither holds "one end only") and write lines
 * "tick root N" / "tick child N" into fd 4 every 5 ms, each line with one
 * write(2) (atomic below PIPE_BUF, pipe(7)). The test reads its end: both
 * counters must go on with no gap and no repeat across a dump and restore,
 * which holds only if both restored members write into the test's pipe.
 * With the argument "rootonly" the child closes fds 3 and 4 and only
 * waits: the root is the one member holding the pipe (both ends). With
 * "rdwr" the root first reopens the pipe read-write as fd 5 (open(2) of
 * /proc/self/fd/4, proc(5)) and closes fds 3 and 4; both members write
 * through fd 5.
 * stdout (a file) gets the report {"pid":P,"child":C}.
 */
#include "common.h"
#include <fcntl.h>

static int out = 4;

static void writer(const char *key)
{
	for (unsigned long n = 1;; n++) {
		char buf[64];
		int len = snprintf(buf, sizeof buf, "tick %s %lu\n", key, n);
		for (;;) {
			ssize_t w = write(out, buf, len);
			if (w == len)
				break;
			if (w < 0 && errno == EINTR)
				continue;
			die("write the pipe");
		}
		pace();
	}
}

int main(int argc, char **argv)
{
	int rootonly = argc > 1 && strcmp(argv[1], "rootonly") == 0;
	/* Opened both ways: a read end and a write end. */
	if (fcntl(3, F_GETFD) < 0 || fcntl(4, F_GETFD) < 0)
		die("fds 3 and 4");
	if (argc > 1 && strcmp(argv[1], "rdwr") == 0) {
		if (open("/proc/self/fd/4", O_RDWR) != 5)
			die("reopen the pipe read-write as fd 5");
		close(3);
		close(4);
		out = 5;
	}
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		if (!rootonly)
			writer("child");
		close(3);
		close(4);
		for (;;)
			pause();
	}
	emit("{\"pid\":%d,\"child\":%d}\n", getpid(), c);
	writer("root");
	return 0;
}
