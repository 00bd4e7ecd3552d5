/*
 * Operational webhooks (serve --ops-webhook): callhook's own signed events about the Voice
 * Apps it delivers for: an app disabled and enabled again, a message dead, an app's backlog
 * older than an age and its recovery. Each event is a message of an internal Voice App
 * (OPS_APP_ID) whose URL is the ops webhook, so it is stored, retried, signed, guarded by the
 * SSRF rules and logged like any delivery; its dedupe key names the state change, so nodes
 * that see the same change store one message.
 */
#ifndef CALLHOOK_DELIVER_OPS_H
#define CALLHOOK_DELIVER_OPS_H

#include <callhook/error.h>

#include "deliver/engine.h"
#include "deliver/guard.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>

/* The internal Voice App that carries the ops events, and its messages' event kind. */
#define OPS_APP_ID "callhook-ops"
#define OPS_EVENT  "ops"

/* The four dedupe-key prefixes of an app's state changes and the one of a dead message, and
 * the event types receivers read ("type" of the payload). */
#define OPS_TYPE_DISABLED    "voice_app.disabled"
#define OPS_TYPE_ENABLED     "voice_app.enabled"
#define OPS_TYPE_BACKLOG_OLD "voice_app.backlog_old"
#define OPS_TYPE_RECOVERED   "voice_app.recovered"
#define OPS_TYPE_DEAD        "message.dead"

struct ops_config {
    const char *url;                  /* the ops webhook (borrowed for ops_new) */
    const char *secret_file;          /* "" or NULL: keep the stored secret, or make one */
    int alert_age_s;                  /* a backlog older than this is reported */
    int check_interval_s;             /* how often disabled apps and backlogs are checked */
    int lease_s;                      /* an event this node stores is claimed for this long */
    const struct guard_cidr *allowed; /* the operator's internal ranges (--allow-cidr) */
    int nallowed;
};

struct ops;

/* True for the id of the internal app. */
bool ops_app_is(const char *app_id);

/* Checks the ops webhook (an http(s) URL; the SSRF guard refuses none of its addresses: an
 * address literal, or every address its name resolves to now; a name that does not resolve
 * now is judged at each connection, as any app's) and reads the secret file, before anything
 * starts. CH_EINVAL (or CH_EIO for an unreadable file) with a message naming the setting when
 * either is refused. Caller frees with ops_free(). */
ch_code ops_new(const struct ops_config *c, struct ops **out, struct ch_error *err);

/* The engine's outcome hook (engine_config.outcome, ctx an ops): a dead message is queued to
 * be reported; a 410 makes the next check run now. Thread-safe, never blocks on the store. */
void ops_outcome(void *ctx, const struct engine_outcome *o);

/* Creates the internal app in store s, or brings it to the settings (a new URL enables it
 * again; the secret of the file, else the stored one, else a new one: *made), then starts the
 * thread that stores the queued events and runs the checks; fresh events are handed to engine
 * e. s and e are borrowed and must outlive ops_free() and ops_stop(). */
ch_code ops_start(struct ops *o, struct store *s, struct engine *e, bool *made,
                  struct ch_error *err);

/* Stops the thread (a check under way ends first). Events queued later (by the engine's last
 * results) stay queued for ops_free(). NULL is a no-op. */
void ops_stop(struct ops *o);

/* Stores what is still queued, due now for whichever node delivers next, then frees o. Call
 * after the engine has stopped. NULL is a no-op. */
void ops_free(struct ops *o);

/* The event type a stored ops message's dedupe key stands for, and its Voice App (app, cap
 * bytes; "" when the key is not an ops key). NULL when the key is not an ops key. */
const char *ops_key_type(const char *dedupe_key, char *app, size_t cap);

#endif
