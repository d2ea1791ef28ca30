/*
 * vmacheck: a process that sets memory and process attributes and keeps
 * checking them itself. argv[1] picks the scenario:
 *
 *   prot DIR    private pages with data under PROT_NONE, PROT_READ and
 *               PROT_READ|PROT_EXEC, a PROT_NONE range never touched, and
 *               shared anonymous pages with data under PROT_READ and
 *               PROT_NONE: protections as set (maps), data intact.
 *   filemap DIR a MAP_SHARED PROT_READ mapping of a file opened O_RDWR must
 *               still mprotect to PROT_WRITE and write through to the file;
 *               one of a file opened O_RDONLY must still refuse (EACCES); a
 *               MAP_PRIVATE one of a read-only fd may be made writable.
 *   madvise DIR MADV_SEQUENTIAL, RANDOM, DONTFORK, WIPEONFORK, DONTDUMP,
 *               HUGEPAGE, NOHUGEPAGE, MERGEABLE each on its own mapping:
 *               the VmFlags of smaps.
 *   mlock DIR [future] [user]  mlock, mlock2(MLOCK_ONFAULT), optionally
 *               mlockall(MCL_FUTURE) and then setresuid(65534): "lo"/"lf"
 *               on the ranges and on a new mapping, locked data intact.
 *   prctl DIR   PR_SET_THP_DISABLE, PR_SET_NAME, PR_SET_DUMPABLE 0,
 *               PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, a personality,
 *               /proc/self/coredump_filter 0x7b (core(5); kernels with
 *               CONFIG_ELF_CORE), PR_SET_KEEPCAPS 1.
 *   timers DIR  POSIX timers: SIGEV_THREAD_ID to a worker thread,
 *               SIGEV_NONE armed, SIGEV_SIGNAL to the process.
 *   cwd DIR     the current directory DIR/gone was removed: getcwd fails
 *               with ENOENT, "." has no links and mode 0750, creating a
 *               file in it fails with ENOENT.
 *   leader-exit DIR  the main thread exits (pthread_exit); a second thread
 *               runs the checks (none: it only ticks).
 *   sealed DIR  a mapping sealed with mseal(2) (dump must refuse it).
 *   timer-orphan DIR  a SIGEV_THREAD_ID timer whose thread has exited
 *               (dump must refuse it).
 *
 * Report: {"pid":N}. Ticks: "ok" = checks passed; timers also "tidtimer"
 * (expirations the worker thread got) and "proctimer". A failed check
 * writes "FAIL ..." to stderr and exits 1.
 */
#include "common.h"
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <stdint.h>

#define PG 4096UL
#ifndef PR_SET_MEMORY_MERGE /* include/uapi/linux/prctl.h, Linux 6.4 */
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif

static void fail(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	fprintf(stderr, "FAIL %s\n", buf);
	exit(1);
}

/* mapping finds addr's line in /proc/self/maps (perms) or smaps (VmFlags). */
static void mapping(void *addr, char perms[5], char flags[256])
{
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		die("open smaps");
	char line[1024];
	int in = 0;
	perms[0] = flags[0] = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e;
		char p[5];
		if (sscanf(line, "%lx-%lx %4s", &s, &e, p) == 3 && strchr(line, ':') > strchr(line, ' ')) {
			in = (uintptr_t)addr >= s && (uintptr_t)addr < e;
			if (in)
				memcpy(perms, p, 5);
			continue;
		}
		if (in && !strncmp(line, "VmFlags:", 8)) {
			size_t l = strcspn(line + 8, "\n");
			if (l > 255)
				l = 255;
			memcpy(flags, line + 8, l);
			flags[l] = 0;
			break;
		}
	}
	fclose(f);
	if (!perms[0])
		fail("no mapping at %p", addr);
}

static int hasflag(const char *flags, const char *f)
{
	char pat[8];
	snprintf(pat, sizeof pat, " %s ", f);
	char buf[300];
	snprintf(buf, sizeof buf, " %s ", flags);
	return strstr(buf, pat) != NULL;
}

static void want_perms(void *a, const char *want)
{
	char p[5], fl[256];
	mapping(a, p, fl);
	if (strcmp(p, want))
		fail("mapping at %p is %s, want %s", a, p, want);
}

static void want_flag(void *a, const char *f, int on)
{
	char p[5], fl[256];
	mapping(a, p, fl);
	if (hasflag(fl, f) != on)
		fail("mapping at %p: VmFlags \"%s\" %s %s", a, fl, on ? "lack" : "have", f);
}

