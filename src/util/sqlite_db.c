#include "util/sqlite_db.h"

#include <stddef.h>

ch_code sqldb_error(struct ch_error *err, sqlite3 *db, const char *prefix, const char *what)
{
    int code = sqlite3_extended_errcode(db) & 0xff;
    ch_code c = code == SQLITE_BUSY || code == SQLITE_FULL || code == SQLITE_IOERR ||
                        code == SQLITE_CANTOPEN
                    ? CH_EUNAVAILABLE
                    : CH_ESTORE;
    return ch_error_set(err, c, "%s%s: %s", prefix, what, sqlite3_errmsg(db));
}

ch_code sqldb_exec(sqlite3 *db, const char *sql, const char *prefix, struct ch_error *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        ch_code rc = ch_error_set(err, CH_ESTORE, "%s%s", prefix, msg ? msg : "error");
        sqlite3_free(msg);
        return rc;
    }
    return CH_OK;
}

ch_code sqldb_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, const char *prefix,
                      struct ch_error *err)
{
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK)
        return sqldb_error(err, db, prefix, "prepare");
    return CH_OK;
}

ch_code sqldb_kept(sqlite3 *db, sqlite3_stmt **slot, const char *sql, const char *prefix,
                   struct ch_error *err)
{
    if (*slot == NULL &&
        sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL) != SQLITE_OK) {
        *slot = NULL;
        return sqldb_error(err, db, prefix, "prepare");
    }
    return CH_OK;
}

void sqldb_done(sqlite3_stmt *st)
{
    if (st != NULL) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}
