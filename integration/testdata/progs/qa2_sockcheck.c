/*
 * qa2_sockcheck: sets up unix and TCP sockets in today's interesting states,
 * then, once GOFILE exists, checks them itself (after a dump/restore or a
 * migration) and prints a verdict per check.
 *
 * Usage: qa2_sockcheck WORKDIR GOFILE GROUP...   (groups: unix, tcp, seqlast)
 *
 * Output (integration/harness_test.go protocol): a JSON report, then
 * "tick main N" lines; after GOFILE appears "check NAME OK|FAIL why" lines
 * and "done N", and the ticks go on.
 *
 * unix: an abstract-name listener with an accepted connection carrying
 *   unread bytes both ways and a second connection still waiting in its
 *   backlog; a listener on a path (SO_PEERCRED of the accepted end must name
 *   this process: unix(7) "SO_PEERCRED"); a bound datagram socket with three
 *   queued datagrams from an unnamed sender (boundaries kept); a datagram
 *   socket connect()ed to a bound one; a datagram pair and a seqpacket pair
 *   with queued messages; a stream pair half-closed both ways; a seqpacket
 *   pair half-closed one way (with a last message queued before the
 *   shutdown: group seqlast).
 * tcp: loopback connections inside the process: one whose client shut down
 *   its write side (FIN_WAIT2 / CLOSE_WAIT) with its request unread at the
 *   server, one whose server shut down its write side with its answer unread
 *   at the client.
 */
#include "common.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static int nchecks, nfail;

static int ioctl_fionread(int fd, int *n) { return ioctl(fd, FIONREAD, n); }

static void verdict(const char *name, int ok, const char *fmt, ...)
{
	char why[512] = "";
	if (!ok) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, sizeof why, fmt, ap);
		va_end(ap);
		nfail++;
	}
	nchecks++;
	emit("check %s %s%s%s\n", name, ok ? "OK" : "FAIL", ok ? "" : " ", why);
}

static int has_group(int argc, char **argv, const char *g)
{
	for (int i = 3; i < argc; i++)
		if (strcmp(argv[i], g) == 0)
			return 1;
	return 0;
}

static socklen_t abs_addr(struct sockaddr_un *a, const char *name)
{
	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	size_t n = strlen(name);
	memcpy(a->sun_path + 1, name, n);
	return offsetof(struct sockaddr_un, sun_path) + 1 + n;
}

static socklen_t path_addr(struct sockaddr_un *a, const char *dir, const char *name)
{
	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof a->sun_path, "%s/%s", dir, name);
	return sizeof *a;
}

static void xwrite(int fd, const char *s)
{
	if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
		die("write");
}

/* readall reads what fd has (non-blocking, up to n-1 bytes) into buf; it
 * returns the number of bytes, and sets *eof when a read returned 0. */
static ssize_t readall(int fd, char *buf, size_t n, int *eof)
{
	size_t got = 0;
	*eof = 0;
	while (got < n - 1) {
		ssize_t r = recv(fd, buf + got, n - 1 - got, MSG_DONTWAIT);
		if (r == 0) {
			*eof = 1;
			break;
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		got += r;
	}
	buf[got] = 0;
	return got;
}

/* expect_stream checks that fd holds exactly want and then end-of-stream
 * (or, with want_eof 0, nothing more for now). */
static void expect_stream(const char *name, int fd, const char *want, int want_eof)
{
	char buf[256];
	int eof;
	readall(fd, buf, sizeof buf, &eof);
	verdict(name, strcmp(buf, want) == 0 && eof == want_eof, "read %s, eof %d; want %s, eof %d", buf, eof, want,
		want_eof);
}

/* expect_msgs checks that fd delivers exactly the messages in want, each
 * with its boundary, and then nothing. */
static void expect_msgs(const char *name, int fd, const char **want, int n)
{
	char buf[256];
	for (int i = 0; i < n; i++) {
		ssize_t r = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
		if (r < 0) {
			verdict(name, 0, "message %d: %s", i, strerror(errno));
			return;
		}
		buf[r] = 0;
		if (strcmp(buf, want[i]) != 0) {
			verdict(name, 0, "message %d is %s, want %s", i, buf, want[i]);
			return;
		}
	}
	ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
	verdict(name, r < 0 && errno == EAGAIN, "a message too many (%zd bytes)", r);
}

static void expect_peercred(const char *name, int fd)
{
	struct ucred c;
	socklen_t l = sizeof c;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &l) < 0) {
		verdict(name, 0, "SO_PEERCRED: %s", strerror(errno));
		return;
	}
	verdict(name, c.pid == getpid() && c.uid == geteuid() && c.gid == getegid(), "peer pid %d uid %d gid %d, want %d %d %d",
		c.pid, c.uid, c.gid, getpid(), geteuid(), getegid());
}

