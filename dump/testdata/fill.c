// fill: populate N MiB of anonymous memory, say "ready", then spin.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
	size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 64;
	size_t len = mib << 20;
	unsigned char *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) { perror("mmap"); return 1; }
	for (size_t i = 0; i < len; i += 4096) p[i] = (unsigned char)(i >> 12);
	printf("ready\n");
	fflush(stdout);
	volatile unsigned long n = 0;
	for (;;) n++;
}
