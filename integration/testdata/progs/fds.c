/*
 * fds: one fd of each kind the dump understands. argv[1] is an existing
 * regular file of at least 42 bytes.
 *   file:    argv[1] opened O_RDWR|O_APPEND, lseek to 42
 *   devnull: /dev/null O_RDONLY|O_CLOEXEC
 *   pipe:    pipe2(0), both ends kept, "hello" written and never read
 *   eventfd: eventfd(5, EFD_CLOEXEC|EFD_NONBLOCK), never read
 *   epoll:   epoll_create1(0) watching the pipe read end (EPOLLIN, data
 *            0x1111) and the eventfd (EPOLLIN|EPOLLOUT, data 0x2222)
 *   timerfd: CLOCK_MONOTONIC, 10 s value and 10 s interval
 *
 * Report: {"pid":N,"file":N,"file_pos":42,"devnull":N,"pipe_r":N,"pipe_w":N,
 *          "eventfd":N,"epoll":N,"timerfd":N}
 * Ticks:  "main".
 */
#include "common.h"
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: fds FILE\n");
		return 2;
	}
	int file = open(argv[1], O_RDWR | O_APPEND);
	if (file < 0)
		die("open file");
	if (lseek(file, 42, SEEK_SET) != 42)
		die("lseek");
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0)
		die("open /dev/null");
	int p[2];
	if (pipe2(p, 0) < 0)
		die("pipe2");
	if (write(p[1], "hello", 5) != 5)
		die("write pipe");
	int efd = eventfd(5, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0)
		die("eventfd");
	int ep = epoll_create1(0);
	if (ep < 0)
		die("epoll_create1");
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x1111};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) < 0)
		die("epoll_ctl pipe");
	ev.events = EPOLLIN | EPOLLOUT;
	ev.data.u64 = 0x2222;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) < 0)
		die("epoll_ctl eventfd");
	int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
	if (tfd < 0)
		die("timerfd_create");
	struct itimerspec its = {.it_interval = {10, 0}, .it_value = {10, 0}};
	if (timerfd_settime(tfd, 0, &its, NULL) < 0)
		die("timerfd_settime");

	emit("{\"pid\":%d,\"file\":%d,\"file_pos\":42,\"devnull\":%d,\"pipe_r\":%d,\"pipe_w\":%d,"
	     "\"eventfd\":%d,\"epoll\":%d,\"timerfd\":%d}\n",
	     getpid(), file, devnull, p[0], p[1], efd, ep, tfd);

	for (unsigned long n = 1;; n++) {
		tick("main", n);
		pace();
	}
}
