/*
 * Runs a fuzz target over files without libFuzzer, so ctest replays the corpus in git on every
 * build, with whatever compiler and sanitizers that build uses. A missing path, an unreadable
 * file or a directory with no inputs fails the run: a replay never passes on nothing.
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>

/* Exit status for a replay that could not run its inputs (a broken check aborts instead). */
#define REPLAY_ENOINPUT 2

/* Largest input read, far above any corpus file: a bigger one is a mistake, not an input. */
#define MAX_INPUT_BYTES (64u * 1024 * 1024)

/* Runs the target on one file's bytes. Returns false, having said why, if it cannot be read. */
static bool run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "replay: cannot open '%s': %s\n", path, strerror(errno));
        return false;
    }
    /* Exactly the input's size, so the sanitizers see any read past its end. */
    uint8_t *data = NULL;
    size_t size = 0;
    bool ok = false;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size < 0 || (uintmax_t)st.st_size > MAX_INPUT_BYTES) {
        fprintf(stderr, "replay: cannot size '%s' (at most %u bytes are read)\n", path,
                MAX_INPUT_BYTES);
        goto done;
    }
    size = (size_t)st.st_size;
    data = malloc(size > 0 ? size : 1);
    if (data == NULL || fread(data, 1, size, f) != size) {
        fprintf(stderr, "replay: cannot read '%s'\n", path);
        goto done;
    }
    printf("Running: %s (%zu bytes)\n", path, size);
    fflush(stdout);
    LLVMFuzzerTestOneInput(data, size);
    ok = true;
done:
    free(data);
    fclose(f);
    return ok;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file of dir, in name order, adding to *count. False on any failure. */
static bool run_dir(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "replay: cannot open directory '%s': %s\n", dir, strerror(errno));
        return false;
    }
    char **paths = NULL;
    size_t n = 0, cap = 0;
    bool ok = true;
    struct dirent *ent;
    while (ok && (ent = readdir(d)) != NULL) {
        if (ent->d_name[0] == '.')
            continue;
        size_t len = strlen(dir) + 1 + strlen(ent->d_name) + 1;
        char *path = malloc(len);
        if (path == NULL) {
            ok = false;
            break;
        }
        snprintf(path, len, "%s/%s", dir, ent->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(path);
            continue;
        }
        if (n == cap) {
            size_t new_cap = cap ? cap * 2 : 64;
            char **grown =
                new_cap > SIZE_MAX / sizeof *paths ? NULL : realloc(paths, new_cap * sizeof *paths);
            if (grown == NULL) {
                free(path);
                ok = false;
                break;
            }
            paths = grown;
            cap = new_cap;
        }
        paths[n++] = path;
    }
    closedir(d);
    if (!ok)
        fprintf(stderr, "replay: out of memory listing '%s'\n", dir);
    if (ok && n == 0) {
        fprintf(stderr, "replay: no inputs in '%s': a replay must run something\n", dir);
        ok = false;
    }
    if (n > 0)
        qsort(paths, n, sizeof *paths, compare_names);
    for (size_t i = 0; ok && i < n; i++) {
        ok = run_file(paths[i]);
        if (ok)
            (*count)++;
    }
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    return ok;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr,
                "usage: %s DIR|FILE...\n"
                "Runs the fuzz target on each file, and on each file of each directory.\n",
                argv[0]);
        return REPLAY_ENOINPUT;
    }
    size_t count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: cannot find '%s': %s\n", argv[i], strerror(errno));
            return REPLAY_ENOINPUT;
        }
        bool ok = S_ISDIR(st.st_mode) ? run_dir(argv[i], &count) : run_file(argv[i]);
        if (!ok)
            return REPLAY_ENOINPUT;
        if (!S_ISDIR(st.st_mode))
            count++;
    }
    printf("replay: ran %zu inputs\n", count);
    return 0;
}
