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
 * the master's pty number too.
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

static void answer(pid_t sid)
{
	char line[128];
	size_t n = 0;
	for (;;) {
		char c;
		ssize_t r = read(0, &c, 1);
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
		struct winsize ws;
		struct termios tio;
		const char *name = ttyname(0);
		if (!name || strcmp(name, pts))
			snprintf(why, sizeof why, "ttyname %s, want %s", name ? name : strerror(errno), pts);
		else if (tcgetpgrp(0) != getpgrp())
			snprintf(why, sizeof why, "foreground group %d, want mine %d", (int)tcgetpgrp(0), (int)getpgrp());
		else if (getsid(0) != sid || tcgetsid(0) != sid)
			snprintf(why, sizeof why, "session %d, terminal's %d, want %d", (int)getsid(0), (int)tcgetsid(0), (int)sid);
		else if (ioctl(0, TIOCGWINSZ, &ws) || ws.ws_col != 132 || ws.ws_row != 50)
			snprintf(why, sizeof why, "window %dx%d, want 132x50", ws.ws_col, ws.ws_row);
		else if (tcgetattr(0, &tio) || (tio.c_lflag & ECHO))
			snprintf(why, sizeof why, "echo on");
		else {
			int t = open("/dev/tty", O_RDWR | O_CLOEXEC);
			if (t < 0)
				snprintf(why, sizeof why, "open /dev/tty: %s", strerror(errno));
			close(t);
		}
		char out[300];
		int m = why[0] ? snprintf(out, sizeof out, "bad %lu %s\n", k, why) : snprintf(out, sizeof out, "pong %lu\n", k);
		if (write(1, out, m) != m)
			exit(3);
	}
}

static void child(void)
{
	pid_t sid = setsid();
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
		answer(sid);
	}
	setpgid(g, g);
	if (tcsetpgrp(0, g))
		die("tcsetpgrp");
	for (;;)
		pause();
}

int main(void)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0)
		die("posix_openpt");
	if (grantpt(m) || unlockpt(m))
		die("unlockpt");
	int idx;
	if (ioctl(m, TIOCGPTN, &idx))
		die("TIOCGPTN");
	snprintf(pts, sizeof pts, "/dev/pts/%d", idx);
	struct winsize ws = {.ws_row = 50, .ws_col = 132};
	if (ioctl(m, TIOCSWINSZ, &ws))
		die("TIOCSWINSZ");
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		close(m);
		child();
	}
	emit("{\"pid\":%d,\"pts\":\"%s\"}\n", getpid(), pts);
	char buf[512];
	size_t have = 0;
	for (unsigned long n = 1;; n++) {
		int now;
		if (ioctl(m, TIOCGPTN, &now) || now != idx)
			failf("master's pty number %d, want %d", now, idx);
		char ping[32];
		int k = snprintf(ping, sizeof ping, "ping %lu\n", n);
		if (write(m, ping, k) != k)
			failf("write ping: %s", strerror(errno));
		for (;;) {
			char *nl = memchr(buf, '\n', have);
			if (nl) {
				*nl = 0;
				unsigned long got;
				char *line = buf;
				while (*line == '\r')
					line++;
				if (sscanf(line, "pong %lu", &got) == 1 && got == n) {
					size_t used = nl + 1 - buf;
					memmove(buf, nl + 1, have - used);
					have -= used;
					break;
				}
				if (!strncmp(line, "bad ", 4))
					failf("terminal program: %s", line);
				size_t used = nl + 1 - buf;
				memmove(buf, nl + 1, have - used);
				have -= used;
				continue;
			}
			struct pollfd p = {.fd = m, .events = POLLIN};
			int r = poll(&p, 1, 10000);
			if (r == 0)
				failf("no answer to ping %lu in 10 s", n);
			if (r < 0) {
				if (errno == EINTR)
					continue;
				die("poll");
			}
			ssize_t got = read(m, buf + have, sizeof buf - 1 - have);
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0)
				failf("read master: %s", got ? strerror(errno) : "end of file");
			have += got;
			if (have >= sizeof buf - 1)
				failf("answer too long");
		}
		tick("ok", n);
		pace();
	}
}
