/*
 * pipeoutside: a single process (no children) that holds both ends of two
 * pipes, or two FIFOs, that the test holds too, and talks to the test
 * through them: the test writes "ping N\n" into A, the process answers
 * "pong N\n" into B.
 *
 *   pipeoutside pipe           the test passes A's read end as fd 3, A's
 *                              write end as fd 4, B's read end as fd 5,
 *                              B's write end as fd 6 (and keeps all four).
 *   pipeoutside fifo PA PB     the process opens the FIFOs PA and PB, both
 *                              ends each, as fds 3, 4 and 5, 6 (fifo(7)).
 *
 * It opens two more descriptions of its own (open(2) of /proc/self/fd/N,
 * proc(5)): fd 7, A's read end again, O_NONBLOCK; fd 8, B read-write,
 * through which it writes the pongs. Each round it checks that fds 3, 4, 7
 * are one pipe and 5, 6, 8 another, each with its access mode and
 * O_NONBLOCK as set, and that ping numbers go 1, 2, 3... with none missing
 * or repeated; a failed check goes to stderr and exits 1.
 * stdout (a file): the report {"pid":P}, then "tick ping N" per ping.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/stat.h>

static void check_fds(void)
{
	static const struct {
		int fd, pipe, flags;
	} want[] = {
		{3, 0, O_RDONLY},
		{4, 0, O_WRONLY},
		{7, 0, O_RDONLY | O_NONBLOCK},
		{5, 1, O_RDONLY},
		{6, 1, O_WRONLY},
		{8, 1, O_RDWR},
	};
	ino_t ino[2] = {0, 0};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		struct stat st;
		if (fstat(want[i].fd, &st) < 0)
			die("fstat");
		if (!S_ISFIFO(st.st_mode)) {
			fprintf(stderr, "fd %d is not a pipe (mode %o)\n", want[i].fd, st.st_mode);
			exit(1);
		}
		if (ino[want[i].pipe] == 0)
			ino[want[i].pipe] = st.st_ino;
		if (st.st_ino != ino[want[i].pipe]) {
			fprintf(stderr, "fd %d is inode %lu, want %lu\n", want[i].fd,
				(unsigned long)st.st_ino, (unsigned long)ino[want[i].pipe]);
			exit(1);
		}
		int fl = fcntl(want[i].fd, F_GETFL);
		if (fl < 0)
			die("F_GETFL");
		if ((fl & (O_ACCMODE | O_NONBLOCK)) != want[i].flags) {
			fprintf(stderr, "fd %d has flags %o, want %o\n", want[i].fd,
				fl & (O_ACCMODE | O_NONBLOCK), want[i].flags);
			exit(1);
		}
	}
	if (ino[0] == ino[1]) {
		fprintf(stderr, "pipes A and B are one pipe, inode %lu\n", (unsigned long)ino[0]);
		exit(1);
	}
}

/* openfifo opens both ends of FIFO path as fds rd and wr (the read end
 * first and non-blocking, so that neither open waits; fifo(7)). */
static void openfifo(const char *path, int rd, int wr)
{
	if (open(path, O_RDONLY | O_NONBLOCK) != rd)
		die("open the FIFO's read end");
	if (open(path, O_WRONLY) != wr)
		die("open the FIFO's write end");
	if (fcntl(rd, F_SETFL, 0) < 0)
		die("F_SETFL");
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "fifo") == 0) {
		openfifo(argv[2], 3, 4);
		openfifo(argv[3], 5, 6);
	} else if (argc != 2 || strcmp(argv[1], "pipe") != 0) {
		fprintf(stderr, "usage: pipeoutside pipe | pipeoutside fifo PATH_A PATH_B\n");
		return 2;
	}
	if (open("/proc/self/fd/3", O_RDONLY | O_NONBLOCK) != 7)
		die("reopen A's read end as fd 7");
	if (open("/proc/self/fd/6", O_RDWR) != 8)
		die("reopen B read-write as fd 8");
	check_fds();
	emit("{\"pid\":%d}\n", getpid());

	char buf[256];
	size_t have = 0;
	unsigned long last = 0;
	for (;;) {
		ssize_t n = read(3, buf + have, sizeof buf - 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("read a ping");
		have += n;
		buf[have] = 0;
		char *line = buf, *nl;
		while ((nl = strchr(line, '\n')) != NULL) {
			*nl = 0;
			unsigned long got;
			if (sscanf(line, "ping %lu", &got) != 1) {
				fprintf(stderr, "line %s is not a ping\n", line);
				exit(1);
			}
			if (got != last + 1) {
				fprintf(stderr, "ping %lu after ping %lu\n", got, last);
				exit(1);
			}
			last = got;
			check_fds();
			char out[64];
			int len = snprintf(out, sizeof out, "pong %lu\n", got);
			if (write(8, out, len) != len)
				die("write a pong");
			tick("ping", got);
			line = nl + 1;
		}
		have -= line - buf;
		memmove(buf, line, have);
		if (have == sizeof buf - 1) {
			fprintf(stderr, "a line longer than %zu bytes\n", sizeof buf - 1);
			exit(1);
		}
	}
}
