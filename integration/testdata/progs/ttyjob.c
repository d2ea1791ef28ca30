/*
 * ttyjob: a terminal program run as a shell job (integration/tty_test.go),
 * like an editor: it puts its terminal (stdin) in raw mode, sets the window
 * size to COLS x ROWS and opens /dev/tty. Then, for every byte it reads from
 * stdin, it appends one JSON line to REPORT (its own view of its terminal)
 * and writes "got C" to stdout (the terminal); 'q' makes it exit with
 * status 7.
 *
 * Usage: ttyjob REPORT COLS ROWS
 * Report: {"pid":N,"got":"C","isatty":[0,1,2,tty],"raw":B,"rows":N,
 *          "cols":N,"fg":B,"pgrp":N,"sid":N,"dev":[fd0,fd1,fd2,tty],
 *          "flags":N,"winch":N,"ttyname":"..."}
 */
#include "common.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>

static volatile sig_atomic_t winch;

static void onwinch(int sig)
{
	(void)sig;
	winch++;
}

static unsigned int devof(int fd)
{
	unsigned int d = 0;
	if (ioctl(fd, TIOCGDEV, &d) < 0)
		return 0;
	return d;
}

static void report(const char *path, int tty, char c)
{
	struct termios t;
	struct winsize ws;
	if (tcgetattr(0, &t) < 0)
		die("tcgetattr");
	if (ioctl(0, TIOCGWINSZ, &ws) < 0)
		die("TIOCGWINSZ");
	int raw = (t.c_lflag & (ICANON | ECHO | ISIG)) == 0;
	int fg = tcgetpgrp(0) == getpgrp();
	const char *name = ttyname(0);
	char line[1024];
	int n = snprintf(line, sizeof line,
			 "{\"pid\":%d,\"got\":\"%c\",\"isatty\":[%d,%d,%d,%d],\"raw\":%s,\"rows\":%d,\"cols\":%d,"
			 "\"fg\":%s,\"pgrp\":%d,\"sid\":%d,\"dev\":[%u,%u,%u,%u],\"flags\":%d,\"winch\":%d,\"ttyname\":\"%s\"}\n",
			 getpid(), c, isatty(0), isatty(1), isatty(2), isatty(tty), raw ? "true" : "false", ws.ws_row, ws.ws_col,
			 fg ? "true" : "false", getpgrp(), getsid(0), devof(0), devof(1), devof(2), devof(tty),
			 fcntl(0, F_GETFL), (int)winch, name ? name : "");
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		die("open report");
	if (write(fd, line, n) != n)
		die("write report");
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: ttyjob REPORT COLS ROWS\n");
		return 2;
	}
	struct sigaction sa = {.sa_handler = onwinch, .sa_flags = SA_RESTART};
	if (sigaction(SIGWINCH, &sa, NULL) < 0)
		die("sigaction");
	int tty = open("/dev/tty", O_RDWR | O_CLOEXEC);
	if (tty < 0)
		die("open /dev/tty");
	struct termios t;
	if (tcgetattr(0, &t) < 0)
		die("tcgetattr");
	cfmakeraw(&t);
	if (tcsetattr(0, TCSANOW, &t) < 0)
		die("tcsetattr");
	struct winsize ws = {.ws_col = atoi(argv[2]), .ws_row = atoi(argv[3])};
	if (ioctl(0, TIOCSWINSZ, &ws) < 0)
		die("TIOCSWINSZ");
	for (;;) {
		char c;
		ssize_t r = read(0, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("read stdin");
		if (r == 0)
			return 3;
		report(argv[1], tty, c);
		char out[16];
		int n = snprintf(out, sizeof out, "got %c\r\n", c);
		if (write(1, out, n) != n)
			die("write stdout");
		if (c == 'q')
			return 7;
	}
}
