/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for media.c.
 *
 * Two groups. "files" makes real samples at test time with ffmpeg and exiftool (JPEG with EXIF in
 * both byte orders, TIFF, DNG, PNG, WebP, MP4 with moov at the end and at the start, MOV, 3GP;
 * cameras in EXIF, QuickTime keys and udta) and checks the dates and camera fields, then cuts,
 * mutates and replaces them with random bytes to check that every input ends in a clean error. A
 * missing tool fails the group: it does not skip. "memory" builds what the tools cannot write
 * (CR3, HEIF, RAF, 64-bit boxes, IFD loops, pathological counts, maker notes, Canon and GoPro
 * movie boxes, text trimming and cutting) byte by byte, and covers the small helpers and time
 * zones. tests/integration/test_media_exiftool.py compares all of it with exiftool.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "media.h"

extern char **environ;

#define TZ_CET "CET-1CEST,M3.5.0,M10.5.0/3"
#define TZ_NEW_YORK "EST5EDT,M3.2.0,M11.1.0"

static char tmpdir[4096];
static char tool_log[4200];
static bool keep_tmp; /* a failed setup keeps its folder and tools.log to look at */

/* ---- helpers ------------------------------------------------------------------------------- */

static void set_tz(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
}

static int64_t utc(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = s};
    return (int64_t)timegm(&tm);
}

static void path_in_tmp(char *buf, size_t size, const char *name)
{
    int n = snprintf(buf, size, "%s/%s", tmpdir, name);
    assert_true(n > 0 && (size_t)n < size);
}

/* Runs a tool with posix_spawnp, output into tool_log; -1 with a message when it cannot run or
 * fails, so the group fails with the reason. */
static int run_tool(const char *const argv[])
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int status;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, tool_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0) {
        fprintf(stderr,
                "cannot run '%s': %s: the media tests need ffmpeg and exiftool "
                "(apt-get install ffmpeg libimage-exiftool-perl)\n",
                argv[0], strerror(r));
        return -1;
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "'%s' failed (status 0x%x), see %s\n", argv[0], (unsigned)status, tool_log);
        return -1;
    }
    return 0;
}

static int ffmpeg_image(const char *name)
{
    char out[4200];
    path_in_tmp(out, sizeof(out), name);
    const char *argv[24] = {
        "ffmpeg", "-nostdin",          "-v",        "error", "-y", "-f", "lavfi",
        "-i",     "color=red:s=16x16", "-frames:v", "1"};
    int n = 11;
    const char *ext = strrchr(name, '.');
    /* TIFF wants RGB; ffmpeg knows no .dng, so that one is a TIFF by another name. */
    if (ext && (!strcmp(ext, ".tif") || !strcmp(ext, ".dng"))) {
        const char *tiff[] = {"-pix_fmt", "rgb24", "-f", "image2", "-c:v", "tiff"};
        for (size_t i = 0; i < sizeof(tiff) / sizeof(tiff[0]); i++)
            argv[n++] = tiff[i];
    }
    argv[n++] = out;
    argv[n] = NULL;
    return run_tool(argv);
}

static int ffmpeg_video(const char *name, bool faststart, bool dated)
{
    char out[4200];
    path_in_tmp(out, sizeof(out), name);
    const char *argv[24] = {"ffmpeg", "-nostdin", "-v",
                            "error",  "-y",       "-f",
                            "lavfi",  "-i",       "testsrc=size=16x16:rate=1",
                            "-t",     "1",        "-c:v",
                            "mpeg4"};
    int n = 13;
    if (faststart) {
        argv[n++] = "-movflags";
        argv[n++] = "+faststart";
    }
    if (dated) {
        argv[n++] = "-metadata";
        argv[n++] = "creation_time=2022-12-31T23:59:58Z";
    }
    argv[n++] = out;
    argv[n] = NULL;
    return run_tool(argv);
}

/* exiftool with tag assignments, in place. */
static int exiftool(const char *name, const char *a1, const char *a2)
{
    char file[4200];
    path_in_tmp(file, sizeof(file), name);
    const char *argv[] = {"exiftool",       "-q", "-overwrite_original", a1, a2 ? a2 : file,
                          a2 ? file : NULL, NULL};
    return run_tool(argv);
}

