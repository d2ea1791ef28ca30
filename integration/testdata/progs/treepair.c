/*
 * treepair: a socket pair split across a parent and its child
 * (socketpair(2) then fork(2), each keeping one end), with data in flight
 * both ways at any moment, and a second pair shut down one way.
 *
 *   - pair A (stream): the parent sends 8-byte counters 1, 2, 3, ...
 *     keeping WINDOW unanswered; the child answers each value v with v.
 *     Each side reads BATCH values only when twice that many are queued,
 *     so that (once WINDOW values are out) bytes always wait in both
 *     directions. The child checks the values it gets are
 *     consecutive, the parent that the answers are; any gap or repeat is a
 *     "bad" line and exit 1.
 *   - pair B (stream): the parent wrote "bye" and shut down its end for
 *     writing before forking; the child read "bye". On every batch the
 *     child checks its end reads EOF (not EAGAIN), the parent that sending
 *     on its end fails EPIPE.
 * Ticks: "tick parent N" every 500 answers, "tick child N" every 500 values.
 * Report: {"pid":P,"child":C}.
 */
#include "common.h"
#include <fcntl.h>
#include <stdint.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#define WINDOW 128
#define BATCH 16

static void sleep_ms(long ms)
{
	struct timespec ts = {0, ms * 1000 * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void bad(const char *who, const char *what, unsigned long a, unsigned long b)
{
	emit("tick bad 1\n");
	fprintf(stderr, "%s: %s: %lu, want %lu\n", who, what, a, b);
	exit(1);
}

/* take reads BATCH values from fd if at least 2*BATCH are queued, so that
 * BATCH or more always stay queued (SIOCINQ, unix(7)); it returns how many
 * it read (0 or BATCH). */
static int take(int fd, uint64_t *v)
{
	int q;
	if (ioctl(fd, SIOCINQ, &q) < 0)
		die("ioctl SIOCINQ");
	if (q < 2 * BATCH * 8)
		return 0;
	for (;;) {
		ssize_t r = recv(fd, v, BATCH * 8, MSG_WAITALL);
		if (r == BATCH * 8)
			return BATCH;
		if (r < 0 && errno == EINTR)
			continue;
		die("recv pair A");
	}
}

static void send_all(int fd, const void *b, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			die("send pair A");
		b = (const char *)b + w;
		n -= w;
	}
}

static void check_shut(const char *who, int fd, int reading)
{
	char c;
	ssize_t r = reading ? recv(fd, &c, 1, MSG_DONTWAIT) : send(fd, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (reading && r != 0)
		bad(who, "pair B read (0 is EOF)", r < 0 ? (unsigned long)errno + 1000 : (unsigned long)r, 0);
	if (!reading && !(r < 0 && errno == EPIPE))
		bad(who, "pair B send (EPIPE)", r < 0 ? (unsigned long)errno + 1000 : (unsigned long)r, EPIPE + 1000);
}

int main(void)
{
	int a[2], b[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, a) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, b) < 0)
		die("socketpair");
	if (send(b[0], "bye", 3, 0) != 3 || shutdown(b[0], SHUT_WR) < 0)
		die("pair B");
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		close(a[0]);
		close(b[0]);
		char bye[3];
		if (recv(b[1], bye, 3, MSG_WAITALL) != 3 || memcmp(bye, "bye", 3) != 0)
			die("recv bye");
		uint64_t want = 1, v[BATCH];
		for (;;) {
			sleep_ms(2);
			check_shut("child", b[1], 1);
			while (take(a[1], v)) {
				for (int i = 0; i < BATCH; i++) {
					if (v[i] != want)
						bad("child", "value", v[i], want);
					if (want % 500 == 0)
						tick("child", want / 500);
					want++;
				}
				send_all(a[1], v, sizeof v);
			}
		}
	}
	close(a[1]);
	close(b[1]);
	emit("{\"pid\":%d,\"child\":%d}\n", getpid(), c);
	uint64_t next = 1, want = 1, v[BATCH];
	for (;;) {
		while (next - want < WINDOW) {
			send_all(a[0], &next, 8);
			next++;
		}
		sleep_ms(2);
		check_shut("parent", b[0], 0);
		while (take(a[0], v)) {
			for (int i = 0; i < BATCH; i++) {
				if (v[i] != want)
					bad("parent", "answer", v[i], want);
				if (want % 500 == 0)
					tick("parent", want / 500);
				want++;
			}
		}
	}
}
