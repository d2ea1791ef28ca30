//go:build ignore

// (The constraint above keeps the go command from rejecting a C file in a
// package without cgo; gcc sees an ordinary comment.)

/*
 * udpp: the UDP ping-pong program of the lazycr migration demo, in C.
 * Same CLI, output and counters as the Go command (package udpp documents
 * them). Single-threaded: one ppoll(2) loop whose timeout is the next ping or
 * stats time; SIGUSR1, SIGINT and SIGTERM are blocked except inside ppoll, so
 * none is missed between a check and the wait.
 *
 *   udpp server PORT
 *   udpp client SERVER PORT [--local-port P] [--interval D] [--no-connect] [--count N]
 *
 * Exit codes: 0 success (also on SIGINT/SIGTERM), 1 runtime error, 2 usage.
 * Build: gcc -O2 -Wall -Wextra -o udpp cmd/udpp/udpp.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PING_PREFIX "This is ping packet "
#define PONG_PREFIX "This is pong packet "
#define MAX_DGRAM 1500
#define DEFAULT_LOCAL_PORT 38374

static const char usage[] =
	"usage:\n"
	"  udpp server PORT\n"
	"  udpp client SERVER PORT [--local-port P] [--interval D] [--no-connect] [--count N]\n"
	"\n"
	"The server answers \"This is ping packet N\" with \"This is pong packet N\" and\n"
	"prints three lines per ping. The client pings every interval (default 200ms)\n"
	"from 0.0.0.0:P (default 38374; 0 = any port), connect(2)ed to the server\n"
	"unless --no-connect, prints \"pong N from IP:PORT\" per pong and a stats line\n"
	"every second, on SIGUSR1 and on exit. --count N stops after N pings (0 =\n"
	"forever). The server announces \"udpp server listening on ADDR\" on stderr.\n";

static volatile sig_atomic_t got_usr1, got_stop;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		got_usr1 = 1;
	else
		got_stop = 1;
}

/* writeall writes the whole buffer to fd, retrying on EINTR. */
static int writeall(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* outf writes one formatted line to fd with one write(2). */
static int outf(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int outf(int fd, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n > sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (writeall(fd, buf, (size_t)n) < 0) {
		perror("udpp: write output");
		return -1;
	}
	return 0;
}

static void usage_error(const char *msg, const char *arg)
{
	if (arg)
		fprintf(stderr, "udpp: %s %s\n%s", msg, arg, usage);
	else
		fprintf(stderr, "udpp: %s\n%s", msg, usage);
	exit(2);
}

/* parse_u64 parses a whole decimal string; -1 if it is not one. */
static int parse_u64(const char *s, uint64_t *out)
{
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

static int parse_port(const char *s)
{
	uint64_t v;
	if (parse_u64(s, &v) < 0 || v > 65535)
		return -1;
	return (int)v;
}

/* parse_duration accepts Go-style "200ms", "1s", "1.5s", "500us", "100ns",
 * "2m" (one unit); it returns nanoseconds or -1. */
static int64_t parse_duration(const char *s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || v <= 0)
		return -1;
	double mul;
	if (!strcmp(end, "ns"))
		mul = 1;
	else if (!strcmp(end, "us") || !strcmp(end, "\xc2\xb5s"))
		mul = 1e3;
	else if (!strcmp(end, "ms"))
		mul = 1e6;
	else if (!strcmp(end, "s"))
		mul = 1e9;
	else if (!strcmp(end, "m"))
		mul = 60e9;
	else if (!strcmp(end, "h"))
		mul = 3600e9;
	else
		return -1;
	double ns = v * mul;
	if (ns < 1 || ns > 9e18)
		return -1;
	return (int64_t)ns;
}

/* parse_seq returns N from "<prefix>N" (trailing NUL/newline allowed), or 0. */
static uint64_t parse_seq(char *buf, size_t n, const char *prefix)
{
	while (n > 0 && (buf[n - 1] == '\0' || buf[n - 1] == '\n'))
		n--;
	buf[n] = '\0';
	size_t pl = strlen(prefix);
	if (n <= pl || strncmp(buf, prefix, pl) != 0)
		return 0;
	for (size_t i = pl; i < n; i++)
		if (buf[i] < '0' || buf[i] > '9')
			return 0;
	uint64_t v;
	if (parse_u64(buf + pl, &v) < 0)
		return 0;
	return v;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void fmt_addr(const struct sockaddr_in *sa, char *out, size_t len)
{
	char ip[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof(ip));
	snprintf(out, len, "%s:%u", ip, (unsigned)ntohs(sa->sin_port));
}

/* setup_signals installs handlers and blocks the signals; *waitmask is the
 * mask to use in ppoll (the signals unblocked). */
static void setup_signals(sigset_t *waitmask)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, waitmask);
	sigdelset(waitmask, SIGUSR1);
	sigdelset(waitmask, SIGINT);
	sigdelset(waitmask, SIGTERM);
}

static int run_server(int port)
{
	sigset_t waitmask;
	setup_signals(&waitmask);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("udpp: socket");
		return 1;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_ANY)};
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "udpp: listen on udp port %d: %s\n", port, strerror(errno));
		close(fd);
		return 1;
	}
	socklen_t sl = sizeof(sa);
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	char addr[64];
	fmt_addr(&sa, addr, sizeof(addr));
	fprintf(stderr, "udpp server listening on %s\n", addr);
	fflush(stderr);

	char buf[MAX_DGRAM + 1];
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int r = ppoll(&pfd, 1, NULL, &waitmask);
		if (got_stop)
			break;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			perror("udpp: ppoll");
			close(fd);
			return 1;
		}
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(fd, buf, MAX_DGRAM, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			perror("udpp: recvfrom");
			close(fd);
			return 1;
		}
		fmt_addr(&from, addr, sizeof(addr));
		uint64_t seq = parse_seq(buf, (size_t)n, PING_PREFIX); /* NUL-terminates buf */
		if (outf(1, "Received ping packet from %s", addr) < 0 || outf(1, "Data: %s", buf) < 0)
			return 1;
		if (seq == 0) {
			if (outf(1, "Ignoring malformed packet") < 0)
				return 1;
			continue;
		}
		if (outf(1, "Sending pong packet %" PRIu64, seq) < 0)
			return 1;
		char msg[64];
		int ml = snprintf(msg, sizeof(msg), PONG_PREFIX "%" PRIu64, seq);
		/* The sender may be gone (ICMP errors): ignore send failures. */
		(void)sendto(fd, msg, (size_t)ml, 0, (struct sockaddr *)&from, fl);
	}
	close(fd);
	return 0;
}

