/* Stable message ids: the webhook-id of an event, the same every time the same event arrives. */
#ifndef CALLHOOK_MSGID_H
#define CALLHOOK_MSGID_H

#include <callhook/error.h>
#include <callhook/export.h>

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* LEN: "msg_" and 27 base62 characters; SIZE: with the terminating NUL. */
#define CH_MSGID_LEN  31
#define CH_MSGID_SIZE (CH_MSGID_LEN + 1)

/**
 * Writes "msg_" + 27 characters of [0-9A-Za-z] derived from (voice_app_id, event, dedupe_key)
 * with SHA-256 (160 bits of it), so upstream duplicates of one event get one id on every node.
 * The three strings are length-prefixed before hashing, so no two triples collide by
 * concatenation. Returns CH_OK, CH_EINVAL (a NULL argument) or CH_ECRYPTO.
 */
CH_API ch_code ch_msgid(const char *voice_app_id, const char *event, const char *dedupe_key,
                        char out[CH_MSGID_SIZE], struct ch_error *err);

#ifdef __cplusplus
}
#endif

#endif
