/* memhog: hold N MiB of random bytes in anonymous memory, then count.
 *
 * The benchmark's workload: memory that lives in the process (not in a
 * tmpfs) and does not compress, plus a counter written to /tmp/count every
 * 100 ms, so a restored copy proves it resumed rather than restarted.
 * /tmp/count holds "COUNT MAXGAP_MS": the longest wall-clock gap between two
 * ticks, the downtime as the workload itself saw it.
 * Usage: memhog MIB
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 0;
    size_t size = mib << 20;
    unsigned char *blob = size ? malloc(size) : NULL;
    if (size && !blob) { perror("malloc"); return 1; }
    if (size) {
        int fd = open("/dev/urandom", O_RDONLY);
        if (fd < 0) { perror("/dev/urandom"); return 1; }
        for (size_t done = 0; done < size;) {
            ssize_t n = read(fd, blob + done, size - done > (1 << 20) ? (1 << 20) : size - done);
            if (n <= 0) { perror("read"); return 1; }
            done += (size_t)n;
        }
        close(fd);
    }
    unsigned long long i = 0, sum = 0;
    double last = 0, maxgap = 0;
    struct timespec tick = {0, 100 * 1000 * 1000};
    for (;;) {
        i++;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        double t = now.tv_sec * 1e3 + now.tv_nsec / 1e6;
        if (last > 0 && t - last > maxgap) maxgap = t - last;
        last = t;
        if (size) sum += blob[(i * 4096) % size];  /* keep the pages in use */
        FILE *f = fopen("/tmp/count.new", "w");
        if (f) { fprintf(f, "%llu %.0f\n", i, maxgap); fclose(f); rename("/tmp/count.new", "/tmp/count"); }
        printf("%llu\n", i);
        fflush(stdout);
        nanosleep(&tick, NULL);
    }
    return (int)(sum & 1);
}
