/*
 * qa3_tmpfile: a process with an unnamed temporary file (open(2)
 * O_TMPFILE in DIR, argv[1]) as fd 3, holding "qa3 tmpfile data" at offset
 * 4, and a tmpfile(3) stream (glibc makes it with O_TMPFILE too) holding
 * "stream". It keeps checking both: content, offset, no links, status
 * flags (O_TMPFILE among them: an O_TMPFILE file made without O_EXCL can
 * still be given a name by linkat(2), once).
 *
 * Report: {"pid":N}. Ticks: "ok". A failed check writes "FAIL ..." to
 * stderr and exits 1.
 */
#include "common.h"
#include <fcntl.h>
#include <sys/stat.h>

static FILE *tf;
static int flags3, flagsTf; /* F_GETFL at the start */


static void check(void)
{
	char buf[64];
	struct stat st;
	if (pread(3, buf, sizeof buf, 0) != 16 || memcmp(buf, "qa3 tmpfile data", 16))
		failf("fd 3 does not hold \"qa3 tmpfile data\"");
	if (lseek(3, 0, SEEK_CUR) != 4)
		failf("fd 3 at offset %ld, want 4", (long)lseek(3, 0, SEEK_CUR));
	if (fstat(3, &st) || st.st_nlink != 0 || (st.st_mode & 07777) != 0600)
		failf("fd 3: %ld links, mode %#o; want an unnamed file, 0600", (long)st.st_nlink, st.st_mode);
	int fd = fileno(tf);
	if (pread(fd, buf, sizeof buf, 0) != 6 || memcmp(buf, "stream", 6))
		failf("the tmpfile(3) stream does not hold \"stream\"");
	if (fstat(fd, &st) || st.st_nlink != 0)
		failf("the tmpfile(3) stream's file has %ld links", (long)st.st_nlink);
	if (fcntl(3, F_GETFL) != flags3 || fcntl(fd, F_GETFL) != flagsTf)
		failf("status flags %#o and %#o, want %#o and %#o", fcntl(3, F_GETFL), fcntl(fd, F_GETFL), flags3, flagsTf);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: qa3_tmpfile DIR\n");
		return 2;
	}
	int fd = open(argv[1], O_TMPFILE | O_RDWR, 0600);
	if (fd != 3 || write(fd, "qa3 tmpfile data", 16) != 16 || lseek(fd, 4, SEEK_SET) != 4)
		die("O_TMPFILE as fd 3");
	tf = tmpfile();
	if (!tf || fputs("stream", tf) < 0 || fflush(tf))
		die("tmpfile");
	flags3 = fcntl(3, F_GETFL);
	flagsTf = fcntl(fileno(tf), F_GETFL);
	check();
	check_forever(check);
}
