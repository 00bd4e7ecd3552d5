/*
 * Masking of personal data: one set of rules for the log (every line) and for call records as
 * the API shows them (GET /v1/messages/{id}/record without reveal). docs/SECURITY.md lists them.
 */
#ifndef CALLHOOK_UTIL_MASK_H
#define CALLHOOK_UTIL_MASK_H

/* What a field's name says of its value. */
enum mask_field {
    MASK_FIELD_ANY = 0, /* a log line, or a field whose name says nothing: the phone numbers
                           ("+" and 7 or more digits) and e-mail addresses inside it */
    MASK_FIELD_PHONE,   /* a phone number (CallerId, CalledNumber, ...): every digit but the
                           last two */
    MASK_FIELD_TEXT,    /* a name or free text (CallerDisplayName, Email, Notes, ...): each word
                           keeps its first character */
};

/* The kind of the field called name (a JSON key, any letter case); NULL is MASK_FIELD_ANY. */
enum mask_field mask_field_of(const char *name);

/* Masks s (NUL-terminated UTF-8) in place as a value of the field called name (NULL: a log
 * line, MASK_FIELD_ANY). Never lengthens s, never splits a UTF-8 character. */
void mask_personal(char *s, const char *name);

#endif