/* roundtrip checks that a and b (a connected stream pair) still carry
 * bytes both ways. */
static void roundtrip(const char *name, int a, int b)
{
	char buf[64];
	int eof;
	xwrite(a, "ping");
	struct timespec ts = {0, 20 * 1000 * 1000};
	for (int i = 0; i < 100; i++) {
		int n = 0;
		if (ioctl_fionread(b, &n) == 0 && n >= 4)
			break;
		nanosleep(&ts, NULL);
	}
	readall(b, buf, sizeof buf, &eof);
	xwrite(b, "pong");
	for (int i = 0; i < 100; i++) {
		int n = 0;
		if (ioctl_fionread(a, &n) == 0 && n >= 4)
			break;
		nanosleep(&ts, NULL);
	}
	char buf2[64];
	readall(a, buf2, sizeof buf2, &eof);
	verdict(name, strcmp(buf, "ping") == 0 && strcmp(buf2, "pong") == 0, "got %s and %s, want ping and pong", buf,
		buf2);
}

struct unixstate {
	int abs_l, abs_c, abs_s, abs_w; /* listener, client, accepted, waiting client */
	int path_l, path_c, path_s;
	int dg_bound, dg_sender, dg_conn, dg_conn_target;
	int dgp[2], sqp[2], stp[2], sqh[2];
	char absname[108];
	char path[108];
};

/* seq_last: the half-closed seqpacket pair has a last message queued
 * before the shutdown (group "seqlast"; refused by the dump today: QA2
 * finding Q3). */
static int seq_last;

