/*
 * bench_pushpath: which way of moving a lazy process's pages over loopback
 * TCP is fastest on this machine (issue 14's push throughput), measured
 * against a plain TCP copy of the same bytes in the same run. Nothing of
 * lazycr runs here. argv: MiB (default 1024), repetitions (default 3).
 *
 * Every variant moves MiB of non-zero memory (the "frozen process": a region
 * filled before the clock starts) from a sender thread to a receiver thread
 * over one (or K) loopback TCP connection(s), in frames of a 16-byte header
 * and F bytes of pages, the receiver taking every byte:
 *
 *   sender  send    write(2) from the region (plain TCP, framed)
 *           readv   process_vm_readv(2) into a buffer, then writev: today's
 *                   source (copy 1 of 2)
 *           readvz  the same plus a zero check of every page (today's
 *                   source exactly)
 *           splice  vmsplice(2) of the region into a pipe (pages referenced,
 *                   not copied), then splice(2) pipe → socket (sent from the
 *                   pages: MSG_SPLICE_PAGES). Here the owner of the memory
 *                   does the vmsplice itself; in lazycr it is an injected
 *                   syscall in the frozen process (a ptrace round trip per
 *                   pipe-full, not counted here).
 *           splicenm the same without MSG_MORE/SPLICE_F_MORE (no corking)
 *   target  recv    read(2) into a buffer, nothing else (plain TCP)
 *           copy    read, then UFFDIO_COPY into fresh pages registered
 *                   MISSING, one thread (today's target)
 *           pipe    a reader thread and a UFFDIO_COPY thread, a ring of
 *                   buffers between them
 *
 * plus "tcp": one thread writes 256 KiB writes, another reads (bench_rawfloor's
 * plain TCP), before every repetition.
 *
 * More arguments replace the list of variants: sender:target:KiB:streams
 * each (e.g. readvz:copy:64:1, today's lazycr).
 *
 * Output: one line per variant: name, median GB/s, and median ratio to the
 * plain TCP of the same repetition. Errors go to stderr with exit status 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define HDR 16
#define RING 4
#define MAXV 32
#define MAXREP 15

static void die(const char *what)
{
	fprintf(stderr, "bench_pushpath: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void tcp_pair(int fds[2])
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	if (l < 0 || bind(l, (void *)&a, sizeof a) || listen(l, 1) || getsockname(l, (void *)&a, &al))
		die("listen");
	fds[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fds[1] < 0 || connect(fds[1], (void *)&a, sizeof a))
		die("connect");
	fds[0] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (fds[0] < 0)
		die("accept");
	close(l);
}

static void readfull(int fd, void *b, size_t n)
{
	while (n > 0) {
		ssize_t k = read(fd, b, n);
		if (k <= 0) {
			if (k < 0 && errno == EINTR)
				continue;
			die("read");
		}
		b = (char *)b + k;
		n -= k;
	}
}

static void writevfull(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t k = writev(fd, iov, n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			die("writev");
		}
		while (n > 0 && (size_t)k >= iov->iov_len) {
			k -= iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + k;
			iov->iov_len -= k;
		}
	}
}

static unsigned char *region; /* the "frozen process", filled */
static size_t total;

static int zero_page(const unsigned char *p)
{
	static const unsigned char z[PAGE];
	return memcmp(p, z, PAGE) == 0;
}

