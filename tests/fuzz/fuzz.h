/*
 * What the fuzz targets share with the replay driver: libFuzzer's entry point, and the check
 * that turns a broken invariant into an abort() both libFuzzer and ctest report as a failure.
 */
#ifndef CALLHOOK_TESTS_FUZZ_H
#define CALLHOOK_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Runs one input through a target. Returns 0; a failed check aborts. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts, naming the invariant, when cond is false. Unlike assert(), never compiled out. */
#define FUZZ_CHECK(cond) ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, #cond))

_Noreturn static inline void fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, what);
    fflush(stderr);
    abort();
}

#endif