static unsigned char *map(unsigned long n, int prot)
{
	unsigned char *p = mmap(NULL, n, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

static void fill(unsigned char *p, unsigned long n, unsigned tag)
{
	for (unsigned long i = 0; i < n; i++)
		p[i] = pattern(tag, i);
}

/* verify checks n bytes of a buffer filled for tag, from offset off. */
static void verify_at(const unsigned char *base, unsigned long off, unsigned long n, unsigned tag, const char *what)
{
	for (unsigned long i = off; i < off + n; i++)
		if (base[i] != pattern(tag, i))
			fail("%s byte %lu: %#x, want %#x", what, i, base[i], pattern(tag, i));
}

static void verify(const unsigned char *p, unsigned long n, unsigned tag, const char *what)
{
	verify_at(p, 0, n, tag, what);
}

/* ---- prot ---- */
static unsigned char *prot_a, *prot_b, *prot_s;

static void prot_setup(void)
{
	prot_a = map(3 * PG, PROT_READ | PROT_WRITE);
	fill(prot_a, 3 * PG, 1);
	if (mprotect(prot_a, PG, PROT_NONE) || mprotect(prot_a + PG, PG, PROT_READ) ||
	    mprotect(prot_a + 2 * PG, PG, PROT_READ | PROT_EXEC))
		die("mprotect");
	prot_b = map(2 * PG, PROT_NONE);
	/* Shared memory is written through /proc/PID/mem only when writable:
	 * a read-only or PROT_NONE shared page is no copy-on-write mapping. */
	prot_s = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (prot_s == MAP_FAILED)
		die("mmap shared");
	fill(prot_s, 2 * PG, 2);
	if (mprotect(prot_s, PG, PROT_READ) || mprotect(prot_s + PG, PG, PROT_NONE))
		die("mprotect shared");
}

static void prot_check(void)
{
	want_perms(prot_a, "---p");
	want_perms(prot_a + PG, "r--p");
	want_perms(prot_a + 2 * PG, "r-xp");
	want_perms(prot_b, "---p");
	verify_at(prot_a, PG, 2 * PG, 1, "read-only pages");
	if (mprotect(prot_a, PG, PROT_READ))
		fail("mprotect PROT_NONE page readable: %s", strerror(errno));
	verify_at(prot_a, 0, PG, 1, "PROT_NONE page");
	if (mprotect(prot_a, PG, PROT_NONE))
		fail("mprotect back to PROT_NONE: %s", strerror(errno));
	want_perms(prot_s, "r--s");
	want_perms(prot_s + PG, "---s");
	verify(prot_s, PG, 2, "read-only shared page");
	if (mprotect(prot_s + PG, PG, PROT_READ))
		fail("mprotect PROT_NONE shared page readable: %s", strerror(errno));
	verify_at(prot_s, PG, PG, 2, "PROT_NONE shared page");
	if (mprotect(prot_s + PG, PG, PROT_NONE))
		fail("mprotect back to PROT_NONE: %s", strerror(errno));
}

/* ---- filemap ---- */
static unsigned char *fm_rw, *fm_ro, *fm_priv;
static char fm_path[512];
static int fm_fd;

static void filemap_setup(const char *dir)
{
	char ro[512];
	snprintf(fm_path, sizeof fm_path, "%s/rw.dat", dir);
	snprintf(ro, sizeof ro, "%s/ro.dat", dir);
	for (int k = 0; k < 2; k++) {
		int fd = open(k ? ro : fm_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, 2 * PG))
			die("create file");
		close(fd);
	}
	int fd = open(fm_path, O_RDWR);
	if (fd < 0)
		die("open rw");
	fm_rw = mmap(NULL, 2 * PG, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	fd = open(ro, O_RDONLY);
	if (fd < 0)
		die("open ro");
	fm_ro = mmap(NULL, 2 * PG, PROT_READ, MAP_SHARED, fd, 0);
	fm_priv = mmap(NULL, 2 * PG, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (fm_rw == MAP_FAILED || fm_ro == MAP_FAILED || fm_priv == MAP_FAILED)
		die("mmap file");
	/* kept open to read the file back (an fd lazycr restores as it was) */
	fm_fd = open(fm_path, O_RDONLY);
	if (fm_fd < 0)
		die("open rw again");
}

static void filemap_check(unsigned long n)
{
	want_perms(fm_rw, "r--s");
	if (mprotect(fm_rw, PG, PROT_READ | PROT_WRITE))
		fail("mprotect shared mapping of a read-write file to PROT_WRITE: %s", strerror(errno));
	unsigned char b = (unsigned char)n;
	fm_rw[100] = b;
	if (mprotect(fm_rw, PG, PROT_READ))
		fail("mprotect back: %s", strerror(errno));
	unsigned char got;
	if (pread(fm_fd, &got, 1, 100) != 1 || got != b)
		fail("file does not hold the byte written through the mapping: %#x, want %#x", got, b);
	if (mprotect(fm_ro, PG, PROT_READ | PROT_WRITE) == 0 || errno != EACCES)
		fail("shared mapping of a read-only file became writable (or not EACCES: %s)", strerror(errno));
	if (mprotect(fm_priv, PG, PROT_READ | PROT_WRITE))
		fail("private mapping of a read-only file: mprotect PROT_WRITE: %s", strerror(errno));
	if (mprotect(fm_priv, PG, PROT_READ))
		fail("mprotect back: %s", strerror(errno));
}

/* ---- madvise ---- */
static struct {
	int advice;
	const char *flag;
	unsigned char *p;
} adv[] = {
	{MADV_SEQUENTIAL, "sr", 0}, {MADV_RANDOM, "rr", 0}, {MADV_DONTFORK, "dc", 0},
	{MADV_WIPEONFORK, "wf", 0}, {MADV_DONTDUMP, "dd", 0}, {MADV_HUGEPAGE, "hg", 0},
	{MADV_NOHUGEPAGE, "nh", 0}, {MADV_MERGEABLE, "mg", 0},
};
#define NADV (sizeof adv / sizeof adv[0])

static void madvise_setup(void)
{
	for (unsigned i = 0; i < NADV; i++) {
		adv[i].p = map(4 * PG, PROT_READ | PROT_WRITE);
		fill(adv[i].p, 2 * PG, 10 + i);
		if (madvise(adv[i].p, 4 * PG, adv[i].advice))
			die("madvise");
	}
}

static void madvise_check(void)
{
	for (unsigned i = 0; i < NADV; i++) {
		want_flag(adv[i].p, adv[i].flag, 1);
		verify(adv[i].p, 2 * PG, 10 + i, adv[i].flag);
	}
}

/* ---- mlock ---- */
static unsigned char *lk_a, *lk_b;
static int lk_future;

static void mlock_setup(int argc, char **argv)
{
	int user = 0;
	for (int i = 3; i < argc; i++) {
		lk_future |= !strcmp(argv[i], "future");
		user |= !strcmp(argv[i], "user");
	}
	lk_a = map(4 * PG, PROT_READ | PROT_WRITE);
	fill(lk_a, 4 * PG, 20);
	lk_b = map(4 * PG, PROT_READ | PROT_WRITE);
	if (mlock(lk_a, 4 * PG))
		die("mlock");
	if (syscall(SYS_mlock2, lk_b, 4 * PG, MLOCK_ONFAULT))
		die("mlock2");
	if (lk_future && mlockall(MCL_FUTURE))
		die("mlockall");
	if (user && setresuid(65534, 65534, 65534))
		die("setresuid");
}

static void mlock_check(void)
{
	want_flag(lk_a, "lo", 1);
	want_flag(lk_a, "lf", 0);
	want_flag(lk_b, "lo", 1);
	want_flag(lk_b, "lf", 1);
	verify(lk_a, 4 * PG, 20, "locked pages");
	unsigned char *n = map(PG, PROT_READ | PROT_WRITE);
	want_flag(n, "lo", lk_future);
	munmap(n, PG);
}

/* ---- prctl ---- */
#define PERSONA (PER_LINUX | ADDR_NO_RANDOMIZE | UNAME26)

static int ksm_all; /* PR_SET_MEMORY_MERGE worked (a kernel with KSM) */
static int has_cdf; /* /proc/self/coredump_filter exists (CONFIG_ELF_CORE) */

/* The address space's core dump filter, read as "%08x\n" (core(5)). */
static unsigned coredump_filter(void)
{
	char buf[32] = {0};
	int fd = open("/proc/self/coredump_filter", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, buf, sizeof buf - 1) <= 0)
		fail("read /proc/self/coredump_filter: %s", strerror(errno));
	close(fd);
	return (unsigned)strtoul(buf, NULL, 16);
}

static void prctl_setup(void)
{
	ksm_all = prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) == 0;
	/* Before PR_SET_DUMPABLE 0, which makes /proc/self root's. */
	int fd = open("/proc/self/coredump_filter", O_WRONLY | O_CLOEXEC);
	has_cdf = fd >= 0;
	if (has_cdf && write(fd, "0x7b", 4) != 4)
		die("write /proc/self/coredump_filter");
	if (has_cdf)
		close(fd);
	if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) || prctl(PR_SET_NAME, "vmachk-named") ||
	    prctl(PR_SET_CHILD_SUBREAPER, 1) || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	    prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) || prctl(PR_SET_DUMPABLE, 0))
		die("prctl");
	if (personality(PERSONA) < 0)
		die("personality");
}

