/*
 * tcpecho: one TCP connection over the loopback, echoed byte for byte.
 *   tcpecho 4|6 server          listen on 127.0.0.1 / ::1, port 0; accept one
 *                               connection and echo it
 *   tcpecho 4|6 server-lowfd    the same, but the connection moves to fd 3
 *                               and the listener (no SO_REUSEADDR) above it
 *   tcpecho 6 server-dual       the same on [::]:0, dual-stack: an IPv4 peer
 *                               is seen as ::ffff:127.0.0.1
 *   tcpecho 4 server-any        the same on 0.0.0.0:0 (a peer on another host)
 *   tcpecho 4|6 client PORT     connect to the loopback PORT and echo
 *   tcpecho 4|6 bpf PORT        client with a classic BPF socket filter
 *                               (accept all) attached to its connection
 *   tcpecho 4 syn LPORT PORT    bind 127.0.0.1:LPORT, connect without
 *                               waiting to 127.0.0.1:PORT, then only sleep
 *
 * Report: {"pid":N,"port":N}: the server's listening port, or the client's
 * local port. Then "tick conn 1" once connected (not for syn), and "tick
 * echo N" every 64 reads. Reads and writes block, so the process is
 * mostly frozen inside read(2) or write(2).
 */
#include "common.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int v6;

static socklen_t loopback(struct sockaddr_storage *ss, int port)
{
	memset(ss, 0, sizeof *ss);
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		a->sin6_addr = in6addr_loopback;
		return sizeof *a;
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;
	a->sin_family = AF_INET;
	a->sin_port = htons(port);
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sizeof *a;
}

static int port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &l) < 0)
		die("getsockname");
	return ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
}

static void echo(int c)
{
	static char buf[16384];
	tick("conn", 1);
	for (unsigned long reads = 1;; reads++) {
		ssize_t r = read(c, buf, sizeof buf);
		if (r == 0)
			exit(0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			die("read");
		}
		for (ssize_t off = 0; off < r;) {
			ssize_t w = write(c, buf + off, r - off);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				die("write");
			}
			off += w;
		}
		if (reads % 64 == 0)
			tick("echo", reads / 64);
	}
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: tcpecho 4|6 server|client|bpf|syn [LPORT] [PORT]\n");
		return 2;
	}
	v6 = argv[1][0] == '6';
	const char *mode = argv[2];
	struct sockaddr_storage ss;
	int s = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
	if (s < 0)
		die("socket");
	if (!strncmp(mode, "server", 6)) {
		socklen_t l = loopback(&ss, 0);
		if (!strcmp(mode, "server-dual"))
			((struct sockaddr_in6 *)&ss)->sin6_addr = in6addr_any;
		if (!strcmp(mode, "server-any"))
			((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_ANY);
		if (bind(s, (struct sockaddr *)&ss, l) < 0)
			die("bind");
		if (listen(s, 8) < 0)
			die("listen");
		emit("{\"pid\":%d,\"port\":%d}\n", getpid(), port_of(s));
		int c;
		while ((c = accept(s, NULL, NULL)) < 0)
			if (errno != EINTR)
				die("accept");
		if (!strcmp(mode, "server-lowfd")) {
			if (dup2(s, 10) < 0 || dup2(c, 3) < 0 || close(c) < 0)
				die("dup2");
			c = 3;
		}
		echo(c);
	}
	if (!strcmp(mode, "syn")) {
		if (argc != 5) {
			fprintf(stderr, "usage: tcpecho 4 syn LPORT PORT\n");
			return 2;
		}
		socklen_t l = loopback(&ss, atoi(argv[3]));
		if (bind(s, (struct sockaddr *)&ss, l) < 0)
			die("bind");
		l = loopback(&ss, atoi(argv[4]));
		if (fcntl(s, F_SETFL, O_NONBLOCK) < 0)
			die("fcntl");
		if (connect(s, (struct sockaddr *)&ss, l) == 0 || errno != EINPROGRESS)
			die("connect");
		emit("{\"pid\":%d,\"port\":%d}\n", getpid(), port_of(s));
		for (;;)
			pause();
	}
	if (argc != 4) {
		fprintf(stderr, "usage: tcpecho 4|6 client|bpf PORT\n");
		return 2;
	}
	socklen_t l = loopback(&ss, atoi(argv[3]));
	while (connect(s, (struct sockaddr *)&ss, l) < 0)
		if (errno != EINTR)
			die("connect");
	if (!strcmp(mode, "bpf")) {
		struct sock_filter code[] = {BPF_STMT(BPF_RET | BPF_K, 0xffffffff)};
		struct sock_fprog prog = {.len = 1, .filter = code};
		if (setsockopt(s, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0)
			die("SO_ATTACH_FILTER");
	}
	emit("{\"pid\":%d,\"port\":%d}\n", getpid(), port_of(s));
	echo(s);
}
