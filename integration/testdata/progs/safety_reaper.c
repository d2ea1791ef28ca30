/*
 * safety_reaper: runs argv[1..] as its child with PR_SET_CHILD_SUBREAPER set,
 * so that processes orphaned under it (a half-built process whose stub was
 * killed) are re-parented to it rather than to a slow PID 1, and reaps every
 * descendant until none is left. It exits with the child's exit status
 * (128+signal if it was killed). Writes nothing of its own.
 */
#include "common.h"
#include <sys/prctl.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: safety_reaper PROGRAM [ARG...]\n");
		return 2;
	}
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		die("PR_SET_CHILD_SUBREAPER");
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		execv(argv[1], argv + 1);
		die("execv");
	}
	int code = 1;
	for (;;) {
		int st;
		pid_t w = waitpid(-1, &st, 0);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECHILD)
				return code;
			die("waitpid");
		}
		if (w == c)
			code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	}
}
