/* delayq: the lab's latency tool (no netem here): holds NFQUEUE packets for delay + uniform(0, jitter) ms, in FIFO order. */
#define _GNU_SOURCE
#include <arpa/inet.h> /* before the linux/ headers, which would otherwise redefine struct in_addr */
#include <errno.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RING_SIZE 65536u               /* pending packets held at once; equals the kernel queue length */
#define KERNEL_QUEUE_MAXLEN 65536u     /* 1000 pkt/s for 10 s of delay fits with room to spare */
#define RCVBUF_BYTES (8u << 20)        /* meta-only messages are ~100 bytes: 8 MiB absorbs large bursts */
#define MAX_RECV_PER_WAKEUP 256        /* so a flood cannot postpone releases indefinitely */
#define STOP_DRAIN_ROUNDS 16           /* bounds the read/accept rounds on stop; two suffice for request/reply */

struct pending { uint32_t id; uint64_t release_ns; };

static struct pending ring[RING_SIZE];
static uint32_t head, count;           /* FIFO: release times never decrease from head to tail */
static uint64_t delay_ns, jitter_ns, last_release_ns;
static unsigned long n_released, n_overflow, n_enobufs, n_verdict_errors;
static volatile sig_atomic_t stop_requested;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_signal(int sig) { (void)sig; stop_requested = 1; }

static void accept_packet(struct nfq_q_handle *qh, uint32_t id) {
    if (nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL) < 0) n_verdict_errors++;
}

/* Releases every packet due by `limit` (UINT64_MAX releases all of them). */
static void release_due(struct nfq_q_handle *qh, uint64_t limit) {
    while (count > 0 && ring[head].release_ns <= limit) {
        accept_packet(qh, ring[head].id);
        head = (head + 1) % RING_SIZE;
        count--;
        n_released++;
    }
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data) {
    (void)msg; (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (ph == NULL) return 0;
    uint32_t id = ntohl(ph->packet_id);
    if (count == RING_SIZE) { accept_packet(qh, id); n_overflow++; return 0; }
    uint64_t jitter = jitter_ns == 0 ? 0 : (uint64_t)random() % (jitter_ns + 1);
    uint64_t release = now_ns() + delay_ns + jitter;
    if (release < last_release_ns) release = last_release_ns; /* never overtake an earlier packet */
    last_release_ns = release;
    ring[(head + count) % RING_SIZE] = (struct pending){ id, release };
    count++;
    return 0;
}

/* Reads what the kernel has queued, without blocking; returns -1 on a fatal socket error. */
static int read_queued(struct nfq_handle *h, int fd) {
    static char buf[65536] __attribute__((aligned));
    for (int i = 0; i < MAX_RECV_PER_WAKEUP; i++) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n >= 0) { nfq_handle_packet(h, buf, (int)n); continue; }
        if (errno == ENOBUFS) { n_enobufs++; continue; }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
        perror("delayq: recv");
        return -1;
    }
    return 0;
}

static long parse_arg(const char *name, const char *text, long max) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || text[0] < '0' || text[0] > '9' || *end != '\0' || v < 0 || v > max) {
        fprintf(stderr, "delayq: %s must be an integer 0..%ld, got '%s'\n", name, max, text);
        exit(2);
    }
    return v;
}

static void die(const char *what) {
    fprintf(stderr, "delayq: %s failed: %s\n", what, strerror(errno));
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: delayq <queue-num> <delay-ms> [jitter-ms]\n");
        return 2;
    }
    long queue = parse_arg("queue-num", argv[1], 65535);
    long delay_ms = parse_arg("delay-ms", argv[2], 10000);
    long jitter_ms = argc == 4 ? parse_arg("jitter-ms", argv[3], 10000) : 0;
    delay_ns = (uint64_t)delay_ms * 1000000u;
    jitter_ns = (uint64_t)jitter_ms * 1000000u;
    srandom((unsigned)(now_ns() ^ (uint64_t)getpid()));

    /* SIGTERM/SIGINT stay blocked except inside ppoll, so a stop request is never missed. */
    sigset_t block, wait_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    if (sigprocmask(SIG_BLOCK, &block, &wait_mask) < 0) die("sigprocmask");
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0) die("sigaction");

    struct nfq_handle *h = nfq_open();
    if (h == NULL) die("nfq_open (needs root/CAP_NET_ADMIN and nfnetlink_queue)");
    struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)queue, on_packet, NULL);
    if (qh == NULL) {
        fprintf(stderr, "delayq: nfq_create_queue(%ld) failed: %s (not root, or another program holds this queue)\n",
                queue, strerror(errno));
        return 1;
    }
    if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0) die("nfq_set_mode(NFQNL_COPY_META)");
    if (nfq_set_queue_maxlen(qh, KERNEL_QUEUE_MAXLEN) < 0) die("nfq_set_queue_maxlen");
    if (nfnl_rcvbufsiz(nfq_nfnlh(h), RCVBUF_BYTES) < RCVBUF_BYTES / 2) {
        fprintf(stderr, "delayq: nfnl_rcvbufsiz(%u) could not enlarge the netlink receive buffer\n", RCVBUF_BYTES);
        return 1;
    }
    int fd = nfq_fd(h);
    fprintf(stderr, "delayq: queue %ld delay %ld jitter %ld ready\n", queue, delay_ms, jitter_ms);

    int status = 0;
    while (!stop_requested) {
        struct timespec timeout, *tp = NULL;
        if (count > 0) {
            uint64_t now = now_ns(), due = ring[head].release_ns;
            uint64_t wait = due > now ? due - now : 0;
            timeout = (struct timespec){ (time_t)(wait / 1000000000u), (long)(wait % 1000000000u) };
            tp = &timeout;
        }
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int ready = ppoll(&pfd, 1, tp, &wait_mask);
        if (ready < 0 && errno != EINTR) { perror("delayq: ppoll"); status = 1; break; }
        if (ready > 0 && read_queued(h, fd) < 0) { status = 1; break; }
        release_due(qh, now_ns());
    }

    /* The kernel drops whatever is still queued at unbind, and accepting a held packet can queue another at once
       (the reply to an echo request): read and accept until nothing new arrives. */
    for (int round = 0; round < STOP_DRAIN_ROUNDS; round++) {
        if (read_queued(h, fd) < 0) status = 1;
        if (count == 0) break;
        release_due(qh, UINT64_MAX);
    }
    release_due(qh, UINT64_MAX);
    nfq_destroy_queue(qh);
    nfq_close(h);
    fprintf(stderr, "delayq: queue %ld stopped: released %lu, ring-full %lu, enobufs %lu, verdict errors %lu\n",
            queue, n_released, n_overflow, n_enobufs, n_verdict_errors);
    return status;
}
