/*
 * unixfix: socket corner cases of the same-host and netns migrations
 * (integration/unix_fix_test.go, tcp_samehost_lazy_test.go).
 * Usage: unixfix DIR GROUP
 *
 * Sets GROUP up, reports {"pid":P} and ticks "wait N" until SIGUSR1 (sent
 * after the restore), then checks what it set up (tick "check 1", or a
 * message on stderr and exit 1), then ticks "serve N", one round trip per
 * tick on the group's connection.
 *
 *   seqlast  a seqpacket pair: "last" sent from sv[0], then sv[0] shut
 *            down for writing; the check reads "last" then end of stream
 *   seqzero  the same with a zero-length message instead of "last", which
 *            the dump refuses (files/unixmsg.go), without taking it for
 *            the end of stream
 *   tcpself  a loopback TCP connection with both ends in the process,
 *            "hello" and "world" unread either way
 *   path     a stream listener on DIR/l.sock with an accepted connection
 *            ("ping" unread; SO_PEERCRED of both ends must name the
 *            process as it is now); the check also connects to DIR/l.sock anew
 *   deadpeer a client of the test's server on DIR/s.sock, which sent
 *            "hi" and closed the connection (and goes on listening); the
 *            check reads "hi" then end of stream; serve only ticks
 */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "%s: %s\n", what, detail);
	exit(1);
}

static void put(int fd, const char *m)
{
	if (send(fd, m, strlen(m), MSG_NOSIGNAL) != (ssize_t)strlen(m))
		die("send");
}

/* get reads exactly m from fd (a stream may return it in pieces). */
static void get(int fd, const char *m, const char *what)
{
	char buf[64];
	size_t want = strlen(m), got = 0;
	while (got < want) {
		ssize_t n = recv(fd, buf + got, want - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			fail(what, strerror(errno));
		if (n == 0)
			fail(what, "end of stream before the bytes sent");
		got += n;
	}
	if (memcmp(buf, m, want) != 0)
		fail(what, "other bytes than sent");
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: unixfix DIR GROUP\n");
		return 2;
	}
	const char *group = argv[2];
	int a = -1, b = -1, l = -1, oneway = 0;
	struct sockaddr_un ua = {.sun_family = AF_UNIX};
	if (strcmp(group, "seqlast") == 0) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0)
			die("socketpair");
		put(sv[0], "last");
		if (shutdown(sv[0], SHUT_WR) < 0)
			die("shutdown");
		a = sv[1], b = sv[0];
	} else if (strcmp(group, "seqzero") == 0) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0)
			die("socketpair");
		if (send(sv[0], "", 0, 0) != 0)
			die("send a zero-length message");
		if (shutdown(sv[0], SHUT_WR) < 0)
			die("shutdown");
		a = sv[1], b = sv[0];
	} else if (strcmp(group, "tcpself") == 0) {
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		socklen_t sl = sizeof sa;
		l = socket(AF_INET, SOCK_STREAM, 0);
		if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 1) < 0 ||
		    getsockname(l, (struct sockaddr *)&sa, &sl) < 0)
			die("listen");
		b = socket(AF_INET, SOCK_STREAM, 0);
		if (b < 0 || connect(b, (struct sockaddr *)&sa, sizeof sa) < 0)
			die("connect");
		if ((a = accept(l, NULL, NULL)) < 0)
			die("accept");
		put(b, "hello");
		put(a, "world");
	} else if (strcmp(group, "path") == 0) {
		snprintf(ua.sun_path, sizeof ua.sun_path, "%s/l.sock", argv[1]);
		l = socket(AF_UNIX, SOCK_STREAM, 0);
		if (l < 0 || bind(l, (struct sockaddr *)&ua, sizeof ua) < 0 || listen(l, 4) < 0)
			die("listen");
		b = socket(AF_UNIX, SOCK_STREAM, 0);
		if (b < 0 || connect(b, (struct sockaddr *)&ua, sizeof ua) < 0)
			die("connect");
		if ((a = accept(l, NULL, NULL)) < 0)
			die("accept");
		put(b, "ping");
	} else if (strcmp(group, "deadpeer") == 0) {
		snprintf(ua.sun_path, sizeof ua.sun_path, "%s/s.sock", argv[1]);
		b = socket(AF_UNIX, SOCK_STREAM, 0);
		if (b < 0 || connect(b, (struct sockaddr *)&ua, sizeof ua) < 0)
			die("connect");
		struct pollfd p = {b, POLLRDHUP, 0}; /* until the server closed */
		while (poll(&p, 1, -1) < 0)
			if (errno != EINTR)
				die("poll");
		oneway = -1;
	} else {
		fprintf(stderr, "unixfix: unknown group %s\n", group);
		return 2;
	}
	signal(SIGUSR1, on_usr1);
	emit("{\"pid\":%d}\n", getpid());
	for (unsigned long n = 1; !go; n++) {
		tick("wait", n);
		pace();
	}
	if (strcmp(group, "seqlast") == 0) {
		get(a, "last", "seqlast: the last message");
		char c;
		ssize_t n = recv(a, &c, 1, MSG_DONTWAIT);
		if (n != 0)
			fail("seqlast: after the last message", n < 0 ? strerror(errno) : "more data, not end of stream");
		int t = a; /* serve one way: from the end that can still send */
		a = b, b = t;
		oneway = 1;
	} else if (strcmp(group, "tcpself") == 0) {
		get(a, "hello", "tcpself: bytes client -> server");
		get(b, "world", "tcpself: bytes server -> client");
	} else if (strcmp(group, "deadpeer") == 0) {
		get(b, "hi", "deadpeer: the bytes the server sent");
		char c;
		ssize_t n = recv(b, &c, 1, MSG_DONTWAIT);
		if (n != 0)
			fail("deadpeer: after the server's bytes", n < 0 ? strerror(errno) : "more data, not end of stream");
	} else {
		/* Both ends in the process: SO_PEERCRED names the process as it
		 * is now (a --new-pid migration: its new pid). */
		struct ucred cr;
		socklen_t crl = sizeof cr;
		if (getsockopt(a, SOL_SOCKET, SO_PEERCRED, &cr, &crl) < 0 || cr.pid != getpid())
			fail("path: SO_PEERCRED of the accepted end", "not this process's pid");
		if (getsockopt(b, SOL_SOCKET, SO_PEERCRED, &cr, &crl) < 0 || cr.pid != getpid())
			fail("path: SO_PEERCRED of the client", "not this process's pid");
		get(a, "ping", "path: the queued bytes");
		int c = socket(AF_UNIX, SOCK_STREAM, 0);
		if (c < 0 || connect(c, (struct sockaddr *)&ua, sizeof ua) < 0)
			fail("path: connect to the listener's path again", strerror(errno));
		int d = accept(l, NULL, NULL);
		if (d < 0)
			fail("path: accept the new connection", strerror(errno));
		put(c, "new");
		get(d, "new", "path: bytes over the new connection");
		close(c);
		close(d);
	}
	tick("check", 1);
	for (unsigned long n = 1;; n++) {
		if (oneway < 0) { /* nothing to serve over */
			tick("serve", n);
			pace();
			continue;
		}
		put(b, "x");
		get(a, "x", "serve: round trip");
		if (!oneway) {
			put(a, "y");
			get(b, "y", "serve: round trip back");
		}
		tick("serve", n);
		pace();
	}
}