static void unix_setup(struct unixstate *u, const char *dir)
{
	struct sockaddr_un a;
	socklen_t al;

	/* Abstract listener: one accepted connection with unread bytes both
	 * ways, one connection waiting in the backlog. */
	snprintf(u->absname, sizeof u->absname, "qa2-abs-%d", getpid());
	al = abs_addr(&a, u->absname);
	if ((u->abs_l = socket(AF_UNIX, SOCK_STREAM, 0)) < 0 || bind(u->abs_l, (void *)&a, al) < 0 || listen(u->abs_l, 8) < 0)
		die("abstract listener");
	if ((u->abs_c = socket(AF_UNIX, SOCK_STREAM, 0)) < 0 || connect(u->abs_c, (void *)&a, al) < 0)
		die("abstract connect");
	if ((u->abs_s = accept4(u->abs_l, NULL, NULL, SOCK_CLOEXEC)) < 0)
		die("abstract accept");
	xwrite(u->abs_c, "to-server");
	xwrite(u->abs_s, "to-client");
	if ((u->abs_w = socket(AF_UNIX, SOCK_STREAM, 0)) < 0 || connect(u->abs_w, (void *)&a, al) < 0)
		die("abstract connect (waiting)");

	/* Listener on a path with an accepted connection. */
	al = path_addr(&a, dir, "stream.sock");
	snprintf(u->path, sizeof u->path, "%s", a.sun_path);
	if ((u->path_l = socket(AF_UNIX, SOCK_STREAM, 0)) < 0 || bind(u->path_l, (void *)&a, al) < 0 ||
	    listen(u->path_l, 8) < 0)
		die("path listener");
	if ((u->path_c = socket(AF_UNIX, SOCK_STREAM, 0)) < 0 || connect(u->path_c, (void *)&a, al) < 0)
		die("path connect");
	if ((u->path_s = accept(u->path_l, NULL, NULL)) < 0)
		die("path accept");

	/* A bound datagram socket with three datagrams from an unnamed sender. */
	al = path_addr(&a, dir, "dgram.sock");
	if ((u->dg_bound = socket(AF_UNIX, SOCK_DGRAM, 0)) < 0 || bind(u->dg_bound, (void *)&a, al) < 0)
		die("dgram bind");
	if ((u->dg_sender = socket(AF_UNIX, SOCK_DGRAM, 0)) < 0)
		die("dgram sender");
	const char *m[] = {"d1", "d22", "d333"};
	for (int i = 0; i < 3; i++)
		if (sendto(u->dg_sender, m[i], strlen(m[i]), 0, (void *)&a, al) < 0)
			die("dgram sendto");

	/* A datagram socket connect()ed to another bound one (abstract). */
	char n2[64];
	snprintf(n2, sizeof n2, "qa2-dg-%d", getpid());
	al = abs_addr(&a, n2);
	if ((u->dg_conn_target = socket(AF_UNIX, SOCK_DGRAM, 0)) < 0 || bind(u->dg_conn_target, (void *)&a, al) < 0)
		die("dgram bind abstract");
	if ((u->dg_conn = socket(AF_UNIX, SOCK_DGRAM, 0)) < 0 || connect(u->dg_conn, (void *)&a, al) < 0)
		die("dgram connect");

	/* Pairs with queued messages. */
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, u->dgp) < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, u->sqp) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, u->stp) < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, u->sqh) < 0)
		die("socketpair");
	xwrite(u->dgp[0], "p1");
	xwrite(u->dgp[0], "p22");
	xwrite(u->dgp[1], "back");
	xwrite(u->sqp[0], "s1");
	xwrite(u->sqp[0], "s22");
	xwrite(u->sqp[1], "sback");

	/* Stream pair half-closed both ways, each with unread bytes. */
	xwrite(u->stp[0], "abc");
	xwrite(u->stp[1], "defg");
	if (shutdown(u->stp[0], SHUT_WR) < 0 || shutdown(u->stp[1], SHUT_WR) < 0)
		die("shutdown stream pair");

	/* Seqpacket pair half-closed one way after a last message. */
	if (seq_last)
		xwrite(u->sqh[0], "last");
	if (shutdown(u->sqh[0], SHUT_WR) < 0)
		die("shutdown seqpacket pair");
}

