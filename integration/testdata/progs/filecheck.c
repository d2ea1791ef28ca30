/*
 * filecheck: fd kinds whose state must come back exactly, checked by the
 * program itself on every round. argv[1] is a directory for FIFOs.
 *   pipe:  pipe2(O_NONBLOCK), then the write end made blocking; "abc"
 *          buffered. Each round: both ends have their F_GETFL flags, the
 *          read end reads "abc" then EAGAIN (not EOF), "abc" goes back.
 *   fifo:  DIR/f1 opened O_RDONLY|O_NONBLOCK and O_WRONLY|O_NONBLOCK,
 *          "fifo!" buffered. Same checks as the pipe.
 *   dev:   /dev/null O_WRONLY, /dev/zero O_RDONLY, /dev/urandom
 *          O_RDONLY|O_NONBLOCK: flags kept, writes/reads behave.
 *   udp:   three UDP sockets on 127.0.0.1: s0 receives; s1 connected to
 *          s0 and shut down for writing (send fails EPIPE); s2 connected to
 *          s0 and shut down for reading (poll keeps saying POLLRDHUP);
 *          s0 has SO_RCVTIMEO 500 ms and IP_MULTICAST_TTL 5.
 *   epoll: eventfd e added with data 0x77, dup'ed to d, e closed and its
 *          number reused by another eventfd e2 (not watched). Writing e2
 *          must not wake the epoll; writing d must, with data 0x77.
 *   dup:   DIR/data opened O_RDWR and dup'ed, a UDP socket dup'ed: each
 *          pair shares one open file description (offset and flags move
 *          together; the socket is one socket).
 *   udplite: a UDP-Lite socket with send/receive checksum coverage 20/16,
 *          connected to itself: options kept, a datagram goes round.
 *   memfd: memfd "lazycr-check" holding "memfd-content", sealed against
 *          shrinking and growing, offset 3: name, content, seals, offset.
 *   deleted: DIR/gone written "ghost-data", mode 0640, offset 2, reopened
 *          read-only through /proc (offset 0), then unlinked: both fds
 *          still name "DIR/gone (deleted)", content, mode and offsets kept.
 *   inotify: watches on DIR/w0 (removed again: a gap), DIR (IN_CREATE) and
 *          DIR/w1 (IN_MODIFY). Each round a file DIR/nN is created and
 *          DIR/w1 written: exactly those two events arrive, with the
 *          watch descriptors inotify_add_watch returned.
 *   async: a UDP socket with O_ASYNC, owner the process (F_SETOWN_EX) and
 *          SIGUSR2 (F_SETSIG): each datagram sent to it raises SIGUSR2
 *          with si_fd set.
 *   oneshot: an epoll set with an eventfd added EPOLLIN|EPOLLONESHOT that
 *          has fired: it stays disarmed (more writes wake nothing, and
 *          fdinfo shows its events as EPOLLONESHOT alone).
 *   lone:  a pipe and the FIFO DIR/f2 whose only writer wrote "lone" and
 *          closed: the read ends keep the 4 bytes buffered (FIONREAD).
 * On a mismatch it prints "bad KEY: detail" on stderr and exits 1.
 *
 * Report: {"pid":N}
 * Ticks:  "pipe", "fifo", "dev", "udp", "epoll", "dup", "udplite", "memfd", "deleted", "inotify", "async", "oneshot", "lone" per round
 *         passed.
 */
#include "common.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <poll.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

static volatile sig_atomic_t usr2, usr2fd;

static void on_usr2(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	usr2fd = si->si_fd;
	usr2++;
}

static void bad(const char *key, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	fprintf(stderr, "bad %s: %s\n", key, buf);
	exit(1);
}

static int getfl(int fd)
{
	int f = fcntl(fd, F_GETFL);
	if (f < 0)
		die("fcntl F_GETFL");
	return f;
}

