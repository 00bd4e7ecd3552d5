/*
 * Text that came from a sender, made safe for where the receiver puts it: a handler's
 * environment, the operator's terminal (`callhook inbox`), a JSON-lines file.
 */
#ifndef CALLHOOK_RECEIVE_ESCAPE_H
#define CALLHOOK_RECEIVE_ESCAPE_H

#include <stdbool.h>
#include <stddef.h>

/* Worst-case growth of text_escape(): one byte becomes "\xHH". */
#define TEXT_ESCAPE_GROWTH 4

/*
 * Copies s[0..len) to out (cap bytes, always terminated when cap > 0) with control characters
 * written as text: C0 bytes and DEL as "\xHH", C1 characters (U+0080-U+009F, which some
 * terminals obey too) as "\u00HH", bytes that are not UTF-8 as "\xHH". Everything else,
 * backslashes included, is copied as is. Never cuts an escape in two. Returns the length of
 * the whole escaped text (out may hold less): call with cap 0 to size a buffer.
 */
size_t text_escape(const char *s, size_t len, char *out, size_t cap);

/*
 * Copies JSON text (a body the front accepted) to out so that it is one line of valid JSON
 * with the same meaning, or, for_terminal, safe to print: outside strings, control bytes
 * become spaces (for_terminal keeps line feeds and tabs); inside strings, control characters -
 * and for_terminal DEL and C1 too - become the \u00HH escapes that mean them, and bytes that
 * are not UTF-8 become \ufffd. Returns the length of the whole result (out may hold less; cap
 * 0 sizes it); out is not terminated.
 */
size_t json_text_clean(const char *s, size_t len, bool for_terminal, char *out, size_t cap);

#endif
