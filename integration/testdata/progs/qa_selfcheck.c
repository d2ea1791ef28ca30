/*
 * qa_selfcheck: a process that sets up a wide range of kernel state, then
 * checks, after it was dumped and restored, that every piece is still what
 * it set up. It is its own judge: the test only reads its verdicts.
 *
 * Usage: qa_selfcheck WORKDIR GOFILE [CHECK...]
 *   CHECKs are groups to set up (default: all of them): attrs nice session
 *   fds pipes evfds signalfd signals timers threads mem clocks. The first stdout line is
 *   {"pid":N,"tid0":N}; then "tick main N" while GOFILE does not exist.
 *   Once it exists every check runs once and prints "check NAME OK" or
 *   "check NAME FAIL why", then "done N" with the number of failures, and
 *   the program keeps ticking ("tick after N"). With $QA_NEW_PID set the
 *   pid and tid checks are left out (restore --new-pid changes them).
 *
 * Consuming state (pipe data, pending signals, eventfd counters) is only
 * read after GOFILE appears, so the dump sees it intact.
 */
#include "common.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/types.h>

#define NTHREADS 9
#define PAGE 4096

static int failures;
static const char *only[64];
static int nonly;
static int new_pid; /* QA_NEW_PID set: restored with --new-pid, ids change */

static int want(const char *name)
{
	if (nonly == 0)
		return 1;
	for (int i = 0; i < nonly; i++)
		if (strcmp(only[i], name) == 0)
			return 1;
	return 0;
}

static void verdict(const char *name, int ok, const char *fmt, ...)
{
	char why[512] = "";
	if (!ok) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, sizeof why, fmt, ap);
		va_end(ap);
		failures++;
	}
	emit("check %s %s%s%s\n", name, ok ? "OK" : "FAIL", ok ? "" : " ", why);
}

/* ---- fds: offsets, flags, O_APPEND, shared descriptions ---- */
static int f_rw, f_rw_dup, f_app, f_cloexec;
static char wd[4096];

static void setup_fds(void)
{
	char p[4200], buf[8192];
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = pattern(1, i);
	snprintf(p, sizeof p, "%s/rw.dat", wd);
	f_rw = open(p, O_RDWR | O_CREAT | O_TRUNC, 0640);
	if (f_rw < 0 || write(f_rw, buf, sizeof buf) != (ssize_t)sizeof buf)
		die("rw.dat");
	lseek(f_rw, 5000, SEEK_SET);
	f_rw_dup = dup(f_rw);
	snprintf(p, sizeof p, "%s/app.log", wd);
	f_app = open(p, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, 0600);
	if (f_app < 0 || write(f_app, "first\n", 6) != 6)
		die("app.log");
	lseek(f_app, 2, SEEK_SET); /* O_APPEND ignores it for writes */
	snprintf(p, sizeof p, "%s/ro.dat", wd);
	int t = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (t < 0 || write(t, "0123456789", 10) != 10)
		die("ro.dat");
	close(t);
	f_cloexec = open(p, O_RDONLY | O_CLOEXEC | O_NOATIME);
	if (f_cloexec < 0)
		die("open ro.dat");
	lseek(f_cloexec, 7, SEEK_SET);
}

static void check_fds(void)
{
	off_t o = lseek(f_rw, 0, SEEK_CUR);
	verdict("fd-offset", o == 5000, "offset %ld, want 5000", (long)o);
	lseek(f_rw_dup, 123, SEEK_SET);
	o = lseek(f_rw, 0, SEEK_CUR);
	verdict("fd-dup-shared", o == 123, "dup moved to 123, original at %ld", (long)o);
	char b[16];
	ssize_t n = pread(f_rw, b, 4, 4096 + 7);
	verdict("fd-content", n == 4 && (unsigned char)b[0] == pattern(1, 4103), "pread %zd", n);
	int fl = fcntl(f_app, F_GETFL);
	verdict("fd-append-flag", fl >= 0 && (fl & O_APPEND) && (fl & O_ACCMODE) == O_WRONLY, "flags %#x", fl);
	if (write(f_app, "second\n", 7) != 7)
		die("write app");
	struct stat st;
	fstat(f_app, &st);
	verdict("fd-append-write", st.st_size == 13, "size %ld after append, want 13", (long)st.st_size);
	int fd = fcntl(f_cloexec, F_GETFD);
	fl = fcntl(f_cloexec, F_GETFL);
	verdict("fd-cloexec", fd == FD_CLOEXEC, "F_GETFD %#x", fd);
	verdict("fd-noatime", fl >= 0 && (fl & O_NOATIME), "flags %#x", fl);
	n = read(f_cloexec, b, 3);
	verdict("fd-ro-offset", n == 3 && memcmp(b, "789", 3) == 0, "read %zd", n);
	fd = fcntl(f_rw, F_GETFD);
	verdict("fd-no-cloexec", fd == 0, "F_GETFD %#x", fd);
}

