/*
 * qa3_procself: a process that keeps files of its own /proc directory
 * open: /proc/self/status as fd 3 (read from its start each round) and the
 * directory /proc/self as fd 4 (stat read through it with openat). Both
 * must describe the process itself, also after a restore with a new pid:
 * "Pid:" in fd 3 and the first field of stat are getpid().
 *
 * Report: {"pid":N}. Ticks: "ok" = both checks passed. A failed check
 * writes "FAIL ..." to stderr and exits 1.
 */
#include "common.h"
#include <fcntl.h>


static void check(void)
{
	char buf[4096], want[64];
	ssize_t n = pread(3, buf, sizeof buf - 1, 0);
	if (n <= 0)
		failf("read fd 3 (/proc/self/status): %s", n < 0 ? strerror(errno) : "empty");
	buf[n] = 0;
	snprintf(want, sizeof want, "\nPid:\t%d\n", getpid());
	if (!strstr(buf, want)) {
		char *p = strstr(buf, "\nPid:");
		failf("fd 3 describes %.16s, want pid %d", p ? p + 1 : "no pid", getpid());
	}
	int st = openat(4, "stat", O_RDONLY | O_CLOEXEC);
	if (st < 0)
		failf("openat(fd 4, \"stat\"): %s", strerror(errno));
	n = read(st, buf, sizeof buf - 1);
	close(st);
	if (n <= 0 || atoi(buf) != getpid())
		failf("stat through fd 4 starts with %.12s, want pid %d", n > 0 ? buf : "", getpid());
}

int main(void)
{
	if (open("/proc/self/status", O_RDONLY) != 3 || open("/proc/self", O_RDONLY | O_DIRECTORY) != 4)
		die("open /proc/self/status and /proc/self as fds 3 and 4");
	check();
	check_forever(check);
}
