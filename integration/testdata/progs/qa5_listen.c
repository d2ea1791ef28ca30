/*
 * qa5_listen: a TCP listener on 127.0.0.1 (an ephemeral port) made with
 * listen(fd, 7), a deliberately short backlog; it never accepts.
 *
 * Report: {"pid":N}. Ticks: "ok".
 */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

int main(void)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		die("socket");
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(s, (struct sockaddr *)&a, sizeof a))
		die("bind");
	if (listen(s, 7))
		die("listen");
	check_forever(NULL);
}
