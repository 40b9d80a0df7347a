// What one datagram costs the sender's CPU on loopback: sendto each, sendmmsg batches, or UDP GSO
// (UDP_SEGMENT: one send of N same-size datagrams). A receiver thread drains with recvmmsg.
// Build: cc -O2 -pthread -o /tmp/udp_gso_probe bench/udp_gso_probe.c  (issue 25: what GSO could save; docs/BENCHMARKS.md)
// Run:   taskset -c 1 /tmp/udp_gso_probe [segments=26] [size=1200] [seconds=3]
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

static volatile int stop_rx;
static long received;

static void *drain(void *arg) {
    int fd = *(int *)arg;
    enum { N = 64 };
    static char bufs[N][2048];
    struct mmsghdr msgs[N];
    struct iovec iov[N];
    for (int i = 0; i < N; i++) {
        iov[i].iov_base = bufs[i]; iov[i].iov_len = sizeof bufs[i];
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i]; msgs[i].msg_hdr.msg_iovlen = 1;
    }
    struct timeval tv = {0, 100000};  /* recvmmsg's own timeout is only checked between datagrams */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (!stop_rx) {
        int n = recvmmsg(fd, msgs, N, MSG_WAITFORONE, NULL);
        if (n > 0) received += n;
    }
    return NULL;
}

static double thread_cpu(void) {
    struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec / 1e9;
}
static double process_cpu(void) {
    struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec / 1e9;
}
static double wall(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int segs = argc > 1 ? atoi(argv[1]) : 26, size = argc > 2 ? atoi(argv[2]) : 1200;
    double seconds = argc > 3 ? atof(argv[3]) : 3;
    int rx = socket(AF_INET, SOCK_DGRAM, 0), tx = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 8 << 20;
    setsockopt(rx, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(rx, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
    socklen_t len = sizeof a; getsockname(rx, (struct sockaddr *)&a, &len);
    if (connect(tx, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }
    pthread_t th; pthread_create(&th, NULL, drain, &rx);
    char *payload = calloc((size_t)segs, (size_t)size);
    const char *names[] = {"sendto (one datagram a call)", "sendmmsg (a batch a call)", "UDP_SEGMENT (GSO: a batch in one send)"};
    for (int mode = 0; mode < 3; mode++) {
        long sent = 0, calls = 0, errors = 0;
        long before = received;
        double c0 = thread_cpu(), p0 = process_cpu(), w0 = wall();
        while (wall() - w0 < seconds) {
            if (mode == 0) {
                for (int i = 0; i < segs; i++) { if (send(tx, payload + i * size, size, 0) == size) sent++; else errors++; calls++; }
            } else if (mode == 1) {
                struct mmsghdr m[64]; struct iovec v[64];
                for (int i = 0; i < segs; i++) {
                    v[i].iov_base = payload + i * size; v[i].iov_len = size;
                    memset(&m[i], 0, sizeof m[i]); m[i].msg_hdr.msg_iov = &v[i]; m[i].msg_hdr.msg_iovlen = 1;
                }
                int n = sendmmsg(tx, m, segs, 0); calls++;
                if (n > 0) sent += n; else errors++;
            } else {
                char control[CMSG_SPACE(sizeof(uint16_t))] = {0};
                struct iovec v = {payload, (size_t)segs * size};
                struct msghdr h = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
                struct cmsghdr *c = CMSG_FIRSTHDR(&h);
                c->cmsg_level = SOL_UDP; c->cmsg_type = UDP_SEGMENT; c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                *(uint16_t *)CMSG_DATA(c) = (uint16_t)size;
                ssize_t n = sendmsg(tx, &h, 0); calls++;
                if (n == (ssize_t)segs * size) sent += segs; else { errors++; if (errors == 1) perror("sendmsg UDP_SEGMENT"); }
            }
        }
        double cpu = thread_cpu() - c0, w = wall() - w0;
        usleep(200000);
        double all = process_cpu() - p0;
        long got = received - before;
        printf("%-40s %9.0f datagrams/s  %5.2f us sender CPU per datagram sent  %5.2f us process CPU per datagram received  (%ld sent, %ld received, %ld errors)\n",
               names[mode], sent / w, cpu * 1e6 / (sent ? sent : 1), all * 1e6 / (got ? got : 1), sent, got, errors);
    }
    stop_rx = 1; pthread_join(th, NULL);
    return 0;
}
