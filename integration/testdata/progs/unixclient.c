/*
 * unixclient: a redis client on a unix socket (integration/unix_reconnect_test.go).
 * Usage: unixclient PATH KEY
 *
 * Connects to redis at PATH, reports {"pid":P}, then per tick sets KEY to
 * the tick number and reads it back ("tick ops N"; a wrong answer or a
 * closed connection: a message on stderr and exit 1). On SIGUSR1 it stops
 * between two commands and ticks "idle N"; on SIGUSR2 it goes on.
 */
#include "common.h"
#include <signal.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static volatile sig_atomic_t idle;
static void on_usr1(int s) { (void)s; idle = 1; }
static void on_usr2(int s) { (void)s; idle = 0; }

/* line reads one reply line (up to \r\n) into buf. */
static void line(int fd, char *buf, size_t cap)
{
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r != 1) {
			fprintf(stderr, "connection to redis ended (%zd)\n", r);
			exit(1);
		}
		if (buf[n] == '\n' && n > 0 && buf[n - 1] == '\r') {
			buf[n - 1] = 0;
			return;
		}
		if (++n == cap - 1) {
			fprintf(stderr, "reply line too long\n");
			exit(1);
		}
	}
}

static void send_all(int fd, const char *s)
{
	size_t n = strlen(s);
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("write to redis");
		s += w;
		n -= w;
	}
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: unixclient PATH KEY\n");
		return 2;
	}
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s", argv[1]);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0)
		die("connect to redis");
	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	emit("{\"pid\":%d}\n", getpid());
	unsigned long idles = 0;
	for (unsigned long n = 1;; n++) {
		if (idle) {
			tick("idle", ++idles);
			while (idle)
				pace();
		}
		char cmd[128], buf[128], want[32], len[16];
		snprintf(cmd, sizeof cmd, "SET %s %lu\r\n", argv[2], n);
		send_all(s, cmd);
		line(s, buf, sizeof buf);
		if (strcmp(buf, "+OK") != 0) {
			fprintf(stderr, "SET %lu: %s\n", n, buf);
			return 1;
		}
		snprintf(cmd, sizeof cmd, "GET %s\r\n", argv[2]);
		send_all(s, cmd);
		snprintf(want, sizeof want, "%lu", n);
		snprintf(len, sizeof len, "$%zu", strlen(want));
		line(s, buf, sizeof buf);
		if (strcmp(buf, len) != 0) {
			fprintf(stderr, "GET %lu: %s\n", n, buf);
			return 1;
		}
		line(s, buf, sizeof buf);
		if (strcmp(buf, want) != 0) {
			fprintf(stderr, "GET %lu: got %s\n", n, buf);
			return 1;
		}
		tick("ops", n);
		pace();
	}
}
