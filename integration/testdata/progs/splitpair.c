// splitpair: the classic socketpair(2) + fork(2) pattern, each process
// keeping one end (the parent sv[0], the child sv[1]). The child echoes
// what the parent sends; the parent prints "tick pair N" per round trip. After
// the report line {"pid":P,"child":C}.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

int main(void) {
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
		perror("socketpair");
		return 1;
	}
	pid_t c = fork();
	if (c < 0) {
		perror("fork");
		return 1;
	}
	if (c == 0) {
		close(sv[0]);
		char b;
		while (read(sv[1], &b, 1) == 1)
			if (write(sv[1], &b, 1) != 1)
				return 1;
		return 0;
	}
	close(sv[1]);
	printf("{\"pid\":%d,\"child\":%d}\n", getpid(), c);
	fflush(stdout);
	for (unsigned long n = 1;; n++) {
		char b = 'x';
		if (write(sv[0], &b, 1) != 1 || read(sv[0], &b, 1) != 1 || b != 'x') {
			fprintf(stderr, "round trip %lu broken\n", n);
			return 1;
		}
		printf("tick pair %lu\n", n);
		fflush(stdout);
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
