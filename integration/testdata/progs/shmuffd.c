/*
 * shmuffd MIB: what serving shared memory (shmem: MAP_SHARED anonymous,
 * memfd, /dev/shm, SysV) by userfaultfd would cost and how it behaves on
 * this kernel, for BenchmarkShmUffd. One JSON line on stdout:
 *
 * Semantics (booleans, each checked with two processes P and Q mapping
 * one memfd; P holds Q's userfaultfd, as lazycr holds each member's):
 *   copy_visible_unregistered  a page UFFDIO_COPY'd through P's uffd reads
 *                              back through Q's unregistered mapping (it
 *                              went into the shmem page cache);
 *   unregistered_fills_zero    Q touching a missing page through an
 *                              unregistered mapping gets zeros, with no
 *                              event on any uffd, and a later UFFDIO_COPY
 *                              of it fails EEXIST: its data would be lost,
 *                              so every mapping must be registered;
 *   other_copy_wakes           Q blocked in a fault on its own uffd is
 *                              woken by a UFFDIO_COPY of that page through
 *                              P's uffd (expected false: wake-ups are per
 *                              uffd, the handler must UFFDIO_WAKE Q's);
 *   wake_releases              UFFDIO_WAKE on Q's uffd then releases it
 *                              and Q reads the page P installed;
 *   registered_refault         after Q's uffd installed a page, P's
 *                              registered mapping faults on it to its uffd
 *                              (expected false: the page is in the cache);
 *   minor_on_cached            with MISSING|MINOR, a page put in the cache
 *                              by pwrite faults MINOR (UFFDIO_CONTINUE
 *                              resolves it) and a page not in it faults
 *                              MISSING;
 *   remove_ambiguous           madvise MADV_DONTNEED (the data stays in the
 *                              shmem file) and MADV_REMOVE (the data is
 *                              gone) of a registered shared mapping both
 *                              send UFFD_EVENT_REMOVE with the same range:
 *                              the handler cannot tell "refetch" from
 *                              "now zero" for a page not yet installed.
 * Throughput in GB/s (1e9 bytes/s) over MIB MiB, no faults involved:
 *   copy_{anon,shm}_{4k,64k}   UFFDIO_COPY into a registered private
 *                              anonymous / memfd MAP_SHARED mapping;
 *   pwrite_shm_64k             pwrite(2) into a memfd (MINOR's fill);
 *   continue_shm_64k           UFFDIO_CONTINUE of those cached pages;
 *   memcpy_shm                 memcpy into a fresh MAP_SHARED mapping
 *                              (first-touch faults: what writing shared
 *                              memory into the restored process costs).
 * Fault latency in µs (p50, p99), a thread touching 16 MiB page by page,
 * the handler a separate process (as lazycr is) serving from memory:
 *   fault_{anon,shm}_{4k,64k}  MISSING fault answered by UFFDIO_COPY of 4
 *                              or 64 KiB (64k: per fault, one per 16 pages);
 *   fault_shm_minor_4k         MINOR fault answered by UFFDIO_CONTINUE.
 */
#include "common.h"
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define PG 4096UL

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int new_uffd(uint64_t features)
{
	int fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) die("userfaultfd");
	struct uffdio_api api = {.api = UFFD_API, .features = features};
	if (ioctl(fd, UFFDIO_API, &api)) die("UFFDIO_API");
	return fd;
}

static void reg(int uffd, void *p, size_t n, uint64_t mode)
{
	struct uffdio_register r = {.range = {(uintptr_t)p, n}, .mode = mode};
	if (ioctl(uffd, UFFDIO_REGISTER, &r)) die("UFFDIO_REGISTER");
}

/* copy returns 0 or the errno of UFFDIO_COPY. */
static int copy(int uffd, void *dst, const void *src, size_t n)
{
	struct uffdio_copy c = {.dst = (uintptr_t)dst, .src = (uintptr_t)src, .len = n};
	while (ioctl(uffd, UFFDIO_COPY, &c)) {
		if (errno != EAGAIN)
			return errno;
		c.dst += c.copy > 0 ? c.copy : 0;
		c.src += c.copy > 0 ? c.copy : 0;
		c.len -= c.copy > 0 ? c.copy : 0;
		c.copy = 0;
	}
	return 0;
}