/* checkpipe: flags of r and w as saved; r holds exactly want, then EAGAIN. */
static void checkpipe(const char *key, int r, int w, int rfl, int wfl, const char *want)
{
	if (getfl(r) != rfl)
		bad(key, "read end flags %#o, were %#o", getfl(r), rfl);
	if (getfl(w) != wfl)
		bad(key, "write end flags %#o, were %#o", getfl(w), wfl);
	char buf[64];
	size_t n = strlen(want);
	ssize_t got = read(r, buf, sizeof buf);
	if (got != (ssize_t)n || memcmp(buf, want, n) != 0)
		bad(key, "read %zd bytes (errno %d), want %zu bytes %s", got, got < 0 ? errno : 0, n, want);
	got = read(r, buf, sizeof buf);
	if (got != -1 || errno != EAGAIN)
		bad(key, "read of the empty end returned %zd (errno %d), want EAGAIN", got, got < 0 ? errno : 0);
	if (write(w, want, n) != (ssize_t)n)
		bad(key, "write back: %s", strerror(errno));
}

static int udpsock(struct sockaddr_in *to)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0)
		die("socket");
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
		die("bind");
	if (to && connect(s, (struct sockaddr *)to, sizeof *to) < 0)
		die("connect");
	return s;
}

/* probe returns the poll(2) events of s: a socket shut down for reading
 * reports POLLRDHUP|POLLIN (datagram_poll in net/core/datagram.c). */
