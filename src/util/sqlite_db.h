/*
 * SQLite helpers shared by serve's store (src/store/sqlite.c) and the receiver's inbox
 * (src/lib/inbox.c): errors as ch_codes, one-off statements, and statements kept prepared.
 */
#ifndef CALLHOOK_UTIL_SQLITE_DB_H
#define CALLHOOK_UTIL_SQLITE_DB_H

#include <callhook/error.h>

#include <sqlite3.h>

/* The connection's last error as "PREFIXwhat: message": CH_EUNAVAILABLE when trying again may
 * work (busy, disk full, I/O, cannot open), else CH_ESTORE. */
ch_code sqldb_error(struct ch_error *err, sqlite3 *db, const char *prefix, const char *what);

/* Runs SQL without results (schema, pragmas); errors as "PREFIXmessage", CH_ESTORE. */
ch_code sqldb_exec(sqlite3 *db, const char *sql, const char *prefix, struct ch_error *err);

/* A one-off statement; the caller finalizes it. */
ch_code sqldb_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, const char *prefix,
                      struct ch_error *err);

/* A statement kept in *slot: prepared there on first use, then the same one each time. Call
 * with the connection's lock held, and sqldb_done() when through with it. */
ch_code sqldb_kept(sqlite3 *db, sqlite3_stmt **slot, const char *sql, const char *prefix,
                   struct ch_error *err);

/* Resets a kept statement, so it holds no read snapshot and no borrowed bindings. */
void sqldb_done(sqlite3_stmt *st);

#endif
