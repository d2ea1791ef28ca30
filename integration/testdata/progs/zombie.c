/*
 * zombie: forks a child that exits at once and never reaps it, so the child
 * stays a zombie while this process runs.
 *
 * Report: {"pid":N,"child":N}
 * Ticks:  "main".
 */
#include "common.h"

int main(void)
{
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0)
		_exit(0);
	emit("{\"pid\":%d,\"child\":%d}\n", getpid(), c);
	for (unsigned long n = 1;; n++) {
		tick("main", n);
		pace();
	}
}
