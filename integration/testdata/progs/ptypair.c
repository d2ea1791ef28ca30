/*
 * ptypair: a terminal program and its terminal emulator in one tree, as
 * tmux, screen, script(1) or sshd make them. The parent holds the master
 * of a pty (posix_openpt, unlockpt, a 132x50 window). Its child leads a
 * session whose controlling terminal is the pty's slave (fds 0-2 on it,
 * echo off) and runs a grandchild in a process group of its own, the
 * terminal's foreground group. Every round the parent writes "ping N" to
 * the master and reads the grandchild's answer: "pong N" if, seen from
 * the grandchild, its stdin is still the same /dev/pts/K, the controlling
 * terminal of the child's session with its own group in the foreground,
 * with the window size and echo off, else "bad N <why>". The parent checks
 * the master's pty number too. A second pty's slave is held, opened with
 * O_NOCTTY, by a daemon child that leads a session of its own without a
 * controlling terminal; it answers the parent's pings on it, "bad" if it
 * has a controlling terminal.
 *
 * Report: {"pid":N,"pts":"/dev/pts/K"}. Ticks: "ok". A failed check
 * writes "FAIL ..." to stderr and exits 1.
 */
#include "common.h"
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>

static char pts[64];

/* answer answers "ping N" lines read from fd in with "pong N" on fd out,
 * or "bad N <why>" when check says why. */
static void answer(int in, int out, void (*check)(char *why, size_t n))
{
	char line[128];
	size_t n = 0;
	for (;;) {
		char c;
		ssize_t r = read(in, &c, 1);
		if (r <= 0)
			exit(2);
		if (c != '\n' && n < sizeof line - 1) {
			line[n++] = c;
			continue;
		}
		line[n] = 0;
		n = 0;
		unsigned long k;
		if (sscanf(line, "ping %lu", &k) != 1)
			continue;
		char why[200] = "";
		check(why, sizeof why);
		char msg[300];
		int m = why[0] ? snprintf(msg, sizeof msg, "bad %lu %s\n", k, why) : snprintf(msg, sizeof msg, "pong %lu\n", k);
		if (write(out, msg, m) != m)
			exit(3);
	}
}

static pid_t sid;

/* checkJob: the grandchild's view of its terminal. */
static void checkJob(char *why, size_t n)
{
	struct winsize ws;
	struct termios tio;
	const char *name = ttyname(0);
	if (!name || strcmp(name, pts))
		snprintf(why, n, "ttyname %s, want %s", name ? name : strerror(errno), pts);
	else if (tcgetpgrp(0) != getpgrp())
		snprintf(why, n, "foreground group %d, want mine %d", (int)tcgetpgrp(0), (int)getpgrp());
	else if (getsid(0) != sid || tcgetsid(0) != sid)
		snprintf(why, n, "session %d, terminal's %d, want %d", (int)getsid(0), (int)tcgetsid(0), (int)sid);
	else if (ioctl(0, TIOCGWINSZ, &ws) || ws.ws_col != 132 || ws.ws_row != 50)
		snprintf(why, n, "window %dx%d, want 132x50", ws.ws_col, ws.ws_row);
	else if (tcgetattr(0, &tio) || (tio.c_lflag & ECHO))
		snprintf(why, n, "echo on");
	else {
		int t = open("/dev/tty", O_RDWR | O_CLOEXEC);
		if (t < 0)
			snprintf(why, n, "open /dev/tty: %s", strerror(errno));
		close(t);
	}
}

/* checkNoCtty: a session leader that holds a pty slave opened with
 * O_NOCTTY has no controlling terminal. */
static void checkNoCtty(char *why, size_t n)
{
	int t = open("/dev/tty", O_RDWR | O_CLOEXEC);
	if (t >= 0) {
		snprintf(why, n, "the session leader holding a slave with O_NOCTTY has a controlling terminal");
		close(t);
	} else if (errno != ENXIO)
		snprintf(why, n, "open /dev/tty: %s, want ENXIO", strerror(errno));
}

