/*
 * rootcheck: a process with its own root directory (chroot(2)) that keeps
 * checking it itself. argv[1] picks the scenario, argv[2] is a directory
 * to work in:
 *
 *   live DIR     chroot into DIR/r, chdir to /sub in it: getcwd is "/sub",
 *                "/marker" (DIR/r/marker) is there, "/.." is "/".
 *   deleted DIR  chroot into DIR/r (mode 0750), chdir "/", then DIR/r is
 *                removed (through a descriptor of DIR): "/" and "." are one
 *                removed directory (no links, mode 0750), getcwd fails with
 *                ENOENT, creating "/x" fails with ENOENT.
 *   escaped DIR  chroot into DIR/r without entering it, which is then
 *                removed: the current directory stays DIR, outside the
 *                root ("outside-marker" is there), and "/" is the removed
 *                directory (no links, mode 0750).
 *   inside DIR   chroot into DIR/r, enter /sub in it, remove /sub, then
 *                DIR/r: the removed current directory lies inside the
 *                removed root (dump must refuse it).
 *   twins DIR    chroot into DIR/r, remove it, make DIR/r again, enter
 *                it and remove it: two removed directories of one path
 *                (dump must refuse it).
 *
 * Report: {"pid":N}. Ticks: "ok" = checks passed. A failed check writes
 * "FAIL ..." to stderr and exits 1.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/stat.h>

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

static void must_stat(const char *path, struct stat *st)
{
	if (stat(path, st))
		fail("stat %s: %s", path, strerror(errno));
}

/* removed checks that path is a removed directory of mode 0750. */
static void removed(const char *path)
{
	struct stat st;
	must_stat(path, &st);
	if (!S_ISDIR(st.st_mode) || st.st_nlink != 0 || (st.st_mode & 07777) != 0750)
		fail("%s: %ld links, mode %#o; want a removed directory, 0750", path, (long)st.st_nlink, st.st_mode);
}

static const char *sc;

static void check(void)
{
	char buf[512];
	struct stat a, b;
	if (!strcmp(sc, "live")) {
		if (!getcwd(buf, sizeof buf) || strcmp(buf, "/sub"))
			fail("getcwd: %s (%s), want /sub", getcwd(buf, sizeof buf) ? buf : "NULL", strerror(errno));
		must_stat("/marker", &a);
		must_stat("/", &a);
		must_stat("/..", &b);
		if (a.st_ino != b.st_ino || a.st_dev != b.st_dev)
			fail("\"/..\" is not \"/\": the root is not %s", "DIR/r");
		return;
	}
	removed("/");
	if (!strcmp(sc, "inside") || !strcmp(sc, "twins")) {
		removed(".");
		return;
	}
	if (!strcmp(sc, "deleted")) {
		removed(".");
		must_stat("/", &a);
		must_stat(".", &b);
		if (a.st_ino != b.st_ino || a.st_dev != b.st_dev)
			fail("\".\" (inode %lu) is not \"/\" (inode %lu)", (unsigned long)b.st_ino, (unsigned long)a.st_ino);
		if (getcwd(buf, sizeof buf) != NULL || errno != ENOENT)
			fail("getcwd: %s (%s), want ENOENT", buf, strerror(errno));
		int fd = open("/x", O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
		if (fd >= 0 || errno != ENOENT)
			fail("create /x in the removed root: fd %d (%s), want ENOENT", fd, strerror(errno));
		return;
	}
	/* escaped: the current directory is outside the root. */
	must_stat("outside-marker", &a);
	must_stat(".", &b);
	if (b.st_nlink == 0)
		fail("\".\" is a removed directory, want DIR");
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: rootcheck SCENARIO DIR\n");
		return 2;
	}
	sc = argv[1];
	const char *dir = argv[2];
	char r[512], p[600];
	snprintf(r, sizeof r, "%s/r", dir);
	if (mkdir(r, 0750) || chmod(r, 0750))
		die("mkdir DIR/r");
	int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		die("open DIR");
	if (!strcmp(sc, "live")) {
		snprintf(p, sizeof p, "%s/sub", r);
		if (mkdir(p, 0755))
			die("mkdir DIR/r/sub");
		snprintf(p, sizeof p, "%s/marker", r);
		int fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
		if (fd < 0)
			die("create DIR/r/marker");
		close(fd);
		if (chroot(r) || chdir("/sub"))
			die("chroot");
	} else if (!strcmp(sc, "deleted")) {
		if (chroot(r) || chdir("/") || unlinkat(dfd, "r", AT_REMOVEDIR))
			die("chroot, chdir / and remove the root");
	} else if (!strcmp(sc, "inside")) {
		if (chroot(r) || mkdir("/sub", 0750) || chmod("/sub", 0750) || chdir("/sub") || rmdir("/sub") || unlinkat(dfd, "r", AT_REMOVEDIR))
			die("chroot, enter /sub, remove it and the root");
	} else if (!strcmp(sc, "twins")) {
		if (chdir(dir) || chroot(r) || unlinkat(dfd, "r", AT_REMOVEDIR) || mkdirat(dfd, "r", 0750) ||
		    fchmodat(dfd, "r", 0750, 0) || chdir("r") || unlinkat(dfd, "r", AT_REMOVEDIR))
			die("chroot, remove the root, make, enter and remove it again");
	} else if (!strcmp(sc, "escaped")) {
		snprintf(p, sizeof p, "%s/outside-marker", dir);
		int fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
		if (fd < 0)
			die("create DIR/outside-marker");
		close(fd);
		if (chdir(dir) || chroot(r) || unlinkat(dfd, "r", AT_REMOVEDIR))
			die("chroot and remove the root");
	} else {
		fprintf(stderr, "unknown scenario %s\n", sc);
		return 2;
	}
	close(dfd);
	check();
	emit("{\"pid\":%d}\n", getpid());
	for (unsigned long n = 1;; n++) {
		check();
		tick("ok", n);
		struct timespec ts = {0, 20 * 1000 * 1000};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
}
