/*
 * sigcount: counts the SIGUSR1 and SIGRTMIN deliveries its handlers see.
 * argv[1] MiB of touched memory make a dump's freeze last a while; the
 * main loop spins without syscalls between ticks.
 *
 * Report: {"pid":N,"rtmin":N} (rtmin: the C library's SIGRTMIN)
 * Ticks:  "loop N"; "usr1 C" and "rt C" with C the deliveries so far.
 */
#include "common.h"
#include <signal.h>
#include <sys/mman.h>

static volatile sig_atomic_t usr1, rt;

static void on_usr1(int sig) { (void)sig; usr1++; }
static void on_rt(int sig) { (void)sig; rt++; }

int main(int argc, char **argv)
{
	unsigned long mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
	struct sigaction sa = {0};
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGUSR1, &sa, NULL)) die("sigaction");
	sa.sa_handler = on_rt;
	if (sigaction(SIGRTMIN, &sa, NULL)) die("sigaction");
	unsigned char *m = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) die("mmap");
	for (unsigned long i = 0; i < mib << 20; i++)
		m[i] = (unsigned char)(i * 7 + 1);
	emit("{\"pid\":%d,\"rtmin\":%d}\n", getpid(), SIGRTMIN);
	for (unsigned long n = 1;; n++) {
		for (volatile unsigned long spin = 0; spin < 2000000; spin++)
			;
		tick("loop", n);
		tick("usr1", (unsigned long)usr1);
		tick("rt", (unsigned long)rt);
	}
}
