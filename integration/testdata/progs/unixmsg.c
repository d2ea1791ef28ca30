/*
 * unixmsg: unix datagrams and seqpacket messages waiting to be read
 * (integration/unix_listen_test.go). Usage: unixmsg DIR
 *
 * Queues, then reports {"pid":P} and ticks "wait N" until SIGUSR1 (sent
 * after the restore), then reads every queued message and checks its
 * bytes, its boundary and its sender address (tick "check 1", or a message
 * on stderr and exit 1), then ticks "serve N", one round trip per tick.
 *
 *   dp   a datagram socketpair: 3 datagrams wait at dp[0], 1 at dp[1]
 *   q    a seqpacket connection accepted from @lazycr-unixmsg-PID:
 *        2 messages wait at the accepted end, 1 at the client
 *   dg   a datagram socket bound to DIR/dg: 2 datagrams from an unnamed
 *        socket (closed since) wait
 */
#include "common.h"
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static int sock(int type) { int s = socket(AF_UNIX, type, 0); if (s < 0) die("socket"); return s; }

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "%s: %s\n", what, detail);
	exit(1);
}

static void put(int fd, const char *m)
{
	if (send(fd, m, strlen(m), 0) != (ssize_t)strlen(m))
		die("send");
}

/* get reads one message from fd and checks it is m, whole, from a sender
 * whose address is namelen bytes long. */
static void get(int fd, const char *m, int namelen, const char *what)
{
	char buf[256];
	struct sockaddr_un from;
	struct iovec iov = {buf, sizeof buf};
	struct msghdr h = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n = recvmsg(fd, &h, MSG_DONTWAIT);
	if (n < 0)
		fail(what, strerror(errno));
	if ((size_t)n != strlen(m) || memcmp(buf, m, n) != 0 || (h.msg_flags & MSG_TRUNC))
		fail(what, "other bytes or boundaries than sent");
	if (namelen >= 0 && (int)h.msg_namelen > namelen)
		fail(what, "a sender address where there was none");
}

static void empty(int fd, const char *what)
{
	struct pollfd p = {fd, POLLIN, 0};
	if (poll(&p, 1, 0) != 0)
		fail(what, "more messages than were queued");
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: unixmsg DIR\n");
		return 2;
	}
	int dp[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dp) < 0)
		die("socketpair");
	put(dp[1], "m1");
	put(dp[1], "mm2");
	put(dp[1], "mmm3");
	put(dp[0], "back");

	struct sockaddr_un qa = {.sun_family = AF_UNIX};
	int ql = snprintf(qa.sun_path + 1, sizeof qa.sun_path - 1, "lazycr-unixmsg-%d", getpid());
	socklen_t qal = offsetof(struct sockaddr_un, sun_path) + 1 + ql;
	int lq = sock(SOCK_SEQPACKET);
	if (bind(lq, (struct sockaddr *)&qa, qal) < 0 || listen(lq, 4) < 0)
		die("listen");
	int qc = sock(SOCK_SEQPACKET);
	if (connect(qc, (struct sockaddr *)&qa, qal) < 0)
		die("connect");
	int qs = accept(lq, NULL, NULL);
	if (qs < 0)
		die("accept");
	put(qc, "s1");
	put(qc, "ss2");
	put(qs, "r1");

	struct sockaddr_un da = {.sun_family = AF_UNIX};
	snprintf(da.sun_path, sizeof da.sun_path, "%s/dg", argv[1]);
	int dg = sock(SOCK_DGRAM);
	if (bind(dg, (struct sockaddr *)&da, sizeof da) < 0)
		die("bind");
	int tmp = sock(SOCK_DGRAM);
	if (sendto(tmp, "u1", 2, 0, (struct sockaddr *)&da, sizeof da) != 2 || sendto(tmp, "uu2", 3, 0, (struct sockaddr *)&da, sizeof da) != 3)
		die("sendto");
	close(tmp);

	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	emit("{\"pid\":%d}\n", getpid());
	for (unsigned long n = 1; !go; n++) {
		tick("wait", n);
		pace();
	}

	int fds[] = {dp[0], dp[1], qs, qc, dg};
	for (unsigned i = 0; i < sizeof fds / sizeof fds[0]; i++) {
		int off = 0;
		socklen_t ol = sizeof off;
		if (getsockopt(fds[i], SOL_SOCKET, SO_PEEK_OFF, &off, &ol) < 0 || off != -1)
			fail("SO_PEEK_OFF", "not -1 (the dump's peek left it set)");
	}
	get(dp[0], "m1", -1, "dp[0] message 1");
	get(dp[0], "mm2", -1, "dp[0] message 2");
	get(dp[0], "mmm3", -1, "dp[0] message 3");
	empty(dp[0], "dp[0]");
	get(dp[1], "back", -1, "dp[1] message");
	empty(dp[1], "dp[1]");
	get(qs, "s1", -1, "accepted seqpacket message 1");
	get(qs, "ss2", -1, "accepted seqpacket message 2");
	empty(qs, "accepted seqpacket");
	get(qc, "r1", -1, "client seqpacket message");
	empty(qc, "client seqpacket");
	get(dg, "u1", (int)sizeof(sa_family_t), "bound dgram message 1");
	get(dg, "uu2", (int)sizeof(sa_family_t), "bound dgram message 2");
	empty(dg, "bound dgram");
	tick("check", 1);

	for (unsigned long n = 1;; n++) {
		put(dp[1], "ping");
		struct pollfd p = {dp[0], POLLIN, 0};
		if (poll(&p, 1, -1) != 1)
			die("poll");
		get(dp[0], "ping", -1, "dgram round trip");
		put(qc, "ping");
		p.fd = qs;
		if (poll(&p, 1, -1) != 1)
			die("poll");
		get(qs, "ping", -1, "seqpacket round trip");
		tick("serve", n);
		pace();
	}
}
