/*
 * bench_rawfloor: what this machine does at best, measured in one run, for
 * BenchmarkLazyTable to print next to lazycr's numbers (nothing of lazycr
 * runs here). argv: copy MiB (default 1024), TCP bytes (default the same),
 * faults (default 8192).
 *
 * (a) fault → loopback TCP fetch → UFFDIO_COPY, 4 KiB pages: a thread
 *     touches missing pages of a region registered MISSING in a scattered
 *     order and times each touch; a handler thread reads the fault from the
 *     userfaultfd, asks a server thread for the page over a loopback TCP
 *     connection (TCP_NODELAY, 8-byte request, 4096-byte answer) and
 *     installs it with UFFDIO_COPY. Three threads, as lazycr has the
 *     process, the target and the source.
 * (b) UFFDIO_COPY into fresh pages of a region registered MISSING, in
 *     order, 4 KiB / 64 KiB / 1 MiB per call, from a 64 MiB source buffer.
 * (c) plain TCP over loopback: one thread writes the bytes in 256 KiB
 *     writes, another reads them into a 256 KiB buffer.
 *
 * Output: one JSON line:
 *   {"faults":N,"fault_p50_us":F,"fault_p99_us":F,"fault_max_us":F,
 *    "copy_4k_gbs":F,"copy_64k_gbs":F,"copy_1m_gbs":F,"copy_bytes":N,
 *    "tcp_gbs":F,"tcp_bytes":N}
 * Errors go to stderr with exit status 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define SRC_LEN (64UL << 20)
#define TCP_CHUNK (256UL << 10)

static void die(const char *what)
{
	fprintf(stderr, "bench_rawfloor: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned char *src; /* SRC_LEN bytes of non-zero data */

