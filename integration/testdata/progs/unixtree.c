/*
 * unixtree: a unix listener in the parent and a connection waiting in its
 * queue held by the child (integration/unix_listen_test.go). Reports
 * {"pid":P,"child":C}, then ticks "main N".
 *
 * unixtree alone: the child holds nothing of the listener's; each tick the
 * parent connects to its own listener, accepts, and sends a byte through
 * the connection: "self N" advances only if the listener works.
 */
#include "common.h"
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

int main(int argc, char **argv)
{
	int alone = argc > 1 && strcmp(argv[1], "alone") == 0;
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int n = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "lazycr-unixtree-%d", getpid());
	socklen_t al = offsetof(struct sockaddr_un, sun_path) + 1 + n;
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, al) < 0 || listen(l, 4) < 0)
		die("listen");
	int ready[2];
	if (pipe(ready) < 0)
		die("pipe");
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		close(l);
		if (alone) {
			if (write(ready[1], "r", 1) != 1)
				die("write");
			for (;;)
				pause();
		}
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		if (s < 0 || connect(s, (struct sockaddr *)&a, al) < 0)
			die("connect");
		if (write(ready[1], "r", 1) != 1)
			die("write");
		for (;;)
			pause();
	}
	char b;
	if (read(ready[0], &b, 1) != 1)
		die("read");
	emit("{\"pid\":%d,\"child\":%d}\n", getpid(), c);
	for (unsigned long i = 1, self = 0;; i++) {
		tick("main", i);
		if (alone) {
			int s = socket(AF_UNIX, SOCK_STREAM, 0);
			if (s < 0 || connect(s, (struct sockaddr *)&a, al) < 0)
				die("connect to own listener");
			int c2 = accept(l, NULL, NULL);
			if (c2 < 0)
				die("accept");
			char x = 'x', y = 0;
			if (write(s, &x, 1) != 1 || read(c2, &y, 1) != 1 || y != 'x')
				die("round trip");
			close(s);
			close(c2);
			tick("self", ++self);
		}
		pace();
	}
}
