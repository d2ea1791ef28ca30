/*
 * udpaddrecho: a UDP server bound to ADDR (an IPv4 address) on an
 * ephemeral port: it sends every datagram it reads back to its sender
 * (a reply that cannot be sent is dropped, as UDP may).
 *
 * Usage:  udpaddrecho ADDR
 * Report: {"pid":N,"port":P} once bound.
 */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	if (argc != 2 || inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) {
		fprintf(stderr, "usage: udpaddrecho ADDR\n");
		return 2;
	}
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		die("socket");
	socklen_t al = sizeof a;
	if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(s, (struct sockaddr *)&a, &al) < 0)
		die("bind");
	emit("{\"pid\":%d,\"port\":%d}\n", getpid(), ntohs(a.sin_port));
	for (;;) {
		char buf[512];
		struct sockaddr_in from;
		socklen_t fl = sizeof from;
		ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("recvfrom");
		/* A reply that cannot go is a lost datagram: UDP. */
		(void)sendto(s, buf, n, 0, (struct sockaddr *)&from, fl);
	}
}