struct tracker {
	uint64_t sent, received, lost, duplicated, reordered;
	uint64_t highest;
	uint64_t *got; /* bitset, bit N-1 */
	size_t words;
};

static int tracker_pong(struct tracker *t, uint64_t n)
{
	if (n == 0 || n > t->sent)
		return 0;
	size_t i = (size_t)((n - 1) / 64);
	uint64_t bit = (uint64_t)1 << ((n - 1) % 64);
	if (i >= t->words) {
		size_t nw = t->words ? t->words * 2 : 16;
		while (nw <= i)
			nw *= 2;
		uint64_t *g = realloc(t->got, nw * sizeof(*g));
		if (!g) {
			perror("udpp: realloc");
			exit(1);
		}
		memset(g + t->words, 0, (nw - t->words) * sizeof(*g));
		t->got = g;
		t->words = nw;
	}
	if (t->got[i] & bit) {
		t->duplicated++;
		return 1;
	}
	t->got[i] |= bit;
	t->received++;
	if (n > t->highest) {
		t->lost += n - t->highest - 1;
		t->highest = n;
	} else {
		t->lost--;
		t->reordered++;
	}
	return 1;
}

static void tracker_finish(struct tracker *t)
{
	if (t->sent > t->highest) {
		t->lost += t->sent - t->highest;
		t->highest = t->sent;
	}
}

static int print_stats(const struct tracker *t)
{
	return outf(1, "stats sent=%" PRIu64 " received=%" PRIu64 " lost=%" PRIu64 " duplicated=%" PRIu64
		       " reordered=%" PRIu64,
		    t->sent, t->received, t->lost, t->duplicated, t->reordered);
}

struct client_config {
	const char *server;
	int port, local_port, connect, count;
	int64_t interval_ns;
};

