/*
 * udp_unbound: UDP sockets made but never bound or used (a metrics client
 * before its first datagram): an IPv4 one as made, an IPv4 one shut down
 * for reading and an IPv6 one shut down both ways (shutdown(2) answers
 * ENOTCONN on an unconnected socket but records the shutdown). Every round
 * it checks that each is still unbound (getsockname port 0) and polls as
 * it did at the start (EPOLLRDHUP for a read shutdown, EPOLLHUP for both).
 *
 * Report: {"pid":N}. Ticks: "ok". A failed check writes "FAIL ..." to
 * stderr and exits 1.
 */
#define _GNU_SOURCE
#include "common.h"
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int fds[3];
static short want[3];
static const char *names[3] = {"fresh ipv4", "ipv4 shut down for reading", "ipv6 shut down both ways"};

static short events(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT | POLLRDHUP};
	if (poll(&p, 1, 0) < 0)
		die("poll");
	return p.revents;
}

static int port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t n = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &n))
		die("getsockname");
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void check(void)
{
	for (int i = 0; i < 3; i++) {
		if (port(fds[i]) != 0)
			failf("%s socket has port %d, want none", names[i], port(fds[i]));
		short got = events(fds[i]);
		if (got != want[i])
			failf("%s socket polls %#x, want %#x", names[i], got, want[i]);
	}
}

int main(void)
{
	fds[0] = socket(AF_INET, SOCK_DGRAM, 0);
	fds[1] = socket(AF_INET, SOCK_DGRAM, 0);
	fds[2] = socket(AF_INET6, SOCK_DGRAM, 0);
	if (fds[0] < 0 || fds[1] < 0 || fds[2] < 0)
		die("socket");
	if (shutdown(fds[1], SHUT_RD) == 0 || errno != ENOTCONN)
		die("shutdown SHUT_RD of an unconnected socket did not answer ENOTCONN");
	if (shutdown(fds[2], SHUT_RDWR) == 0 || errno != ENOTCONN)
		die("shutdown SHUT_RDWR of an unconnected socket did not answer ENOTCONN");
	for (int i = 0; i < 3; i++)
		want[i] = events(fds[i]);
	if (!(want[1] & POLLRDHUP) || (want[1] & POLLHUP) || !(want[2] & POLLHUP) || (want[0] & (POLLRDHUP | POLLHUP)))
		failf("unexpected poll events at the start: %#x %#x %#x", want[0], want[1], want[2]);
	check_forever(check);
}
