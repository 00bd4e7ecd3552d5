/* Choosing a store backend from a URI, and the names shared by every backend. */
#include "store/store.h"

#include <string.h>

ch_code store_open(const char *uri, struct store **out, struct ch_error *err)
{
    if (uri != NULL && strncmp(uri, "sqlite:", 7) == 0)
        return store_sqlite_open(uri + 7, out, err);
    /* libpq URIs as they are; "postgres:" + any libpq connection string too. */
    if (uri != NULL &&
        (strncmp(uri, "postgres://", 11) == 0 || strncmp(uri, "postgresql://", 13) == 0))
        return store_postgres_open(uri, out, err);
    if (uri != NULL && strncmp(uri, "postgres:", 9) == 0)
        return store_postgres_open(uri + 9, out, err);
    return ch_error_set(err, CH_EINVAL,
                        "unknown database '%s': use sqlite:PATH or postgres://USER@HOST/DB",
                        uri ? uri : "");
}

const char *msg_status_name(enum msg_status s, int attempts)
{
    switch (s) {
    case MSG_PENDING:
        return attempts > 0 ? "failed" : "pending";
    case MSG_DELIVERING:
        return "delivering";
    case MSG_DELIVERED:
        return "delivered";
    case MSG_DEAD:
        return "dead";
    case MSG_SKIPPED:
        return "skipped";
    }
    return "unknown";
}

bool msg_status_parse(const char *name, enum msg_status *out)
{
    static const struct {
        const char *name;
        enum msg_status status;
    } names[] = {
        {"pending", MSG_PENDING},     {"failed", MSG_PENDING}, {"delivering", MSG_DELIVERING},
        {"delivered", MSG_DELIVERED}, {"dead", MSG_DEAD},      {"skipped", MSG_SKIPPED}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].status;
            return true;
        }
    }
    return false;
}

const char *key_role_name(enum key_role r)
{
    switch (r) {
    case ROLE_INGEST:
        return "ingest";
    case ROLE_READ:
        return "read";
    case ROLE_ADMIN:
        return "admin";
    case ROLE_NONE:
        break;
    }
    return "none";
}

bool key_role_parse(const char *name, enum key_role *out)
{
    for (int r = ROLE_INGEST; r <= ROLE_ADMIN; r++) {
        if (strcmp(name, key_role_name((enum key_role)r)) == 0) {
            *out = (enum key_role)r;
            return true;
        }
    }
    return false;
}

void store_stats_add(struct store_stats *st, int status, int64_t n)
{
    switch (status) {
    case MSG_PENDING:
        st->pending += n;
        break;
    case MSG_DELIVERING:
        st->delivering += n;
        break;
    case MSG_DELIVERED:
        st->delivered += n;
        break;
    case MSG_DEAD:
        st->dead += n;
        break;
    case MSG_SKIPPED:
        st->skipped += n;
        break;
    default:
        break;
    }
}
