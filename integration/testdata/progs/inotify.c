/*
 * inotify: holds an inotify fd (a kind lazycr dump refuses) watching /tmp.
 *
 * Report: {"pid":N,"inotify":N}
 * Ticks:  "main".
 */
#include "common.h"
#include <sys/inotify.h>

int main(void)
{
	int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (fd < 0)
		die("inotify_init1");
	if (inotify_add_watch(fd, "/tmp", IN_CREATE) < 0)
		die("inotify_add_watch /tmp");
	emit("{\"pid\":%d,\"inotify\":%d}\n", getpid(), fd);
	for (unsigned long n = 1;; n++) {
		tick("main", n);
		pace();
	}
}
