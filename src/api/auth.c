/* API keys: "chk_" + 64 hex characters, stored as SHA-256, looked up per request. */
#include "api/api.h"

#include "api/cache.h"
#include "lib/crypto.h"
#include "util/base64.h"
#include "util/clock.h"
#include "util/fs.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void hash_key(const char *key, unsigned char out[32])
{
    struct crypto_part part = {key, strlen(key)};
    if (!crypto_sha256(&part, 1, out))
        memset(out, 0, 32); /* matches no stored key */
}

ch_code api_key_add_existing(struct store *s, const char *key, enum key_role role,
                             struct ch_error *err)
{
    /* 32 characters: 128 bits when they are hex digits, the least a key may carry. */
    if (strlen(key) < API_KEY_MIN_CHARS)
        return ch_error_set(err, CH_EINVAL,
                            "a key must have at least %d characters (128 bits of entropy): make "
                            "one with 'openssl rand -hex 16'",
                            API_KEY_MIN_CHARS);
    unsigned char hash[32];
    hash_key(key, hash);
    /* The id is random, not a piece of the key: ids are listed and logged, keys never. */
    unsigned char raw[6];
    if (!crypto_random(raw, sizeof raw))
        return ch_error_set(err, CH_ECRYPTO, "cannot make a key id: the random source failed");
    char id[20] = "key_";
    hex_encode(raw, sizeof raw, id + 4);
    return store_key_add(s, id, hash, role, clock_wall_s(), err);
}

ch_code api_key_create(struct store *s, enum key_role role, char *new_key, struct ch_error *err)
{
    unsigned char raw[32];
    if (!crypto_random(raw, sizeof raw))
        return ch_error_set(err, CH_ECRYPTO, "cannot make a key: the random source failed");
    memcpy(new_key, "chk_", 4);
    hex_encode(raw, sizeof raw, new_key + 4);
    crypto_wipe(raw, sizeof raw);
    return api_key_add_existing(s, new_key, role, err);
}

/* Writes the new key to key_file (parent folders made, 0600, never over an existing file). */
static ch_code write_key_file(const char *key_file, const char *key, struct ch_error *err)
{
    ch_code rc = fs_make_parent_dirs(key_file, err);
    if (rc != CH_OK)
        return rc;
    /* Created here with its final mode, never through a link and never over a file that is
     * already there (whose mode and readers nobody checked). */
    int fd = open(key_file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST)
        return ch_error_set(err, CH_EINVAL,
                            "'%s' exists but the database has no API keys: remove the file (or "
                            "set CALLHOOK_ADMIN_KEY) and start again",
                            key_file);
    if (fd < 0)
        return ch_error_set(err, CH_EIO,
                            "cannot write the admin key to '%s': %s (choose the file with "
                            "--admin-key-file, or set CALLHOOK_ADMIN_KEY)",
                            key_file, strerror(errno));
    size_t len = strlen(key);
    bool ok = write(fd, key, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    close(fd);
    if (!ok)
        return ch_error_set(err, CH_EIO, "cannot write the admin key to '%s'", key_file);
    return CH_OK;
}

ch_code api_bootstrap_admin(struct store *s, const char *key_file, bool *made, struct ch_error *err)
{
    *made = false;
    int64_t n = 0;
    ch_code rc = store_key_count(s, &n, err);
    if (rc != CH_OK || n > 0)
        return rc;
    const char *env = getenv("CALLHOOK_ADMIN_KEY");
    if (env && *env) {
        if (strlen(env) < API_KEY_MIN_CHARS)
            return ch_error_set(err, CH_EINVAL,
                                "CALLHOOK_ADMIN_KEY has %zu characters: it needs at least %d "
                                "(128 bits of entropy; 'openssl rand -hex 16' makes one)",
                                strlen(env), API_KEY_MIN_CHARS);
        rc = api_key_add_existing(s, env, ROLE_ADMIN, err);
        if (rc == CH_OK)
            log_info("no API keys yet: added CALLHOOK_ADMIN_KEY as the admin key");
        return rc;
    }
    /* Shown only on a terminal: a key printed into a service's log would be readable by
     * everyone who reads the log, for as long as it is kept. */
    if (key_file == NULL && !isatty(STDERR_FILENO))
        return ch_error_set(err, CH_EINVAL,
                            "the database has no API keys yet: set CALLHOOK_ADMIN_KEY, or "
                            "--admin-key-file PATH to have one made and written there (a made "
                            "key is printed only when serve runs on a terminal)");
    char key[API_KEY_TEXT_MAX];
    unsigned char raw[32];
    if (!crypto_random(raw, sizeof raw))
        return ch_error_set(err, CH_ECRYPTO, "cannot make a key: the random source failed");
    memcpy(key, "chk_", 4);
    hex_encode(raw, sizeof raw, key + 4);
    crypto_wipe(raw, sizeof raw);
    /* Written (or shown) first: a key stored but never shown would lock everyone out. */
    if (key_file != NULL && (rc = write_key_file(key_file, key, err)) != CH_OK) {
        crypto_wipe(key, sizeof key);
        return rc;
    }
    if (key_file == NULL)
        fprintf(stderr,
                "\nno API keys yet: the admin key, shown this once (keep it; 'callhook key "
                "create' makes more):\n\n    %s\n\n",
                key);
    rc = api_key_add_existing(s, key, ROLE_ADMIN, err);
    crypto_wipe(key, sizeof key);
    if (rc == CH_OK && key_file != NULL)
        log_info("no API keys yet: made an admin key and wrote it to '%s' (owner-only)", key_file);
    *made = rc == CH_OK;
    return rc;
}

bool api_authenticate(struct api_request *r)
{
    const char *auth = http_header(r->http, "Authorization");
    if (auth == NULL || strncmp(auth, "Bearer ", 7) != 0 || auth[7] == '\0') {
        http_respond_error(r->http, 401, "unauthorized",
                           "send an API key as 'Authorization: Bearer <key>'");
        return false;
    }
    unsigned char hash[32];
    hash_key(auth + 7, hash);
    char hex[65];
    hex_encode(hash, sizeof hash, hex);
    struct ch_error err = {0};
    enum key_role role = ROLE_NONE;
    /* Known keys are remembered for a few seconds (a revocation takes that long to apply);
     * unknown ones are always looked up. The lookup is by hash, so timing reveals nothing
     * about the key itself. */
    int cached;
    if (api_cache_get(r->ctx->keys, hex, &cached, sizeof cached)) {
        r->role = (enum key_role)cached;
        return true;
    }
    ch_code rc = store_key_lookup(r->ctx->store, hash, &role, &err);
    if (rc == CH_OK) {
        cached = (int)role;
        api_cache_put(r->ctx->keys, hex, &cached, sizeof cached);
    }
    if (rc == CH_ENOTFOUND) {
        http_respond_error(r->http, 401, "unauthorized", "unknown or revoked API key");
        return false;
    }
    if (rc != CH_OK) {
        http_respond_error(r->http, 503, "unavailable", "cannot check the API key now; try again");
        return false;
    }
    r->role = role;
    return true;
}
