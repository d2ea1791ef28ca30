/*
 * treetcp: a forking TCP server. The root listens on 127.0.0.1:0, accepts
 * one connection and forks a child that serves it: it reads 8-byte
 * counters and sends each back, ticking "echo N" per counter (N must be
 * the counter itself: the child checks there is no gap). With "shared"
 * the root keeps its copy of the connection (one open file description,
 * two members); with "worker" it closes it (the child's alone, as an
 * nginx worker's). The root then waits in pause(2). A second argument
 * "any" listens on 0.0.0.0:0 instead (a client on another host).
 * Report: {"pid":P,"port":N}.
 */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	int shared = argc > 1 && strcmp(argv[1], "shared") == 0;
	int any = argc > 2 && strcmp(argv[2], "any") == 0;
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(any ? INADDR_ANY : INADDR_LOOPBACK)};
	socklen_t n = sizeof a;
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &n) < 0)
		die("listen");
	emit("{\"pid\":%d,\"port\":%d}\n", getpid(), ntohs(a.sin_port));
	int c = accept(l, NULL, NULL);
	if (c < 0)
		die("accept");
	pid_t k = fork();
	if (k < 0)
		die("fork");
	if (k == 0) {
		close(l);
		for (uint64_t want = 1;; want++) {
			uint64_t v;
			ssize_t r = recv(c, &v, 8, MSG_WAITALL);
			if (r < 0 && errno == EINTR) {
				want--;
				continue;
			}
			if (r != 8)
				die("recv");
			if (v != want) {
				fprintf(stderr, "got %lu, want %lu\n", (unsigned long)v, (unsigned long)want);
				exit(1);
			}
			if (send(c, &v, 8, MSG_NOSIGNAL) != 8)
				die("send");
			tick("echo", v);
		}
	}
	if (!shared)
		close(c);
	for (;;)
		pause();
}
