/*
 * qa3_userns: a process in a user namespace of its own (unshare(2)
 * CLONE_NEWUSER, its uid and gid mapped to themselves), root there with
 * every capability over that namespace only, as in a rootless container.
 *
 * Report: {"pid":N}. Ticks: "ok".
 */
#include "common.h"
#include <fcntl.h>
#include <sched.h>

static void put(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, s, strlen(s)) < 0)
		die(path);
	close(fd);
}

int main(void)
{
	char map[64];
	uid_t uid = geteuid();
	gid_t gid = getegid();
	if (unshare(CLONE_NEWUSER))
		die("unshare(CLONE_NEWUSER)");
	snprintf(map, sizeof map, "%u %u 1", uid, uid);
	put("/proc/self/uid_map", map);
	put("/proc/self/setgroups", "deny");
	snprintf(map, sizeof map, "%u %u 1", gid, gid);
	put("/proc/self/gid_map", map);
	check_forever(NULL);
}