/* ---- pipes with data, O_NONBLOCK ---- */
static int pa[2], pb[2];
#define PIPE_BIG 60000

static void setup_pipes(void)
{
	if (pipe(pa) < 0 || pipe2(pb, O_NONBLOCK) < 0)
		die("pipe");
	static unsigned char big[PIPE_BIG];
	for (int i = 0; i < PIPE_BIG; i++)
		big[i] = pattern(2, i);
	if (write(pa[1], big, PIPE_BIG) != PIPE_BIG)
		die("write pipe a");
	if (write(pb[1], "B-data", 6) != 6)
		die("write pipe b");
}

static void check_pipes(void)
{
	static unsigned char big[PIPE_BIG];
	size_t got = 0;
	int avail = 0;
	ioctl(pa[0], FIONREAD, &avail);
	verdict("pipe-fionread", avail == PIPE_BIG, "FIONREAD %d, want %d", avail, PIPE_BIG);
	while (got < PIPE_BIG) {
		int fl = fcntl(pa[0], F_GETFL);
		fcntl(pa[0], F_SETFL, fl | O_NONBLOCK);
		ssize_t n = read(pa[0], big + got, PIPE_BIG - got);
		fcntl(pa[0], F_SETFL, fl);
		if (n <= 0)
			break;
		got += n;
	}
	int bad = -1;
	for (size_t i = 0; i < got; i++)
		if (big[i] != pattern(2, i)) {
			bad = i;
			break;
		}
	verdict("pipe-data", got == PIPE_BIG && bad < 0, "got %zu bytes, first bad %d", got, bad);
	char b[16];
	ssize_t n = read(pb[0], b, sizeof b);
	verdict("pipe-nonblock-data", n == 6 && memcmp(b, "B-data", 6) == 0, "read %zd", n);
	n = read(pb[0], b, sizeof b);
	verdict("pipe-nonblock", n < 0 && errno == EAGAIN, "empty read %zd errno %d", n, errno);
	/* both ends still connected: write then read back */
	if (write(pa[1], "x", 1) != 1 || read(pa[0], b, 1) != 1 || b[0] != 'x')
		verdict("pipe-connected", 0, "write/read through pipe a failed");
	else
		verdict("pipe-connected", 1, "");
}

/* ---- eventfd, timerfd, signalfd, epoll ---- */
static int efd, efd_sem, tfd_periodic, tfd_oneshot, sfd, epfd;

static void setup_evfds(void)
{
	efd = eventfd(0, EFD_CLOEXEC);
	efd_sem = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
	uint64_t v = 42;
	if (efd < 0 || efd_sem < 0 || write(efd, &v, 8) != 8)
		die("eventfd");
	tfd_periodic = timerfd_create(CLOCK_MONOTONIC, 0);
	tfd_oneshot = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK);
	struct itimerspec its = {{0, 10 * 1000 * 1000}, {0, 10 * 1000 * 1000}};
	struct itimerspec one = {{0, 0}, {3600, 0}};
	if (timerfd_settime(tfd_periodic, 0, &its, NULL) < 0 || timerfd_settime(tfd_oneshot, 0, &one, NULL) < 0)
		die("timerfd");
	epfd = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event e1 = {.events = EPOLLIN, .data.u64 = 0xabcdef01234ULL};
	struct epoll_event e2 = {.events = EPOLLIN | EPOLLOUT, .data.u64 = 0x5555};
	if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, pb[0], &e1) < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, efd, &e2) < 0)
		die("epoll");
}

