/*
 * qa5_securebits: a process with securebits set (capabilities(7), "The
 * securebits flags"), as a sandbox or systemd's SecureBits= leaves them.
 *   "root": stays uid 0 with SECBIT_NOROOT | SECBIT_NOROOT_LOCKED |
 *           SECBIT_NO_SETUID_FIXUP.
 *   "user": SECBIT_KEEP_CAPS | SECBIT_KEEP_CAPS_LOCKED | SECBIT_NOROOT,
 *           then setresuid(65534): the permitted capabilities survive
 *           the change of user (KEEP_CAPS).
 * Every round it checks prctl(PR_GET_SECUREBITS) and, for "user", that
 * CAP_NET_BIND_SERVICE is still permitted.
 *
 * Report: {"pid":N}. Ticks: "ok". A failed check writes "FAIL ..." to
 * stderr and exits 1.
 */
#include "common.h"
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static unsigned long want;
static int user;

static void check(void)
{
	int got = prctl(PR_GET_SECUREBITS);
	if (got < 0 || (unsigned long)got != want)
		failf("securebits %#x, want %#lx", got, want);
	if (!user)
		return;
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d))
		die("capget");
	if (!(d[0].permitted & (1u << CAP_NET_BIND_SERVICE)))
		failf("CAP_NET_BIND_SERVICE no longer permitted (permitted %#x)", d[0].permitted);
	if (getuid() != 65534)
		failf("uid %d, want 65534", getuid());
}

int main(int argc, char **argv)
{
	user = argc > 1 && !strcmp(argv[1], "user");
	want = user ? SECBIT_KEEP_CAPS | SECBIT_KEEP_CAPS_LOCKED | SECBIT_NOROOT
		    : SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP;
	if (prctl(PR_SET_SECUREBITS, want))
		die("prctl PR_SET_SECUREBITS");
	if (user && setresuid(65534, 65534, 65534))
		die("setresuid");
	check_forever(check);
}
