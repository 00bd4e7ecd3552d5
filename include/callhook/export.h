/*
 * What libcallhook exports. The library is compiled with -fvisibility=hidden, so that its
 * internal helpers cannot clash with a program's own names; CH_API marks the public functions,
 * the only symbols a program sees.
 */
#ifndef CALLHOOK_EXPORT_H
#define CALLHOOK_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define CH_API __attribute__((visibility("default")))
#else
#define CH_API
#endif

#endif
