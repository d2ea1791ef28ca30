/*
 * memcheck: memory that checks itself. A heap buffer (malloc), a 4 MiB
 * anonymous mapping with its first half filled and its second half never
 * touched, and a stack array, each filled with pattern(). Every tick the
 * program re-reads all of it: the filled bytes must hold the pattern and the
 * untouched half must read as zero (reading it populates zero pages only).
 *
 * Report: {"pid":N,"heap":"0x..","map":"0x..","stack":"0x.."}
 * Ticks:  "check" = number of full verifications that passed. A failed
 *         verification writes "check FAIL <what> byte <i>..." to stderr and
 *         exits with status 1.
 */
#include "common.h"
#include <sys/mman.h>

#define HEAP_LEN (64 * 1024)
#define MAP_LEN (4UL << 20)
#define TOUCH_LEN (2UL << 20)
#define STACK_LEN (16 * 1024)

enum { TAG_HEAP = 1, TAG_MAP = 2, TAG_STACK = 3 };

static void fill(volatile unsigned char *p, unsigned long n, unsigned tag)
{
	for (unsigned long i = 0; i < n; i++)
		p[i] = pattern(tag, i);
}

static void verify(volatile unsigned char *p, unsigned long n, unsigned tag, const char *what)
{
	for (unsigned long i = 0; i < n; i++) {
		if (p[i] != pattern(tag, i)) {
			fprintf(stderr, "check FAIL %s byte %lu at %p: %#x, want %#x\n", what, i,
				(void *)(p + i), p[i], pattern(tag, i));
			exit(1);
		}
	}
}

static void verify_zero(volatile unsigned char *p, unsigned long n, const char *what)
{
	for (unsigned long i = 0; i < n; i++) {
		if (p[i] != 0) {
			fprintf(stderr, "check FAIL %s byte %lu at %p: %#x, want 0\n", what, i, (void *)(p + i), p[i]);
			exit(1);
		}
	}
}

int main(void)
{
	volatile unsigned char stackbuf[STACK_LEN];
	unsigned char *heap = malloc(HEAP_LEN);
	if (!heap)
		die("malloc");
	unsigned char *map = mmap(NULL, MAP_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		die("mmap");
	if (madvise(map, MAP_LEN, MADV_NOHUGEPAGE) < 0)
		die("madvise");
	fill(heap, HEAP_LEN, TAG_HEAP);
	fill(map, TOUCH_LEN, TAG_MAP);
	fill(stackbuf, STACK_LEN, TAG_STACK);

	emit("{\"pid\":%d,\"heap\":\"%p\",\"map\":\"%p\",\"stack\":\"%p\"}\n", getpid(), (void *)heap,
	     (void *)map, (void *)stackbuf);

	for (unsigned long n = 1;; n++) {
		verify(heap, HEAP_LEN, TAG_HEAP, "heap");
		verify(map, TOUCH_LEN, TAG_MAP, "map");
		verify_zero(map + TOUCH_LEN, MAP_LEN - TOUCH_LEN, "untouched map");
		verify(stackbuf, STACK_LEN, TAG_STACK, "stack");
		tick("check", n);
		pace();
	}
}
