/* Masking of personal data (mask.h): the log's rules for any text, and the rules for fields a
 * call record names as a phone number, a name or free text. */
#include "util/mask.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_email_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '.' ||
           c == '_' || c == '-' || c == '+' || c == '%';
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Whether name (any letter case) ends with suffix. */
static bool ends_with(const char *name, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && strcasecmp(name + len - n, suffix) == 0;
}

/* Names of fields that end in "name" but hold no one's name: the platform's and the
 * organisation's own things. */
static const char *const not_personal_names[] = {
    "voiceappname", "appname",   "queuename",    "tenantname",
    "groupname",    "skillname", "campaignname", "hostname",
};

/* Suffixes of fields whose whole value is a phone number, or a name or free text. */
static const char *const phone_suffixes[] = {"number", "phone", "callerid", "msisdn", "mobile"};
static const char *const text_suffixes[] = {
    "name",     "email",      "address",       "note",    "notes",       "comment",
    "comments", "transcript", "transcription", "summary", "description", "subject",
};

enum mask_field mask_field_of(const char *name)
{
    if (name == NULL)
        return MASK_FIELD_ANY;
    size_t len = strlen(name);
    for (size_t i = 0; i < sizeof phone_suffixes / sizeof phone_suffixes[0]; i++) {
        if (ends_with(name, len, phone_suffixes[i]))
            return MASK_FIELD_PHONE;
    }
    for (size_t i = 0; i < sizeof not_personal_names / sizeof not_personal_names[0]; i++) {
        if (ends_with(name, len, not_personal_names[i]))
            return MASK_FIELD_ANY;
    }
    for (size_t i = 0; i < sizeof text_suffixes / sizeof text_suffixes[0]; i++) {
        if (ends_with(name, len, text_suffixes[i]))
            return MASK_FIELD_TEXT;
    }
    return MASK_FIELD_ANY;
}

/* What looks like personal data wherever a text carries it by accident: phone numbers ("+" and
 * 7 or more digits) keep their last two digits, e-mail addresses keep only their '@'. Same
 * length, so a log line never grows. */
static void mask_any(char *s)
{
    for (char *p = s; *p; p++) {
        if (*p == '+' && is_digit(p[1])) {
            char *q = p + 1;
            while (is_digit(*q))
                q++;
            if (q - p - 1 >= 7) {
                for (char *d = p + 1; d < q - 2; d++)
                    *d = '*';
            }
            p = q - 1;
        } else if (*p == '@' && p > s && is_email_char(p[-1]) && is_email_char(p[1])) {
            for (char *q = p - 1; q >= s && is_email_char(*q); q--)
                *q = '*';
            char *q = p + 1;
            for (; is_email_char(*q); q++)
                *q = '*';
            p = q - 1;
        }
    }
}

/* A phone number field: every digit but the last two, whatever the format around them. */
static void mask_phone(char *s)
{
    size_t digits = 0;
    for (char *p = s; *p; p++)
        digits += is_digit(*p);
    for (char *p = s; *p && digits > 2; p++) {
        if (is_digit(*p)) {
            *p = '*';
            digits--;
        }
    }
}

/* The bytes of the UTF-8 character that starts with c (1 for a stray continuation byte). */
static size_t utf8_len(unsigned char c)
{
    return c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
}

/* A name or free text: each word (between white space) keeps its first character, every other
 * character becomes one '*'. In place: a '*' is never longer than the character it hides. */
static void mask_text(char *s)
{
    char *out = s;
    bool word_start = true;
    for (const char *p = s; *p;) {
        size_t n = utf8_len((unsigned char)*p);
        for (size_t i = 1; i < n; i++) {
            if (p[i] == '\0') {
                n = i; /* a cut character: what is there is one character */
                break;
            }
        }
        if (is_space(*p)) {
            *out++ = *p;
            word_start = true;
        } else if (word_start) {
            memmove(out, p, n);
            out += n;
            word_start = false;
        } else {
            *out++ = '*';
        }
        p += n;
    }
    *out = '\0';
}

void mask_personal(char *s, const char *name)
{
    switch (mask_field_of(name)) {
    case MASK_FIELD_PHONE:
        mask_phone(s);
        break;
    case MASK_FIELD_TEXT:
        mask_text(s);
        break;
    case MASK_FIELD_ANY:
        mask_any(s);
        break;
    }
}
