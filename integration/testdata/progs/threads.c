/*
 * threads: the main thread and 8 pthreads, each with its own value in a
 * __thread variable and its own counter.
 *
 * Report: {"pid":N,"threads":[{"name":"main","tid":N,"tls":"0x..",
 *          "tls_value":"0x..","fs_base":"0x.."}, {"name":"t0",...}, ...]}
 * Ticks:  "main", "t0" … "t7". Each thread checks its TLS value every tick.
 */
#include "common.h"
#include <asm/prctl.h>
#include <pthread.h>
#include <sys/syscall.h>

#define NTHREADS 8

static __thread volatile unsigned long tls_value;

struct th {
	char name[8];
	unsigned long value;
	pid_t tid;
	unsigned long tls_addr, fs_base;
};

static struct th ths[NTHREADS + 1];
static pthread_barrier_t ready;

/* setup records the calling thread's view of itself in t. */
static void setup(struct th *t)
{
	tls_value = t->value;
	t->tid = gettid();
	t->tls_addr = (unsigned long)&tls_value;
	if (syscall(SYS_arch_prctl, ARCH_GET_FS, &t->fs_base) < 0)
		die("arch_prctl ARCH_GET_FS");
}

static void loop(struct th *t)
{
	for (unsigned long n = 1;; n++) {
		if (tls_value != t->value) {
			fprintf(stderr, "%s: tls value %#lx, want %#lx\n", t->name, tls_value, t->value);
			exit(1);
		}
		tick(t->name, n);
		pace();
	}
}

static void *run(void *arg)
{
	setup(arg);
	pthread_barrier_wait(&ready);
	pthread_barrier_wait(&ready); /* the report is out */
	loop(arg);
	return NULL;
}

int main(void)
{
	pthread_t pt;
	if ((errno = pthread_barrier_init(&ready, NULL, NTHREADS + 1)))
		die("pthread_barrier_init");
	strcpy(ths[0].name, "main");
	ths[0].value = 0xabc0000;
	for (int i = 1; i <= NTHREADS; i++) {
		snprintf(ths[i].name, sizeof ths[i].name, "t%d", i - 1);
		ths[i].value = 0xabc0000 + 0x111 * i;
		if ((errno = pthread_create(&pt, NULL, run, &ths[i])))
			die("pthread_create");
	}
	setup(&ths[0]);
	pthread_barrier_wait(&ready);

	char buf[4096];
	int off = snprintf(buf, sizeof buf, "{\"pid\":%d,\"threads\":[", getpid());
	for (int i = 0; i <= NTHREADS; i++)
		off += snprintf(buf + off, sizeof buf - off,
				"%s{\"name\":\"%s\",\"tid\":%d,\"tls\":\"%#lx\",\"tls_value\":\"%#lx\",\"fs_base\":\"%#lx\"}",
				i ? "," : "", ths[i].name, ths[i].tid, ths[i].tls_addr, ths[i].value, ths[i].fs_base);
	emit("%s]}\n", buf);
	pthread_barrier_wait(&ready);
	loop(&ths[0]);
	return 0;
}