struct side {
	int fd;
	size_t off, len, frame; /* [off, off+len) of the region, in frames */
	const char *mode;
	unsigned char *dst; /* target: the MISSING region */
	int uffd;
	/* pipelined target */
	unsigned char *ring[RING];
	size_t ringoff[RING], ringlen[RING];
	size_t head, tail; /* filled, consumed */
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

static void *sender(void *arg)
{
	struct side *s = arg;
	unsigned char *buf = NULL;
	int pfd[2] = {-1, -1};
	if (!strcmp(s->mode, "readv") || !strcmp(s->mode, "readvz"))
		buf = malloc(s->frame);
	int more = strcmp(s->mode, "splicenm") ? SPLICE_F_MORE : 0;
	if (!strncmp(s->mode, "splice", 6)) {
		if (pipe2(pfd, O_CLOEXEC))
			die("pipe2");
		if (fcntl(pfd[1], F_SETPIPE_SZ, (int)s->frame) < (int)s->frame)
			die("F_SETPIPE_SZ");
	}
	int zcheck = !strcmp(s->mode, "readvz");
	pid_t me = getpid();
	for (size_t at = s->off; at < s->off + s->len; at += s->frame) {
		size_t n = s->off + s->len - at < s->frame ? s->off + s->len - at : s->frame;
		uint64_t hdr[2] = {at, n};
		if (!strcmp(s->mode, "send")) {
			struct iovec v[2] = {{hdr, HDR}, {region + at, n}};
			writevfull(s->fd, v, 2);
		} else if (buf) {
			struct iovec l = {buf, n}, r = {region + at, n};
			if (process_vm_readv(me, &l, 1, &r, 1, 0) != (ssize_t)n)
				die("process_vm_readv");
			if (zcheck)
				for (size_t p = 0; p < n; p += PAGE)
					if (zero_page(buf + p))
						hdr[1] |= 1UL << 63; /* never: the region is non-zero */
			hdr[1] &= ~(1UL << 63);
			struct iovec v[2] = {{hdr, HDR}, {buf, n}};
			writevfull(s->fd, v, 2);
		} else {
			struct iovec v = {region + at, n};
			for (size_t done = 0; done < n;) {
				ssize_t k = vmsplice(pfd[1], &v, 1, 0);
				if (k < 0)
					die("vmsplice");
				v.iov_base = (char *)v.iov_base + k;
				v.iov_len -= k;
				done += k;
			}
			if (send(s->fd, hdr, HDR, more ? MSG_MORE : 0) != HDR)
				die("send header");
			for (size_t left = n; left > 0;) {
				ssize_t k = splice(pfd[0], NULL, s->fd, NULL, left, SPLICE_F_MOVE | more);
				if (k <= 0)
					die("splice");
				left -= k;
			}
		}
	}
	free(buf);
	if (pfd[0] >= 0) {
		close(pfd[0]);
		close(pfd[1]);
	}
	return NULL;
}

static void install(struct side *s, size_t at, unsigned char *src, size_t n)
{
	struct uffdio_copy c = {.dst = (uintptr_t)(s->dst + at), .src = (uintptr_t)src, .len = n};
	if (ioctl(s->uffd, UFFDIO_COPY, &c) || c.copy != (int64_t)n)
		die("UFFDIO_COPY");
}

static void *copier(void *arg)
{
	struct side *s = arg;
	for (;;) {
		pthread_mutex_lock(&s->mu);
		while (s->tail == s->head)
			pthread_cond_wait(&s->cv, &s->mu);
		size_t i = s->tail % RING;
		pthread_mutex_unlock(&s->mu);
		if (s->ringlen[i] == 0)
			return NULL;
		install(s, s->ringoff[i], s->ring[i], s->ringlen[i]);
		pthread_mutex_lock(&s->mu);
		s->tail++;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
	}
}

static void *receiver(void *arg)
{
	struct side *s = arg;
	int pipelined = !strcmp(s->mode, "pipe");
	pthread_t ct;
	unsigned char *buf = malloc(s->frame);
	if (pipelined) {
		for (int i = 0; i < RING; i++)
			s->ring[i] = malloc(s->frame);
		pthread_create(&ct, NULL, copier, s);
	}
	for (size_t got = 0; got < s->len;) {
		uint64_t hdr[2];
		readfull(s->fd, hdr, HDR);
		size_t n = hdr[1];
		if (n > s->frame)
			die("frame too large");
		if (pipelined) {
			pthread_mutex_lock(&s->mu);
			while (s->head - s->tail == RING)
				pthread_cond_wait(&s->cv, &s->mu);
			size_t i = s->head % RING;
			pthread_mutex_unlock(&s->mu);
			readfull(s->fd, s->ring[i], n);
			s->ringoff[i] = hdr[0];
			s->ringlen[i] = n;
			pthread_mutex_lock(&s->mu);
			s->head++;
			pthread_cond_broadcast(&s->cv);
			pthread_mutex_unlock(&s->mu);
		} else {
			readfull(s->fd, buf, n);
			if (!strcmp(s->mode, "copy"))
				install(s, hdr[0], buf, n);
			else if (memcmp(buf, region + hdr[0], 64)) /* spot check */
				die("wrong bytes");
		}
		got += n;
	}
	if (pipelined) {
		pthread_mutex_lock(&s->mu);
		while (s->head - s->tail == RING)
			pthread_cond_wait(&s->cv, &s->mu);
		s->ringlen[s->head % RING] = 0;
		s->head++;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		pthread_join(ct, NULL);
		for (int i = 0; i < RING; i++)
			free(s->ring[i]);
	}
	free(buf);
	return NULL;
}

/* run moves the region with sender mode sm, target mode tm, frames of
 * frame bytes, over k connections, and returns GB/s. */
static double run(const char *sm, const char *tm, size_t frame, int k)
{
	unsigned char *dst = NULL;
	int uffd = -1;
	if (strcmp(tm, "recv")) {
		dst = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (dst == MAP_FAILED)
			die("mmap target");
		uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
		struct uffdio_api api = {.api = UFFD_API};
		struct uffdio_register reg = {.range = {(uintptr_t)dst, total}, .mode = UFFDIO_REGISTER_MODE_MISSING};
		if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &reg))
			die("userfaultfd");
	}
	struct side snd[8], rcv[8];
	pthread_t st[8], rt[8];
	size_t per = total / k;
	for (int i = 0; i < k; i++) {
		int fds[2];
		tcp_pair(fds);
		snd[i] = (struct side){.fd = fds[1], .off = i * per, .len = per, .frame = frame, .mode = sm};
		rcv[i] = (struct side){.fd = fds[0], .off = i * per, .len = per, .frame = frame, .mode = tm, .dst = dst, .uffd = uffd};
		pthread_mutex_init(&rcv[i].mu, NULL);
		pthread_cond_init(&rcv[i].cv, NULL);
	}
	double t0 = now();
	for (int i = 0; i < k; i++) {
		pthread_create(&rt[i], NULL, receiver, &rcv[i]);
		pthread_create(&st[i], NULL, sender, &snd[i]);
	}
	for (int i = 0; i < k; i++) {
		pthread_join(st[i], NULL);
		pthread_join(rt[i], NULL);
	}
	double t = now() - t0;
	for (int i = 0; i < k; i++) {
		close(snd[i].fd);
		close(rcv[i].fd);
	}
	if (dst) {
		if (memcmp(dst, region, PAGE) || memcmp(dst + total - PAGE, region + total - PAGE, PAGE))
			die("installed bytes differ");
		close(uffd);
		munmap(dst, total);
	}
	return total / t / 1e9;
}

