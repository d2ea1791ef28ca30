/*
 * unixdead: unix sockets whose peer has closed (integration/unix_listen_test.go).
 * Usage: unixdead DIR
 *
 * Sets up, then reports {"pid":P} and ticks "wait N" until SIGUSR1 (sent
 * after the restore), then checks each socket once (tick "check 1", or a
 * message on stderr and exit 1), then ticks "serve N".
 *
 *   c   a stream client of @lazycr-unixdead-PID, whose server sent "last
 *       words" and closed, listener and all
 *   c2  a stream client of DIR/srv, whose server sent "bye" and closed (the
 *       file is removed)
 *   e   a datagram socket connected to @lazycr-unixdead-dg-PID, closed since
 *   sp  one end of a stream socketpair whose other end sent "x" and closed
 */
#include "common.h"
#include <signal.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static int sock(int type) { int s = socket(AF_UNIX, type, 0); if (s < 0) die("socket"); return s; }

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "%s: %s\n", what, detail);
	exit(1);
}

static socklen_t abstract(struct sockaddr_un *a, const char *fmt)
{
	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	int n = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, fmt, getpid());
	return offsetof(struct sockaddr_un, sun_path) + 1 + n;
}

/* served connects a stream client to a (length al), has the server send
 * last and close everything, and returns the client. */
static int served(struct sockaddr_un *a, socklen_t al, const char *last)
{
	int l = sock(SOCK_STREAM);
	if (bind(l, (struct sockaddr *)a, al) < 0 || listen(l, 1) < 0)
		die("listen");
	int c = sock(SOCK_STREAM);
	if (connect(c, (struct sockaddr *)a, al) < 0)
		die("connect");
	int s = accept(l, NULL, NULL);
	if (s < 0)
		die("accept");
	if (write(s, last, strlen(last)) != (ssize_t)strlen(last))
		die("write");
	close(s);
	close(l);
	return c;
}

static void peer_is(int fd, const struct sockaddr_un *want, socklen_t wantlen, const char *what)
{
	struct sockaddr_un a;
	socklen_t l = sizeof a;
	if (getpeername(fd, (struct sockaddr *)&a, &l) < 0)
		fail(what, strerror(errno));
	if (l != wantlen || memcmp(&a, want, l) != 0)
		fail(what, "getpeername names another peer");
}

static void last_words(int fd, const char *want, const char *what)
{
	char buf[64];
	size_t n = strlen(want), got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r <= 0)
			fail(what, "the bytes sent before the close are missing");
		got += r;
	}
	if (memcmp(buf, want, n) != 0)
		fail(what, "other bytes than sent before the close");
	if (read(fd, buf, 1) != 0)
		fail(what, "no EOF after the peer's bytes");
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: unixdead DIR\n");
		return 2;
	}
	struct sockaddr_un sa, pa = {.sun_family = AF_UNIX}, da;
	socklen_t sal = abstract(&sa, "lazycr-unixdead-%d");
	int c = served(&sa, sal, "last words");
	snprintf(pa.sun_path, sizeof pa.sun_path, "%s/srv", argv[1]);
	socklen_t pal = offsetof(struct sockaddr_un, sun_path) + strlen(pa.sun_path) + 1;
	int c2 = served(&pa, pal, "bye");
	if (unlink(pa.sun_path) < 0)
		die("unlink");
	socklen_t dal = abstract(&da, "lazycr-unixdead-dg-%d");
	int d = sock(SOCK_DGRAM);
	if (bind(d, (struct sockaddr *)&da, dal) < 0)
		die("bind dgram");
	int e = sock(SOCK_DGRAM);
	if (connect(e, (struct sockaddr *)&da, dal) < 0)
		die("connect dgram");
	close(d);
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
		die("socketpair");
	if (write(sp[1], "x", 1) != 1)
		die("write");
	close(sp[1]);

	struct sigaction act = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &act, NULL);
	emit("{\"pid\":%d}\n", getpid());
	for (unsigned long n = 1; !go; n++) {
		tick("wait", n);
		pace();
	}

	peer_is(c, &sa, sal, "c's closed server");
	last_words(c, "last words", "c");
	peer_is(c2, &pa, pal, "c2's closed server");
	last_words(c2, "bye", "c2");
	struct stat st;
	if (stat(pa.sun_path, &st) == 0)
		fail(pa.sun_path, "the closed server's socket file is back");
	peer_is(e, &da, dal, "e's closed peer");
	if (send(e, "?", 1, 0) >= 0 || errno != ECONNREFUSED)
		fail("e", "a send to the closed peer is not refused");
	sp[1] = -1;
	last_words(sp[0], "x", "sp[0]");
	tick("check", 1);
	for (unsigned long n = 1;; n++) {
		tick("serve", n);
		pace();
	}
}
