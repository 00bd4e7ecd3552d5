/*
 * The API the operators' console reads beside the rest of docs/API.md: the Voice Apps' figures
 * (stats.c), who a key is (stats.c), a message's record masked or revealed and the request
 * headers each attempt sent (record.c). handlers.c routes to them.
 */
#ifndef CALLHOOK_API_CONSOLE_H
#define CALLHOOK_API_CONSOLE_H

#include <jansson.h>

#include "api/api.h"

#include <stdbool.h>

/* GET /v1/voice-apps/stats (app_id NULL) and GET /v1/voice-apps/{id}/stats. The caller has
 * checked the role (read) and the query (none). */
void api_console_stats(struct api_request *r, const char *app_id);

/* GET /v1/whoami: {"role": ...} of the request's key, any role. */
void api_whoami(struct api_request *r);

/* GET /v1/messages/{id}/record[?reveal=true]: the record masked by util/mask.c, whole for an
 * admin key that asks (reveal). The caller has checked the role (read) and the query's
 * argument names. */
void api_message_record(struct api_request *r, const char *msg_id);

/* The headers attempt a of message m sent, as a new JSON object ("requestHeaders"): the fixed
 * ones rebuilt, its webhook-timestamp and shortened signature as stored, and the extra headers
 * of the app's settings as they are now (app; NULL when the app is gone), their values
 * "********" unless full. JSON null when the attempt kept no signature (stored before it was
 * kept, or never sent: refused by the guard, or its app or URL gone). */
json_t *api_request_headers(const struct attempt_view *a, const struct message_view *m,
                            const struct stored_app *app, bool full);

#endif
