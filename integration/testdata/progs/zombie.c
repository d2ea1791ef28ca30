/*
 * zombie: forks a child that exits at once with status 3 and never reaps
 * it, so the child stays a zombie while this process runs. A SIGCHLD
 * handler counts the SIGCHLDs it gets (one, from that exit).
 *
 * Report: {"pid":N,"child":N}
 * Ticks:  "main", and "chldN" with N the SIGCHLDs counted so far.
 */
#include "common.h"
#include <signal.h>

static volatile sig_atomic_t chld;

static void on_chld(int sig) { (void)sig; chld++; }

int main(void)
{
	struct sigaction sa = {0};
	sa.sa_handler = on_chld;
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGCHLD, &sa, NULL)) die("sigaction");
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0)
		_exit(3);
	while (!chld)
		pace();
	emit("{\"pid\":%d,\"child\":%d}\n", getpid(), c);
	for (unsigned long n = 1;; n++) {
		char key[32];
		snprintf(key, sizeof key, "chld%d", (int)chld);
		tick("main", n);
		tick(key, n);
		pace();
	}
}