static void prctl_check(void)
{
	char name[32] = {0};
	int sub = 0;
	if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != 1)
		fail("PR_GET_THP_DISABLE = %d, want 1", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
	if (prctl(PR_GET_NAME, name) || strcmp(name, "vmachk-named"))
		fail("name %q", name);
	if (prctl(PR_GET_CHILD_SUBREAPER, &sub) || sub != 1)
		fail("child subreaper %d", sub);
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		fail("no_new_privs off");
	if (prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0) != 1)
		fail("PR_GET_KEEPCAPS = %d, want 1", prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0));
	if (prctl(PR_GET_DUMPABLE) != 0)
		fail("dumpable %d, want 0", prctl(PR_GET_DUMPABLE));
	if (ksm_all && prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0) != 1)
		fail("PR_GET_MEMORY_MERGE = %d, want 1", prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0));
	if (has_cdf && coredump_filter() != 0x7b)
		fail("coredump_filter %#x, want 0x7b", coredump_filter());
	int p = personality(0xffffffff);
	if (p != PERSONA)
		fail("personality %#x, want %#x", p, PERSONA);
}

/* ---- timers ---- */
static volatile pid_t worker_tid;
static volatile sig_atomic_t tid_hits, proc_hits, wrong_tid;
static __thread int is_worker; /* thread ids change under --new-pid; this does not */
static timer_t t_none;

