// libsrtp2's crypto primitives on OpenSSL.
//
// Debian builds libsrtp2 on NSS: every protect and unprotect creates and frees PK11 contexts (five
// mallocs, and a fixed cost that dominates small packets). libsrtp2 lets an application replace the
// cipher and authentication types of its crypto kernel (srtp_replace_cipher_type,
// srtp_replace_auth_type, declared in <srtp2/cipher.h> and <srtp2/auth.h>); everything SRTP itself
// does (key derivation, rollover counters, replay windows, packet layout) stays libsrtp2's. These are
// the three primitives our profiles use:
//
// - AES-128-GCM (RFC 7714, SRTP_AEAD_AES_128_GCM): one EVP context per cipher, keyed once at init;
//   per packet only the IV is set (no key schedule, no allocation).
// - AES-128-ICM (RFC 3711 counter mode, SRTP_AES128_CM_SHA1_80 and every session's key derivation):
//   EVP AES-128-CTR keyed once; the counter block is the salt XOR the IV libsrtp passes.
// - HMAC-SHA1 (RFC 2104): the inner and outer SHA-1 states after the padded key are kept, so a
//   packet costs two SHA-1 finishes and no allocation.
//
// Each type carries a known-answer test that libsrtp2 runs when the type is installed (and its own
// random encrypt/decrypt round trips); a type that fails is not installed and libsrtp2 keeps its own.
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include "sfu_shim.h"
#include <srtp2/srtp.h>
#include <srtp2/cipher.h>
#include <srtp2/auth.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

// MARK: the cipher objects
//
// A cipher and its state are one allocation; every state starts with its EVP context.

typedef struct {
    EVP_CIPHER_CTX *ctx;
} sfu_evp_state;

static srtp_err_status_t sfu_evp_cipher_alloc(srtp_cipher_pointer_t *cp, const srtp_cipher_type_t *type, size_t state_size,
                                              int key_len, int algorithm) {
    srtp_cipher_t *c = calloc(1, sizeof(srtp_cipher_t) + state_size);
    if (c == NULL) return srtp_err_status_alloc_fail;
    sfu_evp_state *s = (sfu_evp_state *)(c + 1);
    s->ctx = EVP_CIPHER_CTX_new();
    if (s->ctx == NULL) { free(c); return srtp_err_status_alloc_fail; }
    c->type = type;
    c->state = s;
    c->key_len = key_len;
    c->algorithm = algorithm;
    *cp = c;
    return srtp_err_status_ok;
}

static srtp_err_status_t sfu_evp_cipher_free(srtp_cipher_pointer_t c, size_t state_size) {
    sfu_evp_state *s = c->state;
    EVP_CIPHER_CTX_free(s->ctx);
    OPENSSL_cleanse(c, sizeof(srtp_cipher_t) + state_size);
    free(c);
    return srtp_err_status_ok;
}

// MARK: AES-128-GCM

enum { GCM_KEY_LEN = 16, GCM_KEY_LEN_WITH_SALT = 28, GCM_IV_LEN = 12 };

typedef struct {
    EVP_CIPHER_CTX *ctx;
    int tag_len;
    int direction; // srtp_cipher_direction_t, or -1 before the first set_iv
} sfu_gcm_state;

static const srtp_cipher_type_t sfu_aes_gcm_128;

static srtp_err_status_t sfu_gcm_alloc(srtp_cipher_pointer_t *cp, int key_len, int tag_len) {
    if (key_len != GCM_KEY_LEN_WITH_SALT || (tag_len != 16 && tag_len != 8)) return srtp_err_status_bad_param;
    srtp_err_status_t status = sfu_evp_cipher_alloc(cp, &sfu_aes_gcm_128, sizeof(sfu_gcm_state), key_len, SRTP_AES_GCM_128);
    if (status != srtp_err_status_ok) return status;
    sfu_gcm_state *s = (*cp)->state;
    s->tag_len = tag_len;
    s->direction = -1;
    return srtp_err_status_ok;
}

static srtp_err_status_t sfu_gcm_dealloc(srtp_cipher_pointer_t c) { return sfu_evp_cipher_free(c, sizeof(sfu_gcm_state)); }