static void child(void)
{
	sid = setsid();
	if (sid < 0)
		die("setsid");
	int s = open(pts, O_RDWR); /* the session leader's first terminal: its controlling one */
	if (s < 0)
		die("open slave");
	dup2(s, 0);
	dup2(s, 1);
	dup2(s, 2);
	if (s > 2)
		close(s);
	struct termios tio;
	if (tcgetattr(0, &tio))
		die("tcgetattr");
	tio.c_lflag &= ~(ECHO | ECHONL);
	if (tcsetattr(0, TCSANOW, &tio))
		die("tcsetattr");
	signal(SIGTTOU, SIG_IGN);
	pid_t g = fork();
	if (g < 0)
		die("fork");
	if (g == 0) {
		setpgid(0, 0);
		while (tcgetpgrp(0) != getpgrp())
			pace();
		answer(0, 1, checkJob);
	}
	setpgid(g, g);
	if (tcsetpgrp(0, g))
		die("tcsetpgrp");
	for (;;)
		pause();
}

/* conv is the parent's side of one pty: its master and what was read. */
struct conv {
	int m;
	const char *who;
	char buf[512];
	size_t have;
};

/* pingpong writes "ping n" to c's master and waits for "pong n". */
static void pingpong(struct conv *c, unsigned long n)
{
	char ping[32];
	int k = snprintf(ping, sizeof ping, "ping %lu\n", n);
	if (write(c->m, ping, k) != k)
		failf("write ping to %s: %s", c->who, strerror(errno));
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->have);
		if (nl) {
			*nl = 0;
			unsigned long got;
			char *line = c->buf;
			while (*line == '\r')
				line++;
			int done = sscanf(line, "pong %lu", &got) == 1 && got == n;
			if (!strncmp(line, "bad ", 4))
				failf("%s: %s", c->who, line);
			size_t used = nl + 1 - c->buf;
			memmove(c->buf, nl + 1, c->have - used);
			c->have -= used;
			if (done)
				return;
			continue;
		}
		struct pollfd p = {.fd = c->m, .events = POLLIN};
		int r = poll(&p, 1, 10000);
		if (r == 0)
			failf("no answer from %s to ping %lu in 10 s", c->who, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		ssize_t got = read(c->m, c->buf + c->have, sizeof c->buf - 1 - c->have);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			failf("read the master of %s: %s", c->who, got ? strerror(errno) : "end of file");
		c->have += got;
		if (c->have >= sizeof c->buf - 1)
			failf("answer from %s too long", c->who);
	}
}

/* openMaster opens a new pty's master, unlocked, with its slave's path in
 * path. */
static int openMaster(char *path, size_t n, int *idx)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0)
		die("posix_openpt");
	if (grantpt(m) || unlockpt(m))
		die("unlockpt");
	if (ioctl(m, TIOCGPTN, idx))
		die("TIOCGPTN");
	snprintf(path, n, "/dev/pts/%d", *idx);
	return m;
}

int main(void)
{
	int idx, idx2;
	char pts2[64];
	int m = openMaster(pts, sizeof pts, &idx);
	struct winsize ws = {.ws_row = 50, .ws_col = 132};
	if (ioctl(m, TIOCSWINSZ, &ws))
		die("TIOCSWINSZ");
	/* A second pty, whose slave a daemon (a session leader without a
	 * controlling terminal) holds opened with O_NOCTTY. */
	int m2 = openMaster(pts2, sizeof pts2, &idx2);
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		close(m);
		close(m2);
		child();
	}
	pid_t d = fork();
	if (d < 0)
		die("fork");
	if (d == 0) {
		close(m);
		close(m2);
		if (setsid() < 0)
			die("setsid");
		int s = open(pts2, O_RDWR | O_NOCTTY);
		if (s < 0)
			die("open the second slave");
		struct termios tio;
		if (tcgetattr(s, &tio))
			die("tcgetattr");
		tio.c_lflag &= ~(ECHO | ECHONL);
		if (tcsetattr(s, TCSANOW, &tio))
			die("tcsetattr");
		answer(s, s, checkNoCtty);
	}
	emit("{\"pid\":%d,\"pts\":\"%s\"}\n", getpid(), pts);
	struct conv job = {.m = m, .who = "the terminal program"}, daemon = {.m = m2, .who = "the daemon"};
	for (unsigned long n = 1;; n++) {
		int now;
		if (ioctl(m, TIOCGPTN, &now) || now != idx)
			failf("master's pty number %d, want %d", now, idx);
		if (ioctl(m2, TIOCGPTN, &now) || now != idx2)
			failf("second master's pty number %d, want %d", now, idx2);
		pingpong(&job, n);
		pingpong(&daemon, n);
		tick("ok", n);
		pace();
	}
}
