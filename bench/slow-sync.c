/* LD_PRELOAD shim for bench/slow-disk.sh: every fsync/fdatasync first sleeps
 * SLOW_SYNC_US microseconds, then syncs. Models a disk whose sync takes as
 * long as on a slow SSD or a network volume, with no CPU cost, for any
 * dynamically linked program (Redis and cart-actor alike). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>

static void pause_for_sync(void) {
    const char *us = getenv("SLOW_SYNC_US");
    long delay = us ? atol(us) : 0;
    if (delay <= 0) return;
    struct timespec ts = { delay / 1000000, (delay % 1000000) * 1000 };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    pause_for_sync();
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    pause_for_sync();
    return real(fd);
}
