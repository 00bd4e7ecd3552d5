/* The record the benchmark tools send, the clock they share, and percentiles. */
#include "bench.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t bench_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

size_t bench_call_id(char *out, size_t cap, uint32_t run, uint64_t seq)
{
    int n = snprintf(out, cap, "%08" PRIx32 "-be0c-4a11-8b3e-%012" PRIx64, run,
                     (uint64_t)(seq & 0xffffffffffffULL));
    return n < 0 ? 0 : (size_t)n;
}

/*
 * end-call-answered.json on one line, the bench's two fields after ActiveCallId, and a
 * realistic CustomData so the whole record is about 1.3 KB like the sample. One line, so the
 * wrk script can rebuild it from a prefix and a suffix (see sign.c).
 */
static const char payload_format[] =
    "{\"id\":\"5e1f0c3a-8d4b-4f6e-9a21-7c3d2b1e0f99\",\"ActiveCallId\":\"%s\","
    "\"BenchSeq\":%" PRIu64 ",\"BenchSentUs\":%" PRId64 ","
    "\"CorrelationId\":\"6b8a9c1d-2e3f-4a5b-8c7d-0e1f2a3b4c5d\","
    "\"TenantId\":\"00000000-1111-2222-3333-444444444444\","
    "\"VoiceAppId\":\"8f7e6d5c-4b3a-2918-0716-a5b4c3d2e1f0\","
    "\"VoiceAppName\":\"Support Hotline\",\"CallType\":1,\"Direction\":\"Inbound\","
    "\"CallerId\":\"+15550100123\",\"CallerDisplayName\":\"Jane Example\","
    "\"CalledNumber\":\"+15550199000\",\"QueueId\":\"q-support-en\","
    "\"QueueName\":\"Support (English)\",\"StartTimeUtc\":\"2026-11-27T09:14:03.512Z\","
    "\"AnswerTimeUtc\":\"2026-11-27T09:14:21.007Z\",\"EndTimeUtc\":\"2026-11-27T09:19:47.330Z\","
    "\"WaitDurationSeconds\":17,\"TalkDurationSeconds\":326,"
    "\"Agent\":{\"UserId\":\"a0a1a2a3-b4b5-c6c7-d8d9-e0e1e2e3e4e5\","
    "\"DisplayName\":\"Sam Agent\",\"Email\":\"sam.agent@example.com\","
    "\"UserPrincipalName\":\"sam.agent@example.com\"},\"Language\":\"en-US\","
    "\"CustomData\":{\"crmContactId\":\"CRM-000123\",\"ivrSelection\":\"2\","
    "\"campaign\":\"2026-Q4-retention-outreach\",\"ticketId\":\"SUP-2026-118842\","
    "\"accountTier\":\"enterprise\",\"preferredLanguage\":\"en-US\","
    "\"lastContactUtc\":\"2026-11-20T16:02:11.000Z\",\"region\":\"us-east\","
    "\"wrapUpCode\":\"RESOLVED-FIRST-CONTACT\",\"surveyOptIn\":\"true\"},"
    "\"_rid\":\"mJ8AAKn0RQUBAAAAAAAAAA==\","
    "\"_self\":\"dbs/mJ8AAA==/colls/mJ8AAKn0RQU=/docs/mJ8AAKn0RQUBAAAAAAAAAA==/\","
    "\"_etag\":\"\\\"0b00f3a9-0000-0d00-0000-6746e4030000\\\"\","
    "\"_attachments\":\"attachments/\",\"_ts\":1795771187,\"EndReason\":\"CallerHangUp\"}";

size_t bench_payload(char *out, size_t cap, const char *call_id, uint64_t seq, int64_t sent_us)
{
    int n = snprintf(out, cap, payload_format, call_id, seq, sent_us);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

int64_t bench_field(const char *body, size_t len, const char *name)
{
    char key[64];
    int klen = snprintf(key, sizeof key, "\"%s\":", name);
    if (klen <= 0 || (size_t)klen >= sizeof key || len < (size_t)klen)
        return -1;
    /* The bench's fields come early in the record: a plain scan is enough. */
    for (size_t i = 0; i + (size_t)klen < len; i++) {
        if (body[i] == '"' && memcmp(body + i, key, (size_t)klen) == 0) {
            int64_t v = 0;
            size_t j = i + (size_t)klen;
            if (j >= len || body[j] < '0' || body[j] > '9')
                return -1;
            for (; j < len && body[j] >= '0' && body[j] <= '9'; j++)
                v = v * 10 + (body[j] - '0');
            return v;
        }
    }
    return -1;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

uint32_t bench_percentile_sorted(const uint32_t *samples, size_t n, double p)
{
    if (n == 0)
        return 0;
    /* Nearest rank: the smallest value with at least p% of the samples at or below it. */
    double rank = p / 100.0 * (double)n;
    size_t k = (size_t)rank;
    if ((double)k < rank)
        k++;
    if (k == 0)
        k = 1;
    if (k > n)
        k = n;
    return samples[k - 1];
}

uint32_t bench_percentile(uint32_t *samples, size_t n, double p)
{
    qsort(samples, n, sizeof *samples, cmp_u32);
    return bench_percentile_sorted(samples, n, p);
}
