/*
 * treecheck: a process tree that checks itself.
 *
 *   root ─┬─ c1 (leads its own process group) ── g (grandchild, in c1's group)
 *         └─ c2 (leads its own session)
 *
 *   - a pipe from c2 to the root: c2 writes a counter (8 bytes) every 5 ms,
 *     the root reads one every 10 ms, so data is buffered in the pipe at
 *     any moment; the root checks the values are consecutive;
 *   - a file (argv[1]) opened O_RDWR by the root before forking, so root,
 *     c1 and g share one open file description and its offset: c1 and g
 *     append 8-byte records {writer, counter} with write(2) at the shared
 *     offset; the root re-reads the file (pread) and checks that each
 *     writer's records are complete (1..n, none overwritten);
 *   - every member checks getppid, getsid and getpgid against what they
 *     were at its start (the root only its session and group).
 * Each member ticks "ROLE:ok" while its own checks hold ("ROLE:bad"
 * otherwise); the root also ticks "pipe" (the last value read) and
 * "file" (records checked). Report: {"pid","c1","c2","g"} once all exist.
 */
#include "common.h"
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>

struct ids { pid_t ppid, sid, pgid; };

/* The read end of a pipe the root closes once it has written its report:
 * members start ticking at EOF, so the report stays the first line. */
static int go_rd = -1;

static void wait_go(void)
{
	char c;
	while (read(go_rd, &c, 1) < 0 && errno == EINTR)
		;
	close(go_rd);
}

static struct ids ids_now(void)
{
	struct ids i = {getppid(), getsid(0), getpgid(0)};
	return i;
}

static int ids_same(struct ids a, struct ids b)
{
	return a.ppid == b.ppid && a.sid == b.sid && a.pgid == b.pgid;
}

/* member ticks ROLE:ok and, with fd >= 0, appends records as writer w. */
static void member(const char *role, int fd, uint32_t w, int status_pipe)
{
	struct ids want = ids_now();
	char ok[32], bad[32];
	snprintf(ok, sizeof ok, "%s:ok", role);
	snprintf(bad, sizeof bad, "%s:bad", role);
	if (status_pipe >= 0) {
		char c = 1;
		if (write(status_pipe, &c, 1) != 1) die("write status");
		close(status_pipe);
	}
	wait_go();
	for (unsigned long n = 1;; n++) {
		if (fd >= 0) {
			uint32_t rec[2] = {w, (uint32_t)n};
			if (write(fd, rec, sizeof rec) != sizeof rec) die("write record");
		}
		tick(ids_same(want, ids_now()) ? ok : bad, n);
		pace();
	}
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: treecheck FILE\n");
		return 2;
	}
	int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) die("open");
	int p[2], st[2], st2[2], gop[2];
	if (pipe(p) || pipe2(st, O_CLOEXEC) || pipe2(st2, O_CLOEXEC) || pipe2(gop, O_CLOEXEC)) die("pipe");
	go_rd = gop[0];

	pid_t c1 = fork();
	if (c1 < 0) die("fork");
	if (c1 == 0) {
		close(p[0]); close(p[1]); close(st[0]); close(st2[0]); close(st2[1]); close(gop[1]);
		if (setpgid(0, 0)) die("setpgid");
		int gst[2];
		if (pipe2(gst, O_CLOEXEC)) die("pipe");
		pid_t g = fork();
		if (g < 0) die("fork");
		if (g == 0) {
			close(gst[0]); close(st[1]);
			member("g", fd, 2, gst[1]);
		}
		close(gst[1]);
		char c;
		if (read(gst[0], &c, 1) != 1) die("read g status");
		close(gst[0]);
		/* Tell the root g's pid, then run. */
		if (write(st[1], &g, sizeof g) != sizeof g) die("write g pid");
		member("c1", fd, 1, st[1]);
	}
	pid_t c2 = fork();
	if (c2 < 0) die("fork");
	if (c2 == 0) {
		close(p[0]); close(fd); close(st[0]); close(st[1]); close(st2[0]); close(gop[1]);
		if (setsid() < 0) die("setsid");
		char c = 1;
		if (write(st2[1], &c, 1) != 1) die("write status");
		close(st2[1]);
		wait_go();
		struct ids want = ids_now();
		for (uint64_t n = 1;; n++) {
			if (write(p[1], &n, sizeof n) != sizeof n) die("write pipe");
			tick(ids_same(want, ids_now()) ? "c2:ok" : "c2:bad", n);
			struct timespec ts = {0, 5 * 1000 * 1000};
			while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
				;
		}
	}
	close(p[1]); close(st[1]); close(st2[1]);
	pid_t g;
	char c;
	if (read(st[0], &g, sizeof g) != sizeof g) die("read g pid");
	if (read(st[0], &c, 1) != 1 || read(st2[0], &c, 1) != 1) die("read status");
	close(st[0]); close(st2[0]);
	emit("{\"pid\":%d,\"c1\":%d,\"c2\":%d,\"g\":%d}\n", getpid(), c1, c2, g);
	close(gop[0]);
	close(gop[1]);

	/* The root's parent is outside the tree (the test; after a restore,
	 * whoever adopted it): only its session and group are checked. */
	struct ids want = ids_now();
	uint64_t last = 0;
	static uint32_t buf[1 << 20];
	for (unsigned long n = 1;; n++) {
		uint64_t v;
		ssize_t r = read(p[0], &v, sizeof v);
		if (r != sizeof v) die("read pipe");
		if (v != last + 1) {
			fprintf(stderr, "pipe: got %llu after %llu\n", (unsigned long long)v, (unsigned long long)last);
			exit(1);
		}
		last = v;
		struct stat sb;
		if (fstat(fd, &sb)) die("fstat");
		size_t len = (size_t)sb.st_size;
		if (len > sizeof buf) len = sizeof buf;
		ssize_t got = pread(fd, buf, len, 0);
		if (got < 0) die("pread");
		uint32_t next[3] = {0, 1, 1};
		for (ssize_t i = 0; i + 1 < got / 4; i += 2) {
			uint32_t w = buf[i], k = buf[i + 1];
			if (w < 1 || w > 2 || k != next[w]) {
				fprintf(stderr, "file: record %zd is {%u, %u}, expected writer 1 or 2 and counter %u\n", i / 2, w, k, w >= 1 && w <= 2 ? next[w] : 0);
				exit(1);
			}
			next[w]++;
		}
		struct ids now = ids_now();
		now.ppid = want.ppid;
		tick(ids_same(want, now) ? "root:ok" : "root:bad", n);
		tick("pipe", last);
		tick("file", n);
		struct timespec ts = {0, 10 * 1000 * 1000};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
}
