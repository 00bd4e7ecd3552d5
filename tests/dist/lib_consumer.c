/*
 * A program of a libcallhook user, built by the dist tests against an installed library found
 * through pkg-config (a DESTDIR install, the unpacked Debian packages): it checks the Standard
 * Webhooks specification's published test vector, then parses a call record and prints what
 * it read, one "name=value" a line, for the test to compare.
 *
 *   lib_consumer RECORD.json
 */
#include <callhook/callhook.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The vector of the specification's reference libraries (standard-webhooks, svix). */
#define VECTOR_SECRET    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VECTOR_ID        "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VECTOR_TIMESTAMP 1614265330LL
#define VECTOR_BODY      "{\"test\": 2432232314}"
#define VECTOR_SIGNATURE "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

static long long fixed_clock(void *ctx)
{
    return *(const long long *)ctx;
}

static int fail(const char *what, const struct ch_error *err)
{
    fprintf(stderr, "lib_consumer: %s: %s\n", what, err ? err->message : "unexpected result");
    return 1;
}

static int check_vector(void)
{
    struct ch_error err = {0};
    struct ch_secret key;
    if (ch_secret_parse(&key, VECTOR_SECRET, &err) != CH_OK)
        return fail("ch_secret_parse", &err);
    char sig[CH_SIGNATURE_ENTRY_MAX];
    if (ch_sign(&key, 1, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, strlen(VECTOR_BODY), sig,
                sizeof sig, &err) != CH_OK)
        return fail("ch_sign", &err);
    if (strcmp(sig, VECTOR_SIGNATURE) != 0) {
        fprintf(stderr, "lib_consumer: signed '%s', the vector says '%s'\n", sig, VECTOR_SIGNATURE);
        return 1;
    }
    long long now = VECTOR_TIMESTAMP + 10;
    struct ch_verifier v = {.keys = &key, .nkeys = 1, .clock = fixed_clock, .clock_ctx = &now};
    if (ch_verify(&v, VECTOR_ID, "1614265330", VECTOR_SIGNATURE, VECTOR_BODY, strlen(VECTOR_BODY),
                  &err) != CH_OK)
        return fail("ch_verify of the vector", &err);
    if (ch_verify(&v, VECTOR_ID, "1614265330", VECTOR_SIGNATURE, VECTOR_BODY,
                  strlen(VECTOR_BODY) - 1, &err) != CH_ENOMATCH)
        return fail("ch_verify of a changed body", NULL);
    now = VECTOR_TIMESTAMP + CH_DEFAULT_TOLERANCE_S + 1;
    if (ch_verify(&v, VECTOR_ID, "1614265330", VECTOR_SIGNATURE, VECTOR_BODY, strlen(VECTOR_BODY),
                  &err) != CH_ETOOOLD)
        return fail("ch_verify past the window", NULL);
    ch_secret_wipe(&key);
    printf("vector=ok\n");
    return 0;
}

static int parse_record(const char *path)
{
    static char body[1 << 20];
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return 1;
    }
    size_t len = fread(body, 1, sizeof body, f);
    fclose(f);
    struct ch_record rec;
    struct ch_error err = {0};
    if (ch_record_parse(&rec, body, len, 0, &err) != CH_OK)
        return fail("ch_record_parse", &err);
    char type[CH_CALL_TYPE_NAME_MAX];
    const char *key = ch_record_dedupe_key(&rec);
    printf("active_call_id=%s\ncorrelation_id=%s\ndedupe_key=%s\ncall_type=%s\n",
           rec.has_active_call_id ? rec.active_call_id : "",
           rec.has_correlation_id ? rec.correlation_id : "", key ? key : "",
           ch_call_type_name(rec.call_type_kind, rec.call_type, type, sizeof type));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: lib_consumer RECORD.json\n");
        return 2;
    }
    printf("version=%s\n", ch_version());
    return check_vector() || parse_record(argv[1]);
}
