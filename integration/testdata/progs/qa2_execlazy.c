/*
 * qa2_execlazy: fills SIZE_MIB MiB with a pattern, reports, and once GOFILE
 * exists execs "sleep 1000" (the exec'd program needs none of the old
 * memory). Migrated post-copy and told to go at once, it execs while most
 * of its pages are still on the source.
 *
 * Usage: qa2_execlazy SIZE_MIB GOFILE
 */
#include "common.h"

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: qa2_execlazy SIZE_MIB GOFILE\n");
		return 2;
	}
	size_t n = strtoul(argv[1], NULL, 10) << 20;
	unsigned char *m = malloc(n);
	if (m == NULL)
		die("malloc");
	for (size_t i = 0; i < n; i++)
		m[i] = pattern(3, i);
	emit("{\"pid\": %d}\n", getpid());
	while (access(argv[2], F_OK) != 0) {
		struct timespec ts = {0, 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	execlp("sleep", "sleep", "1000", (char *)NULL);
	die("exec sleep");
}