static void on_tid_timer(int sig)
{
	(void)sig;
	if (!is_worker)
		wrong_tid = (int)syscall(SYS_gettid);
	tid_hits++;
}

static void on_proc_timer(int sig) { (void)sig; proc_hits++; }

static void *worker(void *arg)
{
	(void)arg;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN + 2);
	if (pthread_sigmask(SIG_UNBLOCK, &set, NULL))
		die("sigmask");
	is_worker = 1;
	worker_tid = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

static void timers_setup(void)
{
	struct sigaction sa = {0};
	sa.sa_handler = on_tid_timer;
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGRTMIN + 2, &sa, NULL))
		die("sigaction");
	sa.sa_handler = on_proc_timer;
	if (sigaction(SIGRTMIN + 3, &sa, NULL))
		die("sigaction");
	/* Only the worker may take the thread-directed signal: block it here. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN + 2);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL))
		die("sigmask");
	pthread_t th;
	if (pthread_create(&th, NULL, worker, NULL))
		die("pthread_create");
	while (!worker_tid)
		pace();

	struct sigevent sev = {0};
	timer_t id;
	struct itimerspec its = {{0, 10000000}, {0, 10000000}};
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = SIGRTMIN + 2;
	sev._sigev_un._tid = worker_tid;
	if (timer_create(CLOCK_MONOTONIC, &sev, &id) || timer_settime(id, 0, &its, NULL))
		die("timer SIGEV_THREAD_ID");
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIGRTMIN + 3;
	if (timer_create(CLOCK_MONOTONIC, &sev, &id) || timer_settime(id, 0, &its, NULL))
		die("timer SIGEV_SIGNAL");
	sev.sigev_notify = SIGEV_NONE;
	struct itimerspec far = {{1000, 0}, {1000, 0}};
	if (timer_create(CLOCK_MONOTONIC, &sev, &t_none) || timer_settime(t_none, 0, &far, NULL))
		die("timer SIGEV_NONE");
}

static void timers_check(void)
{
	if (wrong_tid)
		fail("SIGEV_THREAD_ID timer signal taken by tid %d, not the worker (tid %d at start)", (int)wrong_tid, (int)worker_tid);
	struct itimerspec cur;
	if (timer_gettime(t_none, &cur))
		fail("timer_gettime SIGEV_NONE: %s", strerror(errno));
	if (cur.it_interval.tv_sec != 1000 || (cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0))
		fail("SIGEV_NONE timer interval %lds value %lds, want 1000s and armed", (long)cur.it_interval.tv_sec,
		     (long)cur.it_value.tv_sec);
}

/* ---- cwd ---- */
static void cwd_setup(const char *dir)
{
	char d[512];
	snprintf(d, sizeof d, "%s/gone", dir);
	if (mkdir(d, 0750) || chmod(d, 0750) || chdir(d) || rmdir(d))
		die("make and remove the current directory");
}

