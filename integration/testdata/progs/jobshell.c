/*
 * jobshell: a minimal job-control shell (integration/tty_test.go). Its
 * stdin is a pseudo-terminal slave. It leads a new session with that
 * terminal as its controlling terminal and runs CMD as a job: a process
 * group of its own, made the terminal's foreground group before CMD runs,
 * as bash does with job control. It appends a line to STATUS for every
 * change of the job ("started PID", "stopped SIG", "continued",
 * "exit N", "signal N") and takes the terminal back whenever the job stops
 * or ends; SIGUSR1 continues a stopped job in the foreground (fg). Once
 * the job is over, SIGUSR1 runs the next command, if any (commands are
 * separated by a ";" argument), as the next job of the session; after the
 * last it stays, leading the session, until killed.
 *
 * Usage: jobshell STATUS CMD [ARG...] [\; CMD [ARG...]]...
 */
#include "common.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

static const char *status_path;

static void status(const char *fmt, ...)
{
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	int fd = open(status_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		die("open status");
	if (write(fd, line, n) != n)
		die("write status");
	close(fd);
}

/* run runs cmd as the foreground job and waits until it is over. */
static void run(char **cmd, sigset_t *usr1)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe2");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		setpgid(0, 0);
		char c;
		if (read(p[0], &c, 1) != 1)
			die("wait for the terminal");
		signal(SIGTTOU, SIG_DFL);
		signal(SIGTTIN, SIG_DFL);
		signal(SIGTSTP, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGQUIT, SIG_DFL);
		sigprocmask(SIG_UNBLOCK, usr1, NULL);
		execvp(cmd[0], cmd);
		die("execvp");
	}
	setpgid(pid, pid);
	if (tcsetpgrp(0, pid) < 0)
		die("tcsetpgrp");
	if (write(p[1], "g", 1) != 1)
		die("start the job");
	close(p[0]);
	close(p[1]);
	status("started %d\n", pid);
	for (;;) {
		int st;
		if (waitpid(pid, &st, WUNTRACED) < 0) {
			if (errno == EINTR)
				continue;
			die("waitpid");
		}
		tcsetpgrp(0, getpgrp());
		if (WIFEXITED(st)) {
			status("exit %d\n", WEXITSTATUS(st));
			return;
		}
		if (WIFSIGNALED(st)) {
			status("signal %d\n", WTERMSIG(st));
			return;
		}
		if (WIFSTOPPED(st)) {
			status("stopped %d\n", WSTOPSIG(st));
			int sig;
			if (sigwait(usr1, &sig) != 0)
				die("sigwait");
			if (tcsetpgrp(0, pid) < 0)
				die("tcsetpgrp");
			if (kill(-pid, SIGCONT) < 0)
				die("kill SIGCONT");
			status("continued\n");
		}
	}
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: jobshell STATUS CMD [ARG...]\n");
		return 2;
	}
	status_path = argv[1];
	signal(SIGTTOU, SIG_IGN);
	signal(SIGTTIN, SIG_IGN);
	signal(SIGTSTP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGQUIT, SIG_IGN);
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &usr1, NULL) < 0)
		die("sigprocmask");
	if (setsid() < 0)
		die("setsid");
	if (ioctl(0, TIOCSCTTY, 0) < 0)
		die("TIOCSCTTY");
	for (char **cmd = argv + 2; *cmd;) {
		char **next = cmd;
		while (*next && strcmp(*next, ";") != 0)
			next++;
		int more = *next != NULL;
		*next = NULL;
		run(cmd, &usr1);
		if (!more)
			break;
		int sig;
		if (sigwait(&usr1, &sig) != 0)
			die("sigwait");
		cmd = next + 1;
	}
	for (;;)
		pause();
}
