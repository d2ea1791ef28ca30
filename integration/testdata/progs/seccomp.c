/*
 * seccomp: a process whose threads run under seccomp filters.
 *   - filter A (installed by main before the thread exists, so both threads
 *     share it): getppid -> EPERM, sigaltstack -> EPERM, munmap and
 *     userfaultfd -> kill the process (lazycr's restore injects both; the
 *     process itself never calls them), everything else allowed;
 *   - filter B (installed by main after the thread exists, main only):
 *     getppid -> EACCES. The newest filter wins a tie of actions
 *     (seccomp(2)), so main sees EACCES only if A and B keep their order.
 * argv[1] "log" installs both with SECCOMP_FILTER_FLAG_LOG and sets
 * no_new_privs first; otherwise the process stays without no_new_privs
 * (it runs as root, CAP_SYS_ADMIN lets it install filters).
 * argv[1] "strict": a second thread enters strict mode, then for each byte
 * it reads from a pipe (write end reported as "fd") ticks "strict" with
 * write(2) alone (strict mode allows read, write, exit and sigreturn);
 * "notif": main installs a filter that sends mkdirat to a user-space
 * listener (SECCOMP_RET_USER_NOTIF) and keeps the listener fd (reported as
 * "fd"). In both the main thread ticks "alive".
 * Each thread ticks "KEY:getppid-errno:Seccomp:Seccomp_filters:nnpN", read
 * by the thread itself (/proc/thread-self/status).
 * Report: {"pid","tid","fd"}.
 */
#include "common.h"
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

static unsigned int filter_flags;
static pthread_mutex_t report_done = PTHREAD_MUTEX_INITIALIZER; /* held until the report is out */

#define ALLOW_UNLESS(nr, action)                                          \
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1),                  \
	BPF_STMT(BPF_RET | BPF_K, (action))

static void install(struct sock_filter *f, unsigned short n)
{
	struct sock_fprog prog = {.len = n, .filter = f};
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, filter_flags, &prog))
		die("seccomp");
}

static void install_a(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		ALLOW_UNLESS(SYS_getppid, SECCOMP_RET_ERRNO | EPERM),
		ALLOW_UNLESS(SYS_sigaltstack, SECCOMP_RET_ERRNO | EPERM),
		ALLOW_UNLESS(SYS_munmap, SECCOMP_RET_KILL_PROCESS),
		ALLOW_UNLESS(SYS_userfaultfd, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	install(f, sizeof f / sizeof f[0]);
}

static void install_b(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		ALLOW_UNLESS(SYS_getppid, SECCOMP_RET_ERRNO | EACCES),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	install(f, sizeof f / sizeof f[0]);
}

/* status_field returns the number after "name:\t" in this thread's status. */
static long status_field(const char *name)
{
	static __thread char buf[4096];
	int fd = open("/proc/thread-self/status", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open status");
	ssize_t n = read(fd, buf, sizeof buf - 1);
	if (n < 0)
		die("read status");
	close(fd);
	buf[n] = 0;
	char key[64];
	snprintf(key, sizeof key, "\n%s:", name);
	char *p = strstr(buf, key);
	if (!p)
		return -1;
	return strtol(p + strlen(key), NULL, 10);
}

static void run(const char *key)
{
	for (unsigned long n = 1;; n++) {
		errno = 0;
		long r = syscall(SYS_getppid);
		int e = r < 0 ? errno : 0;
		emit("tick %s:%s:%ld:%ld:nnp%d %lu\n", key, e == EPERM ? "EPERM" : e == EACCES ? "EACCES" : e ? "other" : "allowed",
		     status_field("Seccomp"), status_field("Seccomp_filters"), prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), n);
		emit("tick %s-pid:%d %lu\n", key, getpid() > 0, n);
		pace();
	}
}

static void *thread_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&report_done);
	pthread_mutex_unlock(&report_done);
	run("thread");
	return NULL;
}

static int strict_pipe[2];

static void *strict_main(void *arg)
{
	(void)arg;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0))
		die("PR_SET_SECCOMP strict");
	char c, line[64];
	for (unsigned long n = 1;;) {
		ssize_t r = read(strict_pipe[0], &c, 1);
		if (r == -1 && errno == EINTR)
			continue;
		if (r != 1)
			syscall(SYS_exit, 1); /* exit is allowed, exit_group is not */
		int len = snprintf(line, sizeof line, "tick strict %lu\n", n++);
		if (write(1, line, len) != len)
			syscall(SYS_exit, 1);
	}
	return NULL;
}

static void alive(void)
{
	for (unsigned long n = 1;; n++) {
		tick("alive", n);
		pace();
	}
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	if (!strcmp(mode, "strict")) {
		if (pipe2(strict_pipe, O_CLOEXEC))
			die("pipe2");
		emit("{\"pid\":%d,\"tid\":%ld,\"fd\":%d}\n", getpid(), (long)syscall(SYS_gettid), strict_pipe[1]);
		pthread_t t;
		if (pthread_create(&t, NULL, strict_main, NULL))
			die("pthread_create");
		alive();
	}
	if (!strcmp(mode, "notif")) {
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			ALLOW_UNLESS(SYS_mkdirat, SECCOMP_RET_USER_NOTIF),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
		int listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
		if (listener < 0)
			die("seccomp NEW_LISTENER");
		emit("{\"pid\":%d,\"tid\":%ld,\"fd\":%d}\n", getpid(), (long)syscall(SYS_gettid), listener);
		alive();
	}
	if (!strcmp(mode, "log")) {
		filter_flags = SECCOMP_FILTER_FLAG_LOG;
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
			die("PR_SET_NO_NEW_PRIVS");
	}
	install_a();
	pthread_mutex_lock(&report_done);
	pthread_t t;
	if (pthread_create(&t, NULL, thread_main, NULL))
		die("pthread_create");
	install_b();
	emit("{\"pid\":%d,\"tid\":%ld,\"fd\":-1}\n", getpid(), (long)syscall(SYS_gettid));
	pthread_mutex_unlock(&report_done);
	run("main");
}
