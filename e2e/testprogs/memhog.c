/* memhog <MiB>: allocates and touches MiB mebibytes of anonymous memory, prints "ready",
 * then holds it until SIGTERM or SIGINT (exits 0). Used to check memory stats. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_stop(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: memhog <MiB>\n");
		return 2;
	}
	char *end;
	long mib = strtol(argv[1], &end, 10);
	if (*end != '\0' || mib < 0 || mib > 65536) {
		fprintf(stderr, "memhog: bad size %s\n", argv[1]);
		return 2;
	}
	size_t bytes = (size_t)mib << 20;
	char *block = malloc(bytes ? bytes : 1);
	if (block == NULL) {
		perror("memhog: malloc");
		return 1;
	}
	memset(block, 0x5a, bytes);
	struct sigaction sa = {0};
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	printf("ready %ld MiB\n", mib);
	fflush(stdout);
	while (!stop)
		pause();
	return block[bytes ? bytes - 1 : 0] == 0x5a ? 0 : 1;
}