static long probe(int s)
{
	struct pollfd pfd = {.fd = s, .events = POLLIN | POLLOUT | POLLRDHUP};
	if (poll(&pfd, 1, 0) < 0)
		die("poll");
	return pfd.revents;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: filecheck DIR\n");
		return 2;
	}
	/* pipe */
	int p[2];
	if (pipe2(p, O_NONBLOCK) < 0)
		die("pipe2");
	if (fcntl(p[1], F_SETFL, 0) < 0)
		die("fcntl F_SETFL");
	if (write(p[1], "abc", 3) != 3)
		die("write pipe");
	int prfl = getfl(p[0]), pwfl = getfl(p[1]);

	/* fifo */
	char path[4096];
	snprintf(path, sizeof path, "%s/f1", argv[1]);
	if (mkfifo(path, 0600) < 0)
		die("mkfifo");
	int fr = open(path, O_RDONLY | O_NONBLOCK);
	if (fr < 0)
		die("open fifo read");
	int fw = open(path, O_WRONLY | O_NONBLOCK);
	if (fw < 0)
		die("open fifo write");
	if (write(fw, "fifo!", 5) != 5)
		die("write fifo");
	int frfl = getfl(fr), fwfl = getfl(fw);

	/* dev */
	int dnull = open("/dev/null", O_WRONLY), dzero = open("/dev/zero", O_RDONLY),
	    durand = open("/dev/urandom", O_RDONLY | O_NONBLOCK);
	if (dnull < 0 || dzero < 0 || durand < 0)
		die("open /dev");
	int dfl[3] = {getfl(dnull), getfl(dzero), getfl(durand)};

	/* udp */
	int s0 = udpsock(NULL);
	struct sockaddr_in a0;
	socklen_t al = sizeof a0;
	if (getsockname(s0, (struct sockaddr *)&a0, &al) < 0)
		die("getsockname");
	struct timeval rto = {0, 500000}; /* a whole number of jiffies for any HZ */
	int mttl = 5;
	if (setsockopt(s0, SOL_SOCKET, SO_RCVTIMEO, &rto, sizeof rto) < 0 || setsockopt(s0, IPPROTO_IP, IP_MULTICAST_TTL, &mttl, sizeof mttl) < 0)
		die("setsockopt s0");
	int s1 = udpsock(&a0), s2 = udpsock(&a0);
	if (shutdown(s1, SHUT_WR) < 0)
		die("shutdown SHUT_WR");
	if (shutdown(s2, SHUT_RD) < 0)
		die("shutdown SHUT_RD");
	long p2 = probe(s2);
	if (!(p2 & POLLRDHUP))
		bad("udp", "poll on a socket shut down for reading gives %#lx, no POLLRDHUP", p2);

	/* epoll */
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	int e = eventfd(0, EFD_NONBLOCK);
	if (e < 0)
		die("eventfd");
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x77};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, e, &ev) < 0)
		die("epoll_ctl");
	int d = dup(e);
	if (d < 0)
		die("dup");
	close(e);
	int e2 = eventfd(0, EFD_NONBLOCK);
	if (e2 != e)
		bad("epoll", "the second eventfd got fd %d, not %d", e2, e);

	/* dup */
	snprintf(path, sizeof path, "%s/data", argv[1]);
	int fa = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fa < 0)
		die("open data");
	int fb = dup(fa);
	int sd = dup(s0);
	if (fb < 0 || sd < 0)
		die("dup");

	/* udplite (udplite(7): level IPPROTO_UDPLITE, options 10 and 11) */
	int ul = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
	if (ul < 0)
		die("socket UDP-Lite");
	struct sockaddr_in la = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(ul, (struct sockaddr *)&la, sizeof la) < 0)
		die("bind UDP-Lite");
	al = sizeof la;
	if (getsockname(ul, (struct sockaddr *)&la, &al) < 0 || connect(ul, (struct sockaddr *)&la, sizeof la) < 0)
		die("connect UDP-Lite");
	int cov = 20;
	if (setsockopt(ul, IPPROTO_UDPLITE, 10, &cov, sizeof cov) < 0)
		die("UDPLITE_SEND_CSCOV");
	cov = 16;
	if (setsockopt(ul, IPPROTO_UDPLITE, 11, &cov, sizeof cov) < 0)
		die("UDPLITE_RECV_CSCOV");

	/* memfd */
	int mfd = memfd_create("lazycr-check", MFD_ALLOW_SEALING);
	if (mfd < 0)
		die("memfd_create");
	if (write(mfd, "memfd-content", 13) != 13)
		die("write memfd");
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
		die("F_ADD_SEALS");
	if (lseek(mfd, 3, SEEK_SET) != 3)
		die("lseek memfd");
	int mseals = fcntl(mfd, F_GET_SEALS);

	/* deleted */
	char gone[4096], gonelink[4200];
	snprintf(gone, sizeof gone, "%s/gone", argv[1]);
	snprintf(gonelink, sizeof gonelink, "%s (deleted)", gone);
	int g1 = open(gone, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (g1 < 0 || write(g1, "ghost-data", 10) != 10 || fchmod(g1, 0640) < 0 || lseek(g1, 2, SEEK_SET) != 2)
		die("make DIR/gone");
	snprintf(path, sizeof path, "/proc/self/fd/%d", g1);
	int g2 = open(path, O_RDONLY);
	if (g2 < 0 || unlink(gone) < 0)
		die("reopen and unlink DIR/gone");

	/* lone */
	int lp[2];
	if (pipe(lp) < 0 || write(lp[1], "lone", 4) != 4)
		die("lone pipe");
	close(lp[1]);
	snprintf(path, sizeof path, "%s/f2", argv[1]);
	if (mkfifo(path, 0600) < 0)
		die("mkfifo f2");
	int lf = open(path, O_RDONLY | O_NONBLOCK), lfw = open(path, O_WRONLY | O_NONBLOCK);
	if (lf < 0 || lfw < 0 || write(lfw, "lone", 4) != 4)
		die("lone fifo");
	close(lfw);

	/* inotify */
	int in = inotify_init1(IN_NONBLOCK);
	if (in < 0)
		die("inotify_init1");
	char w0[4096], w1[4096];
	snprintf(w0, sizeof w0, "%s/w0", argv[1]);
	snprintf(w1, sizeof w1, "%s/w1", argv[1]);
	int tmp = open(w0, O_WRONLY | O_CREAT, 0600), w1fd = open(w1, O_WRONLY | O_CREAT, 0600);
	if (tmp < 0 || w1fd < 0)
		die("create DIR/w0, DIR/w1");
	close(tmp);
	int wd0 = inotify_add_watch(in, w0, IN_MODIFY);
	if (wd0 < 0 || inotify_rm_watch(in, wd0) < 0)
		die("watch DIR/w0");
	char evbuf[4096];
	while (read(in, evbuf, sizeof evbuf) > 0) /* IN_IGNORED of wd0 */
		;
	int wddir = inotify_add_watch(in, argv[1], IN_CREATE), wd1 = inotify_add_watch(in, w1, IN_MODIFY);
	if (wddir < 0 || wd1 < 0)
		die("inotify_add_watch");

	/* async */
	struct sigaction sa2 = {.sa_sigaction = on_usr2, .sa_flags = SA_SIGINFO | SA_RESTART};
	sigemptyset(&sa2.sa_mask);
	if (sigaction(SIGUSR2, &sa2, NULL) < 0)
		die("sigaction SIGUSR2");
	int as = udpsock(NULL);
	struct sockaddr_in aa;
	al = sizeof aa;
	if (getsockname(as, (struct sockaddr *)&aa, &al) < 0)
		die("getsockname");
	struct f_owner_ex own = {.type = F_OWNER_PID, .pid = getpid()};
	if (fcntl(as, F_SETOWN_EX, &own) < 0 || fcntl(as, F_SETSIG, SIGUSR2) < 0 || fcntl(as, F_SETFL, O_ASYNC | O_NONBLOCK) < 0)
		die("fcntl async");

	/* oneshot */
	int ep2 = epoll_create1(0), eo = eventfd(0, EFD_NONBLOCK);
	if (ep2 < 0 || eo < 0)
		die("epoll_create1/eventfd");
	struct epoll_event oev = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 0x1};
	if (epoll_ctl(ep2, EPOLL_CTL_ADD, eo, &oev) < 0 || write(eo, &(uint64_t){1}, 8) != 8 || epoll_wait(ep2, &oev, 1, 0) != 1)
		die("fire the oneshot entry");

	emit("{\"pid\":%d}\n", getpid());
	for (unsigned long n = 1;; n++) {
		checkpipe("pipe", p[0], p[1], prfl, pwfl, "abc");
		tick("pipe", n);

		checkpipe("fifo", fr, fw, frfl, fwfl, "fifo!");
		tick("fifo", n);

		if (getfl(dnull) != dfl[0] || getfl(dzero) != dfl[1] || getfl(durand) != dfl[2])
			bad("dev", "flags %#o %#o %#o, were %#o %#o %#o", getfl(dnull), getfl(dzero), getfl(durand), dfl[0], dfl[1], dfl[2]);
		unsigned char z[16];
		memset(z, 0xff, sizeof z);
		if (write(dnull, "x", 1) != 1)
			bad("dev", "write /dev/null: %s", strerror(errno));
		if (read(dzero, z, sizeof z) != sizeof z || z[0] != 0 || z[15] != 0)
			bad("dev", "read /dev/zero: not 16 zero bytes");
		if (read(durand, z, sizeof z) != sizeof z)
			bad("dev", "read /dev/urandom: %s", strerror(errno));
		tick("dev", n);

		if (send(s1, "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE)
			bad("udp", "send on the socket shut down for writing did not fail EPIPE (errno %d)", errno);
		long got = probe(s2);
		if (got != p2)
			bad("udp", "poll on the socket shut down for reading gives %#lx, gave %#lx", got, p2);
		struct timeval gto;
		socklen_t gl = sizeof gto;
		int gttl = 0;
		socklen_t tl = sizeof gttl;
		if (getsockopt(s0, SOL_SOCKET, SO_RCVTIMEO, &gto, &gl) < 0 || gto.tv_sec != 0 || gto.tv_usec != 500000 ||
		    getsockopt(s0, IPPROTO_IP, IP_MULTICAST_TTL, &gttl, &tl) < 0 || gttl != 5)
			bad("udp", "SO_RCVTIMEO %ld.%06ld s, IP_MULTICAST_TTL %d; want 0.500000 s and 5", (long)gto.tv_sec, (long)gto.tv_usec, gttl);
		tick("udp", n);

		struct epoll_event out;
		if (write(e2, &(uint64_t){1}, 8) != 8)
			die("write e2");
		int k = epoll_wait(ep, &out, 1, 0);
		if (k != 0)
			bad("epoll", "the unwatched eventfd %d woke the epoll (data %#lx)", e2, (unsigned long)out.data.u64);
		uint64_t v;
		if (read(e2, &v, 8) != 8)
			die("read e2");
		if (write(d, &(uint64_t){1}, 8) != 8)
			die("write d");
		k = epoll_wait(ep, &out, 1, 5000);
		if (k != 1 || out.data.u64 != 0x77)
			bad("epoll", "writing the dup'ed eventfd gave %d events (data %#lx)", k, k == 1 ? (unsigned long)out.data.u64 : 0UL);
		if (read(d, &v, 8) != 8)
			die("read d");
		tick("epoll", n);

		if (write(fa, "x", 1) != 1)
			die("write data");
		off_t oa = lseek(fa, 0, SEEK_CUR), ob = lseek(fb, 0, SEEK_CUR);
		if (oa != (off_t)n || ob != oa)
			bad("dup", "offsets %ld and %ld after %lu writes: not one open file description", (long)oa, (long)ob, n);
		int fl = getfl(fa);
		if (fcntl(fb, F_SETFL, fl ^ O_NONBLOCK) < 0)
			die("fcntl F_SETFL");
		if (getfl(fa) != (fl ^ O_NONBLOCK))
			bad("dup", "O_NONBLOCK set through the dup is not seen through the original");
		if (fcntl(fb, F_SETFL, fl) < 0)
			die("fcntl F_SETFL");
		struct sockaddr_in ad;
		al = sizeof ad;
		if (getsockname(sd, (struct sockaddr *)&ad, &al) < 0 || ad.sin_port != a0.sin_port)
			bad("dup", "the dup'ed socket has port %d, the original %d", ntohs(ad.sin_port), ntohs(a0.sin_port));
		tick("dup", n);

		int sc = 0, rc = 0, proto = 0;
		socklen_t ol = sizeof sc;
		getsockopt(ul, IPPROTO_UDPLITE, 10, &sc, &ol);
		ol = sizeof rc;
		getsockopt(ul, IPPROTO_UDPLITE, 11, &rc, &ol);
		ol = sizeof proto;
		getsockopt(ul, SOL_SOCKET, SO_PROTOCOL, &proto, &ol);
		if (sc != 20 || rc != 16 || proto != IPPROTO_UDPLITE)
			bad("udplite", "protocol %d coverage %d/%d, want %d 20/16", proto, sc, rc, IPPROTO_UDPLITE);
		if (send(ul, "lite", 4, 0) != 4)
			bad("udplite", "send: %s", strerror(errno));
		char lb[8];
		if (recv(ul, lb, sizeof lb, 0) != 4 || memcmp(lb, "lite", 4) != 0)
			bad("udplite", "recv: not the datagram sent");
		tick("udplite", n);

		char link[256], want[64];
		snprintf(path, sizeof path, "/proc/self/fd/%d", mfd);
		ssize_t ll = readlink(path, link, sizeof link - 1);
		link[ll < 0 ? 0 : ll] = 0;
		if (strcmp(link, "/memfd:lazycr-check (deleted)") != 0)
			bad("memfd", "fd %d is %s", mfd, link);
		if (fcntl(mfd, F_GET_SEALS) != mseals)
			bad("memfd", "seals %#x, were %#x", fcntl(mfd, F_GET_SEALS), mseals);
		if (lseek(mfd, 0, SEEK_CUR) != 3)
			bad("memfd", "offset %ld, was 3", (long)lseek(mfd, 0, SEEK_CUR));
		memset(want, 0, sizeof want);
		if (pread(mfd, want, sizeof want, 0) != 13 || memcmp(want, "memfd-content", 13) != 0)
			bad("memfd", "content %s", want);
		if (pwrite(mfd, "x", 1, 13) != -1 || errno != EPERM)
			bad("memfd", "growing it did not fail EPERM (F_SEAL_GROW lost)");
		tick("memfd", n);

		int gfd[2] = {g1, g2};
		for (int i = 0; i < 2; i++) {
			snprintf(path, sizeof path, "/proc/self/fd/%d", gfd[i]);
			ssize_t gl = readlink(path, link, sizeof link - 1);
			link[gl < 0 ? 0 : gl] = 0;
			struct stat st;
			if (strcmp(link, gonelink) != 0 || fstat(gfd[i], &st) < 0 || st.st_nlink != 0 || (st.st_mode & 07777) != 0640 || st.st_size != 10)
				bad("deleted", "fd %d is %s (nlink %lu mode %#o size %ld)", gfd[i], link, (unsigned long)st.st_nlink, st.st_mode & 07777, (long)st.st_size);
			memset(want, 0, sizeof want);
			if (pread(gfd[i], want, sizeof want, 0) != 10 || memcmp(want, "ghost-data", 10) != 0)
				bad("deleted", "fd %d content %s", gfd[i], want);
		}
		if (lseek(g1, 0, SEEK_CUR) != 2 || lseek(g2, 0, SEEK_CUR) != 0)
			bad("deleted", "offsets %ld and %ld, were 2 and 0", (long)lseek(g1, 0, SEEK_CUR), (long)lseek(g2, 0, SEEK_CUR));
		tick("deleted", n);

		snprintf(path, sizeof path, "%s/n%lu", argv[1], n);
		int nf = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		if (nf < 0 || write(w1fd, "m", 1) != 1)
			die("create DIR/nN, write DIR/w1");
		close(nf);
		char nname[64];
		snprintf(nname, sizeof nname, "n%lu", n);
		int created = 0, modified = 0;
		while (created + modified < 2) {
			struct pollfd pfd = {.fd = in, .events = POLLIN};
			if (poll(&pfd, 1, 5000) != 1)
				bad("inotify", "round %lu: %d create and %d modify events, then nothing", n, created, modified);
			ssize_t got = read(in, evbuf, sizeof evbuf);
			if (got < 0 && errno == EAGAIN)
				continue;
			if (got <= 0)
				bad("inotify", "read: %s", strerror(errno));
			for (char *q = evbuf; q < evbuf + got;) {
				struct inotify_event *ie = (struct inotify_event *)q;
				if (ie->wd == wddir && (ie->mask & IN_CREATE) && ie->len && strcmp(ie->name, nname) == 0)
					created++;
				else if (ie->wd == wd1 && (ie->mask & IN_MODIFY))
					modified++;
				else
					bad("inotify", "unexpected event wd %d mask %#x name %s (watches: dir %d, w1 %d)",
					    ie->wd, ie->mask, ie->len ? ie->name : "", wddir, wd1);
				q += sizeof *ie + ie->len;
			}
		}
		if (created != 1 || modified != 1)
			bad("inotify", "round %lu: %d create and %d modify events", n, created, modified);
		unlink(path);
		/* the unlink is not watched (no IN_DELETE in the mask) */
		tick("inotify", n);

		struct f_owner_ex o;
		if (fcntl(as, F_GETOWN_EX, &o) < 0 || o.type != F_OWNER_PID || o.pid != getpid() || fcntl(as, F_GETSIG) != SIGUSR2 ||
		    (getfl(as) & (O_ASYNC | O_NONBLOCK)) != (O_ASYNC | O_NONBLOCK))
			bad("async", "owner type %d pid %d (self %d), signal %d, flags %#o", o.type, o.pid, getpid(), fcntl(as, F_GETSIG), getfl(as));
		sig_atomic_t before = usr2;
		if (sendto(s0, "a", 1, 0, (struct sockaddr *)&aa, sizeof aa) != 1)
			die("sendto async socket");
		for (int i = 0; usr2 == before; i++) {
			if (i == 5000)
				bad("async", "no SIGUSR2 within 5 s of a datagram");
			struct timespec ms = {0, 1000000};
			nanosleep(&ms, NULL);
		}
		if (usr2fd != as)
			bad("async", "SIGUSR2 for fd %d, want %d", (int)usr2fd, as);
		char ab[4];
		if (recv(as, ab, sizeof ab, 0) != 1)
			bad("async", "recv: %s", strerror(errno));
		tick("async", n);

		if (write(eo, &(uint64_t){1}, 8) != 8)
			die("write eo");
		if (epoll_wait(ep2, &oev, 1, 0) != 0)
			bad("oneshot", "the fired EPOLLONESHOT entry woke again");
		snprintf(path, sizeof path, "/proc/self/fdinfo/%d", ep2);
		FILE *fi = fopen(path, "r");
		if (!fi)
			die("open fdinfo");
		char fline[256];
		unsigned int oevents = 0;
		int otfd = -1;
		while (fgets(fline, sizeof fline, fi))
			if (sscanf(fline, "tfd: %d events: %x", &otfd, &oevents) == 2)
				break;
		fclose(fi);
		if (otfd != eo || oevents != EPOLLONESHOT)
			bad("oneshot", "fdinfo: tfd %d events %#x, want tfd %d events %#x", otfd, oevents, eo, (unsigned)EPOLLONESHOT);
		tick("oneshot", n);

		int lq = -1, lfq = -1;
		if (ioctl(lp[0], FIONREAD, &lq) < 0 || ioctl(lf, FIONREAD, &lfq) < 0 || lq != 4 || lfq != 4)
			bad("lone", "pipe holds %d bytes, FIFO %d; want 4 and 4", lq, lfq);
		tick("lone", n);
		pace();
	}
}