static int cont(int uffd, void *dst, size_t n)
{
	struct uffdio_continue c = {.range = {(uintptr_t)dst, n}};
	while (ioctl(uffd, UFFDIO_CONTINUE, &c)) {
		if (errno != EAGAIN)
			return errno;
		if (c.mapped > 0) {
			c.range.start += c.mapped;
			c.range.len -= c.mapped;
		}
		c.mapped = 0;
	}
	return 0;
}

/* event waits up to ms for a message on uffd; 0 if none came. */
static int event(int uffd, int ms, struct uffd_msg *m)
{
	struct pollfd pf = {uffd, POLLIN, 0};
	if (poll(&pf, 1, ms) <= 0)
		return 0;
	return read(uffd, m, sizeof *m) == sizeof *m;
}

static int new_memfd(size_t n)
{
	int fd = memfd_create("shmuffd", MFD_CLOEXEC);
	if (fd < 0) die("memfd_create");
	if (ftruncate(fd, n)) die("ftruncate");
	return fd;
}

static void *map(int fd, size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, fd < 0 ? MAP_PRIVATE | MAP_ANONYMOUS : MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) die("mmap");
	return p;
}

static unsigned char *src; /* the "source" data: page i starts with 0x1000+i */

/* --- semantics: Q is a child mapping the memfd twice (unregistered and
 * registered with its own uffd, sent to P); it reads one word on request. */

struct req {
	int reg;
	unsigned long page;
};

static void send_fd(int sock, int fd)
{
	char c = 0;
	struct iovec iov = {&c, 1};
	char ctl[CMSG_SPACE(sizeof(int))];
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof fd);
	if (sendmsg(sock, &mh, 0) != 1) die("sendmsg");
}

static int recv_fd(int sock)
{
	char c;
	struct iovec iov = {&c, 1};
	char ctl[CMSG_SPACE(sizeof(int))];
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
	if (recvmsg(sock, &mh, 0) != 1) die("recvmsg");
	int fd;
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof fd);
	return fd;
}

static void q_main(int sock, int mfd, size_t n)
{
	unsigned char *unreg = map(mfd, n), *regd = map(mfd, n);
	int u = new_uffd(0);
	reg(u, regd, n, UFFDIO_REGISTER_MODE_MISSING);
	send_fd(sock, u);
	if (write(sock, &regd, sizeof regd) != sizeof regd) die("write addr");
	struct req r;
	while (read(sock, &r, sizeof r) == sizeof r) {
		uint64_t v = *(volatile uint64_t *)((r.reg ? regd : unreg) + r.page * PG);
		if (write(sock, &v, sizeof v) != sizeof v) die("write value");
	}
	_exit(0);
}

/* ask sends a request to Q; answer waits up to ms for its reply. */
static void ask(int sock, int reg, unsigned long page)
{
	struct req r = {reg, page};
	if (write(sock, &r, sizeof r) != sizeof r) die("write req");
}

static int answer(int sock, int ms, uint64_t *v)
{
	struct pollfd pf = {sock, POLLIN, 0};
	if (poll(&pf, 1, ms) <= 0)
		return 0;
	return read(sock, v, sizeof *v) == sizeof *v;
}

struct advisor {
	void *p;
	int advice;
};

static void *advise_thread(void *arg)
{
	struct advisor *a = arg;
	if (madvise(a->p, PG, a->advice)) die("madvise");
	return NULL;
}

/* removed reports whether madvise(advice) of page p sends a REMOVE event of
 * exactly that page on uffd (madvise waits until the event is read). */
static int removed(int uffd, void *p, int advice)
{
	struct advisor a = {p, advice};
	pthread_t th;
	if (pthread_create(&th, NULL, advise_thread, &a)) die("pthread_create");
	struct uffd_msg m;
	int ok = event(uffd, 5000, &m) && m.event == UFFD_EVENT_REMOVE &&
		 m.arg.remove.start == (uintptr_t)p && m.arg.remove.end == (uintptr_t)p + PG;
	pthread_join(th, NULL);
	return ok;
}

struct toucher {
	volatile uint64_t *p;
	uint64_t v;
};

static void *touch_thread(void *arg)
{
	struct toucher *t = arg;
	t->v = *t->p;
	return NULL;
}

