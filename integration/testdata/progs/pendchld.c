/*
 * pendchld: the init of a PID namespace with SIGCHLD pending. It blocks
 * SIGCHLD, forks a child that exits at once and reaps it (the signal stays
 * pending, blocked), and forks a second child that sleeps (a tree member).
 * Report {"pid","child"}; then it ticks "pending:ok" while SIGCHLD is still
 * pending (sigpending(2)), "pending:bad" otherwise.
 */
#include "common.h"
#include <signal.h>
#include <sys/wait.h>

int main(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &set, NULL)) die("sigprocmask");
	pid_t k = fork();
	if (k < 0) die("fork");
	if (k == 0)
		_exit(0);
	int st;
	if (waitpid(k, &st, 0) != k) die("waitpid");
	pid_t c = fork();
	if (c < 0) die("fork");
	if (c == 0) {
		for (;;)
			pause();
	}
	emit("{\"pid\":%d,\"child\":%d}\n", getpid(), c);
	for (unsigned long n = 1;; n++) {
		sigset_t p;
		if (sigpending(&p)) die("sigpending");
		tick(sigismember(&p, SIGCHLD) ? "pending:ok" : "pending:bad", n);
		pace();
	}
}