static void check_evfds(void)
{
	struct epoll_event ev[4];
	int n = epoll_wait(epfd, ev, 4, 0);
	int seen1 = 0, seen2 = 0;
	for (int i = 0; i < n; i++) {
		if (ev[i].data.u64 == 0xabcdef01234ULL && ev[i].events == EPOLLIN)
			seen1 = 1;
		if (ev[i].data.u64 == 0x5555 && ev[i].events == (EPOLLIN | EPOLLOUT))
			seen2 = 1;
	}
	verdict("epoll", n == 2 && seen1 && seen2, "epoll_wait %d, pipe %d eventfd %d", n, seen1, seen2);
	uint64_t v = 0;
	ssize_t r = read(efd, &v, 8);
	verdict("eventfd", r == 8 && v == 42, "read %zd value %lu", r, (unsigned long)v);
	r = read(efd_sem, &v, 8);
	verdict("eventfd-semaphore", r == 8 && v == 1, "read %zd value %lu", r, (unsigned long)v);
	int fl = fcntl(efd_sem, F_GETFL);
	verdict("eventfd-nonblock", fl >= 0 && (fl & O_NONBLOCK), "flags %#x", fl);
	struct itimerspec cur;
	timerfd_gettime(tfd_periodic, &cur);
	verdict("timerfd-interval", cur.it_interval.tv_sec == 0 && cur.it_interval.tv_nsec == 10 * 1000 * 1000,
		"interval %ld.%09ld", (long)cur.it_interval.tv_sec, cur.it_interval.tv_nsec);
	r = read(tfd_periodic, &v, 8); /* blocks until the next expiry */
	verdict("timerfd-fires", r == 8 && v >= 1, "read %zd expirations %lu", r, (unsigned long)v);
	timerfd_gettime(tfd_oneshot, &cur);
	verdict("timerfd-oneshot", cur.it_value.tv_sec > 3000 && cur.it_value.tv_sec <= 3600 && cur.it_interval.tv_sec == 0,
		"remaining %ld s", (long)cur.it_value.tv_sec);
}

static void setup_signalfd(void)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sfd = signalfd(-1, &s, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0)
		die("signalfd");
	union sigval sv = {.sival_int = 99};
	if (sigqueue(getpid(), SIGUSR1, sv) < 0)
		die("sigqueue SIGUSR1");
}

static void check_signalfd(void)
{
	struct signalfd_siginfo si;
	ssize_t n = read(sfd, &si, sizeof si);
	verdict("signalfd", n == sizeof si && si.ssi_signo == SIGUSR1 && si.ssi_int == 99 && si.ssi_code == SI_QUEUE,
		"read %zd signo %u int %d code %d", n, n > 0 ? si.ssi_signo : 0, n > 0 ? si.ssi_int : 0, n > 0 ? si.ssi_code : 0);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	struct signalfd_siginfo x;
	n = read(sfd, &x, sizeof x);
	verdict("signalfd-empty", n < 0 && errno == EAGAIN, "second read %zd", n);
}

/* ---- signals: pending (thread and process), blocked, rt queue, altstack ---- */
static volatile sig_atomic_t got_usr2, rt_count, rt_vals[4], alrm_count, ptimer_count, on_alt;
static stack_t alt;

static void h_usr2(int sig)
{
	(void)sig;
	got_usr2++;
}

static void h_rt(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	if (rt_count < 4)
		rt_vals[rt_count] = si->si_value.sival_int;
	rt_count++;
	char here;
	on_alt = (char *)&here >= (char *)alt.ss_sp && (char *)&here < (char *)alt.ss_sp + alt.ss_size;
}

static void h_alrm(int sig)
{
	(void)sig;
	alrm_count++;
}

static void h_ptimer(int sig)
{
	(void)sig;
	ptimer_count++;
}

static timer_t ptimer, ptimer_long;

