/*
 * pendchld: the init of a PID namespace with SIGCHLD pending. It blocks
 * SIGCHLD, forks a child that exits at once and reaps it (the signal stays
 * pending, blocked), and forks a second child that sleeps (a tree member).
 * A third child exits with status 7 and is never reaped (a zombie).
 * Report {"pid","child","zombie"}; then it ticks "pending:ok" while SIGCHLD
 * is still pending (sigpending(2)), "pending:bad" otherwise, and
 * "zombie:ok" while waitid(2) (WNOWAIT) still finds its zombie, by the pid
 * fork returned, with status 7 ("zombie:bad" otherwise).
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
	pid_t z = fork();
	if (z < 0) die("fork");
	if (z == 0)
		_exit(7);
	for (;;) { /* until it is a zombie (not reaped: WNOWAIT) */
		siginfo_t si = {0};
		if (waitid(P_PID, z, &si, WEXITED | WNOWAIT) == 0 && si.si_pid == z)
			break;
		if (errno != EINTR) die("waitid");
	}
	emit("{\"pid\":%d,\"child\":%d,\"zombie\":%d}\n", getpid(), c, z);
	for (unsigned long n = 1;; n++) {
		sigset_t p;
		if (sigpending(&p)) die("sigpending");
		tick(sigismember(&p, SIGCHLD) ? "pending:ok" : "pending:bad", n);
		siginfo_t si = {0};
		int zok = waitid(P_PID, z, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == z &&
			si.si_code == CLD_EXITED && si.si_status == 7;
		tick(zok ? "zombie:ok" : "zombie:bad", n);
		pace();
	}
}
