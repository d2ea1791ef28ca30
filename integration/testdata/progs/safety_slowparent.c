/*
 * safety_slowparent: a parent that reaps its child late. It runs the program
 * given as argv[2] (with the remaining arguments) as its child, waits for
 * the child to die without reaping it (waitid WNOWAIT), then leaves it a
 * zombie for argv[1] milliseconds (-1: forever) before it reaps it and
 * exits. The child's own output is the test's report and ticks; this
 * program writes nothing unless something fails.
 */
#include "common.h"
#include <sys/wait.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: safety_slowparent DELAY_MS PROGRAM [ARG...]\n");
		return 2;
	}
	long delay = strtol(argv[1], NULL, 10);
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		execv(argv[2], argv + 2);
		die("execv");
	}
	siginfo_t si;
	while (waitid(P_PID, c, &si, WEXITED | WNOWAIT) < 0)
		if (errno != EINTR)
			die("waitid");
	if (delay < 0)
		for (;;)
			pause();
	struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	if (waitpid(c, NULL, 0) < 0)
		die("waitpid");
	return 0;
}