static void setup_signals(void)
{
	struct sigaction sa = {0};
	sa.sa_handler = h_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	alt.ss_size = 64 * 1024;
	alt.ss_sp = mmap(NULL, alt.ss_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (alt.ss_sp == MAP_FAILED || sigaltstack(&alt, NULL) < 0)
		die("sigaltstack");
	struct sigaction rs = {0};
	rs.sa_sigaction = h_rt;
	rs.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	sigaction(SIGRTMIN + 1, &rs, NULL);
	/* SIGUSR2 pending on the main thread only (tgkill), SIGRTMIN+1
	 * queued twice on the process with values: both blocked. */
	if (raise(SIGUSR2) != 0)
		die("raise");
	union sigval v1 = {.sival_int = 7}, v2 = {.sival_int = 8};
	if (sigqueue(getpid(), SIGRTMIN + 1, v1) < 0 || sigqueue(getpid(), SIGRTMIN + 1, v2) < 0)
		die("sigqueue rt");
}

static void check_signals(void)
{
	sigset_t p;
	sigpending(&p);
	verdict("sig-pending", sigismember(&p, SIGUSR2) && sigismember(&p, SIGRTMIN + 1) && got_usr2 == 0 && rt_count == 0,
		"pending usr2 %d rt %d, delivered %d %d", sigismember(&p, SIGUSR2), sigismember(&p, SIGRTMIN + 1), got_usr2, rt_count);
	stack_t cur;
	sigaltstack(NULL, &cur);
	verdict("sigaltstack", cur.ss_sp == alt.ss_sp && cur.ss_size == alt.ss_size && cur.ss_flags == 0,
		"sp %p size %zu flags %d", cur.ss_sp, cur.ss_size, cur.ss_flags);
	sigset_t u;
	sigemptyset(&u);
	sigaddset(&u, SIGUSR2);
	sigaddset(&u, SIGRTMIN + 1);
	pthread_sigmask(SIG_UNBLOCK, &u, NULL);
	verdict("sig-delivered", got_usr2 == 1 && rt_count == 2 && rt_vals[0] == 7 && rt_vals[1] == 8,
		"usr2 %d rt %d values %d,%d", got_usr2, rt_count, rt_vals[0], rt_vals[1]);
	verdict("sig-onstack", on_alt, "rt handler did not run on the alternate stack");
	sigset_t m;
	pthread_sigmask(SIG_BLOCK, NULL, &m);
	verdict("sig-mask", sigismember(&m, SIGUSR1) && !sigismember(&m, SIGUSR2), "mask wrong");
}

static void setup_timers(void)
{
	struct sigaction sa = {0};
	sa.sa_handler = h_alrm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	sa.sa_handler = h_ptimer;
	sigaction(SIGRTMIN + 2, &sa, NULL);
	struct itimerval it = {{0, 20000}, {0, 20000}};
	if (setitimer(ITIMER_REAL, &it, NULL) < 0)
		die("setitimer");
	struct itimerval vt = {{3600, 0}, {3600, 0}};
	if (setitimer(ITIMER_VIRTUAL, &vt, NULL) < 0)
		die("setitimer virtual");
	struct sigevent sev = {0};
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIGRTMIN + 2;
	if (timer_create(CLOCK_MONOTONIC, &sev, &ptimer) < 0)
		die("timer_create");
	struct itimerspec its = {{0, 15 * 1000 * 1000}, {0, 15 * 1000 * 1000}};
	timer_settime(ptimer, 0, &its, NULL);
	sev.sigev_signo = SIGRTMIN + 3;
	if (timer_create(CLOCK_REALTIME, &sev, &ptimer_long) < 0)
		die("timer_create 2");
	struct itimerspec lo = {{0, 0}, {7200, 0}};
	timer_settime(ptimer_long, 0, &lo, NULL);
}

static void check_timers(void)
{
	int a0 = alrm_count, p0 = ptimer_count;
	for (int i = 0; i < 400 && (alrm_count == a0 || ptimer_count == p0); i++)
		pace();
	verdict("itimer-real-fires", alrm_count > a0, "no SIGALRM within 2s");
	verdict("posix-timer-fires", ptimer_count > p0, "no POSIX timer signal within 2s");
	struct itimerval v;
	getitimer(ITIMER_VIRTUAL, &v);
	verdict("itimer-virtual", v.it_interval.tv_sec == 3600 && v.it_value.tv_sec > 0 && v.it_value.tv_sec <= 3600,
		"interval %ld value %ld", (long)v.it_interval.tv_sec, (long)v.it_value.tv_sec);
	getitimer(ITIMER_REAL, &v);
	verdict("itimer-real-interval", v.it_interval.tv_sec == 0 && v.it_interval.tv_usec == 20000, "interval %ld.%06ld",
		(long)v.it_interval.tv_sec, (long)v.it_interval.tv_usec);
	struct itimerspec cur;
	int r = timer_gettime(ptimer_long, &cur);
	verdict("posix-timer-oneshot", r == 0 && cur.it_value.tv_sec > 7000 && cur.it_value.tv_sec <= 7200,
		"timer_gettime %d remaining %ld", r, (long)cur.it_value.tv_sec);
	r = timer_gettime(ptimer, &cur);
	verdict("posix-timer-id", r == 0 && cur.it_interval.tv_nsec == 15 * 1000 * 1000, "timer_gettime %d", r);
}

/* ---- threads with TLS ---- */
static __thread unsigned long tls_val;
static __thread char tls_name[32];
static pthread_barrier_t bar;
static volatile int go_threads;
static int tids[NTHREADS];
static volatile int thread_ok[NTHREADS], thread_tid_ok[NTHREADS];
static volatile unsigned long thread_iter[NTHREADS];

static void *thread_main(void *arg)
{
	long i = (long)arg;
	tls_val = 1000 * (i + 1);
	snprintf(tls_name, sizeof tls_name, "thread-%ld", i);
	tids[i] = syscall(SYS_gettid);
	char comm[16];
	snprintf(comm, sizeof comm, "qa-w%ld", i);
	prctl(PR_SET_NAME, comm);
	pthread_barrier_wait(&bar);
	while (!go_threads) {
		thread_iter[i]++;
		tls_val++;
		tls_val--;
		pace();
	}
	char buf[16] = "";
	prctl(PR_GET_NAME, buf);
	thread_ok[i] = tls_val == 1000UL * (i + 1) && strncmp(tls_name, "thread-", 7) == 0 &&
		       atoi(tls_name + 7) == i && strcmp(buf, comm) == 0;
	thread_tid_ok[i] = tids[i] == syscall(SYS_gettid);
	thread_ok[i] += 1; /* 1 = bad, 2 = good */
	for (;;)
		pace();
	return NULL;
}

static void setup_threads(void)
{
	pthread_barrier_init(&bar, NULL, NTHREADS + 1);
	for (long i = 0; i < NTHREADS; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, thread_main, (void *)i) != 0)
			die("pthread_create");
	}
	pthread_barrier_wait(&bar);
}

