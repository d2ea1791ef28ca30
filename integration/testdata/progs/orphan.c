/*
 * orphan: a child subreaper (prctl PR_SET_CHILD_SUBREAPER) whose child
 * forks a grandchild and exits: the grandchild is re-parented to this
 * process, which reaps the exited child. The orphan runs a second thread.
 *
 * Report: {"pid","orphan"} once the orphan has been re-parented.
 * Ticks:  "root"; "orphan:ok" while the orphan's getppid() is the root
 *         ("orphan:bad" otherwise) from its main thread, "orphan:thread"
 *         from its second thread.
 */
#include "common.h"
#include <fcntl.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static void *second(void *arg)
{
	(void)arg;
	for (unsigned long n = 1;; n++) {
		tick("orphan:thread", n);
		pace();
	}
	return NULL;
}

int main(void)
{
	pid_t root = getpid();
	if (prctl(PR_SET_CHILD_SUBREAPER, 1)) die("prctl");
	int go[2];
	if (pipe2(go, O_CLOEXEC)) die("pipe");
	pid_t mid = fork();
	if (mid < 0) die("fork");
	if (mid == 0) {
		pid_t o = fork();
		if (o < 0) die("fork");
		if (o == 0) {
			close(go[1]);
			while (getppid() != root)
				pace();
			char c;
			if (read(go[0], &c, 1) < 0) die("read");
			pthread_t th;
			if (pthread_create(&th, NULL, second, NULL)) die("pthread_create");
			for (unsigned long n = 1;; n++) {
				tick(getppid() == root ? "orphan:ok" : "orphan:bad", n);
				pace();
			}
		}
		_exit(0);
	}
	close(go[0]);
	if (waitpid(mid, NULL, 0) != mid) die("waitpid");
	/* The orphan is the one child left. */
	pid_t orphan = 0;
	char path[64], buf[64];
	snprintf(path, sizeof path, "/proc/%d/task/%d/children", root, root);
	while (!orphan) {
		FILE *f = fopen(path, "r");
		if (!f) die("fopen children");
		if (fgets(buf, sizeof buf, f))
			orphan = atoi(buf);
		fclose(f);
		if (!orphan)
			pace();
	}
	emit("{\"pid\":%d,\"orphan\":%d}\n", root, orphan);
	close(go[1]);
	for (unsigned long n = 1;; n++) {
		tick("root", n);
		pace();
	}
}