static int run_client(const struct client_config *cfg)
{
	const int64_t stats_every = 1000000000, drain = 1000000000;
	sigset_t waitmask;
	setup_signals(&waitmask);

	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_DGRAM}, *ai;
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", cfg->port);
	int gai = getaddrinfo(cfg->server, portstr, &hints, &ai);
	if (gai != 0) {
		fprintf(stderr, "udpp: resolve server %s:%d: %s\n", cfg->server, cfg->port, gai_strerror(gai));
		return 1;
	}
	struct sockaddr_in server;
	memcpy(&server, ai->ai_addr, sizeof(server));
	freeaddrinfo(ai);

	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("udpp: socket");
		return 1;
	}
	struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfg->local_port),
				    .sin_addr.s_addr = htonl(INADDR_ANY)};
	if (bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0 ||
	    (cfg->connect && connect(fd, (struct sockaddr *)&server, sizeof(server)) < 0)) {
		char sa[64];
		fmt_addr(&server, sa, sizeof(sa));
		fprintf(stderr, "udpp: open udp socket on port %d to %s: %s\n", cfg->local_port, sa, strerror(errno));
		close(fd);
		return 1;
	}

	struct tracker t = {0};
	int64_t now = now_ns(), next_send = now, next_stats = now + stats_every, drain_at = -1;
	char buf[MAX_DGRAM + 1], addr[64];
	int rc = 0;
	for (;;) {
		if (got_stop)
			break;
		if (got_usr1) {
			got_usr1 = 0;
			if (print_stats(&t) < 0) {
				rc = 1;
				break;
			}
		}
		now = now_ns();
		if (drain_at >= 0 && now >= drain_at)
			break;
		if (next_send >= 0 && now >= next_send) {
			t.sent++;
			char msg[64];
			int ml = snprintf(msg, sizeof(msg), PING_PREFIX "%" PRIu64, t.sent);
			ssize_t w = cfg->connect ? send(fd, msg, (size_t)ml, 0)
						 : sendto(fd, msg, (size_t)ml, 0, (struct sockaddr *)&server,
							  sizeof(server));
			if (w < 0 && errno != ECONNREFUSED && errno != EINTR) {
				fprintf(stderr, "udpp: send ping %" PRIu64 ": %s\n", t.sent, strerror(errno));
				rc = 1;
				break;
			}
			next_send += cfg->interval_ns;
			if (next_send < now) /* fell behind: do not burst */
				next_send = now + cfg->interval_ns;
			if (cfg->count > 0 && t.sent == (uint64_t)cfg->count) {
				next_send = -1;
				drain_at = now + drain;
			}
		}
		if (now >= next_stats) {
			if (print_stats(&t) < 0) {
				rc = 1;
				break;
			}
			next_stats += stats_every;
			if (next_stats < now)
				next_stats = now + stats_every;
		}
		int64_t wake = next_stats;
		if (next_send >= 0 && next_send < wake)
			wake = next_send;
		if (drain_at >= 0 && drain_at < wake)
			wake = drain_at;
		int64_t d = wake - now_ns();
		if (d < 0)
			d = 0;
		struct timespec ts = {.tv_sec = d / 1000000000, .tv_nsec = d % 1000000000};
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int r = ppoll(&pfd, 1, &ts, &waitmask);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			perror("udpp: ppoll");
			rc = 1;
			break;
		}
		if (r == 0)
			continue;
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(fd, buf, MAX_DGRAM, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		if (n < 0) {
			/* ECONNREFUSED: ICMP port unreachable on a connected
			 * socket, the server is not up (yet); see udp(7). */
			if (errno == EINTR || errno == EAGAIN || errno == ECONNREFUSED)
				continue;
			perror("udpp: recvfrom");
			rc = 1;
			break;
		}
		uint64_t seq = parse_seq(buf, (size_t)n, PONG_PREFIX);
		if (seq == 0)
			continue;
		fmt_addr(&from, addr, sizeof(addr));
		if (outf(1, "pong %" PRIu64 " from %s", seq, addr) < 0) {
			rc = 1;
			break;
		}
		tracker_pong(&t, seq);
		if (cfg->count > 0 && t.highest == (uint64_t)cfg->count)
			break;
	}
	tracker_finish(&t);
	if (print_stats(&t) < 0)
		rc = 1;
	free(t.got);
	close(fd);
	return rc;
}

int main(int argc, char **argv)
{
	const char *pos[4];
	int npos = 0;
	struct client_config cfg = {.local_port = DEFAULT_LOCAL_PORT, .connect = 1, .interval_ns = 200000000};

	for (int i = 1; i < argc; i++) {
		char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help") || !strcmp(a, "help")) {
			fputs(usage, stdout);
			return 0;
		}
		if (strncmp(a, "--", 2) != 0) {
			if (npos == 4)
				usage_error("too many arguments at", a);
			pos[npos++] = a;
			continue;
		}
		char name[32];
		const char *val = NULL;
		const char *eq = strchr(a, '=');
		size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
		if (nl >= sizeof(name))
			usage_error("unknown flag", a);
		memcpy(name, a + 2, nl);
		name[nl] = '\0';
		if (!strcmp(name, "no-connect")) {
			if (eq)
				usage_error("--no-connect takes no value", NULL);
			cfg.connect = 0;
			continue;
		}
		if (strcmp(name, "local-port") && strcmp(name, "interval") && strcmp(name, "count"))
			usage_error("unknown flag", a);
		if (eq)
			val = eq + 1;
		else if (i + 1 < argc)
			val = argv[++i];
		else
			usage_error("flag needs a value:", a);
		if (!strcmp(name, "local-port")) {
			if ((cfg.local_port = parse_port(val)) < 0)
				usage_error("bad --local-port", val);
		} else if (!strcmp(name, "interval")) {
			if ((cfg.interval_ns = parse_duration(val)) < 0)
				usage_error("bad --interval", val);
		} else {
			uint64_t c;
			if (parse_u64(val, &c) < 0 || c > 0x7fffffff)
				usage_error("bad --count", val);
			cfg.count = (int)c;
		}
	}
	if (npos == 0)
		usage_error("missing command", NULL);
	if (!strcmp(pos[0], "server")) {
		if (npos != 2)
			usage_error("server takes PORT", NULL);
		int port = parse_port(pos[1]);
		if (port < 0)
			usage_error("bad port", pos[1]);
		return run_server(port);
	}
	if (!strcmp(pos[0], "client")) {
		if (npos != 3)
			usage_error("client takes SERVER PORT", NULL);
		cfg.server = pos[1];
		cfg.port = parse_port(pos[2]);
		if (cfg.port <= 0)
			usage_error("bad port", pos[2]);
		return run_client(&cfg);
	}
	usage_error("unknown command", pos[0]);
	return 2;
}