static void unix_check(struct unixstate *u)
{
	expect_stream("abs-unread-at-server", u->abs_s, "to-server", 0);
	expect_stream("abs-unread-at-client", u->abs_c, "to-client", 0);
	roundtrip("abs-conn-works", u->abs_c, u->abs_s);
	expect_peercred("abs-peercred-server", u->abs_s);
	expect_peercred("abs-peercred-client", u->abs_c);

	struct sockaddr_un a;
	socklen_t al = sizeof a;
	if (getsockname(u->abs_l, (void *)&a, &al) < 0) {
		verdict("abs-name", 0, "getsockname: %s", strerror(errno));
	} else {
		struct sockaddr_un w;
		socklen_t wl = abs_addr(&w, u->absname);
		verdict("abs-name", al == wl && memcmp(&a, &w, wl) == 0, "listener's name differs (len %u, want %u)", al,
			wl);
	}
	int w = accept4(u->abs_l, NULL, NULL, SOCK_NONBLOCK);
	if (w < 0) {
		verdict("abs-backlog", 0, "accept of the waiting connection: %s", strerror(errno));
	} else {
		verdict("abs-backlog", 1, "");
		roundtrip("abs-backlog-works", u->abs_w, w);
		close(w);
	}
	/* A new client on the abstract name reaches the restored listener. */
	struct sockaddr_un na;
	socklen_t nal = abs_addr(&na, u->absname);
	int nc = socket(AF_UNIX, SOCK_STREAM, 0);
	int ok = nc >= 0 && connect(nc, (void *)&na, nal) == 0;
	int ns = ok ? accept(u->abs_l, NULL, NULL) : -1;
	verdict("abs-new-client", ok && ns >= 0, "connect/accept: %s", strerror(errno));
	if (ns >= 0)
		close(ns);
	if (nc >= 0)
		close(nc);

	expect_peercred("path-peercred-server", u->path_s);
	roundtrip("path-conn-works", u->path_c, u->path_s);
	struct stat st;
	verdict("path-socket-file", stat(u->path, &st) == 0 && S_ISSOCK(st.st_mode), "stat %s: %s", u->path,
		strerror(errno));
	nc = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un pa;
	socklen_t pal = sizeof pa;
	memset(&pa, 0, sizeof pa);
	pa.sun_family = AF_UNIX;
	snprintf(pa.sun_path, sizeof pa.sun_path, "%s", u->path);
	ok = nc >= 0 && connect(nc, (void *)&pa, pal) == 0;
	ns = ok ? accept(u->path_l, NULL, NULL) : -1;
	verdict("path-new-client", ok && ns >= 0, "connect/accept: %s", strerror(errno));
	if (ns >= 0) {
		expect_peercred("path-new-peercred", ns);
		close(ns);
	}
	if (nc >= 0)
		close(nc);

	const char *dm[] = {"d1", "d22", "d333"};
	expect_msgs("dgram-bound-queue", u->dg_bound, dm, 3);
	const char *pm[] = {"p1", "p22"};
	expect_msgs("dgram-pair-queue", u->dgp[1], pm, 2);
	const char *pb[] = {"back"};
	expect_msgs("dgram-pair-queue-back", u->dgp[0], pb, 1);
	const char *sm[] = {"s1", "s22"};
	expect_msgs("seqpacket-pair-queue", u->sqp[1], sm, 2);
	const char *sb[] = {"sback"};
	expect_msgs("seqpacket-pair-queue-back", u->sqp[0], sb, 1);

	/* The connected datagram socket still sends to its bound peer. */
	xwrite(u->dg_conn, "viaconn");
	const char *cm[] = {"viaconn"};
	expect_msgs("dgram-connected", u->dg_conn_target, cm, 1);

	expect_stream("stream-halfclosed-a", u->stp[1], "abc", 1);
	expect_stream("stream-halfclosed-b", u->stp[0], "defg", 1);
	errno = 0;
	ssize_t r = send(u->stp[0], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	verdict("stream-halfclosed-epipe", r < 0 && errno == EPIPE, "send after SHUT_WR: %zd (%s)", r, strerror(errno));

	char buf[64];
	r = recv(u->sqh[1], buf, sizeof buf, MSG_DONTWAIT);
	int got_last = 1;
	if (seq_last) {
		got_last = r == 4 && memcmp(buf, "last", 4) == 0;
		r = recv(u->sqh[1], buf, sizeof buf, MSG_DONTWAIT);
	}
	verdict("seqpacket-halfclosed", got_last && r == 0, "last message %d, then %zd", got_last, r);
	/* The other way is still open. */
	xwrite(u->sqh[1], "reply");
	const char *rm[] = {"reply"};
	expect_msgs("seqpacket-halfclosed-other-way", u->sqh[0], rm, 1);
}

struct tcpstate {
	int l, c1, s1, c2, s2;
};

static int tcp_state(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof ti;
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0)
		return -1;
	return ti.tcpi_state;
}

