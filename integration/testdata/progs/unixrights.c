/*
 * unixrights: a unix socketpair with a file descriptor in flight
 * (SCM_RIGHTS sent, not yet received), for the refusal test
 * (integration/unix_listen_test.go). Reports {"pid":P,"fd":F} (F: the
 * receiving end), then ticks "main N".
 */
#include "common.h"
#include <sys/socket.h>

int main(void)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		die("socketpair");
	char byte = 'x';
	struct iovec iov = {&byte, 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c;
	memset(&c, 0, sizeof c);
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.buf, .msg_controllen = sizeof c.buf};
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	int one = 1; /* stdout */
	memcpy(CMSG_DATA(h), &one, sizeof one);
	if (sendmsg(sv[1], &m, 0) != 1)
		die("sendmsg");
	emit("{\"pid\":%d,\"fd\":%d}\n", getpid(), sv[0]);
	for (unsigned long n = 1;; n++) {
		tick("main", n);
		pace();
	}
}