struct tcpctx {
	int fd;
	size_t n;
};

static void *tcp_reader(void *arg)
{
	struct tcpctx *c = arg;
	unsigned char *buf = malloc(256 << 10);
	for (size_t got = 0; got < c->n;) {
		ssize_t k = read(c->fd, buf, 256 << 10);
		if (k <= 0)
			die("read tcp");
		got += k;
	}
	free(buf);
	return NULL;
}

/* tcp is bench_rawfloor's plain TCP: 256 KiB writes from the region. */
static double tcp(void)
{
	int fds[2];
	tcp_pair(fds);
	struct tcpctx c = {fds[0], total};
	pthread_t t;
	double t0 = now();
	pthread_create(&t, NULL, tcp_reader, &c);
	for (size_t off = 0; off < total; off += 256 << 10) {
		struct iovec v = {region + off, 256 << 10};
		writevfull(fds[1], &v, 1);
	}
	pthread_join(t, NULL);
	double r = total / (now() - t0) / 1e9;
	close(fds[0]);
	close(fds[1]);
	return r;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	double w[MAXREP];
	memcpy(w, v, n * sizeof *v);
	qsort(w, n, sizeof *w, cmp);
	return n % 2 ? w[n / 2] : (w[n / 2 - 1] + w[n / 2]) / 2;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
	int reps = argc > 2 ? atoi(argv[2]) : 3;
	if (mib < 16 || reps < 1 || reps > MAXREP)
		die("usage: bench_pushpath [MiB ≥ 16] [repetitions 1-15]");
	total = mib << 20;
	region = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		die("mmap region");
	for (size_t p = 0; p < total; p += 8)
		*(uint64_t *)(region + p) = p | 1;
	struct {
		const char *s, *t;
		size_t frame;
		int k;
	} v[] = {
		{"send", "recv", 64 << 10, 1},
		{"send", "recv", 1 << 20, 1},
		{"readvz", "copy", 64 << 10, 1}, /* today */
		{"readv", "copy", 64 << 10, 1},
		{"readvz", "recv", 64 << 10, 1},
		{"splice", "recv", 64 << 10, 1},
		{"splice", "recv", 1 << 20, 1},
		{"send", "copy", 64 << 10, 1},
		{"send", "copy", 1 << 20, 1},
		{"send", "pipe", 64 << 10, 1},
		{"send", "pipe", 1 << 20, 1},
		{"readvz", "pipe", 64 << 10, 1},
		{"readvz", "pipe", 1 << 20, 1},
		{"splice", "copy", 64 << 10, 1},
		{"splice", "copy", 1 << 20, 1},
		{"splice", "pipe", 64 << 10, 1},
		{"splice", "pipe", 1 << 20, 1},
		{"readvz", "copy", 1 << 20, 1},
		{"readv", "copy", 1 << 20, 1},
		{"readvz", "copy", 256 << 10, 1},
		{"readvz", "pipe", 256 << 10, 1},
		{"readvz", "copy", 64 << 10, 2},
		{"readvz", "copy", 1 << 20, 2},
		{"splice", "pipe", 1 << 20, 2},
	};
	int nv = sizeof v / sizeof v[0];
	if (argc > 3) { /* variants from argv: sender:target:KiB:streams */
		nv = 0;
		for (int i = 3; i < argc && nv < MAXV; i++) {
			char *a = strdup(argv[i]), *t = strchr(a, ':'), *f = t ? strchr(t + 1, ':') : NULL, *k = f ? strchr(f + 1, ':') : NULL;
			if (!k)
				die("variant is sender:target:KiB:streams");
			*t++ = *f++ = *k++ = 0;
			v[nv].s = a, v[nv].t = t, v[nv].frame = strtoul(f, NULL, 10) << 10, v[nv].k = atoi(k);
			nv++;
		}
	}
	double g[MAXV][MAXREP], ratio[MAXV][MAXREP], base[MAXREP];
	for (int r = 0; r < reps; r++) {
		base[r] = tcp();
		for (int i = 0; i < nv; i++) {
			g[i][r] = run(v[i].s, v[i].t, v[i].frame, v[i].k);
			ratio[i][r] = g[i][r] / base[r];
		}
	}
	printf("%-36s %6.2f GB/s\n", "tcp (256 KiB writes, plain read)", median(base, reps));
	for (int i = 0; i < nv; i++) {
		char name[64];
		snprintf(name, sizeof name, "%s→%s %zuK x%d", v[i].s, v[i].t, v[i].frame >> 10, v[i].k);
		printf("%-36s %6.2f GB/s  %.2fx tcp\n", name, median(g[i], reps), median(ratio[i], reps));
	}
	return 0;
}