static void tcp_setup(struct tcpstate *t)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	int one = 1;
	if ((t->l = socket(AF_INET, SOCK_STREAM, 0)) < 0 || setsockopt(t->l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(t->l, (void *)&a, al) < 0 || listen(t->l, 8) < 0 || getsockname(t->l, (void *)&a, &al) < 0)
		die("tcp listener");
	if ((t->c1 = socket(AF_INET, SOCK_STREAM, 0)) < 0 || connect(t->c1, (void *)&a, al) < 0 ||
	    (t->s1 = accept(t->l, NULL, NULL)) < 0)
		die("tcp conn 1");
	if ((t->c2 = socket(AF_INET, SOCK_STREAM, 0)) < 0 || connect(t->c2, (void *)&a, al) < 0 ||
	    (t->s2 = accept(t->l, NULL, NULL)) < 0)
		die("tcp conn 2");
	/* 1: the client sent its request and shut down its write side. */
	xwrite(t->c1, "request");
	if (shutdown(t->c1, SHUT_WR) < 0)
		die("shutdown c1");
	/* 2: the server sent its answer and shut down its write side. */
	xwrite(t->s2, "answer");
	if (shutdown(t->s2, SHUT_WR) < 0)
		die("shutdown s2");
	/* Let the FINs arrive (loopback: at once; poll for the state). */
	struct timespec ts = {0, 1000 * 1000};
	for (int i = 0; i < 2000; i++) {
		/* Both FINs received and acknowledged (the ACK of a FIN may be
		 * delayed: wait for FIN_WAIT2 too, or a dump's network lock
		 * could drop that ACK and leave FIN_WAIT1 until a retransmit). */
		if (tcp_state(t->s1) == TCP_CLOSE_WAIT && tcp_state(t->c2) == TCP_CLOSE_WAIT &&
		    tcp_state(t->c1) == TCP_FIN_WAIT2 && tcp_state(t->s2) == TCP_FIN_WAIT2)
			return;
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "tcp: the FINs did not arrive\n");
	exit(1);
}

static void tcp_check(struct tcpstate *t)
{
	int st;
	st = tcp_state(t->s1);
	verdict("tcp-close-wait-state", st == TCP_CLOSE_WAIT, "server state %d, want CLOSE_WAIT", st);
	st = tcp_state(t->c1);
	verdict("tcp-fin-wait2-state", st == TCP_FIN_WAIT2, "client state %d, want FIN_WAIT2", st);
	expect_stream("tcp-request-then-eof", t->s1, "request", 1);
	/* The server answers on its still-open side; the client reads it. */
	xwrite(t->s1, "late-answer");
	if (shutdown(t->s1, SHUT_WR) < 0)
		die("shutdown s1");
	struct timespec ts = {0, 1000 * 1000};
	char buf[128];
	int eof = 0;
	size_t got = 0;
	for (int i = 0; i < 5000 && !eof; i++) {
		int e;
		ssize_t n = readall(t->c1, buf + got, sizeof buf - got, &e);
		got += n;
		eof = e;
		if (!eof)
			nanosleep(&ts, NULL);
	}
	buf[got] = 0;
	verdict("tcp-late-answer", strcmp(buf, "late-answer") == 0 && eof, "client read %s, eof %d", buf, eof);

	st = tcp_state(t->c2);
	verdict("tcp-client-close-wait-state", st == TCP_CLOSE_WAIT, "client state %d, want CLOSE_WAIT", st);
	expect_stream("tcp-answer-then-eof", t->c2, "answer", 1);
	xwrite(t->c2, "thanks");
	got = 0;
	for (int i = 0; i < 5000 && got < 6; i++) {
		int e;
		got += readall(t->s2, buf + got, sizeof buf - got, &e);
		if (got < 6)
			nanosleep(&ts, NULL);
	}
	buf[got] = 0;
	verdict("tcp-server-reads-after-its-fin", strcmp(buf, "thanks") == 0, "server read %s", buf);
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s WORKDIR GOFILE GROUP...\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	const char *dir = argv[1], *gofile = argv[2];
	int do_unix = has_group(argc, argv, "unix"), do_tcp = has_group(argc, argv, "tcp");
	seq_last = has_group(argc, argv, "seqlast");
	struct unixstate u = {0};
	struct tcpstate t = {0};
	if (do_unix)
		unix_setup(&u, dir);
	if (do_tcp)
		tcp_setup(&t);
	emit("{\"pid\": %d}\n", getpid());
	int checked = 0;
	for (unsigned long n = 1;; n++) {
		tick("main", n);
		if (!checked && access(gofile, F_OK) == 0) {
			checked = 1;
			if (do_unix)
				unix_check(&u);
			if (do_tcp)
				tcp_check(&t);
			emit("done %d %d\n", nchecks, nfail);
		}
		pace();
	}
}
