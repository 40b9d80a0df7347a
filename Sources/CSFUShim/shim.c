#define _GNU_SOURCE
#include "sfu_shim.h"
#include <openssl/err.h>
#include <vpx/vp8cx.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <errno.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

long sfu_DTLSv1_handle_timeout(SSL *ssl) { return DTLSv1_handle_timeout(ssl); }

int sfu_DTLSv1_get_timeout(SSL *ssl, long *seconds, long *microseconds) {
    struct timeval tv = {0, 0};
    int r = (int)DTLSv1_get_timeout(ssl, &tv);
    *seconds = (long)tv.tv_sec;
    *microseconds = (long)tv.tv_usec;
    return r;
}

long sfu_DTLS_set_link_mtu(SSL *ssl, long mtu) { return DTLS_set_link_mtu(ssl, mtu); }
long sfu_BIO_get_mem_data(BIO *bio, char **data) { return BIO_get_mem_data(bio, data); }
long sfu_BIO_set_mem_eof_return(BIO *bio, long value) { return BIO_set_mem_eof_return(bio, value); }
int sfu_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_min_proto_version(ctx, version); }
int sfu_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_max_proto_version(ctx, version); }
uint64_t sfu_SSL_OP_NO_QUERY_MTU(void) { return SSL_OP_NO_QUERY_MTU; }
uint64_t sfu_SSL_OP_NO_RENEGOTIATION(void) { return SSL_OP_NO_RENEGOTIATION; }
uint64_t sfu_SSL_OP_ALLOW_CLIENT_RENEGOTIATION(void) { return SSL_OP_ALLOW_CLIENT_RENEGOTIATION; }
unsigned long sfu_ERR_last_error_string(char *buf, size_t len) {
    unsigned long e = ERR_peek_last_error();
    if (len > 0) { buf[0] = 0; }
    if (e != 0 && len > 0) { ERR_error_string_n(e, buf, len); }
    ERR_clear_error();
    return e;
}
EVP_PKEY *sfu_EC_P256_keygen(void) { return EVP_EC_gen("P-256"); }

vpx_codec_err_t sfu_vpx_codec_enc_init(vpx_codec_ctx_t *ctx, vpx_codec_iface_t *iface,
                                       const vpx_codec_enc_cfg_t *cfg, vpx_codec_flags_t flags) {
    return vpx_codec_enc_init(ctx, iface, cfg, flags);
}
vpx_codec_err_t sfu_vpx_codec_dec_init(vpx_codec_ctx_t *ctx, vpx_codec_iface_t *iface,
                                       const vpx_codec_dec_cfg_t *cfg, vpx_codec_flags_t flags) {
    return vpx_codec_dec_init(ctx, iface, cfg, flags);
}
vpx_codec_err_t sfu_vpx_codec_control_int(vpx_codec_ctx_t *ctx, int control_id, int value) {
    return vpx_codec_control_(ctx, control_id, value);
}
vpx_codec_err_t sfu_vpx_codec_control_int_ptr(vpx_codec_ctx_t *ctx, int control_id, int *value) {
    return vpx_codec_control_(ctx, control_id, value);
}

int sfu_opus_encoder_set_bitrate(OpusEncoder *encoder, opus_int32 bitrate) {
    return opus_encoder_ctl(encoder, OPUS_SET_BITRATE(bitrate));
}
int sfu_opus_encoder_get_bitrate(OpusEncoder *encoder, opus_int32 *bitrate) {
    return opus_encoder_ctl(encoder, OPUS_GET_BITRATE(bitrate));
}
int sfu_opus_encoder_set_complexity(OpusEncoder *encoder, opus_int32 complexity) {
    return opus_encoder_ctl(encoder, OPUS_SET_COMPLEXITY(complexity));
}
int sfu_opus_encoder_get_lookahead(OpusEncoder *encoder, opus_int32 *samples) {
    return opus_encoder_ctl(encoder, OPUS_GET_LOOKAHEAD(samples));
}

// MARK: sockets
#include <stddef.h>
#include <string.h>
_Static_assert(sizeof(struct sfu_mmsghdr) == sizeof(struct mmsghdr), "mmsghdr layout");
_Static_assert(offsetof(struct sfu_mmsghdr, msg_len) == offsetof(struct mmsghdr, msg_len), "mmsghdr layout");

int sfu_sendmmsg(int fd, struct sfu_mmsghdr *msgs, unsigned int count, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)msgs, count, flags);
}

int sfu_recvmmsg(int fd, struct sfu_mmsghdr *msgs, unsigned int count, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)msgs, count, flags, NULL);
}

int sfu_enable_rx_timestamps(int fd) {
    int on = 1;
    return setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on));
}

int64_t sfu_rx_timestamp_nanos(const struct msghdr *msg) {
    if (msg->msg_control == NULL) return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)msg); c != NULL; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof(ts));
            return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        }
    }
    return 0;
}

size_t sfu_rx_timestamp_control_size(void) { return CMSG_SPACE(sizeof(struct timespec)); }

void sfu_set_thread_name(const char *name) {
    char short_name[16];
    strncpy(short_name, name, sizeof short_name - 1);
    short_name[sizeof short_name - 1] = 0;
    pthread_setname_np(pthread_self(), short_name);
}

int sfu_set_thread_nice(int nice) { return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice); }

int sfu_thread_nice(void) { return getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid)); }

int sfu_process_nice(void) { return getpriority(PRIO_PROCESS, (id_t)getpid()); }

int sfu_set_thread_sched_idle(void) {
    struct sched_param param = {0};
    return sched_setscheduler(0, SCHED_IDLE, &param);  /* 0: the calling thread */
}

bool sfu_thread_is_sched_idle(void) { return sched_getscheduler(0) == SCHED_IDLE; }

/// struct sched_attr (include/uapi/linux/sched/types.h), SCHED_ATTR_SIZE_VER1; glibc before 2.41 has neither it nor a wrapper.
struct sfu_sched_attr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
    uint32_t sched_util_min;
    uint32_t sched_util_max;
};

static int sfu_get_sched_attr(struct sfu_sched_attr *attr) {
    memset(attr, 0, sizeof *attr);
    return (int)syscall(SYS_sched_getattr, 0, attr, (unsigned int)sizeof *attr, 0u);
}

int sfu_set_thread_slice_nanos(uint64_t nanos) {
    struct sfu_sched_attr attr;
    if (sfu_get_sched_attr(&attr) != 0) return -1;
    if (attr.sched_policy != 0 /* SCHED_OTHER */) { errno = EINVAL; return -1; }
    attr.size = sizeof attr;
    attr.sched_runtime = nanos;
    attr.sched_flags = 0;
    return (int)syscall(SYS_sched_setattr, 0, &attr, 0u);
}

uint64_t sfu_thread_slice_nanos(void) {
    struct sfu_sched_attr attr;
    if (sfu_get_sched_attr(&attr) != 0) return 0;
    return attr.sched_runtime;
}
