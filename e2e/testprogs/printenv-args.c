/* Prints its argv one per line, then its environment one per line, then exits 0. */
#include <stdio.h>

extern char **environ;

int main(int argc, char **argv) {
	for (int i = 0; i < argc; i++)
		puts(argv[i]);
	for (char **e = environ; *e; e++)
		puts(*e);
	return 0;
}