static void cwd_check(void)
{
	char buf[512];
	struct stat st;
	if (getcwd(buf, sizeof buf) != NULL || errno != ENOENT)
		fail("getcwd: %s (%s), want ENOENT", buf, strerror(errno));
	if (stat(".", &st))
		fail("stat .: %s", strerror(errno));
	if (st.st_nlink != 0 || (st.st_mode & 07777) != 0750 || !S_ISDIR(st.st_mode))
		fail("\".\" has %ld links, mode %#o; want a removed directory, 0750", (long)st.st_nlink, st.st_mode);
	int fd = open("x", O_CREAT | O_WRONLY, 0600);
	if (fd >= 0 || errno != ENOENT)
		fail("create a file in the removed directory: fd %d (%s), want ENOENT", fd, strerror(errno));
}

static volatile int waiter_go;

/* waiter lives until told to go: a timer is made to signal it meanwhile. */
static void *waiter(void *arg)
{
	(void)arg;
	worker_tid = (pid_t)syscall(SYS_gettid);
	while (!waiter_go)
		pace();
	return NULL;
}

static void *ticker(void *arg)
{
	(void)arg;
	for (unsigned long n = 1;; n++) {
		tick("ok", n);
		struct timespec ts = {0, 20 * 1000 * 1000};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: vmacheck SCENARIO DIR [options]\n");
		return 2;
	}
	const char *sc = argv[1], *dir = argv[2];
	if (!strcmp(sc, "prot"))
		prot_setup();
	else if (!strcmp(sc, "filemap"))
		filemap_setup(dir);
	else if (!strcmp(sc, "madvise"))
		madvise_setup();
	else if (!strcmp(sc, "mlock"))
		mlock_setup(argc, argv);
	else if (!strcmp(sc, "prctl"))
		prctl_setup();
	else if (!strcmp(sc, "timers"))
		timers_setup();
	else if (!strcmp(sc, "cwd"))
		cwd_setup(dir);
	else if (!strcmp(sc, "leader-exit")) {
		pthread_t th;
		emit("{\"pid\":%d}\n", getpid());
		if (pthread_create(&th, NULL, ticker, NULL))
			die("pthread_create");
		pthread_exit(NULL);
	} else if (!strcmp(sc, "timer-orphan")) {
		pthread_t th;
		if (pthread_create(&th, NULL, waiter, NULL))
			die("pthread_create");
		while (!worker_tid)
			pace();
		struct sigevent sev = {0};
		timer_t id;
		sev.sigev_notify = SIGEV_THREAD_ID;
		sev.sigev_signo = SIGRTMIN + 2;
		sev._sigev_un._tid = worker_tid;
		if (timer_create(CLOCK_MONOTONIC, &sev, &id))
			die("timer_create");
		waiter_go = 1;
		if (pthread_join(th, NULL))
			die("pthread_join");
	} else if (!strcmp(sc, "sealed")) {
		unsigned char *p = map(PG, PROT_READ);
		if (syscall(462 /* mseal */, p, PG, 0))
			die("mseal");
	} else {
		fprintf(stderr, "unknown scenario %s\n", sc);
		return 2;
	}
	emit("{\"pid\":%d}\n", getpid());
	for (unsigned long n = 1;; n++) {
		if (!strcmp(sc, "prot"))
			prot_check();
		else if (!strcmp(sc, "filemap"))
			filemap_check(n);
		else if (!strcmp(sc, "madvise"))
			madvise_check();
		else if (!strcmp(sc, "mlock"))
			mlock_check();
		else if (!strcmp(sc, "prctl"))
			prctl_check();
		else if (!strcmp(sc, "timers")) {
			static unsigned long tid_seen, proc_seen;
			timers_check();
			if ((unsigned long)tid_hits > tid_seen)
				tick("tidtimer", tid_seen = tid_hits);
			if ((unsigned long)proc_hits > proc_seen)
				tick("proctimer", proc_seen = proc_hits);
		} else if (!strcmp(sc, "cwd"))
			cwd_check();
		tick("ok", n);
		struct timespec ts = {0, 20 * 1000 * 1000};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
}
