/*
 * qa5_keyring: keeps checking that its session keyring does not lead to a
 * key named "qa5-restorer-secret" (keyctl(2) KEYCTL_SEARCH): a process
 * must not possess the keyring of whoever restored it.
 *
 * Report: {"pid":N}. Ticks: "ok". A failed check writes "FAIL ..." to
 * stderr and exits 1.
 */
#include "common.h"
#include <sys/syscall.h>

#define KEYCTL_SEARCH 10
#define KEY_SPEC_SESSION_KEYRING -3

static void check(void)
{
	long k = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING, "user", "qa5-restorer-secret", 0);
	if (k >= 0)
		failf("found key %ld of the restorer's session keyring", k);
}

int main(void)
{
	check_forever(check);
}
