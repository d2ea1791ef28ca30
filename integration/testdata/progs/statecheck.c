/*
 * statecheck: state restore must bring back beyond memory and fds.
 *   - credentials: the test runs it as uid/gid 65534; every tick key names
 *     the uid, euid, gid and group count the process sees;
 *   - a POSIX timer (timer_create, SIGEV_SIGNAL with SIGRTMIN+1, every
 *     10 ms): the "timer" key is the number of expirations handled, which
 *     only keeps growing if the timer is re-armed with its id after restore;
 *   - an itimer (ITIMER_REAL, every 10 ms, SIGALRM): the "itimer" key;
 *   - the nice value: it sets 7 (setpriority(2)) and the creds key names
 *     the value it reads back.
 * Report: {"pid","uid","gid","timer_id"}.
 */
#include "common.h"
#include <signal.h>
#include <sys/time.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/resource.h>

static volatile sig_atomic_t timer_hits, itimer_hits;

static void on_timer(int sig) { (void)sig; timer_hits++; }
static void on_alarm(int sig) { (void)sig; itimer_hits++; }

int main(void)
{
	if (setpriority(PRIO_PROCESS, 0, 7)) die("setpriority");
	struct sigaction sa = {0};
	sa.sa_handler = on_timer;
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGRTMIN + 1, &sa, NULL)) die("sigaction");
	sa.sa_handler = on_alarm;
	if (sigaction(SIGALRM, &sa, NULL)) die("sigaction");

	struct sigevent sev = {0};
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIGRTMIN + 1;
	timer_t id;
	if (timer_create(CLOCK_MONOTONIC, &sev, &id)) die("timer_create");
	struct itimerspec its = {{0, 10000000}, {0, 10000000}};
	if (timer_settime(id, 0, &its, NULL)) die("timer_settime");
	struct itimerval itv = {{0, 10000}, {0, 10000}};
	if (setitimer(ITIMER_REAL, &itv, NULL)) die("setitimer");

	emit("{\"pid\":%d,\"uid\":%d,\"gid\":%d,\"timer_id\":%ld}\n", getpid(), getuid(), getgid(), (long)(intptr_t)id);
	for (unsigned long n = 1;; n++) {
		struct timespec ts = {0, 50000000};
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
		struct itimerspec cur;
		if (timer_gettime(id, &cur)) die("timer_gettime");
		int ng = getgroups(0, NULL);
		errno = 0;
		int nice = getpriority(PRIO_PROCESS, 0);
		if (errno) die("getpriority");
		emit("tick creds:%d:%d:%d:%d:dumpable%d:nice%d %lu\n", getuid(), geteuid(), getgid(), ng, prctl(PR_GET_DUMPABLE), nice, n);
		emit("tick timer %d\n", (int)timer_hits);
		emit("tick itimer %d\n", (int)itimer_hits);
	}
}
