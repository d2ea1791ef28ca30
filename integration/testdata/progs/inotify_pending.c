/*
 * inotify_pending: an inotify instance that holds one unread event for a
 * while, then reads it and stays quiet — the passing state `lazycr dump`
 * refuses on a single try (events cannot be queued again) and gets past by
 * freezing again a moment later.
 *
 * Usage: inotify_pending DIR
 * Report: {"pid":N} once the event is queued (not yet read).
 * Ticks:  "read" once the queued event was read; then "quiet" each round in
 *         which the instance (after restore too) holds no event and still
 *         reports a new file created in DIR.
 */
#include "common.h"
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <fcntl.h>

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: inotify_pending DIR\n");
		return 2;
	}
	int in = inotify_init1(IN_NONBLOCK);
	if (in < 0 || inotify_add_watch(in, argv[1], IN_CREATE) < 0)
		die("inotify");
	char path[4096], buf[4096];
	snprintf(path, sizeof path, "%s/first", argv[1]);
	int fd = open(path, O_WRONLY | O_CREAT, 0600);
	if (fd < 0)
		die("create first");
	close(fd);
	emit("{\"pid\":%d}\n", getpid());
	/* The event stays unread for 60 ms: a dump started now sees it. */
	struct timespec ts = {0, 60 * 1000 * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	if (read(in, buf, sizeof buf) <= 0)
		die("read the first event");
	tick("read", 1);
	for (unsigned long n = 1;; n++) {
		for (int i = 0; i < 40; i++)
			pace();
		int queued = -1;
		if (ioctl(in, FIONREAD, &queued) < 0 || queued != 0) {
			fprintf(stderr, "quiet: %d bytes queued\n", queued);
			return 1;
		}
		snprintf(path, sizeof path, "%s/n%lu", argv[1], n);
		fd = open(path, O_WRONLY | O_CREAT, 0600);
		if (fd < 0)
			die("create");
		close(fd);
		ssize_t got = read(in, buf, sizeof buf);
		if (got <= 0) {
			fprintf(stderr, "quiet: no event for %s\n", path);
			return 1;
		}
		tick("quiet", n);
	}
}
