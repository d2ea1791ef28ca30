/*
 * qa5_semundo: a System V semaphore used as a mutex, taken with SEM_UNDO
 * (semop(2)) and held: the kernel releases it when the process exits, and
 * no one can read the adjustment back. It keeps checking that the
 * semaphore still reads 0 (held). "qa5_semundo -r SEMID" removes the set,
 * for the test's cleanup.
 *
 * Report: {"pid":N,"semid":M}. Ticks: "held". A failed check writes
 * "FAIL ..." to stderr and exits 1.
 */
#include "common.h"
#include <sys/ipc.h>
#include <sys/sem.h>

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "-r"))
		return semctl(atoi(argv[2]), 0, IPC_RMID) ? 1 : 0;
	int id = semget(IPC_PRIVATE, 1, 0600);
	if (id < 0)
		die("semget");
	if (semctl(id, 0, SETVAL, 1))
		die("semctl SETVAL");
	struct sembuf down = {.sem_num = 0, .sem_op = -1, .sem_flg = SEM_UNDO};
	if (semop(id, &down, 1))
		die("semop");
	emit("{\"pid\":%d,\"semid\":%d}\n", getpid(), id);
	for (unsigned long n = 1;; n++) {
		int v = semctl(id, 0, GETVAL);
		if (v != 0)
			failf("semaphore %d reads %d, want 0 (held)", id, v);
		tick("held", n);
		pace();
	}
}
