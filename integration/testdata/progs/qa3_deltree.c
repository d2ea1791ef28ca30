/*
 * qa3_deltree: a process whose current directory and open file lay in a
 * tree that was removed with `rm -r` (the directory and its parent), as a
 * temporary directory cleaned up under a running program. argv[1] is a
 * directory to work in. The program makes DIR/t/a/b, enters it, opens
 * DIR/t/a/b/f (writes "qa3 data", keeps the offset at 4), opens a second fd
 * on f with O_RDONLY, then removes f, b, a and t, and keeps checking:
 *
 *   "." is a removed directory (no links, mode 0751), getcwd fails with
 *   ENOENT, /proc/self/cwd reads "DIR/t/a/b (deleted)";
 *   fd 3 reads "qa3 data", has offset 4, no links, mode 0640, and
 *   /proc/self/fd/3 reads "DIR/t/a/b/f (deleted)"; fd 4 is the same file;
 *   DIR/t does not exist.
 *
 * Report: {"pid":N}. Ticks: "ok" = checks passed. A failed check writes
 * "FAIL ..." to stderr and exits 1.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/stat.h>

static char top[512], cwdpath[1024], fpath[1100];
static int fd, fd2;


static void link_is(const char *link, const char *path)
{
	char buf[1024], want[1024];
	ssize_t n = readlink(link, buf, sizeof buf - 1);
	if (n < 0)
		failf("readlink %s: %s", link, strerror(errno));
	buf[n] = 0;
	snprintf(want, sizeof want, "%s (deleted)", path);
	if (strcmp(buf, want))
		failf("%s is %s, want %s", link, buf, want);
}

static void check(void)
{
	struct stat st, st2;
	char buf[64];
	if (stat(".", &st))
		failf("stat .: %s", strerror(errno));
	if (!S_ISDIR(st.st_mode) || st.st_nlink != 0 || (st.st_mode & 07777) != 0751)
		failf(".: %ld links, mode %#o; want a removed directory, 0751", (long)st.st_nlink, st.st_mode);
	if (getcwd(buf, sizeof buf) != NULL || errno != ENOENT)
		failf("getcwd: %s (%s), want ENOENT", buf, strerror(errno));
	link_is("/proc/self/cwd", cwdpath);
	link_is("/proc/self/fd/3", fpath);
	if (fstat(fd, &st) || fstat(fd2, &st2))
		failf("fstat: %s", strerror(errno));
	if (st.st_nlink != 0 || (st.st_mode & 07777) != 0640 || st.st_ino != st2.st_ino || st.st_dev != st2.st_dev)
		failf("fd 3: %ld links, mode %#o, fd 4 inode %lu of %lu; want a removed file, 0640, the same", (long)st.st_nlink,
		     st.st_mode, (unsigned long)st2.st_ino, (unsigned long)st.st_ino);
	if (lseek(fd, 0, SEEK_CUR) != 4)
		failf("fd 3 offset %ld, want 4", (long)lseek(fd, 0, SEEK_CUR));
	ssize_t n = pread(fd2, buf, sizeof buf, 0);
	if (n != 8 || memcmp(buf, "qa3 data", 8))
		failf("fd 4 reads %zd bytes, want \"qa3 data\"", n);
	if (access(top, F_OK) == 0 || errno != ENOENT)
		failf("%s exists again", top);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: qa3_deltree DIR\n");
		return 2;
	}
	char a[700];
	snprintf(top, sizeof top, "%s/t", argv[1]);
	snprintf(a, sizeof a, "%s/a", top);
	snprintf(cwdpath, sizeof cwdpath, "%s/b", a);
	snprintf(fpath, sizeof fpath, "%s/f", cwdpath);
	if (mkdir(top, 0755) || mkdir(a, 0755) || mkdir(cwdpath, 0751) || chmod(cwdpath, 0751) || chdir(cwdpath))
		die("make and enter DIR/t/a/b");
	fd = open(fpath, O_CREAT | O_RDWR, 0640);
	if (fd != 3 || fchmod(fd, 0640) || write(fd, "qa3 data", 8) != 8 || lseek(fd, 4, SEEK_SET) != 4)
		die("make DIR/t/a/b/f as fd 3");
	fd2 = open(fpath, O_RDONLY);
	if (fd2 != 4)
		die("open DIR/t/a/b/f as fd 4");
	if (unlink(fpath) || rmdir(cwdpath) || rmdir(a) || rmdir(top))
		die("remove DIR/t");
	check();
	check_forever(check);
}
