/*
 * sessions: a process that reports its own session and process group.
 *   sessions leader   setsid(): it leads a session (sid = pgid = pid);
 *   sessions group    setpgid(0, 0): it leads a group of the test's session;
 *   sessions orphan   the started process calls setsid() and forks a child
 *                     that stays in its session and group; the leader then
 *                     exits: the child lives on in a session and a group
 *                     whose leader is gone;
 *   sessions orphan-group   the same, but the child leads its own group.
 * The remaining process reports {"pid","sid","pgid"} and ticks under the
 * key "ids:SID:PGID", its getsid(0) and getpgid(0) at each tick.
 */
#include "common.h"
#include <sys/wait.h>

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "leader";
	if (!strcmp(mode, "leader")) {
		if (setsid() < 0) die("setsid");
	} else if (!strcmp(mode, "group")) {
		if (setpgid(0, 0)) die("setpgid");
	} else if (!strcmp(mode, "orphan") || !strcmp(mode, "orphan-group")) {
		if (setsid() < 0) die("setsid");
		pid_t c = fork();
		if (c < 0) die("fork");
		if (c > 0)
			_exit(0);
		if (!strcmp(mode, "orphan-group") && setpgid(0, 0)) die("setpgid");
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	emit("{\"pid\":%d,\"sid\":%d,\"pgid\":%d}\n", getpid(), getsid(0), getpgid(0));
	for (unsigned long n = 1;; n++) {
		char key[64];
		snprintf(key, sizeof key, "ids:%d:%d", getsid(0), getpgid(0));
		tick(key, n);
		pace();
	}
}