static void semantics(void)
{
	size_t n = 16 * PG;
	int mfd = new_memfd(n);
	unsigned char *p = map(mfd, n);
	int a = new_uffd(0);
	reg(a, p, n, UFFDIO_REGISTER_MODE_MISSING);
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp)) die("socketpair");
	pid_t q = fork();
	if (q < 0) die("fork");
	if (q == 0) {
		close(sp[0]);
		q_main(sp[1], mfd, n);
	}
	close(sp[1]);
	int s = sp[0], b = recv_fd(s);
	unsigned char *qreg;
	if (read(s, &qreg, sizeof qreg) != sizeof qreg) die("read addr");
	uint64_t v;
	struct uffd_msg m;

	/* 1: COPY through P's uffd, read through Q's unregistered mapping. */
	if (copy(a, p, src, PG)) die("UFFDIO_COPY page 0");
	ask(s, 0, 0);
	int visible = answer(s, 5000, &v) && v == 0x1000;

	/* 2: Q's unregistered mapping touches a missing page first. */
	ask(s, 0, 1);
	int fillzero = answer(s, 5000, &v) && v == 0 && !event(a, 0, &m) && !event(b, 0, &m) &&
		       copy(a, p + PG, src + PG, PG) == EEXIST;

	/* 3: Q faults on its registered mapping; P installs through its own. */
	ask(s, 1, 2);
	int qfault = event(b, 5000, &m) && m.event == UFFD_EVENT_PAGEFAULT &&
		     m.arg.pagefault.address == (uintptr_t)(qreg + 2 * PG);
	if (!qfault) {
		fprintf(stderr, "semantics: no fault event on Q's uffd\n");
		exit(1);
	}
	if (copy(a, p + 2 * PG, src + 2 * PG, PG)) die("UFFDIO_COPY page 2");
	int otherwakes = answer(s, 200, &v); /* a bounded wait: expected to time out */
	struct uffdio_range wr = {(uintptr_t)(qreg + 2 * PG), PG};
	if (!otherwakes && ioctl(b, UFFDIO_WAKE, &wr)) die("UFFDIO_WAKE");
	int released = (otherwakes || answer(s, 5000, &v)) && v == 0x1002;

	/* 4: Q's uffd installs page 4; P's registered mapping reads it. */
	ask(s, 1, 4);
	if (!event(b, 5000, &m)) die("no fault on Q's uffd for page 4");
	if (copy(b, qreg + 4 * PG, src + 4 * PG, PG)) die("UFFDIO_COPY page 4 via Q");
	if (!answer(s, 5000, &v) || v != 0x1004) die("Q read page 4");
	struct toucher t = {(volatile uint64_t *)(p + 4 * PG), 0};
	pthread_t th;
	if (pthread_create(&th, NULL, touch_thread, &t)) die("pthread_create");
	int refault = event(a, 200, &m); /* bounded: expected to time out */
	if (refault)
		copy(a, p + 4 * PG, src + 4 * PG, PG); /* EEXIST; wakes P's thread */
	pthread_join(th, NULL);
	close(s);
	waitpid(q, NULL, 0);

	/* 5: MINOR: pwrite page 0 into the cache, page 1 stays missing. */
	int mfd2 = new_memfd(n);
	unsigned char *p2 = map(mfd2, n);
	int c = new_uffd(UFFD_FEATURE_MINOR_SHMEM);
	reg(c, p2, n, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR);
	if (pwrite(mfd2, src, PG, 0) != (ssize_t)PG) die("pwrite");
	t = (struct toucher){(volatile uint64_t *)p2, 0};
	if (pthread_create(&th, NULL, touch_thread, &t)) die("pthread_create");
	int minor = event(c, 5000, &m) && (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR) && cont(c, p2, PG) == 0;
	pthread_join(th, NULL);
	minor = minor && t.v == 0x1000;
	t = (struct toucher){(volatile uint64_t *)(p2 + PG), 0};
	if (pthread_create(&th, NULL, touch_thread, &t)) die("pthread_create");
	int missing = event(c, 5000, &m) && !(m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR) &&
		      copy(c, p2 + PG, src + PG, PG) == 0;
	pthread_join(th, NULL);
	minor = minor && missing && t.v == 0x1001;

	/* 6: REMOVE events of DONTNEED and REMOVE on installed pages. */
	int mfd3 = new_memfd(n);
	unsigned char *p3 = map(mfd3, n);
	int d = new_uffd(UFFD_FEATURE_EVENT_REMOVE);
	reg(d, p3, n, UFFDIO_REGISTER_MODE_MISSING);
	if (copy(d, p3, src, 2 * PG)) die("UFFDIO_COPY pages 0-1");
	int dontneed = removed(d, p3, MADV_DONTNEED);
	int keeps = *(volatile uint64_t *)p3 == 0x1000; /* from the cache, no fault */
	int remove = removed(d, p3 + PG, MADV_REMOVE);
	t = (struct toucher){(volatile uint64_t *)(p3 + PG), 0};
	if (pthread_create(&th, NULL, touch_thread, &t)) die("pthread_create");
	int refetch = event(d, 5000, &m) && m.event == UFFD_EVENT_PAGEFAULT && copy(d, p3 + PG, src + 8 * PG, PG) == 0;
	pthread_join(th, NULL);
	int ambiguous = dontneed && keeps && remove && refetch && t.v == 0x1008;
	munmap(p3, n);
	close(d);
	close(mfd3);
	emit("\"copy_visible_unregistered\":%s,\"unregistered_fills_zero\":%s,\"other_copy_wakes\":%s,"
	     "\"wake_releases\":%s,\"registered_refault\":%s,\"minor_on_cached\":%s,\"remove_ambiguous\":%s,",
	     visible ? "true" : "false", fillzero ? "true" : "false", otherwakes ? "true" : "false",
	     released ? "true" : "false", refault ? "true" : "false", minor ? "true" : "false",
	     ambiguous ? "true" : "false");
	munmap(p, n);
	munmap(p2, n);
	close(a);
	close(b);
	close(c);
	close(mfd);
	close(mfd2);
}

