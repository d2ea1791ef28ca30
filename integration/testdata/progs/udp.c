/*
 * udp: UDP sockets. argv[1] is the port of a peer socket on 127.0.0.1 that
 * the test owns.
 *   bound:     AF_INET,  SO_REUSEADDR, bound to 127.0.0.1:0 (port reported)
 *   connected: AF_INET,  SO_SNDBUF set, connected to 127.0.0.1:<peer>;
 *              sends "ping N" to the peer on every tick
 *   v6:        AF_INET6, IPV6_V6ONLY, bound to [::1]:0 (fd -1 if ::1 is
 *              unavailable)
 *
 * Report: {"pid":N,"bound":{...},"connected":{...},"v6":{...}} where each
 *   socket is {"fd":N,"port":N,"peer_port":N,"sndbuf":N,"rcvbuf":N,
 *   "reuseaddr":B} with values read back with getsockname/getsockopt.
 * Ticks:  "main".
 */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int getint(int fd, int level, int opt)
{
	int v = 0;
	socklen_t l = sizeof v;
	if (getsockopt(fd, level, opt, &v, &l) < 0)
		die("getsockopt");
	return v;
}

static char *describe(int fd, int peer_port, char *buf, size_t n)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof ss;
	int port = 0;
	if (fd >= 0) {
		if (getsockname(fd, (struct sockaddr *)&ss, &l) < 0)
			die("getsockname");
		port = ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
					       : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		snprintf(buf, n, "{\"fd\":%d,\"port\":%d,\"peer_port\":%d,\"sndbuf\":%d,\"rcvbuf\":%d,\"reuseaddr\":%s}",
			 fd, port, peer_port, getint(fd, SOL_SOCKET, SO_SNDBUF), getint(fd, SOL_SOCKET, SO_RCVBUF),
			 getint(fd, SOL_SOCKET, SO_REUSEADDR) ? "true" : "false");
	} else {
		snprintf(buf, n, "{\"fd\":-1}");
	}
	return buf;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: udp PEER_PORT\n");
		return 2;
	}
	int peer_port = atoi(argv[1]);
	int one = 1;

	int bound = socket(AF_INET, SOCK_DGRAM, 0);
	if (bound < 0)
		die("socket");
	if (setsockopt(bound, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
		die("setsockopt SO_REUSEADDR");
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(bound, (struct sockaddr *)&a, sizeof a) < 0)
		die("bind 127.0.0.1:0");

	int conn = socket(AF_INET, SOCK_DGRAM, 0);
	if (conn < 0)
		die("socket");
	int sndbuf = 65536;
	if (setsockopt(conn, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) < 0)
		die("setsockopt SO_SNDBUF");
	struct sockaddr_in p = {.sin_family = AF_INET, .sin_port = htons(peer_port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (connect(conn, (struct sockaddr *)&p, sizeof p) < 0)
		die("connect");

	int v6 = socket(AF_INET6, SOCK_DGRAM, 0);
	if (v6 >= 0) {
		struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
		if (setsockopt(v6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
			die("setsockopt IPV6_V6ONLY");
		if (bind(v6, (struct sockaddr *)&a6, sizeof a6) < 0) {
			close(v6);
			v6 = -1;
		}
	}

	char b1[256], b2[256], b3[256];
	emit("{\"pid\":%d,\"bound\":%s,\"connected\":%s,\"v6\":%s}\n", getpid(),
	     describe(bound, 0, b1, sizeof b1), describe(conn, peer_port, b2, sizeof b2),
	     describe(v6, 0, b3, sizeof b3));

	for (unsigned long n = 1;; n++) {
		char msg[64];
		int l = snprintf(msg, sizeof msg, "ping %lu", n);
		send(conn, msg, l, MSG_DONTWAIT); /* a full peer queue drops it: fine */
		tick("main", n);
		pace();
	}
}
