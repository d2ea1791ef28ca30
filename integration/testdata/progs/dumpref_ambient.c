/*
 * dumpref_ambient: a root process with an ambient capability
 * (CAP_NET_BIND_SERVICE, made inheritable and raised with
 * prctl(PR_CAP_AMBIENT_RAISE)) that then sets SECBIT_NO_CAP_AMBIENT_RAISE
 * (capabilities(7)): what no restore can rebuild, so the dump must refuse
 * it while the process runs on.
 *
 * Report: {"pid":N}. Ticks: "ok" while the ambient set still holds the
 * capability (a failed check writes "FAIL ..." to stderr and exits 1).
 */
#include "common.h"
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static void check(void)
{
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_BIND_SERVICE, 0, 0) != 1)
		failf("CAP_NET_BIND_SERVICE is no longer ambient");
	if (!(prctl(PR_GET_SECUREBITS) & SECBIT_NO_CAP_AMBIENT_RAISE))
		failf("SECBIT_NO_CAP_AMBIENT_RAISE is gone");
}

int main(void)
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d))
		die("capget");
	d[0].inheritable |= 1u << CAP_NET_BIND_SERVICE;
	if (syscall(SYS_capset, &h, d))
		die("capset");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0))
		die("prctl PR_CAP_AMBIENT_RAISE");
	if (prctl(PR_SET_SECUREBITS, prctl(PR_GET_SECUREBITS) | SECBIT_NO_CAP_AMBIENT_RAISE))
		die("prctl PR_SET_SECUREBITS");
	check_forever(check);
}
