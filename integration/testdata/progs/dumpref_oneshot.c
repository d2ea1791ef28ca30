/*
 * dumpref_oneshot: an epoll instance with N eventfds registered
 * EPOLLIN | EPOLLONESHOT, each readable and each fired once by
 * epoll_wait(2), so every entry is disarmed (epoll(7)). A restore
 * re-creates a disarmed entry by making it fire again, a bounded number
 * per epoll fd: past that the dump must refuse, while the process runs on.
 *
 * Usage: dumpref_oneshot N
 * Report: {"pid":N,"epfd":E}. Ticks: "ok" while no entry fires again
 * (a disarmed entry reports nothing; one that does is a FAIL).
 */
#include "common.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>

static int epfd;

static void check(void)
{
	struct epoll_event ev[8];
	int n = epoll_wait(epfd, ev, 8, 0);
	if (n < 0)
		die("epoll_wait");
	if (n > 0)
		failf("%d disarmed EPOLLONESHOT entries fired again (fd %d first)", n, (int)ev[0].data.fd);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 171;
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1");
	for (int i = 0; i < n; i++) {
		int fd = eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
		if (fd < 0)
			die("eventfd");
		struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.fd = fd};
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev))
			die("epoll_ctl");
	}
	for (int fired = 0; fired < n;) {
		struct epoll_event ev[64];
		int got = epoll_wait(epfd, ev, 64, 1000);
		if (got <= 0)
			die("epoll_wait");
		fired += got;
	}
	emit("{\"pid\":%d,\"epfd\":%d}\n", getpid(), epfd);
	for (unsigned long i = 1;; i++) {
		check();
		tick("ok", i);
		pace();
	}
}
