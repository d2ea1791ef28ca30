/*
 * udpecho: UDP both ways. argv[1] is the port of a peer socket on 127.0.0.1
 * that the test owns.
 *   conn:  connected to 127.0.0.1:<peer>; sends "ping N" on every tick
 *   bound: bound to 127.0.0.1:0; every datagram it receives is answered to
 *          its sender with "echo " + the datagram
 *
 * Report: {"pid":N,"conn_port":N,"bound_port":N}
 * Ticks:  "main", and "echo" = datagrams answered so far.
 */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int port_of(int fd)
{
	struct sockaddr_in a;
	socklen_t l = sizeof a;
	if (getsockname(fd, (struct sockaddr *)&a, &l) < 0)
		die("getsockname");
	return ntohs(a.sin_port);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: udpecho PEER_PORT\n");
		return 2;
	}
	int conn = socket(AF_INET, SOCK_DGRAM, 0);
	if (conn < 0)
		die("socket");
	struct sockaddr_in p = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (connect(conn, (struct sockaddr *)&p, sizeof p) < 0)
		die("connect");
	int bound = socket(AF_INET, SOCK_DGRAM, 0);
	if (bound < 0)
		die("socket");
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(bound, (struct sockaddr *)&a, sizeof a) < 0)
		die("bind 127.0.0.1:0");

	emit("{\"pid\":%d,\"conn_port\":%d,\"bound_port\":%d}\n", getpid(), port_of(conn), port_of(bound));

	unsigned long echoes = 0;
	for (unsigned long n = 1;; n++) {
		char msg[64];
		int l = snprintf(msg, sizeof msg, "ping %lu", n);
		send(conn, msg, l, MSG_DONTWAIT); /* a full peer queue drops it: fine */
		for (;;) {
			char in[512], out[600];
			struct sockaddr_in from;
			socklen_t fl = sizeof from;
			ssize_t r = recvfrom(bound, in, sizeof in, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
			if (r < 0)
				break;
			int ol = snprintf(out, sizeof out, "echo %.*s", (int)r, in);
			if (sendto(bound, out, ol, MSG_DONTWAIT, (struct sockaddr *)&from, fl) == ol)
				tick("echo", ++echoes);
		}
		tick("main", n);
		pace();
	}
}
