/*
 * unixlisten: named and listening unix sockets (integration/unix_listen_test.go).
 * Usage: unixlisten DIR
 *
 * Sets up, then reports {"pid":P,"path":"DIR/s"} and ticks "wait N" until
 * SIGUSR1 (sent after the restore), then checks every socket once (tick
 * "check 1", or a message on stderr and exit 1), then ticks "serve N",
 * one round trip over each connection per tick.
 *
 *   ls   stream listener on DIR/s (mode 0640), backlog 5, one connection
 *        accepted (a1 <- c1, each with bytes the other sent still unread,
 *        c1 shut down for writing after its bytes), one accepted whose
 *        client closed after sending "bye" (a3) and one waiting (c2)
 *   lq   seqpacket listener on the abstract name @lazycr-unixlisten-PID,
 *        backlog 3, one connection accepted (qa1 <- qc1), one waiting (qc2);
 *        lq listens and qc1 connects with effective ids 65534 (SO_PEERCRED)
 *   dg   datagram socket bound to DIR/d; dc is connected to it
 *   fresh an unbound, unconnected stream socket
 */
#include "common.h"
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static socklen_t mkaddr(struct sockaddr_un *a, const char *name, int abstract)
{
	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	size_t n = strlen(name);
	if (abstract) {
		memcpy(a->sun_path + 1, name, n);
		return offsetof(struct sockaddr_un, sun_path) + 1 + n;
	}
	memcpy(a->sun_path, name, n + 1);
	return offsetof(struct sockaddr_un, sun_path) + n + 1;
}

static int sock(int type) { int s = socket(AF_UNIX, type, 0); if (s < 0) die("socket"); return s; }

static void fail(const char *fmt, const char *a, long b)
{
	fprintf(stderr, fmt, a, b);
	fputc('\n', stderr);
	exit(1);
}

static void xwrite(int fd, const char *s) { if (write(fd, s, strlen(s)) != (ssize_t)strlen(s)) die("write"); }

/* expect reads exactly s from fd (blocking). */
static void expect(int fd, const char *s, const char *what)
{
	char buf[256];
	size_t n = strlen(s), got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r <= 0)
			fail("%s: read ended after %ld bytes", what, (long)got);
		got += r;
	}
	if (memcmp(buf, s, n) != 0)
		fail("%s: read other bytes than sent (%ld)", what, (long)n);
}

/* roundtrip sends one message each way over a connection. */
static void roundtrip(int a, int b, const char *what)
{
	xwrite(a, "ping");
	expect(b, "ping", what);
	xwrite(b, "pong");
	expect(a, "pong", what);
}

static void check_name(int fd, int peer, const struct sockaddr_un *want, socklen_t wantlen, const char *what)
{
	struct sockaddr_un a;
	socklen_t l = sizeof a;
	if ((peer ? getpeername(fd, (struct sockaddr *)&a, &l) : getsockname(fd, (struct sockaddr *)&a, &l)) < 0)
		die(what);
	if (l != wantlen || memcmp(&a, want, l) != 0)
		fail("%s: other name (length %ld)", what, (long)l);
}

/* backlog connects clients to addr until the queue is full and checks that
 * exactly want more fit (a unix listener takes backlog+1, unix_recvq_full),
 * then accepts them all again. */
