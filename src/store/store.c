/*
 * The store's front door: choosing a backend from a URI, the names shared by every backend,
 * and one store_<op>() per operation, through which every caller goes, so the contract written
 * in store.h is checked in one place whatever the backend.
 */
#include "store/store.h"

#include <assert.h>
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
    char shown[512];
    store_uri_for_log(uri ? uri : "", shown, sizeof shown);
    return ch_error_set(err, CH_EINVAL,
                        "unknown database '%s': use sqlite:PATH or postgres://USER@HOST/DB", shown);
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

/* ---- the front door ---- */

ch_code store_apps_version(struct store *s, int64_t *version, struct ch_error *err)
{
    int64_t v = 0;
    ch_code rc = s->ops->apps_version(s, &v, err);
    if (rc == CH_OK)
        *version = v;
    return rc;
}

ch_code store_rate_take(struct store *s, const char *app_id, int64_t limit_per_s, int64_t want,
                        int64_t *granted, struct ch_error *err)
{
    *granted = 0;
    if (limit_per_s <= 0)
        return ch_error_set(err, CH_EINVAL, "rate limit %lld per second: must be at least 1",
                            (long long)limit_per_s);
    if (want <= 0)
        return CH_OK;
    int64_t g = 0;
    ch_code rc = s->ops->rate_take(s, app_id, limit_per_s, want, &g, err);
    if (rc == CH_OK)
        *granted = g;
    assert(*granted >= 0 && *granted <= want);
    return rc;
}

/* Copies n bytes of src to out at *o, keeping room for the terminator. */
static void put(char *out, size_t cap, size_t *o, const char *src, size_t n)
{
    while (n-- > 0 && *o + 1 < cap)
        out[(*o)++] = *src++;
    out[*o] = '\0';
}

void store_uri_for_log(const char *uri, char *out, size_t cap)
{
    if (cap == 0)
        return;
    size_t o = 0;
    out[0] = '\0';
    const char *p = uri;
    /* postgres://user:password@host...: the part between the user's ':' and the '@'. */
    const char *scheme = strstr(p, "://");
    if (scheme != NULL && strncmp(p, "sqlite:", 7) != 0) {
        const char *auth = scheme + 3;
        const char *at = strpbrk(auth, "@/?");
        const char *colon = memchr(auth, ':', at ? (size_t)(at - auth) : 0);
        if (at != NULL && *at == '@' && colon != NULL) {
            put(out, cap, &o, p, (size_t)(colon + 1 - p));
            put(out, cap, &o, "***", 3);
            p = at;
        }
    }
    /* password=VALUE, as a conninfo key (space separated, maybe quoted) or a URI parameter. */
    while (*p) {
        const char *k = strstr(p, "password=");
        if (k == NULL || strncmp(uri, "sqlite:", 7) == 0) {
            put(out, cap, &o, p, strlen(p));
            break;
        }
        k += 9;
        put(out, cap, &o, p, (size_t)(k - p));
        put(out, cap, &o, "***", 3);
        if (*k == '\'') {
            for (k++; *k && *k != '\''; k++) {
                if (*k == '\\' && k[1])
                    k++;
            }
            if (*k)
                k++;
        } else {
            k += strcspn(k, " &");
        }
        p = k;
    }
}
