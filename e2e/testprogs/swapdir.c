/* Exchanges two names (renameat2 RENAME_EXCHANGE) as fast as it can for argv[3] seconds:
 * `swapdir a b secs`. The security tests use it to swap a directory and a symlink under a
 * runtime that is setting up mounts on that directory. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

int main(int argc, char **argv) {
	if (argc != 4) {
		fprintf(stderr, "usage: swapdir a b seconds\n");
		return 2;
	}
	time_t end = time(NULL) + atoi(argv[3]);
	unsigned long swaps = 0;
	while (time(NULL) < end) {
		for (int i = 0; i < 10000; i++) {
			if (syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE) != 0) {
				perror("renameat2");
				return 1;
			}
			swaps++;
		}
	}
	printf("%lu swaps\n", swaps);
	return 0;
}