static srtp_err_status_t sfu_gcm_init(void *state, const uint8_t *key) {
    sfu_gcm_state *s = state;
    s->direction = -1;
    // The key schedule happens here, once; the direction and IV are set per packet.
    if (EVP_CipherInit_ex(s->ctx, EVP_aes_128_gcm(), NULL, key, NULL, 1) != 1) return srtp_err_status_init_fail;
    return srtp_err_status_ok;
}

static srtp_err_status_t sfu_gcm_set_iv(void *state, uint8_t *iv, srtp_cipher_direction_t direction) {
    sfu_gcm_state *s = state;
    if (direction != srtp_direction_encrypt && direction != srtp_direction_decrypt) return srtp_err_status_bad_param;
    s->direction = (int)direction;
    // The default GCM IV length is 12 octets, as SRTP's (RFC 7714 section 8.1).
    if (EVP_CipherInit_ex(s->ctx, NULL, NULL, NULL, iv, direction == srtp_direction_encrypt ? 1 : 0) != 1)
        return srtp_err_status_init_fail;
    return srtp_err_status_ok;
}

static srtp_err_status_t sfu_gcm_set_aad(void *state, const uint8_t *aad, uint32_t aad_len) {
    sfu_gcm_state *s = state;
    if (s->direction < 0) return srtp_err_status_bad_param;
    int out = 0;
    if (EVP_CipherUpdate(s->ctx, NULL, &out, aad, (int)aad_len) != 1) return srtp_err_status_algo_fail;
    return srtp_err_status_ok;
}

static srtp_err_status_t sfu_gcm_encrypt(void *state, uint8_t *buffer, unsigned int *length) {
    sfu_gcm_state *s = state;
    if (s->direction != srtp_direction_encrypt) return srtp_err_status_bad_param;
    int out = 0;
    if (*length > 0 && EVP_CipherUpdate(s->ctx, buffer, &out, buffer, (int)*length) != 1) return srtp_err_status_algo_fail;
    return srtp_err_status_ok;
}

static srtp_err_status_t sfu_gcm_get_tag(void *state, uint8_t *tag, uint32_t *length) {
    sfu_gcm_state *s = state;
    if (s->direction != srtp_direction_encrypt) return srtp_err_status_bad_param;
    int out = 0;
    uint8_t unused[16];
    if (EVP_CipherFinal_ex(s->ctx, unused, &out) != 1) return srtp_err_status_algo_fail;
    if (EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_GCM_GET_TAG, s->tag_len, tag) != 1) return srtp_err_status_algo_fail;
    *length = (uint32_t)s->tag_len;
    return srtp_err_status_ok;
}

// `length` counts the ciphertext and the tag after it; on success it becomes the plaintext length.
static srtp_err_status_t sfu_gcm_decrypt(void *state, uint8_t *buffer, unsigned int *length) {
    sfu_gcm_state *s = state;
    if (s->direction != srtp_direction_decrypt) return srtp_err_status_bad_param;
    if (*length < (unsigned int)s->tag_len) return srtp_err_status_bad_param;
    unsigned int text = *length - (unsigned int)s->tag_len;
    if (EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_GCM_SET_TAG, s->tag_len, buffer + text) != 1) return srtp_err_status_algo_fail;
    int out = 0;
    if (text > 0 && EVP_CipherUpdate(s->ctx, buffer, &out, buffer, (int)text) != 1) {
        memset(buffer, 0, text);
        return srtp_err_status_algo_fail;
    }
    uint8_t unused[16];
    if (EVP_CipherFinal_ex(s->ctx, unused, &out) != 1) {
        // The text was decrypted in place before the tag could be checked: a forged or corrupted
        // packet must not leave its (unauthenticated) plaintext in the caller's buffer.
        memset(buffer, 0, text);
        return srtp_err_status_auth_fail;
    }
    *length = text;
    return srtp_err_status_ok;
}