static void check_threads(void)
{
	go_threads = 1;
	int done = 0;
	for (int k = 0; k < 2000 && done < NTHREADS; k++) {
		done = 0;
		for (int i = 0; i < NTHREADS; i++)
			done += thread_ok[i] != 0;
		if (done < NTHREADS)
			pace();
	}
	int good = 0, tidok = 0;
	for (int i = 0; i < NTHREADS; i++) {
		good += thread_ok[i] == 2;
		tidok += thread_tid_ok[i];
	}
	verdict("threads-tls", good == NTHREADS, "%d of %d threads kept TLS and name (%d answered)", good, NTHREADS, done);
	if (!new_pid)
		verdict("threads-tid", tidok == NTHREADS, "%d of %d threads kept their tid", tidok, NTHREADS);
}

/* ---- memory: shared/private file mappings, mprotect ---- */
static unsigned char *shm_file, *priv_file, *ro_anon, *none_guard;
static int shm_fd;

static void setup_mem(void)
{
	char p[4200];
	static unsigned char buf[3 * PAGE];
	for (int i = 0; i < 3 * PAGE; i++)
		buf[i] = pattern(3, i);
	snprintf(p, sizeof p, "%s/shared.map", wd);
	shm_fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (shm_fd < 0 || write(shm_fd, buf, sizeof buf) != (ssize_t)sizeof buf)
		die("shared.map");
	shm_file = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, shm_fd, 0);
	snprintf(p, sizeof p, "%s/private.map", wd);
	int pf = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (pf < 0 || write(pf, buf, sizeof buf) != (ssize_t)sizeof buf)
		die("private.map");
	priv_file = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, pf, 0);
	close(pf);
	if (shm_file == MAP_FAILED || priv_file == MAP_FAILED)
		die("mmap file");
	memcpy(shm_file + PAGE + 10, "SHARED-EDIT", 11);
	memcpy(priv_file + 10, "PRIVATE-EDIT", 12);
	(void)priv_file[2 * PAGE]; /* read-only touch of page 2 */
	ro_anon = mmap(NULL, 5 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ro_anon == MAP_FAILED)
		die("mmap anon");
	for (int i = 0; i < 5 * PAGE; i++)
		ro_anon[i] = pattern(4, i);
	none_guard = ro_anon + 2 * PAGE;
	if (mprotect(ro_anon, 5 * PAGE, PROT_READ) < 0 || mprotect(none_guard, PAGE, PROT_NONE) < 0)
		die("mprotect");
}

