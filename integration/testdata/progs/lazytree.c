/*
 * lazytree MIB: a process tree whose every member verifies all of its own
 * memory, for lazy migration of trees.
 *
 *   root ─┬─ c1 ── g
 *         └─ c2 (forks a short-lived checker child every round)
 *
 * Each member fills its own buffer (root MIB MiB, c1 MIB+8, c2 MIB+16,
 * g MIB) with pattern(tag, i), a tag of its own (1 root, 2 c1, 3 c2, 4 g):
 * the same addresses hold different bytes in each member. Then, round
 * after round, it verifies every byte of it and ticks "ROLE:ok N"; a wrong
 * byte is reported on stderr and the member exits 3. After every 4 MiB it
 * verified, c2 also forks a child that checks one byte of every page of
 * c2's buffer (lazy memory it shares with its parent through fork) and
 * exits 0 if all hold (else c2 exits 4); c2 ticks "fork:ok N" after each
 * round of them. Report:
 * {"pid","c1","c2","g"} once every member has filled its memory.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/wait.h>

static int ready_wr = -1;
/* A pipe the root closes once it has written its report: members start
 * ticking at EOF, so the report stays the first line. */
static int go_rd = -1, go_wr = -1;

static void bad(const char *role, size_t i, unsigned char got, unsigned char want)
{
	fprintf(stderr, "%s: byte %zu of its buffer is %#x, want %#x\n", role, i, got, want);
	exit(3);
}

/* pattern(tag, i) is, within page P, (P*13 + tag + k) mod 256 at offset k
 * (4096 is 0 mod 256): ref + ((P*13 + tag) & 255) is what page P holds, so
 * pages are filled and verified with memcpy/memcmp, fast enough on a busy
 * machine. */
static unsigned char ref[4096 + 256];

static const unsigned char *want_page(unsigned tag, size_t page)
{
	return ref + ((page * 13 + tag) & 255);
}

static void fill(unsigned char *p, size_t n, unsigned tag)
{
	for (size_t off = 0; off < n; off += 4096)
		memcpy(p + off, want_page(tag, off / 4096), 4096);
}

/* verify checks [from, to) (page-aligned) of p; a wrong byte ends role. */
static void verify(const char *role, const unsigned char *p, size_t from, size_t to, unsigned tag)
{
	for (size_t off = from; off < to; off += 4096) {
		if (memcmp(p + off, want_page(tag, off / 4096), 4096) == 0)
			continue;
		for (size_t i = off; i < off + 4096; i++)
			if (p[i] != pattern(tag, i))
				bad(role, i, p[i], pattern(tag, i));
	}
}

/* The forker forks a checker child after every CHUNK bytes it verified:
 * while its memory is still being fetched, some of those children are
 * forked with pages missing, which they then fault in themselves. */
#define CHUNK (4UL << 20)

static void check_in_child(const unsigned char *p, size_t n, unsigned tag, unsigned long r)
{
	pid_t k = fork();
	if (k < 0) die("fork");
	if (k == 0) {
		for (size_t i = (r * 97) % 4096; i < n; i += 4096)
			if (p[i] != pattern(tag, i))
				bad("fork", i, p[i], pattern(tag, i));
		_exit(0);
	}
	int st;
	while (waitpid(k, &st, 0) < 0)
		if (errno != EINTR) die("waitpid");
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "fork: checker child ended with status %#x\n", st);
		exit(4);
	}
}

static void run(const char *role, unsigned tag, size_t mib, int forker)
{
	size_t n = mib << 20;
	unsigned char *p = malloc(n);
	if (!p) die("malloc");
	fill(p, n, tag);
	char c = 1;
	if (write(ready_wr, &c, 1) != 1) die("write ready");
	close(ready_wr);
	char g;
	while (read(go_rd, &g, 1) < 0 && errno == EINTR)
		;
	close(go_rd);
	char key[32];
	snprintf(key, sizeof key, "%s:ok", role);
	for (unsigned long r = 1;; r++) {
		for (size_t c = 0; c < n; c += CHUNK) {
			verify(role, p, c, c + CHUNK < n ? c + CHUNK : n, tag);
			if (forker)
				check_in_child(p, n, tag, r);
		}
		tick(key, r);
		if (forker)
			tick("fork:ok", r);
		pace();
	}
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: lazytree MIB\n");
		return 2;
	}
	size_t mib = (size_t)atol(argv[1]);
	for (size_t j = 0; j < sizeof ref; j++)
		ref[j] = (unsigned char)j;
	int rd[2];
	if (pipe2(rd, O_CLOEXEC)) die("pipe");
	ready_wr = rd[1];
	int gp[2];
	if (pipe2(gp, O_CLOEXEC)) die("pipe");
	go_rd = gp[0];
	go_wr = gp[1];
	int ids[2];
	if (pipe2(ids, O_CLOEXEC)) die("pipe");
	pid_t c1 = fork();
	if (c1 < 0) die("fork");
	if (c1 == 0) {
		close(rd[0]);
		close(go_wr);
		close(ids[0]);
		pid_t g = fork();
		if (g < 0) die("fork");
		if (g == 0) {
			close(ids[1]);
			run("g", 4, mib, 0);
		}
		if (write(ids[1], &g, sizeof g) != sizeof g) die("write g");
		close(ids[1]);
		run("c1", 2, mib + 8, 0);
	}
	close(ids[1]);
	pid_t g;
	if (read(ids[0], &g, sizeof g) != sizeof g) die("read g");
	close(ids[0]);
	pid_t c2 = fork();
	if (c2 < 0) die("fork");
	if (c2 == 0) {
		close(rd[0]);
		close(go_wr);
		run("c2", 3, mib + 16, 1);
	}
	for (int i = 0; i < 3; i++) {
		char c;
		if (read(rd[0], &c, 1) != 1) die("read ready");
	}
	close(rd[0]);
	/* The root's own buffer is filled after the report: fill it first. */
	size_t n = mib << 20;
	unsigned char *p = malloc(n);
	if (!p) die("malloc");
	fill(p, n, 1);
	emit("{\"pid\":%d,\"c1\":%d,\"c2\":%d,\"g\":%d}\n", getpid(), c1, c2, g);
	close(go_wr);
	close(go_rd);
	for (unsigned long r = 1;; r++) {
		verify("root", p, 0, n, 1);
		tick("root:ok", r);
		pace();
	}
}