static void backlog(int l, int type, const struct sockaddr_un *addr, socklen_t len, int want, const char *what)
{
	int cs[64], n = 0;
	for (;;) {
		int c = sock(type | SOCK_NONBLOCK);
		if (connect(c, (const struct sockaddr *)addr, len) < 0) {
			if (errno != EAGAIN)
				die(what);
			close(c);
			break;
		}
		cs[n++] = c;
		if (n == 64)
			fail("%s: %ld connections fit, more than any backlog here", what, n);
	}
	if (n != want)
		fail("%s: %ld more connections fit in the queue", what, n);
	for (int i = 0; i < n; i++) {
		int a = accept(l, NULL, NULL);
		if (a < 0)
			die("accept backlog");
		close(a);
		close(cs[i]);
	}
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: unixlisten DIR\n");
		return 2;
	}
	char path[200], dpath[200], abs[64];
	snprintf(path, sizeof path, "%s/s", argv[1]);
	snprintf(dpath, sizeof dpath, "%s/d", argv[1]);
	snprintf(abs, sizeof abs, "lazycr-unixlisten-%d", getpid());
	struct sockaddr_un pa, qa, da;
	socklen_t pal = mkaddr(&pa, path, 0), qal = mkaddr(&qa, abs, 1), dal = mkaddr(&da, dpath, 0);

	int ls = sock(SOCK_STREAM);
	if (bind(ls, (struct sockaddr *)&pa, pal) < 0 || chmod(path, 0640) < 0 || listen(ls, 5) < 0)
		die("listen on path");
	int c1 = sock(SOCK_STREAM);
	if (connect(c1, (struct sockaddr *)&pa, pal) < 0)
		die("connect c1");
	int a1 = accept(ls, NULL, NULL);
	if (a1 < 0)
		die("accept a1");
	xwrite(c1, "from-c1");
	xwrite(a1, "from-a1");
	if (shutdown(c1, SHUT_WR) < 0)
		die("shutdown c1");
	int c3 = sock(SOCK_STREAM);
	if (connect(c3, (struct sockaddr *)&pa, pal) < 0)
		die("connect c3");
	int a3 = accept(ls, NULL, NULL);
	if (a3 < 0)
		die("accept a3");
	xwrite(c3, "bye");
	close(c3);
	int c2 = sock(SOCK_STREAM);
	if (connect(c2, (struct sockaddr *)&pa, pal) < 0)
		die("connect c2");

	int lq = sock(SOCK_SEQPACKET);
	if (setresgid(-1, 65534, -1) < 0 || setresuid(-1, 65534, -1) < 0)
		die("take effective ids 65534");
	if (bind(lq, (struct sockaddr *)&qa, qal) < 0 || listen(lq, 3) < 0)
		die("listen on abstract name");
	int qc1 = sock(SOCK_SEQPACKET);
	if (connect(qc1, (struct sockaddr *)&qa, qal) < 0)
		die("connect qc1");
	if (setresuid(-1, 0, -1) < 0 || setresgid(-1, 0, -1) < 0)
		die("take effective ids 0 back");
	int qa1 = accept(lq, NULL, NULL);
	if (qa1 < 0)
		die("accept qa1");
	int qc2 = sock(SOCK_SEQPACKET);
	if (connect(qc2, (struct sockaddr *)&qa, qal) < 0)
		die("connect qc2");

	int dg = sock(SOCK_DGRAM);
	if (bind(dg, (struct sockaddr *)&da, dal) < 0)
		die("bind dgram");
	int dc = sock(SOCK_DGRAM);
	if (connect(dc, (struct sockaddr *)&da, dal) < 0)
		die("connect dgram");
	int fresh = sock(SOCK_STREAM);

	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	emit("{\"pid\":%d,\"path\":\"%s\"}\n", getpid(), path);
	for (unsigned long n = 1; !go; n++) {
		tick("wait", n);
		pace();
	}

	/* Names, as getsockname/getpeername see them. */
	check_name(ls, 0, &pa, pal, "getsockname of the path listener");
	check_name(a1, 0, &pa, pal, "getsockname of the accepted a1");
	check_name(c1, 1, &pa, pal, "getpeername of c1");
	check_name(c2, 1, &pa, pal, "getpeername of the waiting c2");
	check_name(lq, 0, &qa, qal, "getsockname of the abstract listener");
	check_name(qa1, 0, &qa, qal, "getsockname of the accepted qa1");
	check_name(dg, 0, &da, dal, "getsockname of the bound dgram");
	check_name(dc, 1, &da, dal, "getpeername of the connected dgram");
	struct stat st;
	if (stat(path, &st) < 0 || !S_ISSOCK(st.st_mode) || (st.st_mode & 07777) != 0640)
		fail("%s: not a socket of mode 0640 (%lo)", path, (long)st.st_mode);
	int acc = 0;
	socklen_t al = sizeof acc;
	if (getsockopt(ls, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) < 0 || !acc)
		fail("%s: not listening (%ld)", "ls", acc);
	struct ucred cr;
	socklen_t crl = sizeof cr;
	/* The process's own connection names the process as it is now (a
	 * --new-pid restore or migration: its new pid, as if it had made it). */
	if (getsockopt(a1, SOL_SOCKET, SO_PEERCRED, &cr, &crl) < 0 || cr.pid != getpid())
		fail("%s: SO_PEERCRED pid %ld is not this process's", "a1", (long)cr.pid);
	if (getsockopt(c1, SOL_SOCKET, SO_PEERCRED, &cr, &crl) < 0 || cr.pid != getpid())
		fail("%s: SO_PEERCRED pid %ld is not this process's", "c1", (long)cr.pid);
	if (cr.uid != 0 || cr.gid != 0)
		fail("%s: SO_PEERCRED uid %ld, want root", "a1", (long)cr.uid);
	if (getsockopt(qa1, SOL_SOCKET, SO_PEERCRED, &cr, &crl) < 0 || cr.uid != 65534 || cr.gid != 65534)
		fail("%s: SO_PEERCRED uid %ld, want 65534 (the connector's)", "qa1", (long)cr.uid);
	if (getsockopt(qc1, SOL_SOCKET, SO_PEERCRED, &cr, &crl) < 0 || cr.uid != 65534 || cr.gid != 65534)
		fail("%s: SO_PEERCRED uid %ld, want 65534 (the listener's)", "qc1", (long)cr.uid);

	/* Bytes waiting across the dump, and c1's shutdown. */
	expect(a1, "from-c1", "a1 reads what c1 sent before the dump");
	char b;
	if (read(a1, &b, 1) != 0)
		fail("%s: no EOF after c1 shut down for writing (%ld)", "a1", 0);
	expect(c1, "from-a1", "c1 reads what a1 sent before the dump");
	xwrite(a1, "after");
	expect(c1, "after", "a1 -> c1 after the restore");
	check_name(a3, 0, &pa, pal, "getsockname of a3, whose client closed");
	expect(a3, "bye", "a3 reads what its client sent before closing");
	if (read(a3, &b, 1) != 0)
		fail("%s: no EOF after its client closed (%ld)", "a3", 0);

	/* The queues: the waiting connection comes first, then the backlog
	 * is intact. */
	int a2 = accept(ls, NULL, NULL);
	if (a2 < 0)
		die("accept c2");
	roundtrip(c2, a2, "c2 <-> a2, the connection that waited");
	int qa2 = accept(lq, NULL, NULL);
	if (qa2 < 0)
		die("accept qc2");
	roundtrip(qc2, qa2, "qc2 <-> qa2, the connection that waited");
	backlog(ls, SOCK_STREAM, &pa, pal, 6, "path listener backlog 5");
	backlog(lq, SOCK_SEQPACKET, &qa, qal, 4, "abstract listener backlog 3");
	roundtrip(qc1, qa1, "seqpacket qc1 <-> qa1");

	/* The datagram pair. */
	if (send(dc, "dg", 2, 0) != 2)
		die("send dgram");
	char db[8];
	struct sockaddr_un from;
	socklen_t fl = sizeof from;
	if (recvfrom(dg, db, sizeof db, 0, (struct sockaddr *)&from, &fl) != 2 || memcmp(db, "dg", 2))
		fail("%s: datagram lost (%ld)", "dg", 0);

	/* The fresh socket still works: it connects. */
	if (connect(fresh, (struct sockaddr *)&pa, pal) < 0)
		die("connect fresh");
	int af = accept(ls, NULL, NULL);
	if (af < 0)
		die("accept fresh");
	tick("check", 1);

	for (unsigned long n = 1;; n++) {
		roundtrip(fresh, af, "fresh <-> af");
		roundtrip(qc1, qa1, "qc1 <-> qa1");
		tick("serve", n);
		pace();
	}
}