static int maps_perm(void *addr, char perm[5])
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int found = 0;
	while (f && fgets(line, sizeof line, f)) {
		unsigned long s, e;
		char pm[5];
		if (sscanf(line, "%lx-%lx %4s", &s, &e, pm) == 3 && (unsigned long)addr >= s && (unsigned long)addr < e) {
			memcpy(perm, pm, 5);
			found = 1;
			break;
		}
	}
	if (f)
		fclose(f);
	return found;
}

static void check_mem(void)
{
	unsigned char b[16];
	verdict("mmap-shared-content", memcmp(shm_file + PAGE + 10, "SHARED-EDIT", 11) == 0 && shm_file[0] == pattern(3, 0), "mapping lost its content");
	pread(shm_fd, b, 11, PAGE + 10);
	verdict("mmap-shared-file", memcmp(b, "SHARED-EDIT", 11) == 0, "file does not show the edit");
	memcpy(shm_file + 2 * PAGE + 5, "AFTER", 5);
	pread(shm_fd, b, 5, 2 * PAGE + 5);
	verdict("mmap-shared-still-shared", memcmp(b, "AFTER", 5) == 0, "a write after restore does not reach the file");
	int ok = memcmp(priv_file + 10, "PRIVATE-EDIT", 12) == 0 && priv_file[PAGE] == pattern(3, PAGE) &&
		 priv_file[2 * PAGE + 1] == pattern(3, 2 * PAGE + 1);
	verdict("mmap-private-content", ok, "private mapping content changed");
	char p[4200];
	snprintf(p, sizeof p, "%s/private.map", wd);
	int pf = open(p, O_RDONLY);
	pread(pf, b, 12, 10);
	close(pf);
	verdict("mmap-private-file-untouched", b[0] == pattern(3, 10), "the private edit reached the file");
	char perm[5] = "";
	maps_perm(ro_anon, perm);
	int bad = -1;
	for (int i = 0; i < 2 * PAGE; i++)
		if (ro_anon[i] != pattern(4, i)) {
			bad = i;
			break;
		}
	verdict("mprotect-ro", strcmp(perm, "r--p") == 0 && bad < 0, "perm %s first bad %d", perm, bad);
	maps_perm(none_guard, perm);
	verdict("mprotect-none", strcmp(perm, "---p") == 0, "perm %s", perm);
	maps_perm(ro_anon + 4 * PAGE, perm);
	verdict("mprotect-ro-after", strcmp(perm, "r--p") == 0 && ro_anon[4 * PAGE + 9] == pattern(4, 4 * PAGE + 9), "perm %s", perm);
}

/* ---- process attributes ---- */
static char cwd_before[4096];
static struct rlimit nofile_before;
static pid_t pid0, sid0, pgid0;
static char cmdline0[4096];
static size_t cmdline0_len;
static int nice0;

static size_t read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	size_t n = 0;
	ssize_t r;
	while (n < cap && (r = read(fd, buf + n, cap - n)) > 0)
		n += r;
	close(fd);
	return n;
}

