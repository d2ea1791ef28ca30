/*
 * eintr: threads blocked, for good, in the calls that fail with EINTR
 * after a stop even without a signal handler (signal(7), "Interruption of
 * system calls and library functions by stop signals"): epoll_wait,
 * epoll_pwait, sigwaitinfo, sigtimedwait, and accept, recv and read on
 * sockets with a receive timeout (SO_RCVTIMEO, an hour). Nothing ever
 * wakes them, so none may return: the main thread checks every round that
 * none did (a dump's freeze made them fail EINTR).
 *
 * Report: {"pid":N}. Ticks: "ok". A returned call writes "FAIL ..." to
 * stderr and exits 1.
 */
#include "common.h"
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>

enum { T_EPOLL, T_EPOLL_P, T_SIGWAIT, T_SIGTIMED, T_ACCEPT, T_RECV, T_READ, T_N };
static const char *names[T_N] = {"epoll_wait", "epoll_pwait", "sigwaitinfo", "sigtimedwait", "accept", "recv", "read"};
static volatile int returned[T_N], errnos[T_N];
static int ep, lsock, usock, usock2;

static int timed(int fd)
{
	struct timeval tv = {.tv_sec = 3600};
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv))
		die("SO_RCVTIMEO");
	return fd;
}

static void *blocker(void *arg)
{
	long i = (long)arg;
	struct epoll_event ev;
	sigset_t m;
	siginfo_t si;
	char b[8];
	struct timespec hour = {.tv_sec = 3600};
	sigemptyset(&m);
	sigaddset(&m, SIGRTMIN + 3);
	long r = 0;
	switch (i) {
	case T_EPOLL: r = epoll_wait(ep, &ev, 1, -1); break;
	case T_EPOLL_P: r = epoll_pwait(ep, &ev, 1, -1, NULL); break;
	case T_SIGWAIT: r = sigwaitinfo(&m, &si); break;
	case T_SIGTIMED: r = sigtimedwait(&m, &si, &hour); break;
	case T_ACCEPT: r = accept(lsock, NULL, NULL); break;
	case T_RECV: r = recv(usock, b, sizeof b, 0); break;
	case T_READ: r = read(usock2, b, sizeof b); break;
	}
	errnos[i] = r < 0 ? errno : 0;
	returned[i] = 1;
	return NULL;
}

static void check(void)
{
	for (int i = 0; i < T_N; i++)
		if (returned[i])
			failf("%s returned (%s) though nothing woke it", names[i], errnos[i] ? strerror(errnos[i]) : "no error");
}

int main(void)
{
	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGRTMIN + 3);
	pthread_sigmask(SIG_BLOCK, &m, NULL); /* inherited: waited for, never sent */
	ep = epoll_create1(EPOLL_CLOEXEC);
	int p[2];
	if (ep < 0 || pipe(p))
		die("epoll/pipe");
	struct epoll_event ev = {.events = EPOLLIN};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev))
		die("epoll_ctl");
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	lsock = timed(socket(AF_INET, SOCK_STREAM, 0));
	if (bind(lsock, (struct sockaddr *)&a, sizeof a) || listen(lsock, 4))
		die("listen");
	usock = timed(socket(AF_INET, SOCK_DGRAM, 0));
	usock2 = timed(socket(AF_INET, SOCK_DGRAM, 0));
	if (bind(usock, (struct sockaddr *)&a, sizeof a) || bind(usock2, (struct sockaddr *)&a, sizeof a))
		die("bind udp");
	for (long i = 0; i < T_N; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, blocker, (void *)i))
			die("pthread_create");
	}
	check_forever(check);
}
