/*
 * qa5_listen: a TCP listener on 127.0.0.1 (an ephemeral port) made with
 * listen(fd, 7), a deliberately short backlog, and the "reno" congestion
 * control (TCP_CONGESTION), which the connections it accepts inherit; it
 * never accepts. Every round it checks that the listener still uses reno.
 *
 * Report: {"pid":N}. Ticks: "ok". A failed check writes "FAIL ..." to
 * stderr and exits 1.
 */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int s;

static void check(void)
{
	char cc[16] = {0};
	socklen_t l = sizeof cc;
	if (getsockopt(s, IPPROTO_TCP, TCP_CONGESTION, cc, &l))
		die("getsockopt TCP_CONGESTION");
	if (strcmp(cc, "reno"))
		failf("TCP_CONGESTION %s, want reno", cc);
}

int main(void)
{
	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		die("socket");
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(s, (struct sockaddr *)&a, sizeof a))
		die("bind");
	if (setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "reno", 4))
		die("setsockopt TCP_CONGESTION");
	if (listen(s, 7))
		die("listen");
	check_forever(check);
}