/* --- throughput --- */

static double gbps(size_t n, double t) { return n / t / 1e9; }

static double copy_rate(int shm, size_t n, size_t chunk)
{
	int fd = shm ? new_memfd(n) : -1;
	unsigned char *p = map(fd, n);
	int u = new_uffd(0);
	reg(u, p, n, UFFDIO_REGISTER_MODE_MISSING);
	double t0 = now();
	for (size_t off = 0; off < n; off += chunk)
		if (copy(u, p + off, src + off, chunk)) die("UFFDIO_COPY");
	double t = now() - t0;
	munmap(p, n);
	close(u);
	if (fd >= 0) close(fd);
	return gbps(n, t);
}

static void minor_rates(size_t n, double *pw, double *co)
{
	int fd = new_memfd(n);
	unsigned char *p = map(fd, n);
	int u = new_uffd(UFFD_FEATURE_MINOR_SHMEM);
	reg(u, p, n, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR);
	double t0 = now();
	for (size_t off = 0; off < n; off += 16 * PG)
		if (pwrite(fd, src + off, 16 * PG, off) != (ssize_t)(16 * PG)) die("pwrite");
	double t1 = now();
	for (size_t off = 0; off < n; off += 16 * PG)
		if (cont(u, p + off, 16 * PG)) die("UFFDIO_CONTINUE");
	double t2 = now();
	*pw = gbps(n, t1 - t0);
	*co = gbps(n, t2 - t1);
	munmap(p, n);
	close(u);
	close(fd);
}

static double memcpy_rate(size_t n)
{
	int fd = new_memfd(n);
	unsigned char *p = map(fd, n);
	double t0 = now();
	memcpy(p, src, n);
	double t = now() - t0;
	munmap(p, n);
	close(fd);
	return gbps(n, t);
}

