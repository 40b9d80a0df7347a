// Function wrappers for the C macros and variadic functions of OpenSSL, libvpx and libopus that Swift
// cannot call directly. Keep this file small: anything that is a plain function is called from Swift.
#pragma once
#include <openssl/ssl.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <vpx/vpx_encoder.h>
#include <vpx/vpx_decoder.h>
#include <opus/opus.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <stdbool.h>

// MARK: OpenSSL
long sfu_DTLSv1_handle_timeout(SSL *ssl);
/// Returns 1 and fills the time left until the next retransmission when a DTLS timer runs, 0 otherwise.
int sfu_DTLSv1_get_timeout(SSL *ssl, long *seconds, long *microseconds);
long sfu_DTLS_set_link_mtu(SSL *ssl, long mtu);
long sfu_BIO_get_mem_data(BIO *bio, char **data);
long sfu_BIO_set_mem_eof_return(BIO *bio, long value);
int sfu_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version);
int sfu_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version);
/// SSL_OP_NO_QUERY_MTU (a function-like macro in the header).
uint64_t sfu_SSL_OP_NO_QUERY_MTU(void);
/// SSL_OP_NO_RENEGOTIATION (a macro in the header).
uint64_t sfu_SSL_OP_NO_RENEGOTIATION(void);
/// SSL_OP_ALLOW_CLIENT_RENEGOTIATION (OpenSSL 3: off by default; tests set it to show NO_RENEGOTIATION still refuses).
uint64_t sfu_SSL_OP_ALLOW_CLIENT_RENEGOTIATION(void);
/// The error queue's last error as text in `buf` (for diagnostics); returns the error code.
unsigned long sfu_ERR_last_error_string(char *buf, size_t len);
/// A new ECDSA P-256 key, or NULL.
EVP_PKEY *sfu_EC_P256_keygen(void);

// MARK: libsrtp2
/// Replaces libsrtp2's AES-128-GCM, AES-128-ICM and HMAC-SHA1 with OpenSSL-backed ones
/// (srtp_openssl.c). Call after srtp_init() and before any session is created. Returns 0, or
/// 100/200/300 + the libsrtp2 status of the type that failed its known-answer tests (that type and
/// the ones after it stay libsrtp2's own).
int sfu_srtp_install_openssl_crypto(void);

// MARK: libvpx
vpx_codec_err_t sfu_vpx_codec_enc_init(vpx_codec_ctx_t *ctx, vpx_codec_iface_t *iface,
                                       const vpx_codec_enc_cfg_t *cfg, vpx_codec_flags_t flags);
vpx_codec_err_t sfu_vpx_codec_dec_init(vpx_codec_ctx_t *ctx, vpx_codec_iface_t *iface,
                                       const vpx_codec_dec_cfg_t *cfg, vpx_codec_flags_t flags);
vpx_codec_err_t sfu_vpx_codec_control_int(vpx_codec_ctx_t *ctx, int control_id, int value);
/// A control whose argument is an `int *` the codec writes (VP8D_GET_FRAME_CORRUPTED).
vpx_codec_err_t sfu_vpx_codec_control_int_ptr(vpx_codec_ctx_t *ctx, int control_id, int *value);

// MARK: libopus
int sfu_opus_encoder_set_bitrate(OpusEncoder *encoder, opus_int32 bitrate);
int sfu_opus_encoder_get_bitrate(OpusEncoder *encoder, opus_int32 *bitrate);
int sfu_opus_encoder_set_complexity(OpusEncoder *encoder, opus_int32 complexity);
/// The encoder's lookahead in samples (the pre-skip a file must declare).
int sfu_opus_encoder_get_lookahead(OpusEncoder *encoder, opus_int32 *samples);

// MARK: sockets (Linux batched datagram I/O; the libc declarations need _GNU_SOURCE)
/// The layout of `struct mmsghdr` (checked against it in shim.c).
struct sfu_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};
/// sendmmsg(2). Returns the number of messages sent, or -1 with errno.
int sfu_sendmmsg(int fd, struct sfu_mmsghdr *msgs, unsigned int count, int flags);
/// recvmmsg(2) without a timeout. Returns the number of messages received, or -1 with errno.
int sfu_recvmmsg(int fd, struct sfu_mmsghdr *msgs, unsigned int count, int flags);
/// Turns on SO_TIMESTAMPNS (kernel receive time, CLOCK_REALTIME, as a control message).
int sfu_enable_rx_timestamps(int fd);
/// The SO_TIMESTAMPNS receive time of a message received with a control buffer, in nanoseconds
/// since the epoch, or 0 when the message carries none.
int64_t sfu_rx_timestamp_nanos(const struct msghdr *msg);
/// Bytes of control buffer one message needs for the receive timestamp.
size_t sfu_rx_timestamp_control_size(void);
/// Names the calling thread (15 bytes at most are kept), for top, perf and gdb.
void sfu_set_thread_name(const char *name);
/// Sets the calling thread's nice value (Linux: a per-thread attribute; setpriority on its tid).
/// Returns 0, or -1 with errno (raising priority, a negative value, needs CAP_SYS_NICE).
int sfu_set_thread_nice(int nice);
/// Moves the calling thread to the SCHED_IDLE policy: any thread of another policy that wakes on
/// its core preempts it at once. Returns 0, or -1 with errno. (Allowed without privileges.)
int sfu_set_thread_sched_idle(void);
/// Whether the calling thread runs under SCHED_IDLE.
bool sfu_thread_is_sched_idle(void);
/// The calling thread's nice value.
int sfu_thread_nice(void);
/// The process's nice value (its main thread's: what it was started with).
int sfu_process_nice(void);
/// Asks the scheduler for a shorter time slice for the calling thread (Linux 6.12+ EEVDF:
/// `sched_attr.sched_runtime` of a SCHED_OTHER thread is its slice, and a waking thread with a
/// shorter slice than the running one preempts it). Policy and nice are kept.
/// Returns 0, or -1 with errno (ENOSYS/EINVAL on kernels without it).
int sfu_set_thread_slice_nanos(uint64_t nanos);
/// The calling thread's slice as the kernel reports it (0: the default, or unknown).
uint64_t sfu_thread_slice_nanos(void);
