/*
 * Shared helpers of the integration test programs.
 *
 * Protocol with the test (see integration/harness_test.go): stdout is a
 * regular file opened O_APPEND by the test. The first line is one JSON object
 * (the program's own view of itself); every later line is "tick KEY N" with N
 * strictly increasing per KEY. Every line is written with a single write(2),
 * so lines of different threads never interleave.
 */
#ifndef LAZYCR_TEST_COMMON_H
#define LAZYCR_TEST_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline void die(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	exit(1);
}

/* emit writes one formatted line to stdout with a single write(2). */
static inline void emit(const char *fmt, ...)
{
	char buf[8192];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof buf) {
		fprintf(stderr, "emit: line too long\n");
		exit(1);
	}
	for (;;) {
		ssize_t w = write(1, buf, n);
		if (w == n)
			return;
		if (w < 0 && errno == EINTR)
			continue;
		die("write stdout");
	}
}

static inline void tick(const char *key, unsigned long n)
{
	emit("tick %s %lu\n", key, n);
}

/* pace keeps the tick rate modest (it is not synchronisation). */
static inline void pace(void)
{
	struct timespec ts = {0, 5 * 1000 * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* failf reports a failed check as "FAIL <message>" on stderr (the test
 * shows the program's stderr) and exits 1. */
static inline void failf(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	fprintf(stderr, "FAIL %s\n", buf);
	exit(1);
}

/* check_forever writes the report {"pid":N}, then for ever calls check
 * (unless NULL; it exits on a failed check) and ticks "ok". */
static inline __attribute__((noreturn)) void check_forever(void (*check)(void))
{
	emit("{\"pid\":%d}\n", getpid());
	for (unsigned long n = 1;; n++) {
		if (check)
			check();
		tick("ok", n);
		pace();
	}
}

/* pattern is the byte at offset i of a buffer filled for tag; the tests
 * compute the same function (integration/harness_test.go, pattern). */
static inline unsigned char pattern(unsigned tag, unsigned long i)
{
	return (unsigned char)(i + (i >> 12) * 13 + tag);
}

#endif
