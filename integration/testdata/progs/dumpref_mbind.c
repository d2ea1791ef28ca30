/*
 * dumpref_mbind: address ranges with NUMA memory policies of their own
 * (mbind(2)), which a restore must give back, next to one without:
 *   preferred: 4 pages, MPOL_PREFERRED node 0, written
 *   bind:      4 pages, MPOL_BIND node 0 | MPOL_F_STATIC_NODES, the middle
 *              2 pages of an 8-page mapping (the mapping is split in three)
 *   local:     4 pages, MPOL_LOCAL, never written
 *   plain:     4 pages, no policy of its own (MPOL_DEFAULT)
 * Every round it checks get_mempolicy(2) MPOL_F_ADDR on each range (and
 * that the pages around "bind" have none) and the data written.
 *
 * Report: {"pid":N}. Ticks: "ok". A failed check writes "FAIL ..." to
 * stderr and exits 1.
 */
#include "common.h"
#include <sys/mman.h>
#include <sys/syscall.h>

#define MPOL_DEFAULT 0
#define MPOL_PREFERRED 1
#define MPOL_BIND 2
#define MPOL_LOCAL 4
#define MPOL_F_STATIC_NODES (1 << 15)
#define MPOL_F_ADDR (1 << 1)
#define PG 4096UL

static char *preferred, *bind8, *local, *plain;

static char *region(size_t pages)
{
	char *p = mmap(NULL, pages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

static void mbind_range(char *p, size_t pages, int mode, unsigned long nodes)
{
	if (syscall(SYS_mbind, p, pages * PG, mode, nodes ? &nodes : NULL, nodes ? 64 : 0, 0))
		die("mbind");
}

static void expect(const char *name, char *p, int want, unsigned long nodes)
{
	int mode = -1;
	unsigned long mask[16] = {0};
	if (syscall(SYS_get_mempolicy, &mode, mask, 1024, p, MPOL_F_ADDR))
		die("get_mempolicy");
	if (mode != want || mask[0] != nodes)
		failf("%s at %p: policy %#x nodes %#lx, want %#x nodes %#lx", name, (void *)p, mode, mask[0], want, nodes);
}

static void check(void)
{
	expect("preferred", preferred, MPOL_PREFERRED, 1);
	expect("bind", bind8 + 3 * PG, MPOL_BIND | MPOL_F_STATIC_NODES, 1);
	expect("before bind", bind8, MPOL_DEFAULT, 0);
	expect("after bind", bind8 + 7 * PG, MPOL_DEFAULT, 0);
	expect("local", local, MPOL_LOCAL, 0);
	expect("plain", plain, MPOL_DEFAULT, 0);
	for (size_t i = 0; i < 4 * PG; i++)
		if (preferred[i] != (char)(i % 251) || bind8[2 * PG + i] != (char)(i % 241))
			failf("data at byte %zu changed", i);
}

int main(void)
{
	preferred = region(4);
	bind8 = region(8);
	local = region(4);
	plain = region(4);
	mbind_range(preferred, 4, MPOL_PREFERRED, 1);
	mbind_range(bind8 + 2 * PG, 4, MPOL_BIND | MPOL_F_STATIC_NODES, 1);
	mbind_range(local, 4, MPOL_LOCAL, 0);
	for (size_t i = 0; i < 4 * PG; i++) {
		preferred[i] = (char)(i % 251);
		bind8[2 * PG + i] = (char)(i % 241);
		plain[i] = 1;
	}
	check_forever(check);
}
