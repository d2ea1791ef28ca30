/*
 * ptmx: holds a pseudo-terminal master (a kind lazycr dump refuses:
 * reopening /dev/ptmx would make another pty).
 *
 * Report: {"pid":N,"ptmx":N}
 * Ticks:  "main".
 */
#include "common.h"
#include <fcntl.h>
#include <stdlib.h>

int main(void)
{
	int fd = posix_openpt(O_RDWR | O_NOCTTY);
	if (fd < 0)
		die("posix_openpt");
	emit("{\"pid\":%d,\"ptmx\":%d}\n", getpid(), fd);
	for (unsigned long n = 1;; n++) {
		tick("main", n);
		pace();
	}
}
