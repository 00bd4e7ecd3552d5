/* One generation of a Voice App's settings as the engine sends with them: parsed once from the
 * store's answer, with the header lines, the signing keys and the SSRF verdict on address-literal
 * URLs ready. Counted: the app holds one reference while the generation is current, each
 * transfer one while it is set up with it, so a change never frees what an attempt in flight
 * still uses. Engine thread only, so the count is a plain int. */
#ifndef CALLHOOK_DELIVER_APPGEN_H
#define CALLHOOK_DELIVER_APPGEN_H

#include <callhook/error.h>
#include <callhook/signature.h>

#include "deliver/app.h"
#include "deliver/ssrf.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>

struct app_gen {
    int refs;
    struct app_config cfg;
    bool missing; /* deleted, or its stored settings are unreadable */
    bool enabled;
    struct ssrf_rule rule; /* what its requests may reach */
    char *header_lines;    /* the custom headers as "Name: value" lines, one allocation */
    char *header_line[APP_MAX_HEADERS];
    struct ch_secret keys[2]; /* [0] the secret; [1] the previous one during a rotation */
    size_t nkeys;
    int64_t prev_expires_at; /* wall seconds: keys[1] signs only before this */
    /* A URL whose host is an address literal the guard refuses (in any spelling inet_aton
     * takes, trailing dot included): its attempts end as refused without a connection. */
    char refused_begin[64], refused_end[64];
};

/* A generation from what the store answered for app id (rc and, when CH_OK, sa), with one
 * reference held by the caller; NULL when out of memory. A deleted app (CH_ENOTFOUND) or
 * unreadable settings give a generation marked missing. allowed (borrowed, must outlive the
 * generation) are the internal ranges the operator allows for every app. */
struct app_gen *app_gen_new(const char *id, ch_code rc, const struct stored_app *sa,
                            const struct guard_cidr *allowed, int nallowed);

/* Takes one more reference; returns g. */
struct app_gen *app_gen_ref(struct app_gen *g);

/* Drops a reference; the last one wipes the keys and frees g. NULL is a no-op. */
void app_gen_unref(struct app_gen *g);

/* The address refused for the event's URL ("begin-call" or "end-call"), or "" when none. */
const char *app_gen_refused(const struct app_gen *g, const char *event);

#endif
