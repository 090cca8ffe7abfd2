/* SPDX-License-Identifier: MIT */
/*
 * Replays a libFuzzer corpus through a fuzz target without libFuzzer, so that every build runs
 * each input that ever crashed as an ordinary regression test. Arguments are files or folders.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open '%s': %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *buf = malloc(1 << 22);
    if (!buf) {
        fclose(f);
        return -1;
    }
    size_t n = fread(buf, 1, 1 << 22, f);
    fclose(f);
    /* Copy to an exact-size allocation so ASan catches reads past the end. */
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

static int replay(const char *path, int *count)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        fprintf(stderr, "cannot stat '%s': %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        (*count)++;
        return replay_file(path);
    }
    DIR *d = opendir(path);
    if (!d)
        return -1;
    struct dirent *e;
    int r = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char child[4096];
        if (snprintf(child, sizeof(child), "%s/%s", path, e->d_name) >= (int)sizeof(child))
            continue;
        if (replay(child, count) < 0)
            r = -1;
    }
    closedir(d);
    return r;
}

int main(int argc, char **argv)
{
    int count = 0, r = 0;
    for (int i = 1; i < argc; i++)
        if (replay(argv[i], &count) < 0)
            r = 1;
    printf("replayed %d inputs\n", count);
    if (count == 0) {
        fprintf(stderr, "empty corpus\n");
        return 1;
    }
    return r;
}
