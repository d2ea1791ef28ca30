/*
 * qa3_mqueue: a process holding a POSIX message queue (mq_open(3)) with 3
 * messages queued; argv[1] is the queue's name ("/NAME"). It keeps checking
 * that the 3 messages are still there. "qa3_mqueue -u /NAME" removes the
 * queue (mq_unlink(3)), for the test's cleanup.
 *
 * Report: {"pid":N}. Ticks: "ok". A failed check writes "FAIL ..." to
 * stderr and exits 1.
 */
#include "common.h"
#include <fcntl.h>
#include <mqueue.h>

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "-u"))
		return mq_unlink(argv[2]) ? 1 : 0;
	if (argc < 2) {
		fprintf(stderr, "usage: qa3_mqueue /NAME | -u /NAME\n");
		return 2;
	}
	struct mq_attr a = {.mq_maxmsg = 10, .mq_msgsize = 64};
	mqd_t q = mq_open(argv[1], O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &a);
	if (q < 0)
		die("mq_open");
	for (unsigned i = 0; i < 3; i++) {
		char m[16];
		int n = snprintf(m, sizeof m, "msg%u", i);
		if (mq_send(q, m, n + 1, i))
			die("mq_send");
	}
	emit("{\"pid\":%d}\n", getpid());
	for (unsigned long n = 1;; n++) {
		struct mq_attr g;
		if (mq_getattr(q, &g) || g.mq_curmsgs != 3) {
			fprintf(stderr, "FAIL %ld messages queued, want 3\n", (long)g.mq_curmsgs);
			exit(1);
		}
		tick("ok", n);
		pace();
	}
}
