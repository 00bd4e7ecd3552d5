/* libcallhook: read call records, sign and verify Standard Webhooks requests, derive stable
 * message ids. Include this header, link with -lcallhook. */
#ifndef CALLHOOK_CALLHOOK_H
#define CALLHOOK_CALLHOOK_H

#include <callhook/error.h>
#include <callhook/export.h>
#include <callhook/msgid.h>
#include <callhook/record.h>
#include <callhook/signature.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The library's version, e.g. "0.1.0". */
CH_API const char *ch_version(void);

#ifdef __cplusplus
}
#endif

#endif
