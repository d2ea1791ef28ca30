/*
 * qa5_pktpipe: a packet-mode pipe (pipe2(2) O_DIRECT, pipe(7)): every
 * write is a packet and every read returns at most one. Each round it
 * reads the three packets "a", "bb", "ccc" (each read must return exactly
 * one) and writes them back, so a dump finds some of them buffered.
 *
 * Report: {"pid":N}. Ticks: "ok". A failed check writes "FAIL ..." to
 * stderr and exits 1.
 */
#include "common.h"
#include <fcntl.h>

static int p[2];
static const char *const packets[] = {"a", "bb", "ccc"};

static void put(void)
{
	for (int i = 0; i < 3; i++)
		if (write(p[1], packets[i], strlen(packets[i])) != (ssize_t)strlen(packets[i]))
			die("write packet");
}

static void check(void)
{
	for (int i = 0; i < 3; i++) {
		char b[64];
		ssize_t n = read(p[0], b, sizeof b);
		if (n != (ssize_t)strlen(packets[i]) || memcmp(b, packets[i], n))
			failf("read %zd bytes %.*s, want packet %s", n, (int)(n > 0 ? n : 0), b, packets[i]);
	}
	put();
}

int main(void)
{
	if (pipe2(p, O_DIRECT | O_CLOEXEC))
		die("pipe2 O_DIRECT");
	put();
	check_forever(check);
}