static uint8_t *read_file(const char *name, size_t *ret_len)
{
    char path[4200];
    struct stat st;
    path_in_tmp(path, sizeof(path), name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
    close(fd);
    *ret_len = (size_t)st.st_size;
    return buf;
}

static void write_file(const char *name, const uint8_t *data, size_t len)
{
    char path[4200];
    path_in_tmp(path, sizeof(path), name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static int probe_file(const char *name, const char *ext, struct media_info *info, struct error *err)
{
    char path[4200];
    struct stat st;
    path_in_tmp(path, sizeof(path), name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    int r = media_probe_fd(fd, (uint64_t)st.st_size, ext, info, err);
    /* media_probe_fd must not move the file offset */
    assert_int_equal(lseek(fd, 0, SEEK_CUR), 0);
    close(fd);
    return r;
}

/* A text field is NUL-terminated inside the field, without a space at either end. */
static void assert_text_ok(const char *s)
{
    const char *nul = memchr(s, '\0', MEDIA_TEXT_MAX);
    assert_non_null(nul);
    size_t n = (size_t)(nul - s);
    assert_true(n == 0 || (s[0] != ' ' && s[n - 1] != ' '));
}

/* Every failure is a clean -ENODATA or -EBADMSG with a message; -EBADMSG leaves ret untouched,
 * -ENODATA writes it without a capture time. */
static int probe_checked(const uint8_t *data, size_t len, const char *ext)
{
    struct media_info info, before;
    struct error err = {0};
    memset(&info, 0xa5, sizeof(info));
    before = info;
    int r = media_probe_buffer(data, len, ext, &info, &err);
    if (r != 0 && r != -ENODATA && r != -EBADMSG)
        fail_msg("unexpected error %d (%s) for %zu bytes", r, err.msg, len);
    if (r == 0 || r == -ENODATA) {
        assert_true(info.kind >= MEDIA_KIND_UNKNOWN && info.kind <= MEDIA_KIND_VIDEO);
        assert_true(info.has_offset == 0 || info.has_offset == 1);
        assert_text_ok(info.make);
        assert_text_ok(info.model);
        assert_text_ok(info.lens);
        assert_text_ok(info.serial);
    }
    if (r == -ENODATA) {
        assert_int_equal(info.capture_time, 0);
        assert_int_equal(info.has_offset, 0);
    }
    if (r < 0) {
        assert_int_equal(err.code, r);
        assert_true(err.msg[0] != '\0');
    }
    if (r == -EBADMSG)
        assert_memory_equal(&info, &before, sizeof(info));
    return r;
}

/* ---- generated samples --------------------------------------------------------------------- */

struct sample {
    const char *name;
    const char *ext;
    int result;
    int64_t time; /* under TZ=UTC */
    int has_offset;
    int32_t offset;
    enum media_kind kind;
    const char *camera[4]; /* make, model, lens, serial; NULL for "" */
};

static struct sample samples[32];
static size_t nsamples;

static void add_sample(const char *name, const char *ext, int result, int64_t t, int has_offset,
                       int32_t offset, enum media_kind kind)
{
    assert_true(nsamples < sizeof(samples) / sizeof(samples[0]));
    samples[nsamples++] = (struct sample){name, ext, result, t, has_offset, offset, kind, {NULL}};
}

/* The camera of the sample added last. */
static void sample_camera(const char *make, const char *model, const char *lens, const char *serial)
{
    struct sample *s = &samples[nsamples - 1];
    s->camera[0] = make;
    s->camera[1] = model;
    s->camera[2] = lens;
    s->camera[3] = serial;
}

/* exiftool with up to four tag assignments, in place. */
static int exiftool4(const char *name, const char *a1, const char *a2, const char *a3,
                     const char *a4)
{
    char file[4200];
    path_in_tmp(file, sizeof(file), name);
    const char *argv[] = {"exiftool", "-q", "-overwrite_original", a1, a2, a3, a4, file, NULL};
    return run_tool(argv);
}

/* ffmpeg's movie with make and model as the muxer writes them (udta (c)mak in a MOV, nothing
 * in an MP4). */
static int ffmpeg_video_camera(const char *name)
{
    char out[4200];
    path_in_tmp(out, sizeof(out), name);
    const char *argv[] = {"ffmpeg",
                          "-nostdin",
                          "-v",
                          "error",
                          "-y",
                          "-f",
                          "lavfi",
                          "-i",
                          "testsrc=size=16x16:rate=1",
                          "-t",
                          "1",
                          "-c:v",
                          "mpeg4",
                          "-metadata",
                          "make=Sony",
                          "-metadata",
                          "model=ILCE-7M4",
                          "-metadata",
                          "creation_time=2022-12-31T23:59:58Z",
                          out,
                          NULL};
    return run_tool(argv);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int files_setup(void **state)
{
    (void)state;
    const char *base = getenv("SNAPSYNC_TEST_TMP");
    if (!base || !*base)
        base = "/tmp";
    if (mkdir(base, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create '%s': %s\n", base, strerror(errno));
        return -1;
    }
    if (snprintf(tmpdir, sizeof(tmpdir), "%s/media-XXXXXX", base) >= (int)sizeof(tmpdir) ||
        !mkdtemp(tmpdir)) {
        fprintf(stderr, "cannot create a temporary folder in '%s'\n", base);
        return -1;
    }
    snprintf(tool_log, sizeof(tool_log), "%s/tools.log", tmpdir);
    set_tz("UTC0");
    keep_tmp = true;

    nsamples = 0;
    if (ffmpeg_image("photo.jpg") || exiftool("photo.jpg", "-DateTimeOriginal=2023:07:14 18:30:05",
                                              "-OffsetTimeOriginal=+02:00"))
        return -1;
    add_sample("photo.jpg", "jpg", 0, utc(2023, 7, 14, 18, 30, 5), 1, 7200, MEDIA_KIND_PHOTO);

    if (ffmpeg_image("be.jpg") ||
        exiftool("be.jpg", "-ExifByteOrder=MM", "-CreateDate=2018:03:04 05:06:07") ||
        exiftool("be.jpg", "-OffsetTimeDigitized=-05:30", NULL))
        return -1;
    add_sample("be.jpg", "jpg", 0, utc(2018, 3, 4, 5, 6, 7), 1, -19800, MEDIA_KIND_PHOTO);

    /* An unset camera clock in DateTimeOriginal (written raw with '#'), a valid IFD0 DateTime. */
    if (ffmpeg_image("zero.jpg") || exiftool("zero.jpg", "-DateTimeOriginal#=0000:00:00 00:00:00",
                                             "-ModifyDate=2016:06:30 23:59:59"))
        return -1;
    add_sample("zero.jpg", "jpeg", 0, utc(2016, 6, 30, 23, 59, 59), 0, 0, MEDIA_KIND_PHOTO);

    if (ffmpeg_image("nodate.jpg"))
        return -1;
    add_sample("nodate.jpg", "jpg", -ENODATA, 0, 0, 0, MEDIA_KIND_PHOTO);
    if (ffmpeg_image("artist.jpg") || exiftool("artist.jpg", "-Artist=Nobody", NULL))
        return -1;
    add_sample("artist.jpg", "jpg", -ENODATA, 0, 0, 0, MEDIA_KIND_PHOTO);

    if (ffmpeg_image("photo.tif") ||
        exiftool("photo.tif", "-DateTimeOriginal=2021:01:02 03:04:05", NULL))
        return -1;
    add_sample("photo.tif", "tif", 0, utc(2021, 1, 2, 3, 4, 5), 0, 0, MEDIA_KIND_PHOTO);

    if (ffmpeg_image("photo.dng") ||
        exiftool("photo.dng", "-DNGVersion=1.4.0.0", "-DateTimeOriginal=2020:02:29 12:00:00"))
        return -1;
    add_sample("photo.dng", "dng", 0, utc(2020, 2, 29, 12, 0, 0), 0, 0, MEDIA_KIND_RAW);

    if (ffmpeg_image("photo.png") ||
        exiftool("photo.png", "-DateTimeOriginal=2019:05:06 07:08:09", NULL))
        return -1;
    add_sample("photo.png", "png", 0, utc(2019, 5, 6, 7, 8, 9), 0, 0, MEDIA_KIND_PHOTO);

    if (ffmpeg_image("photo.webp") ||
        exiftool("photo.webp", "-DateTimeOriginal=2017:01:01 00:00:00", NULL))
        return -1;
    add_sample("photo.webp", "webp", 0, utc(2017, 1, 1, 0, 0, 0), 0, 0, MEDIA_KIND_PHOTO);

    int64_t video = utc(2022, 12, 31, 23, 59, 58);
    if (ffmpeg_video("moov_end.mp4", false, true) || ffmpeg_video("faststart.mp4", true, true) ||
        ffmpeg_video("clip.mov", false, true) || ffmpeg_video("clip.3gp", false, true) ||
        ffmpeg_video("nodate.mp4", false, false))
        return -1;
    add_sample("moov_end.mp4", "mp4", 0, video, 0, 0, MEDIA_KIND_VIDEO);
    add_sample("faststart.mp4", "mp4", 0, video, 0, 0, MEDIA_KIND_VIDEO);
    add_sample("clip.mov", "mov", 0, video, 0, 0, MEDIA_KIND_VIDEO);
    add_sample("clip.3gp", "3gp", 0, video, 0, 0, MEDIA_KIND_VIDEO);
    add_sample("nodate.mp4", "mp4", -ENODATA, 0, 0, 0, MEDIA_KIND_VIDEO);

    /* The camera: EXIF IFD0 and EXIF IFD in each container exiftool writes, a DNG's serial,
     * QuickTime keys and udta in movies, and a camera without a date. */
    const char *lens = "RF24-105mm F4 L IS USM";
    if (ffmpeg_image("camera.jpg") ||
        exiftool4("camera.jpg", "-Make=Canon", "-Model=Canon EOS R5",
                  "-LensModel=RF24-105mm F4 L IS USM", "-SerialNumber=012345678901") ||
        exiftool("camera.jpg", "-DateTimeOriginal=2024:05:06 07:08:09", NULL))
        return -1;
    add_sample("camera.jpg", "jpg", 0, utc(2024, 5, 6, 7, 8, 9), 0, 0, MEDIA_KIND_PHOTO);
    sample_camera("Canon", "Canon EOS R5", lens, "012345678901");
    if (ffmpeg_image("camera-be.jpg") ||
        exiftool4("camera-be.jpg", "-ExifByteOrder=MM", "-Make=NIKON CORPORATION",
                  "-Model=NIKON Z 8", "-SerialNumber=3001234") ||
        exiftool("camera-be.jpg", "-LensModel=NIKKOR Z 24-120mm f/4 S", NULL))
        return -1;
    add_sample("camera-be.jpg", "jpg", -ENODATA, 0, 0, 0, MEDIA_KIND_PHOTO);
    sample_camera("NIKON CORPORATION", "NIKON Z 8", "NIKKOR Z 24-120mm f/4 S", "3001234");
    if (ffmpeg_image("camera.dng") ||
        exiftool4("camera.dng", "-DNGVersion=1.4.0.0", "-Make=Leica Camera AG", "-Model=LEICA Q3",
                  "-CameraSerialNumber=5551212") ||
        exiftool("camera.dng", "-DateTimeOriginal=2023:10:11 12:13:14", NULL))
        return -1;
    add_sample("camera.dng", "dng", 0, utc(2023, 10, 11, 12, 13, 14), 0, 0, MEDIA_KIND_RAW);
    sample_camera("Leica Camera AG", "LEICA Q3", NULL, "5551212");
    if (ffmpeg_image("camera.png") ||
        exiftool4("camera.png", "-Make=Google", "-Model=Pixel 8", "-LensModel=Pixel 8 back camera",
                  "-DateTimeOriginal=2022:02:22 22:22:22"))
        return -1;
    add_sample("camera.png", "png", 0, utc(2022, 2, 22, 22, 22, 22), 0, 0, MEDIA_KIND_PHOTO);
    sample_camera("Google", "Pixel 8", "Pixel 8 back camera", NULL);
    if (ffmpeg_image("camera.webp") ||
        exiftool4("camera.webp", "-Make=samsung", "-Model=SM-S918B", "-SerialNumber=R5CW1",
                  "-DateTimeOriginal=2021:12:24 18:00:00"))
        return -1;
    add_sample("camera.webp", "webp", 0, utc(2021, 12, 24, 18, 0, 0), 0, 0, MEDIA_KIND_PHOTO);
    sample_camera("samsung", "SM-S918B", NULL, "R5CW1");
    if (ffmpeg_video("keys.mov", false, true) ||
        exiftool("keys.mov", "-Keys:Make=Apple", "-Keys:Model=iPhone 15 Pro"))
        return -1;
    add_sample("keys.mov", "mov", 0, video, 0, 0, MEDIA_KIND_VIDEO);
    sample_camera("Apple", "iPhone 15 Pro", NULL, NULL);
    if (ffmpeg_video("udta.mp4", true, true) ||
        exiftool("udta.mp4", "-UserData:Make=GoPro", "-UserData:Model=HERO12 Black"))
        return -1;
    add_sample("udta.mp4", "mp4", 0, video, 0, 0, MEDIA_KIND_VIDEO);
    sample_camera("GoPro", "HERO12 Black", NULL, NULL);
    if (ffmpeg_video_camera("ffmpeg.mov"))
        return -1;
    add_sample("ffmpeg.mov", "mov", 0, video, 0, 0, MEDIA_KIND_VIDEO);
    sample_camera("Sony", "ILCE-7M4", NULL, NULL);
    if (ffmpeg_video("nodate-keys.mp4", false, false) ||
        exiftool("nodate-keys.mp4", "-Keys:Make=DJI", "-Keys:Model=Osmo Pocket 3"))
        return -1;
    add_sample("nodate-keys.mp4", "mp4", -ENODATA, 0, 0, 0, MEDIA_KIND_VIDEO);
    sample_camera("DJI", "Osmo Pocket 3", NULL, NULL);
    keep_tmp = getenv("SNAPSYNC_KEEP_TMP") != NULL;
    return 0;
}

static int files_teardown(void **state)
{
    (void)state;
    set_tz("UTC0");
    if (tmpdir[0] && !keep_tmp)
        nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void test_samples(void **state)
{
    (void)state;
    assert_true(nsamples > 0);
    for (size_t i = 0; i < nsamples; i++) {
        const struct sample *s = &samples[i];
        struct media_info info;
        struct error err = {0};
        size_t len;
        uint8_t *data = read_file(s->name, &len);

        for (int via_fd = 0; via_fd < 2; via_fd++) {
            memset(&info, 0x5a, sizeof(info));
            int r = via_fd ? probe_file(s->name, s->ext, &info, &err)
                           : media_probe_buffer(data, len, s->ext, &info, &err);
            if (r != s->result)
                fail_msg("%s: expected %d, got %d (%s)", s->name, s->result, r, err.msg);
            if (r < 0)
                assert_true(err.msg[0] != '\0');
            if (r < 0 && r != -ENODATA)
                continue;
            const char *got[4] = {info.make, info.model, info.lens, info.serial};
            for (int f = 0; f < 4; f++)
                if (strcmp(got[f], s->camera[f] ? s->camera[f] : "") != 0)
                    fail_msg("%s: field %d: expected '%s', got '%s'", s->name, f,
                             s->camera[f] ? s->camera[f] : "", got[f]);
            assert_int_equal(info.kind, s->kind);
            if (r < 0) {
                assert_int_equal(info.capture_time, 0);
                continue;
            }
            if (info.capture_time != s->time)
                fail_msg("%s: expected time %lld, got %lld", s->name, (long long)s->time,
                         (long long)info.capture_time);
            assert_int_equal(info.kind, s->kind);
            assert_int_equal(info.has_offset, s->has_offset);
            assert_int_equal(info.utc_offset, s->offset);
        }
        free(data);
    }
}

static size_t find_bytes(const uint8_t *h, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(h + i, needle, k) == 0)
            return i;
    return (size_t)-1;
}

/* The samples are laid out as the tests assume: both MP4 layouts, both byte orders. */
static void test_sample_layouts(void **state)
{
    (void)state;
    size_t len;
    uint8_t *be = read_file("be.jpg", &len);
    assert_true(find_bytes(be, len, "MM") < len);
    assert_int_equal(find_bytes(be, len, "MM"), find_bytes(be, len, "Exif") + 6);
    free(be);
    uint8_t *end = read_file("moov_end.mp4", &len);
    assert_true(find_bytes(end, len, "moov") > find_bytes(end, len, "mdat"));
    free(end);
    uint8_t *start = read_file("faststart.mp4", &len);
    assert_true(find_bytes(start, len, "moov") < find_bytes(start, len, "mdat"));
    free(start);
}

static void test_ext_does_not_decide_format(void **state)
{
    (void)state;
    struct media_info info;
    struct error err;
    assert_int_equal(probe_file("photo.jpg", "mp4", &info, &err), 0);
    assert_int_equal(info.kind, MEDIA_KIND_PHOTO);
    assert_int_equal(probe_file("moov_end.mp4", NULL, &info, &err), 0);
    assert_int_equal(info.kind, MEDIA_KIND_VIDEO);
    assert_int_equal(probe_file("photo.dng", "tif", &info, &err), 0);
    assert_int_equal(info.kind, MEDIA_KIND_PHOTO);
    assert_int_equal(probe_file("photo.tif", "nef", &info, &err), 0);
    assert_int_equal(info.kind, MEDIA_KIND_RAW);
}

static void test_video_in_other_zones(void **state)
{
    (void)state;
    struct media_info info;
    struct error err;
    char day[16];

    /* mvhd is UTC: 23:59:58 on New Year's Eve is already 2023 in Paris, still 2022 in NY. */
    set_tz(TZ_CET);
    assert_int_equal(probe_file("moov_end.mp4", "mp4", &info, &err), 0);
    assert_int_equal(info.capture_time, utc(2023, 1, 1, 0, 59, 58));
    media_date_path(info.capture_time, day, sizeof(day));
    assert_string_equal(day, "2023/01/01");

    set_tz(TZ_NEW_YORK);
    assert_int_equal(probe_file("faststart.mp4", "mp4", &info, &err), 0);
    assert_int_equal(info.capture_time, utc(2022, 12, 31, 18, 59, 58));

    /* EXIF times are floating: the zone does not change them. */
    assert_int_equal(probe_file("photo.jpg", "jpg", &info, &err), 0);
    assert_int_equal(info.capture_time, utc(2023, 7, 14, 18, 30, 5));
    set_tz("UTC0");
}

static void test_truncated(void **state)
{
    (void)state;
    for (size_t i = 0; i < nsamples; i++) {
        size_t len;
        uint8_t *data = read_file(samples[i].name, &len);
        for (size_t cut = 0; cut < len; cut++) {
            /* Every length in the first and the last 4 KiB (headers; a movie's moov at its
             * end), every 61st between them: each metadata structure of these samples is cut
             * somewhere inside, at a fraction of the time (valgrind) of every length. */
            if (cut >= 4096 && cut + 4096 < len && cut % 61 != 0)
                continue;
            /* an exact-size copy, so ASan and valgrind see any read past the end */
            uint8_t *copy = malloc(cut ? cut : 1);
            assert_non_null(copy);
            memcpy(copy, data, cut);
            int r = probe_checked(copy, cut, samples[i].ext);
            /* Nothing useful fits in the first 16 bytes of any of these. */
            if (cut < 16)
                assert_true(r < 0);
            free(copy);
        }
        /* Through a real file too: the last box or IFD ends early. */
        char name[64];
        snprintf(name, sizeof(name), "cut-%s", samples[i].name);
        write_file(name, data, len / 2);
        struct media_info info;
        struct error err;
        int r = probe_file(name, samples[i].ext, &info, &err);
        assert_true(r == 0 || r == -ENODATA || r == -EBADMSG);
        free(data);
    }
}

/* Byte flips in real files: every outcome is a clean success or a clean error. */
static void test_mutated(void **state)
{
    (void)state;
    unsigned seed = 12345;
    for (size_t i = 0; i < nsamples; i++) {
        size_t len;
        uint8_t *data = read_file(samples[i].name, &len);
        uint8_t *copy = malloc(len);
        assert_non_null(copy);
        for (int round = 0; round < 400; round++) {
            memcpy(copy, data, len);
            int flips = 1 + rand_r(&seed) % 4;
            for (int f = 0; f < flips; f++) {
                size_t at = (size_t)rand_r(&seed) % len;
                /* favour the values that upset parsers most */
                static const uint8_t nasty[] = {0x00, 0xff, 0x01, 0x7f, 0x80};
                copy[at] = rand_r(&seed) % 2 ? nasty[rand_r(&seed) % 5] : (uint8_t)rand_r(&seed);
            }
            probe_checked(copy, len, samples[i].ext);
        }
        free(copy);
        free(data);
    }
}

static void test_random_bytes(void **state)
{
    (void)state;
    static const char *const exts[] = {"jpg", "cr3", "mp4", NULL};
    static const struct {
        const char *bytes;
        size_t len;
    } prefixes[] = {
        {"", 0},
        {"\xff\xd8\xff\xe1\x10\x00"
         "Exif\0\0",
         12},
        {"II*\0\x08\0\0\0", 8},
        {"MM\0*\0\0\0\x08", 8},
        {"IIRO\x08\0\0\0", 8},
        {"\0\0\0\x18"
         "ftypheic",
         12},
        {"\0\0\0\x18"
         "ftypcrx ",
         12},
        {"\0\0\0\x18"
         "ftypisom",
         12},
        {"FUJIFILMCCD-RAW 0201", 20},
        {"\x89PNG\r\n\x1a\n", 8},
        {"RIFF\0\x10\0\0WEBP", 12},
    };
    unsigned seed = 777;
    uint8_t buf[4096];
    for (size_t p = 0; p < sizeof(prefixes) / sizeof(prefixes[0]); p++) {
        for (int round = 0; round < 300; round++) {
            size_t len = (size_t)rand_r(&seed) % sizeof(buf);
            for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)rand_r(&seed);
            memcpy(buf, prefixes[p].bytes, prefixes[p].len < len ? prefixes[p].len : len);
            uint8_t *copy = malloc(len ? len : 1);
            assert_non_null(copy);
            memcpy(copy, buf, len);
            int r = probe_checked(copy, len, exts[round % 4]);
            if (p == 0)
                assert_true(r < 0); /* plain noise has no date */
            free(copy);
        }
    }
}

/* ---- hand-built structures ----------------------------------------------------------------- */

struct buf {
    uint8_t data[16384];
    size_t len;
};

static void put(struct buf *b, const void *p, size_t n)
{
    assert_true(n <= sizeof(b->data) - b->len);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put8(struct buf *b, unsigned v)
{
    uint8_t x = (uint8_t)v;
    put(b, &x, 1);
}

static void put16(struct buf *b, unsigned v, bool be)
{
    uint8_t x[2] = {(uint8_t)(be ? v >> 8 : v), (uint8_t)(be ? v : v >> 8)};
    put(b, x, 2);
}

static void put32(struct buf *b, uint32_t v, bool be)
{
    for (int i = 0; i < 4; i++)
        put8(b, be ? v >> (24 - 8 * i) : v >> (8 * i));
}

static void patch32be(struct buf *b, size_t at, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b->data[at + (size_t)i] = (uint8_t)(v >> (24 - 8 * i));
}

static size_t box_begin(struct buf *b, const char *type)
{
    size_t at = b->len;
    put32(b, 0, true);
    put(b, type, 4);
    return at;
}

static void box_end(struct buf *b, size_t at)
{
    patch32be(b, at, (uint32_t)(b->len - at));
}

struct tag {
    uint16_t tag;
    const char *value; /* ASCII */
};

static uint32_t tag_count(const struct tag *t)
{
    return (uint32_t)strlen(t->value) + 1;
}

/*
 * A TIFF structure: IFD0 with `ifd0` (plus a pointer to the EXIF IFD when `exif` is not empty),
 * the EXIF IFD, then the string values. Offsets are relative to the start of the structure.
 */
static void put_tiff(struct buf *b, bool be, const struct tag *ifd0, size_t n0,
                     const struct tag *exif, size_t n1)
{
    size_t start = b->len;
    uint32_t ifd0_off = 8, ifd0_n = (uint32_t)(n0 + (n1 ? 1 : 0));
    uint32_t exif_off = ifd0_off + 2 + 12 * ifd0_n + 4;
    uint32_t data_off = exif_off + (n1 ? 2 + 12 * (uint32_t)n1 + 4 : 0);
    uint32_t data = data_off;

    put(b, be ? "MM" : "II", 2);
    put16(b, 42, be);
    put32(b, ifd0_off, be);
    for (int ifd = 0; ifd < 2; ifd++) {
        const struct tag *tags = ifd ? exif : ifd0;
        size_t n = ifd ? n1 : n0;
        if (ifd == 1 && n == 0)
            break;
        put16(b, (unsigned)(n + (ifd == 0 && n1 ? 1 : 0)), be);
        for (size_t i = 0; i < n; i++) {
            uint32_t count = tag_count(&tags[i]);
            put16(b, tags[i].tag, be);
            put16(b, 2, be);
            put32(b, count, be);
            if (count <= 4) {
                uint8_t inline_value[4] = {0};
                memcpy(inline_value, tags[i].value, count);
                put(b, inline_value, 4);
            } else {
                put32(b, data, be);
                data += count;
            }
        }
        if (ifd == 0 && n1) {
            put16(b, 0x8769, be);
            put16(b, 4, be);
            put32(b, 1, be);
            put32(b, exif_off, be);
        }
        put32(b, 0, be); /* no next IFD */
    }
    assert_int_equal(b->len - start, data_off);
    for (int ifd = 0; ifd < 2; ifd++) {
        const struct tag *tags = ifd ? exif : ifd0;
        size_t n = ifd ? n1 : n0;
        for (size_t i = 0; i < n; i++)
            if (tag_count(&tags[i]) > 4)
                put(b, tags[i].value, tag_count(&tags[i]));
    }
}

static void put_jpeg(struct buf *b, const struct tag *ifd0, size_t n0, const struct tag *exif,
                     size_t n1)
{
    put(b, "\xff\xd8", 2);
    size_t app1 = b->len;
    put(b, "\xff\xe1\0\0Exif\0\0", 10);
    put_tiff(b, false, ifd0, n0, exif, n1);
    size_t seg = b->len - app1 - 2;
    b->data[app1 + 2] = (uint8_t)(seg >> 8);
    b->data[app1 + 3] = (uint8_t)seg;
    put(b, "\xff\xda\0\x02\xff\xd9", 6);
}

static int probe_buf(const struct buf *b, const char *ext, struct media_info *info,
                     struct error *err)
{
    /* exact-size copy so that out-of-bounds reads are caught */
    uint8_t *copy = malloc(b->len ? b->len : 1);
    assert_non_null(copy);
    memcpy(copy, b->data, b->len);
    int r = media_probe_buffer(copy, b->len, ext, info, err);
    free(copy);
    return r;
}

static void put_ftyp(struct buf *b, const char *major, const char *compat)
{
    size_t at = box_begin(b, "ftyp");
    put(b, major, 4);
    put32(b, 0, true);
    put(b, compat, strlen(compat));
    box_end(b, at);
}

static const uint8_t canon_uuid[16] = {0x85, 0xc0, 0xb6, 0x87, 0x82, 0x0f, 0x11, 0xe0,
                                       0x81, 0x11, 0xf4, 0xce, 0x46, 0x2b, 0x6a, 0x48};

/* A handler box of the given type: version, flags, pre_defined, type, reserved and an empty name.
 */
static void put_hdlr(struct buf *b, const char *type)
{
    size_t at = box_begin(b, "hdlr");
    put32(b, 0, true);
    put32(b, 0, true);
    put(b, type, 4);
    put(b, "\0\0\0\0\0\0\0\0\0\0\0\0\0", 13);
    box_end(b, at);
}

static void put_mvhd(struct buf *b, int version, uint64_t created)
{
    size_t at = box_begin(b, "mvhd");
    put32(b, (uint32_t)version << 24, true);
    if (version == 1) {
        put32(b, (uint32_t)(created >> 32), true);
        put32(b, (uint32_t)created, true);
        put32(b, 0, true);
        put32(b, 0, true);
    } else {
        put32(b, (uint32_t)created, true);
        put32(b, 0, true);
    }
    put32(b, 1000, true);
    for (int i = 0; i < 20; i++)
        put32(b, 0, true);
    box_end(b, at);
}

static void build_cr3(struct buf *b, const struct tag *cmt1, size_t n1, const struct tag *cmt2,
                      size_t n2)
{
    b->len = 0;
    put_ftyp(b, "crx ", "crx isom");
    size_t moov = box_begin(b, "moov");
    size_t uuid = box_begin(b, "uuid");
    put(b, canon_uuid, 16);
    size_t cncv = box_begin(b, "CNCV");
    put(b, "CanonCR3_001/00.09.00/00.00.00", 30);
    box_end(b, cncv);
    size_t c1 = box_begin(b, "CMT1");
    put_tiff(b, false, cmt1, n1, NULL, 0);
    box_end(b, c1);
    if (n2) {
        size_t c2 = box_begin(b, "CMT2");
        put_tiff(b, true, cmt2, n2, NULL, 0);
        box_end(b, c2);
    }
    box_end(b, uuid);
    put_mvhd(b, 0, 0);
    box_end(b, moov);
    size_t mdat = box_begin(b, "mdat");
    put(b, "raw sensor data", 15);
    box_end(b, mdat);
}

static void test_cr3(void **state)
{
    (void)state;
    static struct buf b;
    struct media_info info;
    struct error err;
    const struct tag ifd0[] = {{0x010f, "Canon"}, {0x0132, "2015:01:02 03:04:05"}};
    const struct tag exif[] = {{0x9003, "2016:07:08 09:10:11"}, {0x9011, "+09:00"}};
    const struct tag bad_exif[] = {{0x9003, "2016:13:08 09:10:11"}};

    build_cr3(&b, ifd0, 2, exif, 2);
    write_file("synthetic.cr3", b.data, b.len);
    assert_int_equal(probe_buf(&b, NULL, &info, &err), 0);
    assert_int_equal(info.kind, MEDIA_KIND_RAW);
    assert_int_equal(info.capture_time, utc(2016, 7, 8, 9, 10, 11));
    assert_int_equal(info.has_offset, 1);
    assert_int_equal(info.utc_offset, 9 * 3600);

    /* CMT1's DateTime when CMT2 is missing or its date is impossible */
    build_cr3(&b, ifd0, 2, NULL, 0);
    assert_int_equal(probe_buf(&b, "cr3", &info, &err), 0);
    assert_int_equal(info.capture_time, utc(2015, 1, 2, 3, 4, 5));
    assert_int_equal(info.has_offset, 0);
    build_cr3(&b, ifd0, 2, bad_exif, 1);
    assert_int_equal(probe_buf(&b, "cr3", &info, &err), 0);
    assert_int_equal(info.capture_time, utc(2015, 1, 2, 3, 4, 5));

    build_cr3(&b, ifd0, 1, NULL, 0);
    assert_int_equal(probe_buf(&b, "cr3", &info, &err), -EBADMSG); /* no CMT2 and no date */
    build_cr3(&b, ifd0, 1, bad_exif, 1);
    assert_int_equal(probe_buf(&b, "cr3", &info, &err), -ENODATA);
    assert_string_equal(err.msg, "no capture date in EXIF");
}

/*
 * A HEIF: ftyp, meta (hdlr, iinf with an image item and an Exif item, iloc, maybe idat), mdat.
 * infe_version 2 or 3 (16- or 32-bit item ids, iloc version 0 or 2); in_idat puts the Exif item
 * in idat (iloc version 1, construction method 1).
 */
static void build_heif(struct buf *b, int infe_version, bool in_idat, bool with_exif)
{
    const struct tag exif[] = {{0x9003, "2024:02:29 23:59:59"}, {0x9011, "-03:00"}};
    const struct tag ifd0[] = {{0x010f, "Apple"}};
    bool wide = infe_version == 3;
    int iloc_version = in_idat ? 1 : wide ? 2 : 0;
    struct buf item = {.len = 0};

    put32(&item, 6, true);
    put(&item, "Exif\0\0", 6);
    put_tiff(&item, true, ifd0, 1, exif, 2);

    b->len = 0;
    put_ftyp(b, "heic", "mif1heic");
    size_t meta = box_begin(b, "meta");
    put32(b, 0, true);
    put_hdlr(b, "pict");
    size_t pitm = box_begin(b, "pitm");
    put32(b, 0, true);
    put16(b, 1, true);
    box_end(b, pitm);

    size_t iinf = box_begin(b, "iinf");
    put32(b, 0, true);
    put16(b, with_exif ? 2 : 1, true);
    for (unsigned id = 1; id <= (with_exif ? 2u : 1u); id++) {
        size_t infe = box_begin(b, "infe");
        put32(b, (uint32_t)infe_version << 24, true);
        if (wide)
            put32(b, id, true);
        else
            put16(b, id, true);
        put16(b, 0, true);
        put(b, id == 1 ? "hvc1" : "Exif", 4);
        put8(b, 0);
        box_end(b, infe);
    }
    box_end(b, iinf);

    size_t iloc = box_begin(b, "iloc");
    put32(b, (uint32_t)iloc_version << 24, true);
    put8(b, 0x44); /* offset_size 4, length_size 4 */
    put8(b, 0x00); /* base_offset_size 0, index_size 0 */
    if (iloc_version == 2)
        put32(b, 2, true);
    else
        put16(b, 2, true);
    size_t patch[3] = {0};
    for (unsigned id = 1; id <= 2; id++) {
        if (iloc_version == 2)
            put32(b, id, true);
        else
            put16(b, id, true);
        if (iloc_version >= 1)
            put16(b, id == 2 && in_idat ? 1 : 0, true); /* construction method */
        put16(b, 0, true);                              /* data_reference_index */
        put16(b, 1, true);                              /* extent_count */
        patch[id] = b->len;
        put32(b, 0, true);
        put32(b, id == 2 ? (uint32_t)item.len : 4, true);
    }
    box_end(b, iloc);
    if (in_idat) {
        size_t idat = box_begin(b, "idat");
        put(b, "pad!", 4);
        patch32be(b, patch[2], 4); /* relative to the idat payload */
        put(b, item.data, item.len);
        box_end(b, idat);
    }
    box_end(b, meta);

    size_t mdat = box_begin(b, "mdat");
    patch32be(b, patch[1], (uint32_t)b->len);
    put(b, "hevc", 4);
    if (!in_idat) {
        patch32be(b, patch[2], (uint32_t)b->len);
        put(b, item.data, item.len);
    }
    box_end(b, mdat);
}

static void test_heif(void **state)
{
    (void)state;
    static struct buf b;
    struct media_info info;
    struct error err;
    const struct {
        int infe_version;
        bool in_idat;
    } cases[] = {{2, false}, {3, false}, {2, true}};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        build_heif(&b, cases[i].infe_version, cases[i].in_idat, true);
        char name[64];
        snprintf(name, sizeof(name), "synthetic-%zu.heic", i);
        write_file(name, b.data, b.len);
        memset(&info, 0, sizeof(info));
        int r = probe_buf(&b, "mp4", &info, &err);
        if (r != 0)
            fail_msg("case %zu: %d %s", i, r, err.msg);
        assert_int_equal(info.kind, MEDIA_KIND_PHOTO);
        assert_int_equal(info.capture_time, utc(2024, 2, 29, 23, 59, 59));
        assert_int_equal(info.has_offset, 1);
        assert_int_equal(info.utc_offset, -3 * 3600);
    }
    build_heif(&b, 2, false, false);
    assert_int_equal(probe_buf(&b, "heic", &info, &err), -ENODATA);
    assert_string_equal(err.msg, "no Exif item in HEIF");
}

static void test_raf(void **state)
{
    (void)state;
    static struct buf b, jpeg;
    struct media_info info;
    struct error err;
    const struct tag ifd0[] = {{0x010f, "FUJIFILM"}};
    const struct tag exif[] = {{0x9003, "2012:12:12 12:12:12"}};

    jpeg.len = 0;
    put_jpeg(&jpeg, ifd0, 1, exif, 1);
    b.len = 0;
    put(&b, "FUJIFILMCCD-RAW 0201FF383501", 28);
    while (b.len < 84)
        put8(&b, 0);
    put32(&b, 100, true);
    put32(&b, (uint32_t)jpeg.len, true);
    while (b.len < 100)
        put8(&b, 0);
    put(&b, jpeg.data, jpeg.len);
    put(&b, "CFA data", 8);
    write_file("synthetic.raf", b.data, b.len);
    assert_int_equal(probe_buf(&b, "raf", &info, &err), 0);
    assert_int_equal(info.kind, MEDIA_KIND_RAW);
    assert_int_equal(info.capture_time, utc(2012, 12, 12, 12, 12, 12));

    /* an embedded JPEG offset past the end */
    patch32be(&b, 84, 0x7fffffff);
    assert_int_equal(probe_buf(&b, "raf", &info, &err), -EBADMSG);
    assert_non_null(strstr(err.msg, "outside the file"));
}

/* The first TIFF entry with this tag in b (little-endian, as put_jpeg writes it). */
static size_t find_entry(const struct buf *b, uint16_t tag)
{
    for (size_t i = 0; i + 12 <= b->len; i++)
        if (b->data[i] == (tag & 0xff) && b->data[i + 1] == tag >> 8 && b->data[i + 2] == 2 &&
            b->data[i + 3] == 0)
            return i;
    fail_msg("no entry for tag 0x%04x", tag);
    return 0;
}

static void test_camera_text(void **state)
{
    (void)state;
    static struct buf b;
    struct media_info info;
    struct error err;
    char a62e[80], a61euro[80], a60emoji[80], a63[80], a60euro_b[80];

    /* 62 + 2 bytes: é does not fit; 61 + 3: € does not fit; 60 + 4: the emoji does not; 60 + 3 + 1:
     * € fits and B does not; 63: all fits. */
    snprintf(a62e, sizeof(a62e), "%.62s\xc3\xa9",
             "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    snprintf(a61euro, sizeof(a61euro), "%.61s\xe2\x82\xac", a62e);
    snprintf(a60emoji, sizeof(a60emoji), "%.60s\xf0\x9f\x98\x80", a62e);
    snprintf(a60euro_b, sizeof(a60euro_b),
             "%.60s\xe2\x82\xac"
             "B",
             a62e);
    snprintf(a63, sizeof(a63), "%.63s",
             "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB");
    const struct tag ifd0[] = {{0x010f, "  Canon  "},
                               {0x0110, "@@ Canon EOS R6 @@@junk"},
                               {0x0132, "2020:01:01 00:00:00"}};
    const struct tag exif[] = {
        {0x9003, "2021:02:03 04:05:06"},
        {0xa434, a62e},
        {0xa431, "   "},   /* only spaces: absent */
        {0xa433, "Canon"}, /* LensMake: not read */
    };
    b.len = 0;
    put_jpeg(&b, ifd0, 3, exif, 4);
    size_t at = find_bytes(b.data, b.len, "@@ Canon");
    memset(b.data + at, 0, 2); /* NULs around the model, and text after the first NUL */
    memset(b.data + at + 16, 0, 3);
    memset(&info, 0x5a, sizeof(info));
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
    assert_string_equal(info.make, "Canon");
    assert_string_equal(info.model, "Canon EOS R6");
    assert_memory_equal(info.lens, a62e, 62); /* the cut backs off before the lead byte of é */
    assert_int_equal(strlen(info.lens), 62);
    assert_string_equal(info.serial, "");

    const char *cut[][2] = {{a61euro, NULL}, {a60emoji, NULL}, {a60euro_b, NULL}, {a63, a63}};
    size_t want_len[] = {61, 60, 63, 63};
    for (size_t i = 0; i < 4; i++) {
        const struct tag one[] = {{0x0110, cut[i][0]}, {0x0132, "2020:01:01 00:00:00"}};
        b.len = 0;
        put_jpeg(&b, one, 2, NULL, 0);
        assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
        assert_int_equal(strlen(info.model), want_len[i]);
        assert_memory_equal(info.model, cut[i][0], want_len[i]);
    }

    /* The EXIF serial wins over a DNG's; the first Make wins; a thumbnail IFD's is not read
     * before the EXIF IFD's. */
    const struct tag dng0[] = {{0x010f, "Make"}, {0xc62f, "DNG-1"}, {0x010f, "Other"}};
    const struct tag dng_exif[] = {{0xa431, "BODY-2"}};
    b.len = 0;
    put_jpeg(&b, dng0, 3, dng_exif, 1);
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), -ENODATA); /* no date */
    assert_string_equal(info.make, "Make");
    assert_string_equal(info.serial, "BODY-2");
    assert_int_equal(info.capture_time, 0);
    b.len = 0;
    put_jpeg(&b, dng0, 3, NULL, 0);
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), -ENODATA);
    assert_string_equal(info.serial, "DNG-1");
    assert_string_equal(info.model, "");
    assert_string_equal(info.lens, "");

    /* Hostile counts and offsets: the entry is dropped, the rest of the IFD still counts. */
    const struct tag bad[] = {
        {0x010f, "Hostile make"}, {0x0110, "Good model"}, {0x0132, "2020:01:01 00:00:00"}};
    b.len = 0;
    put_jpeg(&b, bad, 3, NULL, 0);
    size_t e = find_entry(&b, 0x010f);
    memcpy(b.data + e + 4, "\xff\xff\xff\xff\xf0\xff\xff\xff", 8); /* count 2^32-1 at 2^32-16 */
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
    assert_string_equal(info.make, "");
    assert_string_equal(info.model, "Good model");
    memcpy(b.data + e + 4, "\xff\xff\x00\x00\x08\x00\x00\x00", 8); /* 65535 bytes at IFD0 */
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
    assert_string_equal(info.make, "");                            /* runs past the segment */
    memcpy(b.data + e + 4, "\x05\x00\x00\x00\x00\x00\x00\x00", 8); /* 5 bytes at 0: "II*\0\b" */
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
    assert_string_equal(info.make, "II*");
    b.data[e + 2] = 3; /* SHORT: not text */
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
    assert_string_equal(info.make, "");
}

/* One ASCII entry whose value lies at value_off (relative to the TIFF header at base). */
static void put_ascii_entry(struct buf *b, uint16_t tag, const char *v, uint32_t value_off, bool be)
{
    put16(b, tag, be);
    put16(b, 2, be);
    put32(b, (uint32_t)strlen(v) + 1, be);
    put32(b, value_off, be);
}

/*
 * A JPEG whose EXIF (little-endian) has Make (IFD0), DateTimeOriginal and a MakerNote (EXIF IFD):
 * Canon's form (a bare IFD with LensModel 0x0095, offsets from the EXIF header) or Nikon's
 * ("Nikon\0\2", its own big-endian TIFF header, SerialNumber 0x001d).
 */
static void build_maker_note(struct buf *b, const char *make, bool nikon, const char *text)
{
    const char *date = "2011:11:11 11:11:11";
    b->len = 0;
    put(b, "\xff\xd8\xff\xe1\0\0Exif\0\0", 12);
    size_t tiff = b->len;
    /* IFD0 at 8 (2 entries), EXIF IFD at 38 (2 entries), maker note at 68, strings after */
    put(b, "II*\0\x08\0\0\0", 8);
    size_t note = 68, note_len = nikon ? 10 + 8 + 18 + strlen(text) + 1 : 18 + strlen(text) + 1;
    uint32_t make_off = (uint32_t)(note + note_len),
             date_off = make_off + (uint32_t)strlen(make) + 1;
    put16(b, 2, false);
    put_ascii_entry(b, 0x010f, make, make_off, false);
    put16(b, 0x8769, false);
    put16(b, 4, false);
    put32(b, 1, false);
    put32(b, 38, false);
    put32(b, 0, false);
    put16(b, 2, false);
    put_ascii_entry(b, 0x9003, date, date_off, false);
    put16(b, 0x927c, false);
    put16(b, 7, false);
    put32(b, (uint32_t)note_len, false);
    put32(b, (uint32_t)note, false);
    put32(b, 0, false);
    assert_int_equal(b->len - tiff, note);
    if (nikon) {
        put(b, "Nikon\0\x02\x10\0\0", 10);
        put(b, "MM\0*\0\0\0\x08", 8);
        put16(b, 1, true);
        put_ascii_entry(b, 0x001d, text, 8 + 18, true);
        put32(b, 0, true);
    } else {
        put16(b, 1, false);
        put_ascii_entry(b, 0x0095, text, (uint32_t)note + 18, false);
        put32(b, 0, false);
    }
    put(b, text, strlen(text) + 1);
    put(b, make, strlen(make) + 1);
    put(b, date, strlen(date) + 1);
    size_t seg = b->len - 4;
    b->data[4] = (uint8_t)(seg >> 8);
    b->data[5] = (uint8_t)seg;
    put(b, "\xff\xda\0\x02\xff\xd9", 6);
}

static void test_maker_notes(void **state)
{
    (void)state;
    static struct buf b;
    struct media_info info;
    struct error err;

    build_maker_note(&b, "Canon", false, "EF24-105mm f/4L IS USM");
    write_file("canon-makernote.jpg", b.data, b.len);
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
    assert_int_equal(info.capture_time, utc(2011, 11, 11, 11, 11, 11));
    assert_string_equal(info.make, "Canon");
    assert_string_equal(info.lens, "EF24-105mm f/4L IS USM");
    assert_string_equal(info.serial, "");

    build_maker_note(&b, "NIKON CORPORATION", true, "6012345");
    write_file("nikon-makernote.jpg", b.data, b.len);
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
    assert_string_equal(info.serial, "6012345");
    assert_string_equal(info.lens, "");

    /* Canon's form under another make is not Canon's */
    build_maker_note(&b, "Canom", false, "EF24-105mm f/4L IS USM");
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
    assert_string_equal(info.lens, "");

    /* A broken maker note changes nothing else: an IFD count past the segment, a Nikon TIFF
     * header that is not one, a maker note offset outside the EXIF. */
    build_maker_note(&b, "Canon", false, "EF24-105mm f/4L IS USM");
    size_t note = 12 + 68;
    b.data[note] = 0xff;
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
    assert_string_equal(info.lens, "");
    assert_string_equal(info.make, "Canon");
    build_maker_note(&b, "NIKON CORPORATION", true, "6012345");
    b.data[note + 10] = 'X';
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
    assert_string_equal(info.serial, "");
    b.data[note + 10] = 'M';
    b.data[12 + 38 + 2 + 12 + 8] = 0xf0; /* the MakerNote's offset */
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
    assert_string_equal(info.serial, "");
    assert_int_equal(info.capture_time, utc(2011, 11, 11, 11, 11, 11));
}

static void put_qt_text(struct buf *b, const char *type, const char *text, unsigned len_field)
{
    size_t at = box_begin(b, type);
    put16(b, len_field, true);
    put16(b, 0x55c4, true); /* language */
    put(b, text, strlen(text));
    box_end(b, at);
}

static void put_data_box(struct buf *b, uint32_t type, const char *text)
{
    size_t at = box_begin(b, "data");
    put32(b, type, true);
    put32(b, 0, true);
    put(b, text, strlen(text));
    box_end(b, at);
}

/* A movie whose moov holds the mvhd (dated), then the boxes that build() adds. */
static void build_movie(struct buf *b, void (*build)(struct buf *, int), int variant)
{
    b->len = 0;
    put_ftyp(b, "qt  ", "qt  ");
    size_t moov = box_begin(b, "moov");
    put_mvhd(b, 0, UINT64_C(2082844800) + (uint64_t)utc(2030, 6, 1, 12, 0, 0));
    build(b, variant);
    box_end(b, moov);
    size_t mdat = box_begin(b, "mdat");
    put(b, "frames", 6);
    box_end(b, mdat);
}

/* QuickTime keys: variant 0 as Apple writes them (meta without version), 1 a FullBox meta, 2 a
 * hostile key count and an ilst index past the keys, 3 a text of type UTF-16 (not read). */
static void build_keys(struct buf *b, int variant)
{
    size_t meta = box_begin(b, "meta");
    if (variant == 1)
        put32(b, 0, true);
    put_hdlr(b, "mdta");
    size_t keys = box_begin(b, "keys");
    put32(b, 0, true);
    put32(b, variant == 2 ? 0xffffffffu : 3, true);
    const char *names[] = {"com.apple.quicktime.software", "com.apple.quicktime.make",
                           "com.apple.quicktime.model"};
    for (int i = 0; i < 3; i++) {
        put32(b, 8 + (uint32_t)strlen(names[i]), true);
        put(b, "mdta", 4);
        put(b, names[i], strlen(names[i]));
    }
    box_end(b, keys);
    size_t ilst = box_begin(b, "ilst");
    for (uint32_t idx = 1; idx <= 4; idx++) {
        size_t item = b->len;
        put32(b, 0, true);
        put32(b, variant == 2 && idx == 3 ? 9999 : idx, true);
        const char *v[] = {"17.1", "  Apple", "iPhone 15 Pro  ", "extra"};
        put_data_box(b, variant == 3 ? 2 : 1, v[idx - 1]);
        box_end(b, item);
    }
    box_end(b, ilst);
    box_end(b, meta);
}

static void put_klv(struct buf *b, const char *key, char type, unsigned size, unsigned repeat,
                    const void *value)
{
    put(b, key, 4);
    put8(b, (unsigned)type);
    put8(b, size);
    put16(b, repeat, true);
    put(b, value, (size_t)size * repeat);
    while (b->len % 4)
        put8(b, 0);
}

/* GoPro's udta GPMF: a DEVC with the camera's settings (bad: a DEVC entry whose size runs past the
 * container, then a second DEVC with the model), then an entry at the top level. */
static void put_gpmf(struct buf *b, bool bad)
{
    size_t gpmf = box_begin(b, "GPMF");
    size_t devc = b->len;
    put_klv(b, "DEVC", 0, 0, 0, NULL);
    put_klv(b, "DVID", 'L', 4, 1, "\0\0\0\1");
    put_klv(b, "DVNM", 'c', 1, 15, "Global Settings");
    if (bad)
        put_klv(b, "VERS", 'B', 200, 1, (char[200]){0}); /* patched below to run past DEVC */
    put_klv(b, "CASN", 'c', 1, 14, "C3441325084524");
    put_klv(b, "MINF", 'c', 1, 11, bad ? "HERO0 Wrong" : "HERO9 Black");
    size_t size = b->len - devc - 8;
    b->data[devc + 5] = 1;
    b->data[devc + 6] = (uint8_t)(size >> 8);
    b->data[devc + 7] = (uint8_t)size;
    if (bad) {
        b->data[devc + 8 + 12 + 24 + 6] = 0x10; /* VERS repeat 4096 */
        size_t devc2 = b->len;
        put_klv(b, "DEVC", 0, 0, 0, NULL);
        put_klv(b, "MINF", 'c', 11, 1, "HERO9 Black");
        b->data[devc2 + 5] = 1;
        b->data[devc2 + 7] = (uint8_t)(b->len - devc2 - 8);
    }
    put_klv(b, "FMWR", 'c', 1, 15, "HD9.01.01.60.00");
    box_end(b, gpmf);
}

/* udta: variant 0 QuickTime texts, 1 an item list data box instead (not read, as by exiftool), 2 a
 * length field past the box (the text is clipped to it), 3 Canon's CNMN and a Canon uuid with
 * CMT1/CMT2 (whose Model wins), 4 CNMN alone, 5 GoPro's GPMF, 6 a malformed one. */
static void build_udta(struct buf *b, int variant)
{
    size_t udta = box_begin(b, "udta");
    if (variant == 0 || variant == 2) {
        put_qt_text(b, "\xa9mak", "Panasonic", variant == 2 ? 0xffff : 9);
        put_qt_text(b, "\xa9mod", "DC-GH6", 6);
    } else if (variant == 5 || variant == 6) {
        put_gpmf(b, variant == 6);
    } else if (variant == 1) { /* (c)mak with an item list data box: not QuickTime's form */
        size_t mak = box_begin(b, "\xa9mak");
        put_data_box(b, 1, "GoPro");
        box_end(b, mak);
    } else {
        size_t cnmn = box_begin(b, "CNMN");
        put(b, "Canon EOS R6\0\0\0\0", 16);
        box_end(b, cnmn);
    }
    box_end(b, udta);
    if (variant == 3) {
        const struct tag cmt1[] = {{0x010f, "Canon"}, {0x0110, "Canon EOS R6 (CMT1)"}};
        const struct tag cmt2[] = {{0xa434, "RF50mm F1.8 STM"}, {0xa431, "083021001234"}};
        size_t uuid = box_begin(b, "uuid");
        put(b, canon_uuid, 16);
        size_t c1 = box_begin(b, "CMT1");
        put_tiff(b, false, cmt1, 2, NULL, 0);
        box_end(b, c1);
        size_t c2 = box_begin(b, "CMT2");
        put_tiff(b, true, cmt2, 2, NULL, 0);
        box_end(b, c2);
        box_end(b, uuid);
    }
}

/* A Sony XAVC S movie: moov, then a top-level FullBox meta with hdlr 'nrtm' and the
 * NonRealTimeMeta XML; in_moov puts the meta in the moov instead. */
static void build_sony(struct buf *b, const char *device, bool in_moov)
{
    char xml[1024];
    int n =
        snprintf(xml, sizeof(xml),
                 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                 "<NonRealTimeMeta xmlns=\"urn:schemas-professionalDisc:nonRealTimeMeta:ver.2.20\""
                 " lastUpdate=\"2024-03-01T10:00:00+01:00\">\n"
                 "\t<Duration value=\"250\"/>\n"
                 "\t<CreationDate value=\"2024-03-01T10:00:00+01:00\"/>\n"
                 "\t%s\n"
                 "\t<RecordingMode type=\"normal\" cacheRec=\"false\"/>\n"
                 "</NonRealTimeMeta>\n",
                 device);
    assert_true(n > 0 && (size_t)n < sizeof(xml));
    b->len = 0;
    put_ftyp(b, "XAVC", "XAVCmp42iso2");
    size_t moov = box_begin(b, "moov");
    put_mvhd(b, 0, UINT64_C(2082844800) + (uint64_t)utc(2030, 6, 1, 12, 0, 0));
    if (!in_moov)
        box_end(b, moov);
    size_t meta = box_begin(b, "meta");
    put32(b, 0, true);
    put_hdlr(b, "nrtm");
    size_t x = box_begin(b, "xml ");
    put32(b, 0, true);
    put(b, xml, (size_t)n);
    box_end(b, x);
    box_end(b, meta);
    if (in_moov)
        box_end(b, moov);
    size_t mdat = box_begin(b, "mdat");
    put(b, "frames", 6);
    box_end(b, mdat);
}

static void test_camera_sony(void **state)
{
    (void)state;
    static struct buf b;
    struct media_info info;
    struct error err;
    const char *dev = "<Device manufacturer=\"Sony\" modelName=\"ILCE-7M4\" serialNo=\"0123456\"/>";

    for (int in_moov = 0; in_moov < 2; in_moov++) {
        build_sony(&b, dev, in_moov);
        write_file(in_moov ? "sony-moov.mp4" : "sony.mp4", b.data, b.len);
        assert_int_equal(probe_buf(&b, "mp4", &info, &err), 0);
        assert_string_equal(info.make, "Sony");
        assert_string_equal(info.model, "ILCE-7M4");
        assert_string_equal(info.serial, "0123456");
        assert_int_equal(info.capture_time, utc(2030, 6, 1, 12, 0, 0));
    }
    /* an element cut before its end, an attribute without its closing quote, another element */
    const char *bad[] = {"<Device manufacturer=\"Sony\"", "<Device modelName=\"ILCE-7M4/>",
                         "<Devices manufacturer=\"Sony\"/>"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        build_sony(&b, bad[i], false);
        assert_int_equal(probe_buf(&b, "mp4", &info, &err), 0);
        assert_string_equal(info.make, i == 0 ? "Sony" : "");
        assert_string_equal(info.model, "");
    }
}

static void test_camera_movie(void **state)
{
    (void)state;
    static struct buf b;
    struct media_info info;
    struct error err;
    const int64_t t = utc(2030, 6, 1, 12, 0, 0);
    const struct {
        void (*build)(struct buf *, int);
        int variant;
        const char *make, *model, *lens, *serial;
    } cases[] = {
        {build_keys, 0, "Apple", "iPhone 15 Pro", "", ""},
        {build_keys, 1, "Apple", "iPhone 15 Pro", "", ""},
        {build_keys, 2, "Apple", "", "", ""},
        {build_keys, 3, "", "", "", ""},
        {build_udta, 0, "Panasonic", "DC-GH6", "", ""},
        {build_udta, 1, "", "", "", ""},
        {build_udta, 2, "Panasonic", "DC-GH6", "", ""},
        {build_udta, 3, "Canon", "Canon EOS R6 (CMT1)", "RF50mm F1.8 STM", "083021001234"},
        {build_udta, 4, "", "Canon EOS R6", "", ""},
        {build_udta, 5, "", "HERO9 Black", "", "C3441325084524"},
        {build_udta, 6, "", "HERO9 Black", "", ""},
    };
    set_tz("UTC0");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        build_movie(&b, cases[i].build, cases[i].variant);
        char name[64];
        snprintf(name, sizeof(name), "camera-%zu.mov", i);
        write_file(name, b.data, b.len);
        memset(&info, 0x5a, sizeof(info));
        int r = probe_buf(&b, "mov", &info, &err);
        if (r != 0)
            fail_msg("case %zu: %d %s", i, r, err.msg);
        assert_int_equal(info.capture_time, t);
        assert_int_equal(info.kind, MEDIA_KIND_VIDEO);
        assert_string_equal(info.make, cases[i].make);
        assert_string_equal(info.model, cases[i].model);
        assert_string_equal(info.lens, cases[i].lens);
        assert_string_equal(info.serial, cases[i].serial);
    }

    /* A malformed camera box changes neither the result nor, without a date, the message. */
    build_movie(&b, build_udta, 0);
    b.data[find_bytes(b.data, b.len, "\xa9mak") - 1] = 0xff; /* its size runs past udta */
    assert_int_equal(probe_buf(&b, "mov", &info, &err), 0);
    assert_string_equal(info.make, "");
    assert_int_equal(info.capture_time, t);
    size_t mvhd = find_bytes(b.data, b.len, "mvhd");
    memset(b.data + mvhd + 8, 0, 4); /* creation time 0 */
    assert_int_equal(probe_buf(&b, "mov", &info, &err), -ENODATA);
    assert_string_equal(err.msg, "mvhd creation time is not set");
    assert_int_equal(info.capture_time, 0);
}

static void test_mvhd_variants(void **state)
{
    (void)state;
    static struct buf b;
    struct media_info info;
    struct error err;
    const uint64_t qt = UINT64_C(2082844800);
    int64_t t = utc(2030, 6, 1, 12, 0, 0);

    b.len = 0;
    put_ftyp(&b, "isom", "isomiso2mp41");
    size_t mdat = box_begin(&b, "mdat");
    put(&b, "frames", 6);
    box_end(&b, mdat);
    size_t moov = box_begin(&b, "moov");
    put_mvhd(&b, 1, qt + (uint64_t)t);
    box_end(&b, moov);
    assert_int_equal(probe_buf(&b, "mp4", &info, &err), 0);
    assert_int_equal(info.capture_time, t);
    assert_int_equal(info.kind, MEDIA_KIND_VIDEO);

    b.len = moov; /* creation time before 1970 */
    moov = box_begin(&b, "moov");
    put_mvhd(&b, 0, 1000);
    box_end(&b, moov);
    assert_int_equal(probe_buf(&b, "mp4", &info, &err), -ENODATA);

    b.data[moov + 16] = 7; /* mvhd version 7 */
    assert_int_equal(probe_buf(&b, "mp4", &info, &err), -EBADMSG);
    assert_non_null(strstr(err.msg, "mvhd version"));

    b.len = moov; /* moov without mvhd */
    moov = box_begin(&b, "moov");
    size_t trak = box_begin(&b, "trak");
    box_end(&b, trak);
    box_end(&b, moov);
    assert_int_equal(probe_buf(&b, "mov", &info, &err), -EBADMSG);
    assert_string_equal(err.msg, "no 'mvhd' box in 'moov'");

    b.len = moov; /* no moov at all: a recording cut off before it was written */
    assert_int_equal(probe_buf(&b, "mp4", &info, &err), -EBADMSG);
    assert_string_equal(err.msg, "no 'moov' box in file");
}

/* A reader for a file that mostly does not exist: a 5 GB mdat (64-bit size) between a small
 * head and a moov at the end. Any read inside the mdat payload is a test failure. */
struct sparse {
    const uint8_t *head;
    size_t head_len;
    const uint8_t *tail;
    size_t tail_len;
    uint64_t size;
    uint64_t bytes;
    int reads;
    int fail_after; /* -EIO from this read on; 0: never */
    bool touched_gap;
};

static long sparse_read_at(void *ctx, uint64_t off, void *buf, size_t len)
{
    struct sparse *s = ctx;
    if (s->fail_after && ++s->reads >= s->fail_after)
        return -EIO;
    if (off >= s->size)
        return 0;
    if (off < s->head_len) {
        size_t n = s->head_len - off < len ? s->head_len - (size_t)off : len;
        memcpy(buf, s->head + off, n);
        s->bytes += n;
        return (long)n;
    }
    uint64_t tail_at = s->size - s->tail_len;
    if (off >= tail_at) {
        size_t n = s->size - off < len ? (size_t)(s->size - off) : len;
        memcpy(buf, s->tail + (off - tail_at), n);
        s->bytes += n;
        return (long)n;
    }
    s->touched_gap = true;
    memset(buf, 0, len);
    s->bytes += len;
    return (long)len;
}

static void test_moov_after_huge_mdat(void **state)
{
    (void)state;
    static struct buf head, tail;
    struct media_info info;
    struct error err;
    const uint64_t mdat_size = UINT64_C(5) << 30;
    int64_t t = utc(2025, 3, 3, 3, 3, 3);

    head.len = 0;
    put_ftyp(&head, "qt  ", "qt  ");
    size_t mdat_at = head.len;
    put32(&head, 1, true);
    put(&head, "mdat", 4);
    put32(&head, (uint32_t)(mdat_size >> 32), true);
    put32(&head, (uint32_t)mdat_size, true);
    tail.len = 0;
    size_t moov = box_begin(&tail, "moov");
    put_mvhd(&tail, 0, UINT64_C(2082844800) + (uint64_t)t);
    box_end(&tail, moov);

    struct sparse s = {.head = head.data,
                       .head_len = head.len,
                       .tail = tail.data,
                       .tail_len = tail.len,
                       .size = mdat_at + mdat_size + tail.len};
    struct media_reader rd = {.read_at = sparse_read_at, .ctx = &s, .size = s.size};
    assert_int_equal(media_probe(&rd, "mov", &info, &err), 0);
    assert_int_equal(info.capture_time, t);
    assert_false(s.touched_gap);
    assert_true(s.bytes < 512);

    /* read errors come back as they are */
    struct sparse failing = s;
    failing.fail_after = 3;
    assert_int_equal(media_probe(&rd, "mov", &info, &err), 0);
    rd.ctx = &failing;
    assert_int_equal(media_probe(&rd, "mov", &info, &err), -EIO);
    assert_non_null(strstr(err.msg, "Input/output error"));
}

/* A "file" of 1 GB made only of 8-byte 'free' boxes, or of TIFF IFDs that each point to the
 * next one: the caps stop the walk long before MEDIA_PROBE_MAX_BYTES. */
struct pattern {
    int kind;
    uint64_t size;
    uint64_t bytes;
};

static long pattern_read_at(void *ctx, uint64_t off, void *buf, size_t len)
{
    struct pattern *p = ctx;
    uint8_t *out = buf;
    for (size_t i = 0; i < len; i++) {
        uint64_t at = off + i;
        if (p->kind == 0) { /* boxes */
            static const uint8_t box[8] = {0, 0, 0, 8, 'f', 'r', 'e', 'e'};
            out[i] = box[at % 8];
        } else { /* "II*\0", IFD0 at 8; IFD k at 8 + 16384 k, 1000 entries, next = IFD k+1 */
            static const uint8_t hdr[8] = {'I', 'I', 42, 0, 8, 0, 0, 0};
            if (at < 8) {
                out[i] = hdr[at];
                continue;
            }
            uint64_t k = (at - 8) / 16384, rel = (at - 8) % 16384;
            uint32_t next = (uint32_t)(8 + 16384 * (k + 1));
            if (rel < 2)
                out[i] = (uint8_t)(1000 >> (8 * rel));
            else if (rel >= 12002 && rel < 12006)
                out[i] = (uint8_t)(next >> (8 * (rel - 12002)));
            else if (rel < 12002)
                out[i] = 0x55; /* entries with tag 0x5555: ignored */
            else
                out[i] = 0;
        }
    }
    p->bytes += len;
    return (long)len;
}

static void test_caps(void **state)
{
    (void)state;
    struct media_info info;
    struct error err;
    struct pattern p = {.kind = 0, .size = UINT64_C(1) << 30};
    struct media_reader rd = {.read_at = pattern_read_at, .ctx = &p, .size = p.size};

    assert_int_equal(media_probe(&rd, "mp4", &info, &err), -EBADMSG);
    assert_string_equal(err.msg, "no 'moov' box in file");
    assert_true(p.bytes <= 4096 * 8 + 64);

    p = (struct pattern){.kind = 1, .size = UINT64_C(1) << 30};
    assert_int_equal(media_probe(&rd, "tif", &info, &err), -ENODATA);
    assert_true(p.bytes <= 64 * (2 + 1000 * 12 + 4) + 64);
    assert_true(p.bytes <= MEDIA_PROBE_MAX_BYTES);
}

static void test_tiff_loops_and_limits(void **state)
{
    (void)state;
    static struct buf b;
    struct media_info info;
    struct error err;

    /* IFD0 whose next pointer is itself, with an EXIF IFD pointing back to IFD0 */
    b.len = 0;
    put(&b, "II*\0\x08\0\0\0", 8);
    put16(&b, 1, false);
    put16(&b, 0x8769, false);
    put16(&b, 4, false);
    put32(&b, 1, false);
    put32(&b, 8, false);
    put32(&b, 8, false);
    assert_int_equal(probe_buf(&b, "tif", &info, &err), -ENODATA);

    /* two IFDs pointing at each other */
    b.len = 0;
    put(&b, "MM\0*\0\0\0\x08", 8);
    put16(&b, 0, true);
    put32(&b, 14, true);
    put16(&b, 0, true);
    put32(&b, 8, true);
    assert_int_equal(probe_buf(&b, "tif", &info, &err), -ENODATA);

    /* more entries than the limit */
    b.len = 0;
    put(&b, "II*\0\x08\0\0\0", 8);
    put16(&b, 2000, false);
    assert_int_equal(probe_buf(&b, "tif", &info, &err), -EBADMSG);
    assert_non_null(strstr(err.msg, "2000 entries"));

    /* an IFD that runs past the end */
    b.len = 0;
    put(&b, "II*\0\x08\0\0\0", 8);
    put16(&b, 3, false);
    put16(&b, 0x0132, false);
    assert_int_equal(probe_buf(&b, "tif", &info, &err), -EBADMSG);
    assert_string_equal(err.msg, "truncated TIFF IFD at offset 10");

    /* a date value pointing outside the TIFF, then a good one: the good one is used */
    b.len = 0;
    put(&b, "II*\0\x08\0\0\0", 8);
    put16(&b, 2, false);
    put16(&b, 0x9003, false);
    put16(&b, 2, false);
    put32(&b, 20, false);
    put32(&b, 0xfffffff0, false);
    put16(&b, 0x0132, false);
    put16(&b, 2, false);
    put32(&b, 20, false);
    put32(&b, 38, false);
    put32(&b, 0, false);
    put(&b, "2011:11:11 11:11:11", 20);
    assert_int_equal(probe_buf(&b, "tif", &info, &err), 0);
    assert_int_equal(info.capture_time, utc(2011, 11, 11, 11, 11, 11));
}

static void test_dates(void **state)
{
    (void)state;
    static struct buf b;
    struct media_info info;
    struct error err;
    const struct {
        const char *value;
        int64_t expect; /* -1: no date */
    } cases[] = {
        {"2023:07:14 18:30:05", utc(2023, 7, 14, 18, 30, 5)},
        {"2024:02:29 10:00:00", utc(2024, 2, 29, 10, 0, 0)},
        {"2000:02:29 00:00:00", utc(2000, 2, 29, 0, 0, 0)},
        {"1970:01:01 00:00:00", 0},
        {"2199:12:31 23:59:59", utc(2199, 12, 31, 23, 59, 59)},
        {"2023-07-14T18:30:05", utc(2023, 7, 14, 18, 30, 5)},
        {"2023:07:14 18:30:05.123", utc(2023, 7, 14, 18, 30, 5)},
        {"2023:02:29 10:00:00", -1},
        {"1900:02:29 10:00:00", -1},
        {"2023:13:01 00:00:00", -1},
        {"2023:00:10 00:00:00", -1},
        {"2023:04:31 00:00:00", -1},
        {"2023:07:14 24:00:00", -1},
        {"2023:07:14 12:60:00", -1},
        {"1969:12:31 23:59:59", -1},
        {"2200:01:01 00:00:00", -1},
        {"0000:00:00 00:00:00", -1},
        {"    :  :     :  :  ", -1},
        {"2023:07:14", -1},
        {"2023:07-14 18:30:05", -1},
        {"+023:07:14 18:30:05", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct tag exif[] = {{0x9003, cases[i].value}};
        b.len = 0;
        put_jpeg(&b, NULL, 0, exif, 1);
        int r = probe_buf(&b, "jpg", &info, &err);
        if (cases[i].expect < 0) {
            if (r != -ENODATA)
                fail_msg("'%s': expected no date, got %d", cases[i].value, r);
        } else {
            if (r != 0 || info.capture_time != cases[i].expect)
                fail_msg("'%s': got %d %lld", cases[i].value, r, (long long)info.capture_time);
        }
    }

    /* Preference: original, then digitized, then IFD0's DateTime; each with its own offset. */
    const struct tag ifd0[] = {{0x0132, "2003:03:03 03:03:03"}, {0x9010, "+03:00"}};
    const struct tag all[] = {{0x9004, "2002:02:02 02:02:02"},
                              {0x9003, "2001:01:01 01:01:01"},
                              {0x9012, "+02:00"},
                              {0x9011, "+14:00"}};
    b.len = 0;
    put_jpeg(&b, ifd0, 2, all, 4);
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
    assert_int_equal(info.capture_time, utc(2001, 1, 1, 1, 1, 1));
    assert_int_equal(info.utc_offset, 14 * 3600);
    b.len = 0;
    put_jpeg(&b, ifd0, 2, all, 1);
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
    assert_int_equal(info.capture_time, utc(2002, 2, 2, 2, 2, 2));
    assert_int_equal(info.has_offset, 0);
    b.len = 0;
    put_jpeg(&b, ifd0, 2, NULL, 0);
    assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
    assert_int_equal(info.capture_time, utc(2003, 3, 3, 3, 3, 3));
    assert_int_equal(info.utc_offset, 3 * 3600);

    /* impossible offsets are ignored, the date stays */
    const char *bad_offsets[] = {"+15:00", "+02:60", "02:00", "+2:00", "", "Z"};
    for (size_t i = 0; i < sizeof(bad_offsets) / sizeof(bad_offsets[0]); i++) {
        const struct tag exif[] = {{0x9003, "2001:01:01 01:01:01"}, {0x9011, bad_offsets[i]}};
        b.len = 0;
        put_jpeg(&b, NULL, 0, exif, 2);
        assert_int_equal(probe_buf(&b, "jpg", &info, &err), 0);
        assert_int_equal(info.has_offset, 0);
        assert_int_equal(info.utc_offset, 0);
    }
}

static void test_formats_without_dates(void **state)
{
    (void)state;
    static uint8_t ts[400];
    struct media_info info;
    struct error err;
    const uint8_t avi[] = "RIFF\x10\0\0\0AVI LIST";
    const uint8_t mkv[] = "\x1a\x45\xdf\xa3\x9f\x42\x86\x81";
    const uint8_t gif[] = "GIF89a\x01\0\x01\0";

    assert_int_equal(media_probe_buffer(avi, sizeof(avi) - 1, "avi", &info, &err), -ENODATA);
    assert_int_equal(media_probe_buffer(mkv, sizeof(mkv) - 1, "mkv", &info, &err), -ENODATA);
    assert_int_equal(media_probe_buffer(gif, sizeof(gif) - 1, "gif", &info, &err), -ENODATA);
    for (size_t i = 0; i < sizeof(ts); i += 192)
        ts[i + 4] = 0x47;
    assert_int_equal(media_probe_buffer(ts, sizeof(ts), "mts", &info, &err), -ENODATA);
    assert_non_null(strstr(err.msg, "transport stream"));

    assert_int_equal(media_probe_buffer(NULL, 0, "jpg", &info, &err), -EBADMSG);
    assert_string_equal(err.msg, "empty file");
    assert_int_equal(media_probe_buffer((const uint8_t *)"hello", 5, "jpg", &info, &err), -EBADMSG);
    assert_string_equal(err.msg, "unrecognised file format");
    /* a NULL error struct is fine */
    assert_int_equal(media_probe_buffer((const uint8_t *)"hello", 5, "jpg", &info, NULL), -EBADMSG);
}

static void test_jpeg_markers(void **state)
{
    (void)state;
    static struct buf b;
    struct media_info info;
    struct error err;

    /* fill bytes, RST markers and a non-EXIF APP1 (XMP) before the EXIF one */
    const struct tag exif[] = {{0x9003, "2010:10:10 10:10:10"}};
    struct buf *j = &b;
    j->len = 0;
    put(j, "\xff\xd8\xff\xff\xff\xd0", 6);
    put(j, "\xff\xe1\0\x08http:/", 10);
    static struct buf tail;
    tail.len = 0;
    put_jpeg(&tail, NULL, 0, exif, 1);
    put(j, tail.data + 2, tail.len - 2);
    assert_int_equal(probe_buf(j, "jpg", &info, &err), 0);
    assert_int_equal(info.capture_time, utc(2010, 10, 10, 10, 10, 10));

    /* garbage where a marker should be */
    j->len = 0;
    put(j, "\xff\xd8\xff\xe0\0\x04xx\x12\x34", 10);
    assert_int_equal(probe_buf(j, "jpg", &info, &err), -EBADMSG);
    assert_string_equal(err.msg, "bad JPEG marker at offset 8");

    /* endless fill bytes: the marker cap ends it */
    j->len = 0;
    put(j, "\xff\xd8", 2);
    while (j->len < 4000)
        put8(j, 0xff);
    assert_int_equal(probe_buf(j, "jpg", &info, &err), -ENODATA);
    assert_string_equal(err.msg, "no EXIF in JPEG");
}

static void test_kind_from_ext(void **state)
{
    (void)state;
    const char *photo[] = {"jpg", "JPG", "jpeg", "heic", "HEIF", "png", "tif", "tiff", "avif"};
    const char *raw[] = {"cr2", "CR3", "nef", "nrw", "arw", "sr2", "srf", "dng", "orf", "rw2",
                         "pef", "raf", "srw", "3fr", "erf", "kdc", "mef", "mos", "iiq", "x3f"};
    const char *video[] = {"mp4", "MOV", "m4v", "3gp", "avi", "mts", "m2ts", "mkv"};
    const char *other[] = {"", "txt", "jpgx", "xmp", "thm", "lrv"};

    for (size_t i = 0; i < sizeof(photo) / sizeof(photo[0]); i++)
        assert_int_equal(media_kind_from_ext(photo[i]), MEDIA_KIND_PHOTO);
    for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++)
        assert_int_equal(media_kind_from_ext(raw[i]), MEDIA_KIND_RAW);
    for (size_t i = 0; i < sizeof(video) / sizeof(video[0]); i++)
        assert_int_equal(media_kind_from_ext(video[i]), MEDIA_KIND_VIDEO);
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
        assert_int_equal(media_kind_from_ext(other[i]), MEDIA_KIND_UNKNOWN);
    assert_int_equal(media_kind_from_ext(NULL), MEDIA_KIND_UNKNOWN);

    assert_string_equal(media_kind_to_string(MEDIA_KIND_PHOTO), "photo");
    assert_string_equal(media_kind_to_string(MEDIA_KIND_RAW), "raw");
    assert_string_equal(media_kind_to_string(MEDIA_KIND_VIDEO), "video");
    assert_string_equal(media_kind_to_string(MEDIA_KIND_UNKNOWN), "unknown");
    assert_string_equal(media_kind_to_string((enum media_kind)42), "unknown");
}

static void test_date_path(void **state)
{
    (void)state;
    char buf[32];

    media_date_path(0, buf, sizeof(buf));
    assert_string_equal(buf, "1970/01/01");
    media_date_path(utc(2023, 7, 14, 23, 59, 59), buf, sizeof(buf));
    assert_string_equal(buf, "2023/07/14");
    media_date_path(utc(2024, 2, 29, 0, 0, 0), buf, 11);
    assert_string_equal(buf, "2024/02/29");
    media_date_path(utc(2024, 2, 29, 0, 0, 0), buf, 5);
    assert_string_equal(buf, "2024");
    buf[0] = 'x';
    media_date_path(0, buf, 0);
    assert_int_equal(buf[0], 'x');
}

/* media_floating_time is what callers use for the mtime fallback as well. */
static void test_floating_time(void **state)
{
    (void)state;
    int64_t winter = utc(2023, 1, 15, 12, 0, 0), summer = utc(2023, 7, 15, 12, 0, 0);

    set_tz("UTC0");
    assert_int_equal(media_floating_time(winter), winter);
    assert_int_equal(media_floating_time(summer), summer);
    set_tz(TZ_CET);
    assert_int_equal(media_floating_time(winter), winter + 3600);
    assert_int_equal(media_floating_time(summer), summer + 7200);
    set_tz(TZ_NEW_YORK);
    assert_int_equal(media_floating_time(winter), winter - 5 * 3600);
    assert_int_equal(media_floating_time(summer), summer - 4 * 3600);
    /* a file modified at 01:30 local time keeps its local day */
    char day[16];
    media_date_path(media_floating_time(utc(2023, 7, 15, 5, 30, 0)), day, sizeof(day));
    assert_string_equal(day, "2023/07/15");
    media_date_path(media_floating_time(utc(2023, 7, 15, 3, 30, 0)), day, sizeof(day));
    assert_string_equal(day, "2023/07/14");
    set_tz("UTC0");
}

static int memory_setup(void **state)
{
    (void)state;
    set_tz("UTC0");
    return 0;
}

int main(void)
{
    const struct CMUnitTest files[] = {
        cmocka_unit_test(test_samples),
        cmocka_unit_test(test_sample_layouts),
        cmocka_unit_test(test_ext_does_not_decide_format),
        cmocka_unit_test(test_video_in_other_zones),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_mutated),
        cmocka_unit_test(test_random_bytes),
        /* these write their buffers to the folder too, to look at or add to the corpus */
        cmocka_unit_test(test_cr3),
        cmocka_unit_test(test_heif),
        cmocka_unit_test(test_raf),
        cmocka_unit_test(test_camera_text),
        cmocka_unit_test(test_camera_movie),
        cmocka_unit_test(test_maker_notes),
        cmocka_unit_test(test_camera_sony),
    };
    const struct CMUnitTest memory[] = {
        cmocka_unit_test(test_mvhd_variants), cmocka_unit_test(test_moov_after_huge_mdat),
        cmocka_unit_test(test_caps),          cmocka_unit_test(test_tiff_loops_and_limits),
        cmocka_unit_test(test_dates),         cmocka_unit_test(test_formats_without_dates),
        cmocka_unit_test(test_jpeg_markers),  cmocka_unit_test(test_kind_from_ext),
        cmocka_unit_test(test_date_path),     cmocka_unit_test(test_floating_time),
    };
    int failed = cmocka_run_group_tests_name("media files", files, files_setup, files_teardown);
    failed += cmocka_run_group_tests_name("media memory", memory, memory_setup, NULL);
    return failed;
}