static void setup_attrs(void)
{
	if (chdir(wd) < 0)
		die("chdir");
	getcwd(cwd_before, sizeof cwd_before);
	umask(027);
	struct rlimit r;
	getrlimit(RLIMIT_NOFILE, &r);
	r.rlim_cur = 777;
	setrlimit(RLIMIT_NOFILE, &r);
	getrlimit(RLIMIT_NOFILE, &nofile_before);
	struct rlimit c = {0, 0};
	getrlimit(RLIMIT_CORE, &c);
	c.rlim_cur = 0;
	setrlimit(RLIMIT_CORE, &c);
	prctl(PR_SET_NAME, "qa-selfcheck");
	pid0 = getpid();
	cmdline0_len = read_file("/proc/self/cmdline", cmdline0, sizeof cmdline0);
}

static void check_attrs(void)
{
	char c[4096] = "";
	getcwd(c, sizeof c);
	verdict("cwd", strcmp(c, cwd_before) == 0, "cwd %s, want %s", c, cwd_before);
	mode_t m = umask(0);
	umask(m);
	verdict("umask", m == 027, "umask %o", m);
	struct rlimit r;
	getrlimit(RLIMIT_NOFILE, &r);
	verdict("rlimit-nofile", r.rlim_cur == 777 && r.rlim_max == nofile_before.rlim_max, "nofile %lu/%lu", (unsigned long)r.rlim_cur, (unsigned long)r.rlim_max);
	getrlimit(RLIMIT_CORE, &r);
	verdict("rlimit-core", r.rlim_cur == 0, "core %lu", (unsigned long)r.rlim_cur);
	char name[16] = "";
	prctl(PR_GET_NAME, name);
	verdict("comm", strcmp(name, "qa-selfcheck") == 0, "comm %s", name);
	char stat[1024] = "";
	read_file("/proc/self/stat", stat, sizeof stat - 1);
	verdict("proc-stat-comm", strncmp(strchr(stat, '('), "(qa-selfcheck)", 14) == 0, "stat %.40s", stat);
	if (!new_pid)
		verdict("pid", getpid() == pid0 && syscall(SYS_gettid) == pid0, "pid %d tid %ld, want %d", getpid(), syscall(SYS_gettid), pid0);
	char cl[4096];
	size_t n = read_file("/proc/self/cmdline", cl, sizeof cl);
	verdict("cmdline", n == cmdline0_len && memcmp(cl, cmdline0, n) == 0, "cmdline %zu bytes, want %zu", n, cmdline0_len);
	const char *e = getenv("QA_ENV");
	static char env[65536];
	n = read_file("/proc/self/environ", env, sizeof env - 1);
	env[n] = 0;
	int found = 0;
	for (size_t i = 0; i < n; i += strlen(env + i) + 1)
		if (strcmp(env + i, "QA_ENV=qa value with spaces") == 0)
			found = 1;
	verdict("environ", e && strcmp(e, "qa value with spaces") == 0 && found, "getenv %s, /proc environ %d", e ? e : "(null)", found);
}

/* nice: a niced process keeps its nice value. */
static void setup_nice(void)
{
	setpriority(PRIO_PROCESS, 0, 7);
	nice0 = getpriority(PRIO_PROCESS, 0);
}

static void check_nice(void)
{
	int nv = getpriority(PRIO_PROCESS, 0);
	verdict("nice", nv == nice0, "nice %d, want %d", nv, nice0);
}

/* session: a session leader (started with setsid) stays one. */
static void setup_session(void)
{
	sid0 = getsid(0);
	pgid0 = getpgid(0);
}

static void check_session(void)
{
	verdict("sid-pgid", getsid(0) == sid0 && getpgid(0) == pgid0, "sid %d pgid %d, want %d %d", getsid(0), getpgid(0), sid0, pgid0);
}

/* ---- clocks, vDSO, getrandom ---- */
static struct timespec mono0, boot0;

static void setup_clocks(void)
{
	clock_gettime(CLOCK_MONOTONIC, &mono0);
	clock_gettime(CLOCK_BOOTTIME, &boot0);
}

