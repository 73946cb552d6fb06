/* The pod sandbox's process, as Kubernetes' own pause: sleeps, reaps, exits on
 * SIGINT or SIGTERM. Built statically with the host's compiler (crilayer.py). */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void down(int signal_number) { _exit(0); }

static void reap(int signal_number) {
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction on_down = {.sa_handler = down};
  struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGINT, &on_down, NULL);
  sigaction(SIGTERM, &on_down, NULL);
  sigaction(SIGCHLD, &on_child, NULL);
  for (;;) {
    pause();
  }
  return 1;
}
