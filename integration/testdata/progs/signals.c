/*
 * signals: SA_SIGINFO handlers, an alternate signal stack, a blocked signal
 * and a pending one.
 *   SIGUSR1: on_usr1, SA_SIGINFO|SA_ONSTACK|SA_RESTART, sa_mask {SIGINT};
 *            the handler checks it runs on the alternate stack and counts
 *   SIGUSR2: on_usr2, SA_SIGINFO, empty sa_mask; blocked, and sent once with
 *            kill(getpid(), SIGUSR2) so it stays pending process-wide
 *   sigaltstack: 64 KiB mmap'd
 *
 * Report: {"pid":N,"usr1_handler":"0x..","usr2_handler":"0x..",
 *          "altstack_sp":"0x..","altstack_size":N,"blocked":"0x.."}
 *   (blocked: the first 64 bits of the thread's signal mask)
 * Ticks:  "main", and "usr1" = number of SIGUSR1 handled (once one arrived).
 */
#include "common.h"
#include <signal.h>
#include <sys/mman.h>

#define ALT_SIZE (64 * 1024)

static char *alt;
static volatile sig_atomic_t usr1;

static void on_usr1(int sig, siginfo_t *si, void *uc)
{
	char here;
	(void)sig, (void)si, (void)uc;
	if (&here < alt || &here >= alt + ALT_SIZE) {
		static const char msg[] = "SIGUSR1 handler not on the alternate stack\n";
		write(2, msg, sizeof msg - 1);
		_exit(3);
	}
	usr1++;
}

static void on_usr2(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)si, (void)uc;
	static const char msg[] = "SIGUSR2 delivered but it is blocked\n";
	write(2, msg, sizeof msg - 1);
	_exit(4);
}

int main(void)
{
	alt = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (alt == MAP_FAILED)
		die("mmap");
	stack_t ss = {.ss_sp = alt, .ss_size = ALT_SIZE, .ss_flags = 0};
	if (sigaltstack(&ss, NULL) < 0)
		die("sigaltstack");

	struct sigaction sa = {.sa_sigaction = on_usr1, .sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART};
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGINT);
	if (sigaction(SIGUSR1, &sa, NULL) < 0)
		die("sigaction SIGUSR1");
	struct sigaction sb = {.sa_sigaction = on_usr2, .sa_flags = SA_SIGINFO};
	sigemptyset(&sb.sa_mask);
	if (sigaction(SIGUSR2, &sb, NULL) < 0)
		die("sigaction SIGUSR2");

	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR2);
	if (sigprocmask(SIG_BLOCK, &block, NULL) < 0)
		die("sigprocmask");
	if (kill(getpid(), SIGUSR2) < 0)
		die("kill SIGUSR2");

	sigset_t cur;
	if (sigprocmask(SIG_BLOCK, NULL, &cur) < 0)
		die("sigprocmask");
	unsigned long blocked = 0;
	for (int s = 1; s <= 64; s++)
		if (sigismember(&cur, s) == 1)
			blocked |= 1UL << (s - 1);

	emit("{\"pid\":%d,\"usr1_handler\":\"%#lx\",\"usr2_handler\":\"%#lx\",\"altstack_sp\":\"%#lx\","
	     "\"altstack_size\":%d,\"blocked\":\"%#lx\"}\n",
	     getpid(), (unsigned long)on_usr1, (unsigned long)on_usr2, (unsigned long)alt, ALT_SIZE, blocked);

	for (unsigned long n = 1;; n++) {
		tick("main", n);
		if (usr1)
			tick("usr1", usr1);
		pace();
	}
}