static double ts(struct timespec t) { return t.tv_sec + t.tv_nsec / 1e9; }

static void check_clocks(void)
{
	struct timespec m, b, ms, rt, rts;
	clock_gettime(CLOCK_MONOTONIC, &m);
	clock_gettime(CLOCK_BOOTTIME, &b);
	syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ms);
	clock_gettime(CLOCK_REALTIME, &rt);
	syscall(SYS_clock_gettime, CLOCK_REALTIME, &rts);
	verdict("clock-monotonic", ts(m) >= ts(mono0) && ts(b) >= ts(boot0), "monotonic went back %.6f -> %.6f", ts(mono0), ts(m));
	double d = ts(ms) - ts(m);
	verdict("vdso-monotonic", d >= 0 && d < 5, "vDSO and syscall differ by %.6f s", d);
	d = ts(rts) - ts(rt);
	verdict("vdso-realtime", d >= 0 && d < 5, "vDSO and syscall realtime differ by %.6f s", d);
	unsigned char r1[32], r2[32];
	ssize_t a = getrandom(r1, sizeof r1, 0), c = getrandom(r2, sizeof r2, GRND_NONBLOCK);
	verdict("getrandom", a == 32 && c == 32 && memcmp(r1, r2, 32) != 0, "getrandom %zd %zd", a, c);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: qa_selfcheck WORKDIR GOFILE [CHECK...]\n");
		return 2;
	}
	snprintf(wd, sizeof wd, "%s", argv[1]);
	const char *gofile = argv[2];
	char gopath[4200];
	if (gofile[0] == '/')
		snprintf(gopath, sizeof gopath, "%s", gofile);
	else
		snprintf(gopath, sizeof gopath, "%s/%s", wd, gofile);
	new_pid = getenv("QA_NEW_PID") != NULL;
	for (int i = 3; i < argc && nonly < 64; i++)
		only[nonly++] = argv[i];

	/* Block what is checked as pending before threads exist, so they
	 * inherit the mask and never take these signals. */
	sigset_t blk;
	sigemptyset(&blk);
	sigaddset(&blk, SIGUSR1);
	sigaddset(&blk, SIGUSR2);
	sigaddset(&blk, SIGRTMIN + 1);
	sigprocmask(SIG_BLOCK, &blk, NULL);

	if (want("attrs"))
		setup_attrs();
	if (want("nice"))
		setup_nice();
	if (want("session"))
		setup_session();
	if (want("fds"))
		setup_fds();
	if (want("pipes"))
		setup_pipes();
	if (want("evfds")) {
		if (!want("pipes"))
			setup_pipes();
		setup_evfds();
	}
	if (want("signalfd"))
		setup_signalfd();
	if (want("mem"))
		setup_mem();
	if (want("clocks"))
		setup_clocks();
	if (want("threads")) {
		/* Workers must not take the timer signals (the main thread
		 * counts them) */
		sigset_t t;
		sigemptyset(&t);
		sigaddset(&t, SIGALRM);
		sigaddset(&t, SIGRTMIN + 2);
		sigprocmask(SIG_BLOCK, &t, NULL);
		setup_threads();
		sigprocmask(SIG_UNBLOCK, &t, NULL);
	}
	if (want("timers"))
		setup_timers();
	if (want("signals"))
		setup_signals();

	emit("{\"pid\":%d}\n", getpid());
	unsigned long n = 0;
	while (access(gopath, F_OK) != 0) {
		tick("main", ++n);
		pace();
	}
	if (want("attrs"))
		check_attrs();
	if (want("nice"))
		check_nice();
	if (want("session"))
		check_session();
	if (want("fds"))
		check_fds();
	if (want("evfds"))
		check_evfds();
	if (want("pipes") || want("evfds"))
		check_pipes();
	if (want("signalfd"))
		check_signalfd();
	if (want("signals"))
		check_signals();
	if (want("timers"))
		check_timers();
	if (want("threads"))
		check_threads();
	if (want("mem"))
		check_mem();
	if (want("clocks"))
		check_clocks();
	emit("done %d\n", failures);
	for (n = 1;; n++) {
		tick("after", n);
		pace();
	}
}
