/*
 * fanotify: holds a fanotify fd (a kind lazycr dump refuses) marking /tmp.
 *
 * Report: {"pid":N,"fanotify":N}
 * Ticks:  "main".
 */
#include "common.h"
#include <fcntl.h>
#include <sys/fanotify.h>

int main(void)
{
	int fd = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY);
	if (fd < 0)
		die("fanotify_init");
	if (fanotify_mark(fd, FAN_MARK_ADD, FAN_CLOSE_WRITE, AT_FDCWD, "/tmp") < 0)
		die("fanotify_mark /tmp");
	emit("{\"pid\":%d,\"fanotify\":%d}\n", getpid(), fd);
	for (unsigned long n = 1;; n++) {
		tick("main", n);
		pace();
	}
}
