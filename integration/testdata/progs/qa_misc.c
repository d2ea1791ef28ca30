/*
 * qa_misc: 150 threads with TLS, a MAP_SHARED anonymous region, an 8 MiB
 * MADV_HUGEPAGE region, RLIMIT_NOFILE raised to 8000 with an fd at 5000.
 * Once GOFILE exists it checks all of it and prints one verdict line.
 *
 * Usage: qa_misc GOFILE
 * stdout: {"pid":N} first, "tick main N" until GOFILE, then
 * "verdict threads=T/150 shared-bad=S huge-bad=H fd5000=R nofile=L", then
 * "tick after N".
 */
#include "common.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>

#define NT 150

static volatile int stop;
static __thread long me;
static volatile int ok[NT];

static void *worker(void *a)
{
	me = (long)a;
	while (!stop)
		pace();
	ok[(long)a] = me == (long)a ? 1 : 2;
	for (;;)
		pace();
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: qa_misc GOFILE\n");
		return 2;
	}
	struct rlimit r;
	getrlimit(RLIMIT_NOFILE, &r);
	r.rlim_cur = r.rlim_max < 8000 ? r.rlim_max : 8000;
	if (setrlimit(RLIMIT_NOFILE, &r) < 0)
		die("setrlimit");
	int fd = open("/proc/self/exe", O_RDONLY);
	if (fd < 0 || dup2(fd, 5000) != 5000)
		die("dup2 5000");
	close(fd);
	char *sh = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char *huge = mmap(NULL, 8 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED || huge == MAP_FAILED)
		die("mmap");
	madvise(huge, 8 << 20, MADV_HUGEPAGE);
	for (int i = 0; i < (1 << 20); i++)
		sh[i] = pattern(5, i);
	for (int i = 0; i < (8 << 20); i++)
		huge[i] = pattern(6, i);
	for (long i = 0; i < NT; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, worker, (void *)i) != 0)
			die("pthread_create");
	}
	emit("{\"pid\":%d}\n", getpid());
	unsigned long n = 0;
	while (access(argv[1], F_OK) != 0) {
		tick("main", ++n);
		pace();
	}
	stop = 1;
	int good = 0, answered = 0;
	for (int k = 0; k < 2000 && answered < NT; k++) {
		answered = good = 0;
		for (int i = 0; i < NT; i++) {
			answered += ok[i] != 0;
			good += ok[i] == 1;
		}
		if (answered < NT)
			pace();
	}
	int sbad = 0, hbad = 0;
	for (int i = 0; i < (1 << 20); i++)
		sbad += (unsigned char)sh[i] != pattern(5, i);
	for (int i = 0; i < (8 << 20); i++)
		hbad += (unsigned char)huge[i] != pattern(6, i);
	char b[4];
	ssize_t got = pread(5000, b, 4, 0);
	getrlimit(RLIMIT_NOFILE, &r);
	emit("verdict threads=%d/%d shared-bad=%d huge-bad=%d fd5000=%zd nofile=%lu\n", good, NT, sbad, hbad, got,
	     (unsigned long)r.rlim_cur);
	for (n = 1;; n++) {
		tick("after", n);
		pace();
	}
}
