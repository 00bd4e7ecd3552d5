/*
 * A program that uses libcallhook as its users do: the public headers only, linked with
 * libcallhook.a or libcallhook.so. It defines functions named as libcallhook's internal helpers
 * and the program's utilities: were any of them exported, linking with the archive would fail
 * (a duplicate definition), and with the shared library the library's own calls would land
 * here, which this program counts.
 *
 *   lib_user   (the inbox goes into a fresh folder under $TMPDIR or /tmp, removed after)
 */
#include <callhook/callhook.h>
#include <callhook/inbox.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Calls that reached this program's helpers instead of the library's own. */
static int stray_calls;

/* Names of libcallhook's internal helpers (src/lib, src/util) and of the program's utilities,
 * each defined here as a function that counts its calls. */
#define STRAY_NAMES(X)     \
    X(buf_add)             \
    X(log_msg)             \
    X(b64_encode)          \
    X(b64_decode)          \
    X(clock_wall_s)        \
    X(crypto_equal)        \
    X(crypto_hmac_sha256)  \
    X(crypto_random)       \
    X(jsonscan_run)        \
    X(fs_make_parent_dirs) \
    X(fs_private_file)     \
    X(sqldb_exec)          \
    X(sqldb_kept)
#define STRAY_DEFINE(name)    \
    int name(void);           \
    int name(void)            \
    {                         \
        return ++stray_calls; \
    }
STRAY_NAMES(STRAY_DEFINE)

static int fail(const char *what, const struct ch_error *err)
{
    fprintf(stderr, "lib_user: %s: %s\n", what, err != NULL ? err->message : "unexpected result");
    return 1;
}

static const char body[] = "{\"ActiveCallId\":\"call-1\",\"CallType\":2}";

/* Signs body with key and verifies it with check (key itself, or its public half). */
static int round_trip(const struct ch_secret *key, const struct ch_secret *check)
{
    struct ch_error err = {0};
    long long now = (long long)time(NULL);
    char sig[CH_SIGNATURE_ENTRY_MAX], ts[32];
    if (ch_sign(key, 1, "msg_lib_user", now, body, strlen(body), sig, sizeof sig, &err) != CH_OK)
        return fail("ch_sign", &err);
    snprintf(ts, sizeof ts, "%lld", now);
    struct ch_verifier v = {.keys = check, .nkeys = 1};
    if (ch_verify(&v, "msg_lib_user", ts, sig, body, strlen(body), &err) != CH_OK)
        return fail("ch_verify", &err);
    /* The same signature over another body must not pass. */
    if (ch_verify(&v, "msg_lib_user", ts, sig, body, strlen(body) - 1, &err) != CH_ENOMATCH)
        return fail("ch_verify of a changed body", NULL);
    return 0;
}

static int signatures(void)
{
    struct ch_error err = {0};
    struct ch_secret hmac, parsed, ed, pub;
    char text[CH_SECRET_TEXT_MAX];
    if (ch_secret_generate(&hmac, CH_KEY_HMAC, 32, &err) != CH_OK)
        return fail("ch_secret_generate", &err);
    if (ch_secret_format(&hmac, text, sizeof text, &err) != CH_OK)
        return fail("ch_secret_format", &err);
    if (ch_secret_parse(&parsed, text, &err) != CH_OK)
        return fail("ch_secret_parse", &err);
    if (round_trip(&hmac, &parsed) != 0)
        return 1;
    if (ch_secret_generate(&ed, CH_KEY_ED25519_SECRET, 0, &err) != CH_OK)
        return fail("ch_secret_generate ed25519", &err);
    if (ch_secret_public(&ed, &pub, &err) != CH_OK)
        return fail("ch_secret_public", &err);
    int rc = round_trip(&ed, &pub);
    ch_secret_wipe(&hmac);
    ch_secret_wipe(&parsed);
    ch_secret_wipe(&ed);
    return rc;
}

static int record(void)
{
    struct ch_error err = {0};
    struct ch_record rec;
    if (ch_record_parse(&rec, body, strlen(body), 0, &err) != CH_OK)
        return fail("ch_record_parse", &err);
    const char *key = ch_record_dedupe_key(&rec);
    if (key == NULL || strcmp(key, "call-1") != 0 || rec.call_type != CH_CALL_TYPE_MISSED_CALL)
        return fail("ch_record_parse's fields", NULL);
    char id[CH_MSGID_SIZE];
    if (ch_msgid("app-1", "end-call", key, id, &err) != CH_OK || strncmp(id, "msg_", 4) != 0)
        return fail("ch_msgid", &err);
    return 0;
}

/* Adds one event twice to a new inbox: the second time is a duplicate. */
static int inbox_in(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/inbox/events.db", dir);
    struct ch_error err = {0};
    struct ch_inbox *ib = NULL;
    if (ch_inbox_open(path, &ib, &err) != CH_OK)
        return fail("ch_inbox_open", &err);
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        struct ch_inbox_event ev = {.webhook_id = "msg_lib_user",
                                    .event = "end-call",
                                    .call_key = "call-1",
                                    .body = body,
                                    .body_len = strlen(body),
                                    .received_at = (long long)time(NULL)};
        if (ch_inbox_add(ib, &ev, 1, &err) != CH_OK)
            rc = fail("ch_inbox_add", &err);
        else if (ev.duplicate != (i == 1))
            rc = fail("ch_inbox_add's duplicate flag", NULL);
    }
    ch_inbox_close(ib);
    return rc;
}

/* Removes what the inbox left in dir; best effort. */
static void clean(const char *dir)
{
    static const char *const files[] = {"events.db", "events.db-wal", "events.db-shm",
                                        "events.db-journal"};
    char path[4096];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/inbox/%s", dir, files[i]);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/inbox", dir);
    rmdir(path);
    rmdir(dir);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/callhook-lib-user-XXXXXX", tmp != NULL && *tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("lib_user: mkdtemp");
        return 1;
    }
    int rc = signatures();
    if (rc == 0)
        rc = record();
    if (rc == 0)
        rc = inbox_in(dir);
    clean(dir);
    if (stray_calls != 0) {
        fprintf(stderr, "lib_user: libcallhook called %d of this program's functions\n",
                stray_calls);
        rc = 1;
    }
    if (rc == 0)
        printf("libcallhook %s: signatures, record, message id and inbox work\n", ch_version());
    return rc;
}
