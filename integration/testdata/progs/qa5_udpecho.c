/*
 * qa5_udpecho: a UDP server bound to 127.0.0.1 on an ephemeral port. It
 * answers each datagram with "n=N pid=P": N counts the datagrams it has
 * read, P is getpid() (the kernel's answer, so a restored process with a
 * new pid says so).
 *
 * Report: {"pid":N,"port":P}.
 */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

int main(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		die("socket");
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(s, (struct sockaddr *)&a, sizeof a))
		die("bind");
	socklen_t al = sizeof a;
	if (getsockname(s, (struct sockaddr *)&a, &al))
		die("getsockname");
	emit("{\"pid\":%d,\"port\":%d}\n", getpid(), ntohs(a.sin_port));
	for (unsigned long n = 1;; n++) {
		char buf[64], out[64];
		struct sockaddr_in from;
		socklen_t fl = sizeof from;
		if (recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl) < 0) {
			if (errno == EINTR) {
				n--;
				continue;
			}
			die("recvfrom");
		}
		int k = snprintf(out, sizeof out, "n=%lu pid=%d", n, getpid());
		if (sendto(s, out, k, 0, (struct sockaddr *)&from, fl) < 0)
			die("sendto");
	}
}
