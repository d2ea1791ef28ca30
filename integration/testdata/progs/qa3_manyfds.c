/*
 * qa3_manyfds: a process with N fds (argv[1]) up to fd N+2, about half its
 * hard RLIMIT_NOFILE (argv[2] is a file to open): restore made every fd
 * first at a temporary number above the highest, which needs twice the fds
 * and so a raised hard limit (CAP_SYS_RESOURCE, which root lacks in a
 * container). Fd i (from 3) is, by i % 3: argv[2] opened on its own at
 * offset i % 16; an eventfd holding i; a dup of the first, whose offset
 * moves with it. The soft limit is raised to the hard one.
 *
 * Report: {"pid":N,"fds":N}. Ticks: "ok" = every fd checked: offsets,
 * eventfd values (read and written back), dups sharing their description.
 * A failed check writes "FAIL ..." to stderr and exits 1.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>

static int n;


static void check(void)
{
	for (int fd = 3; fd < n + 3; fd++) {
		switch (fd % 3) {
		case 0:
			if (lseek(fd, 0, SEEK_CUR) != fd % 16)
				failf("fd %d at offset %ld, want %d", fd, (long)lseek(fd, 0, SEEK_CUR), fd % 16);
			break;
		case 1: {
			uint64_t v = 0;
			if (read(fd, &v, 8) != 8 || v != (uint64_t)fd)
				failf("eventfd %d holds %llu, want %d", fd, (unsigned long long)v, fd);
			if (write(fd, &v, 8) != 8)
				failf("write eventfd %d: %s", fd, strerror(errno));
			break;
		}
		case 2:
			/* a dup of fd-2: one description */
			if (lseek(fd, 1, SEEK_CUR) != (fd - 2) % 16 + 1 || lseek(fd - 2, 0, SEEK_CUR) != (fd - 2) % 16 + 1 ||
			    lseek(fd, -1, SEEK_CUR) != (fd - 2) % 16)
				failf("fd %d is not a dup of fd %d", fd, fd - 2);
			break;
		}
	}
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: qa3_manyfds N FILE\n");
		return 2;
	}
	n = atoi(argv[1]);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl))
		die("getrlimit");
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl))
		die("setrlimit");
	for (int fd = 3; fd < n + 3; fd++) {
		int got;
		switch (fd % 3) {
		case 0:
			got = open(argv[2], O_RDONLY);
			if (got >= 0 && lseek(got, fd % 16, SEEK_SET) < 0)
				die("lseek");
			break;
		case 1:
			got = eventfd(fd, 0);
			break;
		default:
			got = dup(fd - 2);
		}
		if (got != fd)
			die("open fd");
	}
	check();
	emit("{\"pid\":%d,\"fds\":%d}\n", getpid(), n);
	for (unsigned long i = 1;; i++) {
		check();
		tick("ok", i);
		usleep(100 * 1000);
	}
}
