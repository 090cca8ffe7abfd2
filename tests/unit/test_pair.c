/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for pair.c: which scan entries form RAW+JPEG pairs (case, folders, extensions,
 * names shared by more than two files), and that a partner's capture date recorded in the
 * database counts before its file on the card is read.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "pair.h"

/* A scan list of these paths (sorted, as the scanner makes it); ext lower case as it does. */
static struct scan_list *list_of(const char *const *paths, size_t n)
{
    struct scan_list *l = calloc(1, sizeof(*l));
    assert_non_null(l);
    l->entries = calloc(n, sizeof(*l->entries));
    assert_non_null(l->entries);
    l->n = n;
    for (size_t i = 0; i < n; i++) {
        struct scan_entry *se = &l->entries[i];
        se->rel_path = strdup(paths[i]);
        assert_non_null(se->rel_path);
        const char *slash = strrchr(se->rel_path, '/');
        se->name = slash ? slash + 1 : se->rel_path;
        const char *dot = strrchr(se->name, '.');
        for (size_t k = 0; dot && dot[k + 1] && k + 1 < sizeof(se->ext); k++)
            se->ext[k] = (char)(dot[k + 1] | 0x20);
        se->size = 100;
        se->mtime_ns = 1;
    }
    return l;
}

static void list_free(struct scan_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->entries[i].rel_path);
    free(l->entries);
    free(l);
}

static void test_pairs_by_folder_and_name_ignoring_case(void **state)
{
    (void)state;
    static const char *const paths[] = {
        "A/DSC_0001.NEF",  /* 0: with 1 */
        "A/IMG_0001.CR3",  /* 1: with 2, another name's case */
        "A/IMG_0002.CR2",  /* 2: three files of one name: none */
        "A/IMG_0002.HEIC", /* 3 */
        "A/IMG_0002.JPG",  /* 4 */
        "A/IMG_0003.JPG",  /* 5: two JPEGs: no pair */
        "A/IMG_0003.jpeg", /* 6 */
        "A/IMG_0004.DNG",  /* 7: with the .hif; the .MOV of the same name is no part of it */
        "A/IMG_0004.MOV",  /* 8 */
        "A/IMG_0004.hif",  /* 9 */
        "A/IMG_00041.JPG", /* 10: a longer name: alone */
        "A/dsc_0001.jpg",  /* 11: with 0 */
        "A/img_0001.JPG",  /* 12: with 1 */
        "B/IMG_0005.ARW",  /* 13: another folder than 14: none */
        "C/IMG_0005.JPG",  /* 14 */
        "C/IMG_0006.PNG",  /* 15: PNG is not a pair's JPEG */
        "C/IMG_0006.RAF",  /* 16 */
    };
    size_t n = sizeof(paths) / sizeof(paths[0]);
    struct scan_list *l = list_of(paths, n);
    size_t *partner = NULL;
    struct error err;
    assert_int_equal(pair_index(l, &partner, &err), 0);
    size_t want[] = {11,        12,        PAIR_NONE, PAIR_NONE, PAIR_NONE, PAIR_NONE,
                     PAIR_NONE, 9,         PAIR_NONE, 7,         PAIR_NONE, 0,
                     1,         PAIR_NONE, PAIR_NONE, PAIR_NONE, PAIR_NONE};
    for (size_t i = 0; i < n; i++)
        if (partner[i] != want[i])
            fail_msg("%s: partner %zu, wanted %zu", paths[i], partner[i], want[i]);
    free(partner);
    list_free(l);

    l = list_of(NULL, 0);
    assert_int_equal(pair_index(l, &partner, &err), 0);
    assert_non_null(partner);
    free(partner);
    list_free(l);
}

/* {seq}: the list's order from 1, a pair's second file taking its first's number. */
static void test_seq_shared_by_a_pair(void **state)
{
    (void)state;
    static const char *const paths[] = {"A/IMG_0001.CR3", "A/IMG_0001.JPG", "A/IMG_0002.JPG",
                                        "A/dsc_0003.nef", "A/MVI_0004.MP4", "B/DSC_0003.JPG",
                                        "B/DSC_0003.NEF"};
    size_t n = sizeof(paths) / sizeof(paths[0]);
    struct scan_list *l = list_of(paths, n);
    size_t *partner = NULL;
    uint64_t *seq = NULL;
    struct error err;
    assert_int_equal(pair_index(l, &partner, &err), 0);
    assert_int_equal(pair_seq(l, partner, &seq, &err), 0);
    uint64_t want[] = {1, 1, 2, 3, 4, 5, 5};
    for (size_t i = 0; i < n; i++)
        if (seq[i] != want[i])
            fail_msg("%s: seq %llu, wanted %llu", paths[i], (unsigned long long)seq[i],
                     (unsigned long long)want[i]);
    free(seq);
    assert_int_equal(pair_seq(l, NULL, &seq, &err), 0); /* no pairs: 1..n */
    assert_int_equal(seq[6], 7);
    free(seq);
    free(partner);
    list_free(l);
}

