/*
 * memory: a heap buffer (malloc, brk heap), a 4 MiB anonymous mapping with
 * only its first half touched, and a stack array, each filled with pattern().
 *
 * Report: {"pid":N,"heap":"0x..","heap_len":N,"map":"0x..","map_len":N,
 *          "touched_len":N,"stack":"0x..","stack_len":N}
 * Ticks:  "main". The loop only reads the buffers and checks the pattern.
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

static void check(volatile unsigned char *p, unsigned long i, unsigned tag, const char *what)
{
	if (p[i] != pattern(tag, i)) {
		fprintf(stderr, "%s byte %lu changed\n", what, i);
		exit(1);
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
	/* No transparent huge pages: touching the first half must not populate
	 * the second. */
	if (madvise(map, MAP_LEN, MADV_NOHUGEPAGE) < 0)
		die("madvise");
	fill(heap, HEAP_LEN, TAG_HEAP);
	fill(map, TOUCH_LEN, TAG_MAP);
	fill(stackbuf, STACK_LEN, TAG_STACK);

	emit("{\"pid\":%d,\"heap\":\"%p\",\"heap_len\":%d,\"map\":\"%p\",\"map_len\":%lu,"
	     "\"touched_len\":%lu,\"stack\":\"%p\",\"stack_len\":%d}\n",
	     getpid(), (void *)heap, HEAP_LEN, (void *)map, MAP_LEN, TOUCH_LEN, (void *)stackbuf, STACK_LEN);

	for (unsigned long n = 1;; n++) {
		check(heap, (n * 4099) % HEAP_LEN, TAG_HEAP, "heap");
		check(map, (n * 4099) % TOUCH_LEN, TAG_MAP, "map");
		check(stackbuf, (n * 4099) % STACK_LEN, TAG_STACK, "stack");
		tick("main", n);
		pace();
	}
}