// The GCM specification's test case 4 (McGrew and Viega; also NIST's), with a 12-octet salt after
// the key as libsrtp2 passes it, and a second case with the tag cut to 8 octets.
static const uint8_t gcm_kat_key[GCM_KEY_LEN_WITH_SALT] = {
    0xfe, 0xff, 0xe9, 0x92, 0x86, 0x65, 0x73, 0x1c, 0x6d, 0x6a, 0x8f, 0x94, 0x67, 0x30, 0x83, 0x08,
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c,
};
static uint8_t gcm_kat_iv[GCM_IV_LEN] = {0xca, 0xfe, 0xba, 0xbe, 0xfa, 0xce, 0xdb, 0xad, 0xde, 0xca, 0xf8, 0x88};
static const uint8_t gcm_kat_plaintext[60] = {
    0xd9, 0x31, 0x32, 0x25, 0xf8, 0x84, 0x06, 0xe5, 0xa5, 0x59, 0x09, 0xc5, 0xaf, 0xf5, 0x26, 0x9a,
    0x86, 0xa7, 0xa9, 0x53, 0x15, 0x34, 0xf7, 0xda, 0x2e, 0x4c, 0x30, 0x3d, 0x8a, 0x31, 0x8a, 0x72,
    0x1c, 0x3c, 0x0c, 0x95, 0x95, 0x68, 0x09, 0x53, 0x2f, 0xcf, 0x0e, 0x24, 0x49, 0xa6, 0xb5, 0x25,
    0xb1, 0x6a, 0xed, 0xf5, 0xaa, 0x0d, 0xe6, 0x57, 0xba, 0x63, 0x7b, 0x39,
};
static const uint8_t gcm_kat_aad[20] = {
    0xfe, 0xed, 0xfa, 0xce, 0xde, 0xad, 0xbe, 0xef, 0xfe, 0xed, 0xfa, 0xce, 0xde, 0xad, 0xbe, 0xef,
    0xab, 0xad, 0xda, 0xd2,
};
static const uint8_t gcm_kat_ciphertext[76] = {
    0x42, 0x83, 0x1e, 0xc2, 0x21, 0x77, 0x74, 0x24, 0x4b, 0x72, 0x21, 0xb7, 0x84, 0xd0, 0xd4, 0x9c,
    0xe3, 0xaa, 0x21, 0x2f, 0x2c, 0x02, 0xa4, 0xe0, 0x35, 0xc1, 0x7e, 0x23, 0x29, 0xac, 0xa1, 0x2e,
    0x21, 0xd5, 0x14, 0xb2, 0x54, 0x66, 0x93, 0x1c, 0x7d, 0x8f, 0x6a, 0x5a, 0xac, 0x84, 0xaa, 0x05,
    0x1b, 0xa3, 0x0b, 0x39, 0x6a, 0x0a, 0xac, 0x97, 0x3d, 0x58, 0xe0, 0x91,
    // the tag
    0x5b, 0xc9, 0x4f, 0xbc, 0x32, 0x21, 0xa5, 0xdb, 0x94, 0xfa, 0xe9, 0x5a, 0xe7, 0x12, 0x1a, 0x47,
};
static const srtp_cipher_test_case_t gcm_kat_short_tag = {
    GCM_KEY_LEN_WITH_SALT, gcm_kat_key, gcm_kat_iv, 60, gcm_kat_plaintext, 68, gcm_kat_ciphertext,
    20, gcm_kat_aad, 8, NULL,
};
static const srtp_cipher_test_case_t gcm_kat = {
    GCM_KEY_LEN_WITH_SALT, gcm_kat_key, gcm_kat_iv, 60, gcm_kat_plaintext, 76, gcm_kat_ciphertext,
    20, gcm_kat_aad, 16, &gcm_kat_short_tag,
};

static const srtp_cipher_type_t sfu_aes_gcm_128 = {
    sfu_gcm_alloc, sfu_gcm_dealloc, sfu_gcm_init, sfu_gcm_set_aad, sfu_gcm_encrypt, sfu_gcm_decrypt,
    sfu_gcm_set_iv, sfu_gcm_get_tag, "AES-128 GCM (sfu, OpenSSL EVP)", &gcm_kat, SRTP_AES_GCM_128,
};

// MARK: AES-128-ICM

enum { ICM_KEY_LEN = 16, ICM_SALT_LEN = 14, ICM_KEY_LEN_WITH_SALT = 30 };

typedef struct {
    EVP_CIPHER_CTX *ctx;
    uint8_t offset[16]; // the salt in octets 0...13, zeros in 14 and 15
} sfu_icm_state;

static const srtp_cipher_type_t sfu_aes_icm_128;

static srtp_err_status_t sfu_icm_alloc(srtp_cipher_pointer_t *cp, int key_len, int tag_len) {
    (void)tag_len;
    if (key_len != ICM_KEY_LEN_WITH_SALT) return srtp_err_status_bad_param;
    return sfu_evp_cipher_alloc(cp, &sfu_aes_icm_128, sizeof(sfu_icm_state), key_len, SRTP_AES_ICM_128);
}

