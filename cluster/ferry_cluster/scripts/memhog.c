/* memhog: hold N MiB of random bytes in a process's own memory, then count.
 *
 * The workload for moving memory: the bytes live in anonymous memory (not a
 * tmpfs, which CRIU carries as a file, not as pages) and do not compress.
 * Like the shell counter it writes its count to /tmp/count every 100 ms and
 * prints it (the container's log), so a restored copy shows that it resumed
 * rather than restarted. It reads the clock every 10 ms, and /tmp/gap holds the
 * longest wall-clock gap between two readings in ms: the downtime as the
 * workload itself saw it, to 10 ms (with 100 ms readings the gap would add up
 * to 100 ms to any downtime, a large part of a half-second one).
 * Usage: memhog MIB
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void put(const char *path, unsigned long long value) {
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fprintf(f, "%llu\n", value);
    fclose(f);
    rename(tmp, path);
}

int main(int argc, char **argv) {
    size_t size = (argc > 1 ? strtoull(argv[1], NULL, 10) : 0) << 20;
    unsigned char *blob = size ? malloc(size) : NULL;
    if (size && !blob) { perror("malloc"); return 1; }
    if (size) {
        int fd = open("/dev/urandom", O_RDONLY);
        if (fd < 0) { perror("/dev/urandom"); return 1; }
        for (size_t done = 0; done < size;) {
            size_t want = size - done > (1 << 20) ? (1 << 20) : size - done;
            ssize_t n = read(fd, blob + done, want);
            if (n <= 0) { perror("read"); return 1; }
            done += (size_t)n;
        }
        close(fd);
    }
    unsigned long long i = 0;
    /* volatile: the loop never ends, so -O2 removed the reads of a plain sum (found by
       the post-copy research: the memory was never touched after the fill). */
    volatile unsigned long long sum = 0;
    double last = 0, maxgap = 0;
    struct timespec reading = {0, 10 * 1000 * 1000};
    for (;;) {
        i++;
        for (int r = 0; r < 10; r++) {  /* ten clock readings per count */
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            double t = now.tv_sec * 1e3 + now.tv_nsec / 1e6;
            if (last > 0 && t - last > maxgap) {
                maxgap = t - last;
                put("/tmp/gap", (unsigned long long)maxgap);
            }
            last = t;
            if (r == 0) {
                if (size) sum += blob[(i * 4096) % size];  /* keep the pages in use */
                put("/tmp/count", i);
                printf("%llu\n", i);
                fflush(stdout);
            }
            nanosleep(&reading, NULL);
        }
    }
    return (int)(sum & 1);
}