/* A pair shares its camera: each empty field is taken from the partner, the others kept. */
static void test_share_camera(void **state)
{
    (void)state;
    struct media_info jpg = {0}, raw = {0};
    snprintf(jpg.model, sizeof(jpg.model), "EOS R6 (from the JPEG)");
    snprintf(raw.make, sizeof(raw.make), "Canon");
    snprintf(raw.model, sizeof(raw.model), "Canon EOS R6");
    snprintf(raw.lens, sizeof(raw.lens), "RF24-105mm");
    assert_true(pair_camera_missing(&jpg));
    pair_share_camera(&jpg, &raw);
    assert_string_equal(jpg.make, "Canon");
    assert_string_equal(jpg.model, "EOS R6 (from the JPEG)");
    assert_string_equal(jpg.lens, "RF24-105mm");
    assert_string_equal(jpg.serial, "");
    assert_true(pair_camera_missing(&jpg));
    snprintf(jpg.serial, sizeof(jpg.serial), "1");
    assert_false(pair_camera_missing(&jpg));
}

static void test_extension_sets(void **state)
{
    (void)state;
    for (const char *const *e =
             (const char *const[]){"cr2", "cr3", "nef", "arw", "dng", "raf", "orf", "rw2", NULL};
         *e; e++)
        assert_true(pair_is_raw_ext(*e) && !pair_is_jpeg_ext(*e));
    for (const char *const *e =
             (const char *const[]){"jpg", "jpeg", "jpe", "heic", "heif", "hif", NULL};
         *e; e++)
        assert_true(pair_is_jpeg_ext(*e) && !pair_is_raw_ext(*e));
    for (const char *const *e = (const char *const[]){"png", "tif", "mp4", "xmp", "", NULL}; *e;
         e++)
        assert_true(!pair_is_jpeg_ext(*e) && !pair_is_raw_ext(*e));
}

/* The partner's date recorded in the database counts; without one, its file on the card is read
 * (here: no metadata, so none). */
static void test_partner_capture_recorded_then_probed(void **state)
{
    (void)state;
    const char *tmp = getenv("SNAPSYNC_TEST_TMP");
    char base[PATH_MAX], path[PATH_MAX + 16];
    mkdir(tmp && tmp[0] ? tmp : "/tmp", 0755);
    snprintf(base, sizeof(base), "%s/pair.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    assert_non_null(mkdtemp(base));
    int dir_fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dir_fd >= 0);
    int fd = openat(dir_fd, "IMG_0001.JPG", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "no metadata", 11), 11);
    close(fd);
    static const char *const paths[] = {"IMG_0001.JPG"};
    struct scan_list *l = list_of(paths, 1);
    l->entries[0].size = 11;

    snprintf(path, sizeof(path), "%s/snapsync.db", base);
    struct db *db = NULL;
    struct error err;
    assert_int_equal(db_open(path, DB_READ_WRITE, &db, &err), 0);
    int64_t card = 0, id = 0;
    assert_int_equal(db_card_upsert(db, "1234-ABCD", NULL, &card, &err), 0);
    assert_int_equal(pair_partner_capture(db, card, dir_fd, &l->entries[0]), 0);
    assert_int_equal(pair_partner_capture(NULL, card, dir_fd, &l->entries[0]), 0);
    struct db_file_key key = {card, "IMG_0001.JPG", 11, 1};
    assert_int_equal(db_file_get_or_create(db, &key, &id, NULL, &err), 0);
    assert_int_equal(db_file_set_meta(db, id, "d41d8cd98f00b204e9800998ecf8427e",
                                      "da39a3ee5e6b4b0d3255bfef95601890afd80709", NULL, 1600000000,
                                      "photo", &err),
                     0);
    assert_int_equal(pair_partner_capture(db, card, dir_fd, &l->entries[0]), 1600000000);
    /* another version of the file (another mtime): the record is not its */
    l->entries[0].mtime_ns = 2;
    assert_int_equal(pair_partner_capture(db, card, dir_fd, &l->entries[0]), 0);
    db_close(db);
    list_free(l);
    unlinkat(dir_fd, "IMG_0001.JPG", 0);
    close(dir_fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pairs_by_folder_and_name_ignoring_case),
        cmocka_unit_test(test_extension_sets),
        cmocka_unit_test(test_seq_shared_by_a_pair),
        cmocka_unit_test(test_share_camera),
        cmocka_unit_test(test_partner_capture_recorded_then_probed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
