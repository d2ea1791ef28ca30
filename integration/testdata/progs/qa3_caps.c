/*
 * qa3_caps: a process with capabilities other than root's full set, as a
 * service manager or container runtime leaves one. argv[1]:
 *
 *   user  runs as uid/gid 65534 (groups 100, 4) keeping CAP_NET_BIND_SERVICE
 *         permitted, effective, inheritable and ambient (systemd
 *         AmbientCapabilities=, setcap), CAP_NET_RAW dropped from its
 *         bounding set;
 *   root  stays uid 0 but drops CAP_SYS_ADMIN and CAP_NET_RAW from every set
 *         and the bounding set (docker's default, CapabilityBoundingSet=).
 *
 * It records its Uid, Gid, Groups and Cap* lines of /proc/self/status once
 * set, then keeps checking that they have not changed.
 *
 * Report: {"pid":N}. Ticks: "ok". A changed line writes "FAIL ..." to
 * stderr and exits 1.
 */
#include "common.h"
#include <fcntl.h>
#include <grp.h>
#include <stdint.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static char want[2048];

static void creds(char *out, size_t n)
{
	char buf[8192];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	ssize_t len = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
	if (len <= 0)
		die("read /proc/self/status");
	close(fd);
	buf[len] = 0;
	out[0] = 0;
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
		if (!strncmp(l, "Uid:", 4) || !strncmp(l, "Gid:", 4) || !strncmp(l, "Groups:", 7) || !strncmp(l, "Cap", 3)) {
			strncat(out, l, n - strlen(out) - 2);
			strcat(out, "\n");
		}
}

static void capset3(uint64_t eff, uint64_t perm, uint64_t inh)
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2] = {{eff, perm, inh}, {eff >> 32, perm >> 32, inh >> 32}};
	if (syscall(SYS_capset, &h, d))
		die("capset");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: qa3_caps user|root\n");
		return 2;
	}
	if (!strcmp(argv[1], "user")) {
		uint64_t c = 1ULL << CAP_NET_BIND_SERVICE;
		gid_t groups[] = {100, 4};
		if (prctl(PR_CAPBSET_DROP, CAP_NET_RAW) || prctl(PR_SET_KEEPCAPS, 1) || setgroups(2, groups) ||
		    setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
			die("become uid 65534 keeping capabilities");
		capset3(c, c, c);
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0) || prctl(PR_SET_KEEPCAPS, 0))
			die("raise the ambient capability");
	} else {
		uint64_t gone = 1ULL << CAP_SYS_ADMIN | 1ULL << CAP_NET_RAW;
		struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
		struct __user_cap_data_struct d[2];
		if (syscall(SYS_capget, &h, d))
			die("capget");
		uint64_t eff = d[0].effective | (uint64_t)d[1].effective << 32;
		uint64_t perm = d[0].permitted | (uint64_t)d[1].permitted << 32;
		if (prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN) || prctl(PR_CAPBSET_DROP, CAP_NET_RAW))
			die("drop from the bounding set");
		capset3(eff & ~gone, perm & ~gone, 0);
	}
	creds(want, sizeof want);
	emit("{\"pid\":%d}\n", getpid());
	for (unsigned long n = 1;; n++) {
		char got[2048];
		creds(got, sizeof got);
		if (strcmp(got, want)) {
			fprintf(stderr, "FAIL credentials changed:\n%swas:\n%s", got, want);
			exit(1);
		}
		tick("ok", n);
		pace();
	}
}
