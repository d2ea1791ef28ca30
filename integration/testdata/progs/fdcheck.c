/*
 * fdcheck: fds that keep working, checked by the program itself. argv[1] is
 * a regular file (it may be empty).
 *   file:    argv[1] opened O_WRONLY|O_APPEND; "line N\n" appended on every
 *            tick, N = 1, 2, … (the test checks for gaps and repeats)
 *   pipe:    pipe2(O_NONBLOCK), "hello" written and left unread. On SIGUSR1
 *            the main loop reads the pipe, reports what it read, and writes
 *            it back.
 *   timerfd: CLOCK_MONOTONIC, 5 ms interval; it paces the main loop
 *   eventfd: written (1) by the program on every 10th timer expiry
 *   epoll:   watching the timerfd (data 0x3333) and the eventfd (data
 *            0x2222); the main loop only waits in epoll_wait
 *
 * Report: {"pid":N,"timerfd":N}
 * Ticks:  "main" per timer expiry seen through epoll; "eventfd" per eventfd
 *         readiness seen through epoll; "pipe=DATA" per SIGUSR1 (DATA is
 *         what the pipe held, or "empty"/"error").
 */
#include "common.h"
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

static volatile sig_atomic_t usr1;

static void on_usr1(int sig)
{
	(void)sig;
	usr1++;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: fdcheck FILE\n");
		return 2;
	}
	int file = open(argv[1], O_WRONLY | O_APPEND);
	if (file < 0)
		die("open file");
	int p[2];
	if (pipe2(p, O_NONBLOCK) < 0)
		die("pipe2");
	if (write(p[1], "hello", 5) != 5)
		die("write pipe");
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0)
		die("eventfd");
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	if (tfd < 0)
		die("timerfd_create");
	struct itimerspec its = {.it_interval = {0, 5000000}, .it_value = {0, 5000000}};
	if (timerfd_settime(tfd, 0, &its, NULL) < 0)
		die("timerfd_settime");
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x3333};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) < 0)
		die("epoll_ctl timerfd");
	ev.data.u64 = 0x2222;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) < 0)
		die("epoll_ctl eventfd");
	struct sigaction sa = {.sa_handler = on_usr1};
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) < 0)
		die("sigaction SIGUSR1");

	emit("{\"pid\":%d,\"timerfd\":%d}\n", getpid(), tfd);

	unsigned long n = 0, nev = 0, npipe = 0;
	sig_atomic_t seen = 0;
	for (;;) {
		struct epoll_event evs[4];
		int k = epoll_wait(ep, evs, 4, 1000);
		if (k < 0 && errno != EINTR)
			die("epoll_wait");
		for (int i = 0; i < k; i++) {
			uint64_t v;
			switch (evs[i].data.u64) {
			case 0x3333:
				if (read(tfd, &v, sizeof v) != sizeof v)
					break; /* spurious */
				n++;
				char line[64];
				int l = snprintf(line, sizeof line, "line %lu\n", n);
				if (write(file, line, l) != l)
					die("write file");
				tick("main", n);
				if (n % 10 == 0 && write(efd, &(uint64_t){1}, 8) != 8)
					die("write eventfd");
				break;
			case 0x2222:
				if (read(efd, &v, sizeof v) != sizeof v)
					break;
				tick("eventfd", ++nev);
				break;
			default:
				fprintf(stderr, "epoll: unknown data %#lx\n", (unsigned long)evs[i].data.u64);
				exit(1);
			}
		}
		if (usr1 != seen) {
			seen = usr1;
			char buf[64];
			ssize_t r = read(p[0], buf, sizeof buf - 1);
			const char *what = "error";
			if (r > 0) {
				buf[r] = 0;
				for (ssize_t j = 0; j < r; j++)
					if (buf[j] <= ' ' || buf[j] > '~')
						buf[j] = '?';
				what = buf;
			} else if (r < 0 && errno == EAGAIN) {
				what = "empty";
			}
			emit("tick pipe=%s %lu\n", what, ++npipe);
			if (r > 0 && write(p[1], buf, r) != r)
				die("write pipe back");
		}
	}
}