static srtp_err_status_t sfu_icm_dealloc(srtp_cipher_pointer_t c) { return sfu_evp_cipher_free(c, sizeof(sfu_icm_state)); }

static srtp_err_status_t sfu_icm_init(void *state, const uint8_t *key) {
    sfu_icm_state *s = state;
    memset(s->offset, 0, sizeof s->offset);
    memcpy(s->offset, key + ICM_KEY_LEN, ICM_SALT_LEN);
    if (EVP_EncryptInit_ex(s->ctx, EVP_aes_128_ctr(), NULL, key, s->offset) != 1) return srtp_err_status_init_fail;
    return srtp_err_status_ok;
}

// Counter mode is its own inverse: the direction does not matter.
static srtp_err_status_t sfu_icm_set_iv(void *state, uint8_t *iv, srtp_cipher_direction_t direction) {
    (void)direction;
    sfu_icm_state *s = state;
    uint8_t counter[16];
    for (int i = 0; i < 16; i++) counter[i] = s->offset[i] ^ iv[i];
    if (EVP_EncryptInit_ex(s->ctx, NULL, NULL, NULL, counter) != 1) return srtp_err_status_init_fail;
    return srtp_err_status_ok;
}

static srtp_err_status_t sfu_icm_encrypt(void *state, uint8_t *buffer, unsigned int *length) {
    sfu_icm_state *s = state;
    int out = 0;
    if (*length > 0 && EVP_EncryptUpdate(s->ctx, buffer, &out, buffer, (int)*length) != 1) return srtp_err_status_cipher_fail;
    return srtp_err_status_ok;
}

// RFC 3711 appendix B.2: the keystream for the session key and salt below, counter 0, as the
// encryption of 32 zero octets.
static const uint8_t icm_kat_key[ICM_KEY_LEN_WITH_SALT] = {
    0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c,
    0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd,
};
static uint8_t icm_kat_iv[16] = {0};
static const uint8_t icm_kat_plaintext[32] = {0};
static const uint8_t icm_kat_ciphertext[32] = {
    0xe0, 0x3e, 0xad, 0x09, 0x35, 0xc9, 0x5e, 0x80, 0xe1, 0x66, 0xb1, 0x6d, 0xd9, 0x2b, 0x4e, 0xb4,
    0xd2, 0x35, 0x13, 0x16, 0x2b, 0x02, 0xd0, 0xf7, 0x2a, 0x43, 0xa2, 0xfe, 0x4a, 0x5f, 0x97, 0xab,
};
static const srtp_cipher_test_case_t icm_kat = {
    ICM_KEY_LEN_WITH_SALT, icm_kat_key, icm_kat_iv, 32, icm_kat_plaintext, 32, icm_kat_ciphertext,
    0, NULL, 0, NULL,
};

static const srtp_cipher_type_t sfu_aes_icm_128 = {
    sfu_icm_alloc, sfu_icm_dealloc, sfu_icm_init, NULL, sfu_icm_encrypt, sfu_icm_encrypt,
    sfu_icm_set_iv, NULL, "AES-128 ICM (sfu, OpenSSL EVP)", &icm_kat, SRTP_AES_ICM_128,
};

// MARK: HMAC-SHA1

typedef struct {
    SHA_CTX inner_start; // SHA-1 after the key XOR ipad block
    SHA_CTX outer_start; // SHA-1 after the key XOR opad block
    SHA_CTX running;     // the packet being authenticated
} sfu_hmac_state;

static const srtp_auth_type_t sfu_hmac_sha1;

static srtp_err_status_t sfu_hmac_alloc(srtp_auth_pointer_t *ap, int key_len, int out_len) {
    if (key_len < 0 || key_len > SHA_DIGEST_LENGTH || out_len < 0 || out_len > SHA_DIGEST_LENGTH)
        return srtp_err_status_bad_param;
    srtp_auth_t *a = calloc(1, sizeof(srtp_auth_t) + sizeof(sfu_hmac_state));
    if (a == NULL) return srtp_err_status_alloc_fail;
    a->type = &sfu_hmac_sha1;
    a->state = (sfu_hmac_state *)(a + 1);
    a->out_len = out_len;
    a->key_len = key_len;
    a->prefix_len = 0;
    *ap = a;
    return srtp_err_status_ok;
}

