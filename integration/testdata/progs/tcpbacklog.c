/*
 * tcpbacklog: a TCP server on 127.0.0.1 (an ephemeral port) whose accept
 * queue the test fills, for `lazycr dump` of a listener with connections
 * waiting to be accepted.
 *
 * Usage: tcpbacklog gate GOFILE [mptcp]  accept nothing until GOFILE exists,
 *                                        then accept and serve every
 *                                        connection (an MPTCP listener with
 *                                        mptcp)
 *        tcpbacklog loop [any|ADDR] [fork]
 *                                        accept and serve connections at once
 *                                        (with any: on 0.0.0.0, for a client
 *                                        on another host; with an IPv4
 *                                        address: on it; with fork: a child
 *                                        forked once listening accepts on
 *                                        the same socket too, a prefork
 *                                        server)
 * Serving a connection: read one line, answer "ok N\n" (N counts the
 * connections served), close.
 * Report: {"pid":N,"port":P} once listening.
 * Ticks:  "wait" each round while the gate is shut (gate), "served" per
 *         connection served.
 */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

static unsigned long served;

static void serve(int c)
{
	char buf[256];
	size_t have = 0;
	while (have < sizeof buf) {
		ssize_t n = read(c, buf + have, sizeof buf - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* a client that went away: nothing to answer */
		have += n;
		if (memchr(buf, '\n', have))
			break;
	}
	if (have > 0 && memchr(buf, '\n', have)) {
		served++;
		char out[64];
		int m = snprintf(out, sizeof out, "ok %lu\n", served);
		if (write(c, out, m) != m)
			die("write reply");
		tick("served", served);
	}
	close(c);
}

int main(int argc, char **argv)
{
	int gate = (argc == 3 || argc == 4) && strcmp(argv[1], "gate") == 0;
	int mptcp = gate && argc == 4 && strcmp(argv[3], "mptcp") == 0;
	int loop = argc >= 2 && argc <= 4 && strcmp(argv[1], "loop") == 0;
	int any = 0, forked = 0, bad = 0;
	struct in_addr at = {.s_addr = htonl(INADDR_LOOPBACK)};
	for (int i = 2; loop && i < argc; i++) {
		if (strcmp(argv[i], "any") == 0)
			any = 1;
		else if (strcmp(argv[i], "fork") == 0)
			forked = 1;
		else if (inet_pton(AF_INET, argv[i], &at) != 1)
			bad = 1;
	}
	if ((!gate && !loop) || (gate && argc == 4 && !mptcp) || bad) {
		fprintf(stderr, "usage: tcpbacklog gate GOFILE [mptcp] | tcpbacklog loop [any|ADDR] [fork]\n");
		return 2;
	}
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, mptcp ? 262 /* IPPROTO_MPTCP */ : 0);
	if (l < 0)
		die("socket");
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = any ? htonl(INADDR_ANY) : at.s_addr};
	socklen_t al = sizeof a;
	if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 64) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &al) < 0)
		die("listen");
	if (forked) {
		pid_t k = fork();
		if (k < 0)
			die("fork");
		if (k > 0)
			emit("{\"pid\":%d,\"port\":%d,\"child\":%d}\n", getpid(), ntohs(a.sin_port), k);
	} else {
		emit("{\"pid\":%d,\"port\":%d}\n", getpid(), ntohs(a.sin_port));
	}
	if (gate) {
		struct stat st;
		for (unsigned long n = 1; stat(argv[2], &st) < 0; n++) {
			tick("wait", n);
			pace();
		}
	}
	for (;;) {
		int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0 && errno == EINTR)
			continue;
		if (c < 0)
			die("accept");
		serve(c);
	}
}
