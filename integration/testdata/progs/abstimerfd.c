// abstimerfd arms an absolute (TFD_TIMER_ABSTIME) CLOCK_MONOTONIC timerfd
// 60 s ahead and prints, every 20 ms, how far the deadline the timer now
// has (now + its time left) is from the one it was armed with: 0 while it
// keeps its deadline, the downtime if a restore re-armed it relative.
#include <stdio.h>
#include <stdint.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static int64_t ns(struct timespec t) { return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec; }

int main(void) {
	int fd = timerfd_create(CLOCK_MONOTONIC, 0);
	if (fd < 0) { perror("timerfd_create"); return 1; }
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	struct itimerspec its = {0};
	its.it_value.tv_sec = now.tv_sec + 60;
	its.it_value.tv_nsec = now.tv_nsec;
	int64_t deadline = ns(its.it_value);
	if (timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL) < 0) { perror("timerfd_settime"); return 1; }
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		struct itimerspec cur;
		if (timerfd_gettime(fd, &cur) < 0) { perror("timerfd_gettime"); return 1; }
		clock_gettime(CLOCK_MONOTONIC, &now);
		printf("drift %lld\n", (long long)(ns(now) + ns(cur.it_value) - deadline));
		usleep(20000);
	}
}