static void full(int fd, void *b, size_t n, int out)
{
	unsigned char *p = b;
	while (n > 0) {
		ssize_t k = out ? write(fd, p, n) : read(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			die(out ? "write socket" : "read socket");
		p += k;
		n -= k;
	}
}

/* tcp_pair connects two loopback TCP sockets: fds[0] accepted, fds[1] dialed. */
static void tcp_pair(int fds[2], int nodelay)
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	if (l < 0 || bind(l, (void *)&a, sizeof a) < 0 || listen(l, 1) < 0 || getsockname(l, (void *)&a, &al) < 0)
		die("listen");
	fds[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fds[1] < 0 || connect(fds[1], (void *)&a, sizeof a) < 0)
		die("connect");
	fds[0] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (fds[0] < 0)
		die("accept");
	close(l);
	int one = 1;
	if (nodelay) {
		setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		setsockopt(fds[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
}

static int open_uffd(void *addr, size_t len)
{
	int u = syscall(SYS_userfaultfd, O_CLOEXEC);
	if (u < 0)
		die("userfaultfd");
	struct uffdio_api api = {.api = UFFD_API};
	if (ioctl(u, UFFDIO_API, &api) < 0)
		die("UFFDIO_API");
	struct uffdio_register reg = {.range = {(unsigned long)addr, len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(u, UFFDIO_REGISTER, &reg) < 0)
		die("UFFDIO_REGISTER");
	return u;
}

static void *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	/* 4 KiB pages, as lazycr installs them and as the page tables of the
	 * process it restores are built. */
	madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

/* (a) */
struct faultctx {
	int uffd, conn; /* handler side */
	int srv;        /* server side */
	unsigned char *region;
	unsigned long pages;
};

static void *server(void *arg)
{
	struct faultctx *c = arg;
	uint64_t off;
	for (;;) {
		ssize_t k = read(c->srv, &off, sizeof off);
		if (k == 0)
			return NULL;
		if (k != sizeof off)
			die("read request");
		full(c->srv, src + off % SRC_LEN, PAGE, 1);
	}
}

static void *handler(void *arg)
{
	struct faultctx *c = arg;
	static unsigned char page[PAGE] __attribute__((aligned(4096)));
	struct pollfd pfd = {c->uffd, POLLIN, 0};
	for (;;) {
		if (poll(&pfd, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll uffd");
		}
		struct uffd_msg m;
		ssize_t k = read(c->uffd, &m, sizeof m);
		if (k < 0 && errno == EAGAIN)
			continue;
		if (k != sizeof m)
			die("read uffd");
		if (m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uint64_t addr = m.arg.pagefault.address & ~(PAGE - 1);
		if (addr == 0)
			return NULL; /* never: the region is not at 0 */
		uint64_t off = addr - (uint64_t)c->region;
		full(c->conn, &off, sizeof off, 1);
		full(c->conn, page, PAGE, 0);
		struct uffdio_copy cp = {.dst = addr, .src = (unsigned long)page, .len = PAGE};
		if (ioctl(c->uffd, UFFDIO_COPY, &cp) < 0 && errno != EEXIST)
			die("UFFDIO_COPY");
	}
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void fault_latency(unsigned long n, double *p50, double *p99, double *pmax)
{
	struct faultctx c = {.pages = n};
	c.region = map(n * PAGE);
	c.uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (c.uffd < 0)
		die("userfaultfd");
	struct uffdio_api api = {.api = UFFD_API};
	if (ioctl(c.uffd, UFFDIO_API, &api) < 0)
		die("UFFDIO_API");
	struct uffdio_register reg = {.range = {(unsigned long)c.region, n * PAGE}, .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(c.uffd, UFFDIO_REGISTER, &reg) < 0)
		die("UFFDIO_REGISTER");
	int fds[2];
	tcp_pair(fds, 1);
	c.srv = fds[0];
	c.conn = fds[1];
	pthread_t ts, th;
	pthread_create(&ts, NULL, server, &c);
	pthread_create(&th, NULL, handler, &c);
	double *lat = malloc(n * sizeof *lat);
	if (!lat)
		die("malloc");
	/* A scattered order (an odd stride over a power-of-two-free walk is
	 * not needed: every page is touched once, i*stride mod n with stride
	 * coprime to n). */
	unsigned long stride = 7919;
	while (n % stride == 0)
		stride += 2;
	for (unsigned long i = 0; i < n; i++) {
		unsigned long k = i * stride % n;
		volatile unsigned char *p = c.region + k * PAGE;
		double t0 = now();
		unsigned char v = *p;
		lat[i] = now() - t0;
		if (v != src[(k * PAGE) % SRC_LEN]) {
			fprintf(stderr, "bench_rawfloor: page %lu reads %#x, want %#x\n", k, v, src[(k * PAGE) % SRC_LEN]);
			exit(1);
		}
	}
	qsort(lat, n, sizeof *lat, cmpd);
	*p50 = lat[n / 2] * 1e6;
	*p99 = lat[n * 99 / 100] * 1e6;
	*pmax = lat[n - 1] * 1e6;
	free(lat);
	/* The handler thread sleeps in poll for good: leave it, the process
	 * exits at the end. Stop the server by closing its peer. */
	pthread_cancel(th);
	pthread_join(th, NULL);
	close(c.conn);
	pthread_join(ts, NULL);
	close(c.srv);
	close(c.uffd);
	munmap(c.region, n * PAGE);
}

/* (b) */
static double copy_rate(size_t len, size_t chunk)
{
	unsigned char *dst = map(len);
	int u = open_uffd(dst, len);
	double t0 = now();
	for (size_t off = 0; off < len; off += chunk) {
		struct uffdio_copy cp = {.dst = (unsigned long)dst + off, .src = (unsigned long)src + off % SRC_LEN,
					 .len = chunk};
		if (ioctl(u, UFFDIO_COPY, &cp) < 0)
			die("UFFDIO_COPY");
	}
	double t = now() - t0;
	if (dst[len - 1] != src[(len - 1) % SRC_LEN]) {
		fprintf(stderr, "bench_rawfloor: copied data differs\n");
		exit(1);
	}
	close(u);
	munmap(dst, len);
	return len / t / 1e9;
}

/* (c) */
struct tcpctx {
	int fd;
	size_t n;
};

static void *tcp_reader(void *arg)
{
	struct tcpctx *c = arg;
	unsigned char *buf = malloc(TCP_CHUNK);
	size_t got = 0;
	while (got < c->n) {
		ssize_t k = read(c->fd, buf, TCP_CHUNK);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			die("read tcp");
		got += k;
	}
	free(buf);
	return NULL;
}

static double tcp_rate(size_t n)
{
	int fds[2];
	tcp_pair(fds, 0);
	struct tcpctx c = {fds[0], n};
	pthread_t t;
	double t0 = now();
	pthread_create(&t, NULL, tcp_reader, &c);
	for (size_t off = 0; off < n; off += TCP_CHUNK) {
		size_t k = n - off < TCP_CHUNK ? n - off : TCP_CHUNK;
		full(fds[1], src + off % SRC_LEN, k, 1);
	}
	pthread_join(t, NULL);
	double r = n / (now() - t0) / 1e9;
	close(fds[0]);
	close(fds[1]);
	return r;
}

int main(int argc, char **argv)
{
	size_t copy = (argc > 1 ? strtoul(argv[1], NULL, 10) : 1024) << 20;
	size_t tcp = argc > 2 ? strtoul(argv[2], NULL, 10) : copy;
	unsigned long faults = argc > 3 ? strtoul(argv[3], NULL, 10) : 8192;
	if (copy < (1UL << 20) || tcp == 0 || faults < 100)
		die("bad arguments");
	copy &= ~((1UL << 20) - 1);
	src = map(SRC_LEN);
	for (size_t i = 0; i < SRC_LEN; i++)
		src[i] = (unsigned char)(i * 7 + (i >> 12) + 1) | 1;
	double p50, p99, pmax;
	fault_latency(faults, &p50, &p99, &pmax);
	double c4 = copy_rate(copy, 4096), c64 = copy_rate(copy, 64 << 10), c1m = copy_rate(copy, 1 << 20);
	double t = tcp_rate(tcp);
	printf("{\"faults\":%lu,\"fault_p50_us\":%.1f,\"fault_p99_us\":%.1f,\"fault_max_us\":%.1f,"
	       "\"copy_4k_gbs\":%.3f,\"copy_64k_gbs\":%.3f,\"copy_1m_gbs\":%.3f,\"copy_bytes\":%zu,"
	       "\"tcp_gbs\":%.3f,\"tcp_bytes\":%zu}\n",
	       faults, p50, p99, pmax, c4, c64, c1m, copy, t, tcp);
	return 0;
}