/* --- fault latency: the toucher is this process, the handler a child
 * that inherited the uffd (its ioctls act on this process's memory). --- */

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void handler(int u, unsigned char *base, size_t n, size_t chunk, int minor)
{
	struct pollfd pf = {u, POLLIN, 0};
	for (;;) {
		if (poll(&pf, 1, -1) < 0) {
			if (errno == EINTR) continue;
			die("poll");
		}
		struct uffd_msg m;
		if (read(u, &m, sizeof m) != sizeof m) {
			if (errno == EAGAIN) continue;
			die("read uffd");
		}
		if (m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		size_t off = ((uintptr_t)m.arg.pagefault.address - (uintptr_t)base) & ~(chunk - 1);
		if (off >= n) continue;
		int e = minor ? cont(u, base + off, chunk) : copy(u, base + off, src + off, chunk);
		if (e == EEXIST) {
			struct uffdio_range r = {(uintptr_t)base + off, chunk};
			ioctl(u, UFFDIO_WAKE, &r);
		} else if (e) {
			errno = e;
			die("handler");
		}
	}
}

static void latency(int shm, size_t chunk, int minor, double *p50, double *p99)
{
	size_t n = 16UL << 20;
	int fd = shm ? new_memfd(n) : -1;
	unsigned char *p = map(fd, n);
	int u = new_uffd(minor ? UFFD_FEATURE_MINOR_SHMEM : 0);
	reg(u, p, n, UFFDIO_REGISTER_MODE_MISSING | (minor ? UFFDIO_REGISTER_MODE_MINOR : 0));
	if (minor)
		for (size_t off = 0; off < n; off += 16 * PG)
			if (pwrite(fd, src + off, 16 * PG, off) != (ssize_t)(16 * PG)) die("pwrite");
	pid_t h = fork();
	if (h < 0) die("fork");
	if (h == 0)
		handler(u, p, n, chunk, minor);
	size_t k = n / chunk;
	double *lat = malloc(k * sizeof *lat);
	if (!lat) die("malloc");
	uint64_t sum = 0;
	for (size_t i = 0; i < k; i++) {
		double t0 = now();
		sum += *(volatile uint64_t *)(p + i * chunk);
		lat[i] = (now() - t0) * 1e6;
		for (size_t off = PG; off < chunk; off += PG)
			sum += *(volatile uint64_t *)(p + i * chunk + off);
	}
	kill(h, SIGKILL);
	waitpid(h, NULL, 0);
	if (sum != (uint64_t)(n / PG) * 0x1000 + (n / PG) * (n / PG - 1) / 2) {
		fprintf(stderr, "latency: the pages read back wrong (sum %#lx)\n", (unsigned long)sum);
		exit(1);
	}
	qsort(lat, k, sizeof *lat, cmp);
	*p50 = lat[k / 2];
	*p99 = lat[k * 99 / 100];
	free(lat);
	munmap(p, n);
	close(u);
	if (fd >= 0) close(fd);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: shmuffd MIB\n");
		return 2;
	}
	size_t n = (size_t)atol(argv[1]) << 20;
	if (n < (16UL << 20)) n = 16UL << 20;
	src = map(-1, n);
	for (size_t off = 0; off < n; off += PG)
		*(uint64_t *)(src + off) = 0x1000 + off / PG;
	emit("{\"mib\":%zu,", n >> 20);
	semantics();
	emit("\"copy_anon_4k\":%.3f,\"copy_anon_64k\":%.3f,\"copy_shm_4k\":%.3f,\"copy_shm_64k\":%.3f,",
	     copy_rate(0, n, PG), copy_rate(0, n, 16 * PG), copy_rate(1, n, PG), copy_rate(1, n, 16 * PG));
	double pw, co;
	minor_rates(n, &pw, &co);
	emit("\"pwrite_shm_64k\":%.3f,\"continue_shm_64k\":%.3f,\"memcpy_shm\":%.3f,", pw, co, memcpy_rate(n));
	double a50, a99, s50, s99, b50, b99, c50, c99, m50, m99;
	latency(0, PG, 0, &a50, &a99);
	latency(1, PG, 0, &s50, &s99);
	latency(0, 16 * PG, 0, &b50, &b99);
	latency(1, 16 * PG, 0, &c50, &c99);
	latency(1, PG, 1, &m50, &m99);
	emit("\"fault_anon_4k\":[%.1f,%.1f],\"fault_shm_4k\":[%.1f,%.1f],\"fault_anon_64k\":[%.1f,%.1f],"
	     "\"fault_shm_64k\":[%.1f,%.1f],\"fault_shm_minor_4k\":[%.1f,%.1f]}\n",
	     a50, a99, s50, s99, b50, b99, c50, c99, m50, m99);
	return 0;
}
