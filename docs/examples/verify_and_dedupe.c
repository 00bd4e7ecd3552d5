/*
 * libcallhook in your own C service: verify a delivery, read the call record, and drop
 * duplicates against an inbox on disk, before answering. `make build` builds it as
 * build/release/verify_and_dedupe; docs/SIGNATURES.md gives the command that builds it by hand
 * (and `make test` runs that command, so it stays true):
 *
 *   verify_and_dedupe INBOX_PATH SECRET WEBHOOK_ID TIMESTAMP SIGNATURE EVENT < body.json
 *
 * prints the HTTP status a receiver would answer and why.
 */
#include <callhook/callhook.h>
#include <callhook/inbox.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s INBOX SECRET ID TIMESTAMP SIGNATURE EVENT < body\n", argv[0]);
        return 2;
    }
    static char body[256 * 1024 + 1];
    size_t len = fread(body, 1, sizeof body, stdin);

    /* 1. The sender: Standard Webhooks signature and a 300 s timestamp window. */
    struct ch_secret key;
    struct ch_error err;
    if (ch_secret_parse(&key, argv[2], &err) != CH_OK) {
        fprintf(stderr, "bad secret: %s\n", err.message);
        return 2;
    }
    struct ch_verifier v = {.keys = &key, .nkeys = 1};
    if (ch_verify(&v, argv[3], argv[4], argv[5], body, len, &err) != CH_OK) {
        printf("401 %s\n", err.message);
        return 1;
    }

    /* 2. The record: a JSON object; its ids and CallType, whatever else it carries. */
    struct ch_record rec;
    if (ch_record_parse(&rec, body, len, 256 * 1024, &err) != CH_OK) {
        printf("%d %s\n", err.code == CH_ETOOBIG ? 413 : 400, err.message);
        return 1;
    }

    /* 3. Durable before 2xx, and duplicates dropped: by webhook-id, and by event and call. */
    struct ch_inbox *inbox;
    if (ch_inbox_open(argv[1], &inbox, &err) != CH_OK) {
        printf("503 %s\n", err.message);
        return 1;
    }
    struct ch_inbox_event e = {
        .webhook_id = argv[3],
        .event = argv[6],
        .call_key = ch_record_dedupe_key(&rec),
        .has_call_type = rec.call_type_kind != CH_CALL_TYPE_ABSENT,
        .call_type = rec.call_type,
        .body = body,
        .body_len = len,
        .received_at = (long long)time(NULL),
    };
    ch_code rc = ch_inbox_add(inbox, &e, 1, &err);
    ch_inbox_close(inbox);
    if (rc != CH_OK) {
        printf("503 %s\n", err.message);
        return 1;
    }
    char type[CH_CALL_TYPE_NAME_MAX];
    printf("%d %s (CallType %s)\n", e.duplicate ? 200 : 202, e.duplicate ? "duplicate" : "stored",
           ch_call_type_name(rec.call_type_kind, rec.call_type, type, sizeof type));
    return 0;
}
