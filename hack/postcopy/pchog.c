/* pchog: memhog for post-copy measurements (derived from cluster/ferry_cluster/scripts/memhog.c).
 *
 * Holds N MiB of random bytes (anonymous memory, incompressible) and works on
 * them: each iteration reads one byte from each of K pseudo-random pages, reads
 * the clock, and sleeps 1 ms (the reads are volatile: with -O2 a loop that never returns
 * would otherwise lose them, as the sum in memhog.c does). So it both sees pauses (the longest gap between
 * two clock readings, to ~1 ms) and feels every page that is not there yet
 * (on a post-copy target each first touch is a userfault served over the link).
 *
 * Files, in the working directory (the container's /tmp):
 *   sum0    checksum of all memory right after filling it
 *   gap     longest gap between clock readings so far, in microseconds
 *   series  one line per 100 ms window: "epoch_ms iterations max_gap_us"
 *   sum     written on SIGUSR1: checksum of all memory now (touches every page)
 * Usage: pchog MIB [K]
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static unsigned char *blob;
static size_t size;
static volatile sig_atomic_t want_sum;

static void on_usr1(int sig) { (void)sig; want_sum = 1; }

static unsigned long long checksum(void) {
    unsigned long long h = 1469598103934665603ULL;
    const unsigned long long *w = (const unsigned long long *)blob;
    for (size_t i = 0; i < size / 8; i++) h = (h ^ w[i]) * 1099511628211ULL;
    return h;
}

static void put(const char *path, const char *text) {
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return;
    if (write(fd, text, strlen(text)) < 0) {}
    close(fd);
    rename(tmp, path);
}

static void append(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return;
    if (write(fd, text, strlen(text)) < 0) {}
    close(fd);
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
    size = (argc > 1 ? strtoull(argv[1], NULL, 10) : 0) << 20;
    int k = argc > 2 ? atoi(argv[2]) : 16;
    char line[128];
    if (!size) return 2;
    blob = malloc(size);
    if (!blob) { perror("malloc"); return 1; }
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0) { perror("/dev/urandom"); return 1; }
    for (size_t done = 0; done < size;) {
        size_t want = size - done > (1 << 20) ? (1 << 20) : size - done;
        ssize_t n = read(fd, blob + done, want);
        if (n <= 0) { perror("read"); return 1; }
        done += (size_t)n;
    }
    close(fd);
    snprintf(line, sizeof line, "%016llx\n", checksum());
    put("sum0", line);
    signal(SIGUSR1, on_usr1);
    size_t pages = size / 4096;
    unsigned long long x = 88172645463325252ULL, iters = 0;
    volatile unsigned long long acc = 0; /* the reads must happen: the loop never returns */
    double last = 0, maxgap = 0, window = 0, wmax = 0;
    struct timespec pause = {0, 1000 * 1000};
    for (;;) {
        for (int j = 0; j < k; j++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;   /* xorshift64 */
            acc += ((volatile unsigned char *)blob)[(x % pages) * 4096 + (x >> 52)];
        }
        iters++;
        double t = now_us();
        if (last > 0) {
            double g = t - last;
            if (g > wmax) wmax = g;
            if (g > maxgap) {
                maxgap = g;
                snprintf(line, sizeof line, "%llu\n", (unsigned long long)maxgap);
                put("gap", line);
            }
        }
        last = t;
        if (window == 0) window = t;
        if (t - window >= 100000) {
            snprintf(line, sizeof line, "%llu %llu %llu\n", (unsigned long long)(t / 1000),
                     iters, (unsigned long long)wmax);
            append("series", line);
            iters = 0; wmax = 0; window = t;
        }
        if (want_sum) {
            want_sum = 0;
            snprintf(line, sizeof line, "%016llx\n", checksum());
            put("sum", line);
            last = 0; /* the checksum pass is no pause of the migration */
        }
        nanosleep(&pause, NULL);
    }
    return (int)(acc & 1);
}
