/* SPDX-License-Identifier: MIT */
/*
 * media_probe_json: what media_probe reads from each file, as one JSON object per line, for
 * tests/integration/test_media_exiftool.py, which compares it with exiftool.
 *
 *   media_probe_json FILE...
 *
 * Each line: {"file": NAME, "result": 0 or -errno, "error": MESSAGE (on failure), "kind": KIND,
 * "date": "YYYY:MM:DD HH:MM:SS" (capture_time as the floating wall clock) or null, "offset":
 * "+HH:MM" or null, "make", "model", "lens", "serial"} (the fields only where ret is written:
 * on 0 and -ENODATA). The extension of FILE is the hint. Exits 0 unless a file cannot be opened.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "media.h"

/* A JSON string: quotes, backslashes and control bytes escaped, other bytes as they are. */
static void put_string(const char *s)
{
    putchar('"');
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            printf("\\%c", *c);
        else if (*c < 0x20 || *c == 0x7f)
            printf("\\u%04x", *c);
        else
            putchar(*c);
    }
    putchar('"');
}

static void put_field(const char *name, const char *value)
{
    printf(", \"%s\": ", name);
    put_string(value);
}

static int probe(const char *path)
{
    struct stat st;
    struct media_info info;
    struct error err = {0};
    char ext[16] = "";

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "cannot open '%s': %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    const char *dot = strrchr(path, '.');
    if (dot && !strchr(dot, '/') && strlen(dot + 1) < sizeof(ext))
        for (size_t i = 0; dot[i + 1]; i++)
            ext[i] = (char)(dot[i + 1] >= 'A' && dot[i + 1] <= 'Z' ? dot[i + 1] + 32 : dot[i + 1]);
    int r = media_probe_fd(fd, (uint64_t)st.st_size, ext, &info, &err);
    close(fd);

    printf("{\"file\": ");
    put_string(path);
    printf(", \"result\": %d", r);
    if (r < 0)
        put_field("error", err.msg);
    if (r == 0 || r == -ENODATA) {
        put_field("kind", media_kind_to_string(info.kind));
        printf(", \"date\": ");
        time_t t = (time_t)info.capture_time;
        struct tm tm;
        char buf[32];
        if (info.capture_time > 0 && gmtime_r(&t, &tm) &&
            strftime(buf, sizeof(buf), "%Y:%m:%d %H:%M:%S", &tm) > 0)
            put_string(buf);
        else
            printf("null");
        printf(", \"offset\": ");
        if (info.has_offset) {
            int32_t o = info.utc_offset < 0 ? -info.utc_offset : info.utc_offset;
            printf("\"%c%02d:%02d\"", info.utc_offset < 0 ? '-' : '+', (int)(o / 3600),
                   (int)(o % 3600 / 60));
        } else {
            printf("null");
        }
        put_field("make", info.make);
        put_field("model", info.model);
        put_field("lens", info.lens);
        put_field("serial", info.serial);
    }
    printf("}\n");
    return 0;
}

int main(int argc, char **argv)
{
    int status = 0;
    if (argc < 2) {
        fputs("usage: media_probe_json FILE...\n", stderr);
        return 2;
    }
    for (int i = 1; i < argc; i++)
        if (probe(argv[i]) < 0)
            status = 1;
    return status;
}
