/*
 * dumpref_session: a tree whose grandchild stays in the session of the
 * root while its parent, the child, has made a session of its own after
 * forking it (setsid(2)): the grandchild is in a session other than its
 * parent's and does not lead it, which a restore cannot rebuild (it
 * clones each member from its parent), so the dump must refuse it while
 * the tree runs on.
 *
 * Report: {"pid":N,"child":C,"grandchild":G}. Ticks: "ok" (the root).
 */
#include "common.h"
#include <signal.h>
#include <sys/prctl.h>

static void idle(void)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (;;)
		pause();
}

int main(void)
{
	int fds[2];
	if (pipe(fds))
		die("pipe");
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		pid_t g = fork();
		if (g < 0)
			die("fork");
		if (g == 0)
			idle();
		if (setsid() < 0)
			die("setsid");
		if (write(fds[1], &g, sizeof g) != sizeof g)
			die("write");
		idle();
	}
	pid_t g;
	if (read(fds[0], &g, sizeof g) != sizeof g)
		die("read");
	emit("{\"pid\":%d,\"child\":%d,\"grandchild\":%d}\n", getpid(), c, g);
	for (unsigned long n = 1;; n++) {
		tick("ok", n);
		pace();
	}
}
