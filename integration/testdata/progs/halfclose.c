/*
 * halfclose: TCP connections held half-closed across a dump, checked by
 * the program itself after the restore.
 *
 *   halfclose 4|6 PORT GOFILE     connect twice to the test's listener on
 *                                 the loopback PORT
 *   halfclose 4 server GOFILE     listen on 0.0.0.0:0 and accept two
 *                                 connections from the test (on another
 *                                 host)
 *
 * The two connections with the test, in order:
 *   cw  the test writes "cw-in" and shuts its side down: CLOSE_WAIT here,
 *       with "cw-in" unread before the end of stream;
 *   fw  this end writes "fw-out" and shuts down its side: FIN_WAIT2, still
 *       receiving from the test;
 * and makes one connection to itself through a listener of its own:
 *   a   writes "a-out" and shuts down its side (FIN_WAIT2);
 *   b   its peer (CLOSE_WAIT, "a-out" unread before the end of stream).
 *
 * Report: {"pid":N,"port":N} (the listener's port), then "tick ready 1"
 * once the four sockets are in those states with their bytes queued. It
 * then waits (polling, touching no socket) until GOFILE exists, and checks:
 *   cw  reads "cw-in", then EOF; writes "cw-back" and shuts down ("tick cw 1");
 *   fw  reads "fw-in" (the test sends it after the restore), then EOF; a
 *       write fails EPIPE ("tick fw 1");
 *   b   reads "a-out", then EOF; writes "b-back" and shuts down;
 *   a   reads "b-back", then EOF ("tick pair 1");
 *   two TCP sockets made before the dump and never connected, one of them
 *   bound to the loopback, connect to the listener and exchange a byte
 *   ("tick fresh 1");
 * then "tick done 1" and exits 0. Any other outcome is reported on stderr
 * and exits 1.
 */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

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

static int dial(int port)
{
	struct sockaddr_storage ss;
	socklen_t l = loopback(&ss, port);
	int s = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
	if (s < 0)
		die("socket");
	while (connect(s, (struct sockaddr *)&ss, l) < 0)
		if (errno != EINTR)
			die("connect");
	return s;
}

static int take(int ls)
{
	int c;
	while ((c = accept(ls, NULL, NULL)) < 0)
		if (errno != EINTR)
			die("accept");
	return c;
}

static void send_all(int fd, const char *s)
{
	size_t n = strlen(s);
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			die("write");
		}
		s += w;
		n -= w;
	}
}

static void fail(const char *what, const char *got)
{
	fprintf(stderr, "%s: %s\n", what, got);
	exit(1);
}

/* expect reads exactly want from fd, then the end of stream. */
static void expect(int fd, const char *name, const char *want)
{
	char buf[64];
	size_t n = strlen(want), got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fprintf(stderr, "%s: read after %zu bytes: %s\n", name, got, strerror(errno));
			exit(1);
		}
		if (r == 0) {
			buf[got] = 0;
			fprintf(stderr, "%s: EOF after \"%s\", want \"%s\"\n", name, buf, want);
			exit(1);
		}
		got += r;
	}
	if (memcmp(buf, want, n)) {
		buf[n] = 0;
		fprintf(stderr, "%s: read \"%s\", want \"%s\"\n", name, buf, want);
		exit(1);
	}
	ssize_t r;
	while ((r = read(fd, buf, sizeof buf)) < 0 && errno == EINTR)
		;
	if (r != 0) {
		fprintf(stderr, "%s: after \"%s\": %zd (%s), want EOF\n", name, want, r, r < 0 ? strerror(errno) : "bytes");
		exit(1);
	}
}

static int state_of(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof ti;
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0)
		die("TCP_INFO");
	return ti.tcpi_state;
}

static int inq(int fd)
{
	int n;
	if (ioctl(fd, FIONREAD, &n) < 0)
		die("FIONREAD");
	return n;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: halfclose 4|6 PORT|server GOFILE\n");
		return 2;
	}
	v6 = argv[1][0] == '6';
	int server = !strcmp(argv[2], "server");
	if (server && v6) {
		fprintf(stderr, "halfclose: server mode is IPv4 only\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	int cw = -1, fw = -1;
	if (!server) {
		cw = dial(atoi(argv[2]));
		fw = dial(atoi(argv[2]));
	}

	struct sockaddr_storage ss;
	socklen_t l = loopback(&ss, 0);
	if (server)
		((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_ANY);
	int ls = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
	if (ls < 0 || bind(ls, (struct sockaddr *)&ss, l) < 0 || listen(ls, 4) < 0)
		die("listen");
	l = sizeof ss;
	if (getsockname(ls, (struct sockaddr *)&ss, &l) < 0)
		die("getsockname");
	int port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
	emit("{\"pid\":%d,\"port\":%d}\n", getpid(), port);
	if (server) {
		cw = take(ls);
		fw = take(ls);
	}
	int a = dial(port);
	int b = take(ls);
	/* Never connected before the dump: state CLOSE. */
	int fresh[2];
	for (int i = 0; i < 2; i++)
		if ((fresh[i] = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0)) < 0)
			die("socket");
	struct sockaddr_storage lo;
	socklen_t lol = loopback(&lo, 0);
	if (bind(fresh[1], (struct sockaddr *)&lo, lol) < 0)
		die("bind fresh");

	send_all(fw, "fw-out");
	if (shutdown(fw, SHUT_WR) < 0)
		die("shutdown fw");
	send_all(a, "a-out");
	if (shutdown(a, SHUT_WR) < 0)
		die("shutdown a");
	/* The states are reached by the kernel alone (the test half-closes
	 * cw): wait for them, polling. */
	while (state_of(cw) != TCP_CLOSE_WAIT || inq(cw) != 5 || state_of(fw) != TCP_FIN_WAIT2 ||
	       state_of(a) != TCP_FIN_WAIT2 || state_of(b) != TCP_CLOSE_WAIT || inq(b) != 5)
		pace();
	tick("ready", 1);

	struct stat st;
	while (stat(argv[3], &st) < 0)
		pace();

	expect(cw, "cw", "cw-in");
	send_all(cw, "cw-back");
	if (shutdown(cw, SHUT_WR) < 0)
		die("shutdown cw");
	tick("cw", 1);

	expect(fw, "fw", "fw-in");
	if (write(fw, "x", 1) != -1 || errno != EPIPE)
		fail("fw", "write after shutdown(SHUT_WR) did not fail EPIPE");
	tick("fw", 1);

	expect(b, "b", "a-out");
	send_all(b, "b-back");
	if (shutdown(b, SHUT_WR) < 0)
		die("shutdown b");
	expect(a, "a", "b-back");
	tick("pair", 1);

	for (int i = 0; i < 2; i++) {
		lol = loopback(&lo, port);
		while (connect(fresh[i], (struct sockaddr *)&lo, lol) < 0)
			if (errno != EINTR)
				die("connect fresh");
		int peer = take(ls);
		char c = 'f';
		if (write(fresh[i], &c, 1) != 1 || read(peer, &c, 1) != 1 || c != 'f')
			fail("fresh", "no byte through the fresh socket's connection");
		close(peer);
		close(fresh[i]);
	}
	close(ls);
	tick("fresh", 1);
	close(cw);
	close(fw);
	close(a);
	close(b);
	tick("done", 1);
	return 0;
}