static srtp_err_status_t sfu_hmac_dealloc(srtp_auth_pointer_t a) {
    OPENSSL_cleanse(a, sizeof(srtp_auth_t) + sizeof(sfu_hmac_state));
    free(a);
    return srtp_err_status_ok;
}

static srtp_err_status_t sfu_hmac_init(void *state, const uint8_t *key, int key_len) {
    sfu_hmac_state *s = state;
    if (key_len < 0 || key_len > SHA_DIGEST_LENGTH) return srtp_err_status_bad_param;
    uint8_t ipad[SHA_CBLOCK], opad[SHA_CBLOCK];
    memset(ipad, 0x36, sizeof ipad);
    memset(opad, 0x5c, sizeof opad);
    for (int i = 0; i < key_len; i++) { ipad[i] ^= key[i]; opad[i] ^= key[i]; }
    SHA1_Init(&s->inner_start);
    SHA1_Update(&s->inner_start, ipad, sizeof ipad);
    SHA1_Init(&s->outer_start);
    SHA1_Update(&s->outer_start, opad, sizeof opad);
    s->running = s->inner_start;
    OPENSSL_cleanse(ipad, sizeof ipad);
    OPENSSL_cleanse(opad, sizeof opad);
    return srtp_err_status_ok;
}

static srtp_err_status_t sfu_hmac_start(void *state) {
    sfu_hmac_state *s = state;
    s->running = s->inner_start;
    return srtp_err_status_ok;
}

static srtp_err_status_t sfu_hmac_update(void *state, const uint8_t *message, int length) {
    sfu_hmac_state *s = state;
    if (length < 0) return srtp_err_status_bad_param;
    SHA1_Update(&s->running, message, (size_t)length);
    return srtp_err_status_ok;
}

static srtp_err_status_t sfu_hmac_compute(void *state, const uint8_t *message, int length, int tag_len, uint8_t *result) {
    sfu_hmac_state *s = state;
    if (length < 0 || tag_len < 0 || tag_len > SHA_DIGEST_LENGTH) return srtp_err_status_bad_param;
    uint8_t inner[SHA_DIGEST_LENGTH], outer[SHA_DIGEST_LENGTH];
    SHA1_Update(&s->running, message, (size_t)length);
    SHA1_Final(inner, &s->running);
    SHA_CTX o = s->outer_start;
    SHA1_Update(&o, inner, sizeof inner);
    SHA1_Final(outer, &o);
    memcpy(result, outer, (size_t)tag_len);
    return srtp_err_status_ok;
}

// RFC 2202 test case 1.
static const uint8_t hmac_kat_key[20] = {
    0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
    0x0b, 0x0b, 0x0b, 0x0b,
};
static const uint8_t hmac_kat_data[8] = {'H', 'i', ' ', 'T', 'h', 'e', 'r', 'e'};
static const uint8_t hmac_kat_tag[20] = {
    0xb6, 0x17, 0x31, 0x86, 0x55, 0x05, 0x72, 0x64, 0xe2, 0x8b, 0xc0, 0xb6, 0xfb, 0x37, 0x8c, 0x8e,
    0xf1, 0x46, 0xbe, 0x00,
};
static const srtp_auth_test_case_t hmac_kat = {20, hmac_kat_key, 8, hmac_kat_data, 20, hmac_kat_tag, NULL};

static const srtp_auth_type_t sfu_hmac_sha1 = {
    sfu_hmac_alloc, sfu_hmac_dealloc, sfu_hmac_init, sfu_hmac_compute, sfu_hmac_update, sfu_hmac_start,
    "HMAC-SHA1 (sfu, OpenSSL SHA-1)", &hmac_kat, SRTP_HMAC_SHA1,
};

// MARK: installation

int sfu_srtp_install_openssl_crypto(void) {
    // Each call runs the type's known-answer tests first and leaves the built-in type in place
    // when they fail.
    srtp_err_status_t status = srtp_replace_cipher_type(&sfu_aes_gcm_128, SRTP_AES_GCM_128);
    if (status != srtp_err_status_ok) return 100 + (int)status;
    status = srtp_replace_cipher_type(&sfu_aes_icm_128, SRTP_AES_ICM_128);
    if (status != srtp_err_status_ok) return 200 + (int)status;
    status = srtp_replace_auth_type(&sfu_hmac_sha1, SRTP_HMAC_SHA1);
    if (status != srtp_err_status_ok) return 300 + (int)status;
    return 0;
}
