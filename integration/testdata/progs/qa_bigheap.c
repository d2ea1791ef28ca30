/*
 * qa_bigheap: fills SIZE_MIB of heap (malloc, so one big anonymous mapping)
 * with a position-dependent pattern mixed with a seed from getrandom, and
 * remembers a checksum. Once GOFILE exists it verifies every byte against the
 * checksum and prints "verify OK SUM" or "verify FAIL why", then ticks.
 *
 * Usage: qa_bigheap SIZE_MIB GOFILE
 * stdout: {"pid":N,"sum":"0x..."} first, then "tick main N" until GOFILE,
 * then the verdict line and "tick after N".
 */
#include "common.h"

#include <stdint.h>
#include <sys/random.h>

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

static uint64_t checksum(const uint64_t *p, size_t n)
{
	uint64_t s = 0;
	for (size_t i = 0; i < n; i++)
		s = s * 31 + p[i];
	return s;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: qa_bigheap SIZE_MIB GOFILE\n");
		return 2;
	}
	size_t n = (size_t)atol(argv[1]) << 17; /* uint64 words */
	uint64_t seed;
	if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
		die("getrandom");
	uint64_t *p = malloc(n * sizeof *p);
	if (!p)
		die("malloc");
	for (size_t i = 0; i < n; i++)
		p[i] = mix(i ^ seed);
	/* a few untouched holes stay zero: every 64th page is cleared */
	for (size_t i = 0; i < n; i += 64 * 512)
		memset(&p[i], 0, 4096);
	uint64_t sum = checksum(p, n);
	emit("{\"pid\":%d,\"sum\":\"%#lx\"}\n", getpid(), (unsigned long)sum);
	unsigned long t = 0;
	while (access(argv[2], F_OK) != 0) {
		tick("main", ++t);
		pace();
	}
	uint64_t now = checksum(p, n);
	size_t bad = n;
	for (size_t i = 0; i < n && now != sum; i++) {
		uint64_t want = (i % (64 * 512)) < 512 ? 0 : mix(i ^ seed);
		if (p[i] != want) {
			bad = i;
			break;
		}
	}
	if (now == sum)
		emit("verify OK %#lx\n", (unsigned long)now);
	else
		emit("verify FAIL sum %#lx want %#lx, first bad word %zu\n", (unsigned long)now, (unsigned long)sum, bad);
	for (t = 1;; t++) {
		tick("after", t);
		pace();
	}
}
