/* SPDX-License-Identifier: MIT */
/*
 * media: the capture date and kind of a photo or video, read from its metadata.
 *
 * Everything is read through a struct media_reader, so a file (pread), memory (tests, the fuzzer)
 * or anything else look the same. Each parser works on a "window" (a base offset and a length in
 * the reader): the JPEG parser hands its EXIF APP1 payload to the TIFF parser as a window, the RAF
 * parser hands its embedded JPEG to the JPEG parser, the ISO-BMFF parser hands the CR3 CMT1/CMT2
 * boxes and the HEIF Exif item to the TIFF parser. Reads are small and exact (a box header, one
 * IFD, a 32-byte date string) and go through probe_read, which counts every byte against
 * MEDIA_PROBE_MAX_BYTES; win_read refuses anything outside its window. Image and video data are
 * never read: boxes such as mdat are skipped by their header.
 *
 * Nothing recurses. Each nesting level (RAF -> JPEG -> TIFF, moov -> uuid -> CMT, meta -> iloc)
 * is a separate function called at a fixed depth, and every loop over structures taken from the
 * file has a fixed cap (markers, chunks, boxes, IFDs, entries, items, extents). The only
 * allocations have constant sizes.
 *
 * The detail of a failure goes into a struct error inside the probe and is copied to the caller's
 * only when media_probe fails: a best-effort parse may meet a broken IFD after it has already
 * found the date, and then the call succeeds.
 */
#include "media.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define JPEG_MAX_MARKERS 512
#define PNG_MAX_CHUNKS 1024
#define RIFF_MAX_CHUNKS 1024
#define TIFF_MAX_IFDS 64
#define TIFF_MAX_ENTRIES 1024
#define TIFF_ENTRY_SIZE 12
#define BMFF_MAX_TOP_BOXES 4096
#define BMFF_MAX_CHILD_BOXES 1024
#define BMFF_MAX_BRANDS 64
#define HEIF_MAX_ITEMS 4096
#define HEIF_MAX_EXTENTS 65536 /* over all items: an extent may be 0 bytes long in iloc */
#define HEIF_ILOC_MAX 65536    /* bytes of iloc we read; enough for thousands of items */
#define DATE_MAX 32
#define TEXT_READ_MAX 256  /* bytes of a text value read: room for padding before the text */
#define QT_KEYS_MAX 256    /* keys of a QuickTime 'keys' box looked at */
#define GPMF_READ_MAX 8192 /* bytes of GoPro's udta GPMF read: its settings come first */
#define XML_READ_MAX 16384 /* bytes of a movie's 'xml ' box read (Sony's is 2-4 KB) */

/* Seconds from 1904-01-01 (the QuickTime epoch) to 1970-01-01. */
#define QT_EPOCH_OFFSET UINT64_C(2082844800)

/* Plausible capture years: anything else is a camera whose clock was never set, or garbage. */
#define YEAR_MIN 1970
#define YEAR_MAX 2200
#define TIME_MAX INT64_C(7258118400) /* 2200-01-01T00:00:00Z */

#define FOURCC(a, b, c, d)                                                                         \
    ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (uint32_t)(d))

#define TAG_EXIF_IFD 0x8769
#define TAG_DATE_TIME 0x0132
#define TAG_DATE_ORIGINAL 0x9003
#define TAG_DATE_DIGITIZED 0x9004
#define TAG_OFFSET_TIME 0x9010
#define TAG_OFFSET_ORIGINAL 0x9011
#define TAG_OFFSET_DIGITIZED 0x9012
#define TAG_MAKE 0x010f
#define TAG_MODEL 0x0110
#define TAG_BODY_SERIAL 0xa431
#define TAG_LENS_MODEL 0xa434
#define TAG_DNG_SERIAL 0xc62f /* CameraSerialNumber in a DNG's IFD0 */
#define TAG_MAKER_NOTE 0x927c
#define TAG_CANON_LENS_MODEL 0x0095 /* in Canon's maker note */
#define TAG_NIKON_SERIAL 0x001d     /* in Nikon's maker note */

struct probe {
    const struct media_reader *rd;
    uint64_t bytes_read;
    struct error err;
};

/* A range of the reader that one parser may look at; offsets inside a format are relative to
 * base (TIFF offsets are relative to the TIFF header, for instance). */
struct window {
    uint64_t base;
    uint64_t len;
};

/* The three EXIF dates in order of preference, each with its own OffsetTime* tag. */
enum { DATE_ORIGINAL, DATE_DIGITIZED, DATE_MODIFIED, DATE_COUNT };

/* The text fields, in media_info's order, then the fallbacks resolved by text_resolve. */
enum {
    TEXT_MAKE,
    TEXT_MODEL,
    TEXT_LENS,
    TEXT_SERIAL,
    TEXT_DNG_SERIAL,
    TEXT_CANON_MODEL,
    TEXT_COUNT
};

struct media_text {
    char v[TEXT_COUNT][MEDIA_TEXT_MAX];
};

/* What the EXIF structures of a file gave: the dates and the text fields. */
struct exif_found {
    bool has[DATE_COUNT];
    int64_t time[DATE_COUNT];
    bool has_offset[DATE_COUNT];
    int32_t offset[DATE_COUNT];
    struct media_text text;
};

struct box {
    uint64_t start;
    uint64_t payload;
    uint64_t end;
    uint32_t type;
    uint8_t uuid[16];
};

/* uuid of the box in a CR3's moov that holds CMT1 (TIFF IFD0) and CMT2 (EXIF IFD). */
static const uint8_t canon_uuid[16] = {0x85, 0xc0, 0xb6, 0x87, 0x82, 0x0f, 0x11, 0xe0,
                                       0x81, 0x11, 0xf4, 0xce, 0x46, 0x2b, 0x6a, 0x48};

static uint16_t get_u16(const uint8_t *b, bool be)
{
    return be ? (uint16_t)(b[0] << 8 | b[1]) : (uint16_t)(b[1] << 8 | b[0]);
}

static uint32_t get_u32(const uint8_t *b, bool be)
{
    if (be)
        return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    return (uint32_t)b[3] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[1] << 8 | b[0];
}

static uint64_t get_u64be(const uint8_t *b)
{
    return (uint64_t)get_u32(b, true) << 32 | get_u32(b + 4, true);
}

/* A four-character code for a message, with anything unprintable shown as '?'. */
static const char *fourcc_str(uint32_t type, char out[5])
{
    for (int i = 0; i < 4; i++) {
        char c = (char)(type >> (24 - 8 * i) & 0xff);
        out[i] = c >= 0x20 && c < 0x7f ? c : '?';
    }
    out[4] = '\0';
    return out;
}

/* Reads exactly len bytes at off, counting them against the budget. */
static int probe_read(struct probe *p, uint64_t off, void *buf, size_t len)
{
    uint8_t *b = buf;
    size_t done = 0;

    if (len > MEDIA_PROBE_MAX_BYTES - p->bytes_read)
        return error_set(&p->err, -EBADMSG, "metadata needs more than %d bytes of reading",
                         MEDIA_PROBE_MAX_BYTES);
    p->bytes_read += len;
    while (done < len) {
        long n = p->rd->read_at(p->rd->ctx, off + done, b + done, len - done);
        if (n < 0) {
            int code = n >= -4095 ? (int)n : -EIO;
            return error_set_errno(&p->err, code, "cannot read %zu bytes at offset %" PRIu64, len,
                                   off);
        }
        if (n == 0)
            return error_set(&p->err, -EBADMSG, "unexpected end of file at offset %" PRIu64,
                             off + done);
        if ((size_t)n > len - done)
            return error_set(&p->err, -EIO,
                             "reader returned more bytes than asked at offset %" PRIu64,
                             off + done);
        done += (size_t)n;
    }
    return 0;
}

/* Reads len bytes at off inside w; `what` names the structure for the message. */
static int win_read(struct probe *p, const struct window *w, uint64_t off, void *buf, size_t len,
                    const char *what)
{
    if (off > w->len || len > w->len - off)
        return error_set(&p->err, -EBADMSG, "truncated %s at offset %" PRIu64, what, w->base + off);
    return probe_read(p, w->base + off, buf, len);
}

/* The part of parent from off, at most len long: a length running past the parent (a truncated
 * file) is clipped, so the parser inside finds out what exactly is missing. */
static int win_sub(struct probe *p, const struct window *parent, uint64_t off, uint64_t len,
                   const char *what, struct window *ret)
{
    if (off > parent->len)
        return error_set(&p->err, -EBADMSG, "%s at offset %" PRIu64 " lies outside the file", what,
                         parent->base + off);
    ret->base = parent->base + off;
    ret->len = len < parent->len - off ? len : parent->len - off;
    return 0;
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static int digits(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* "YYYY:MM:DD HH:MM:SS" as floating seconds. Some writers use '-' in the date or a 'T'; cameras
 * with an unset clock write zeros or blanks, which count as no date. */
static bool parse_exif_date(const char *s, size_t len, int64_t *ret)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (len < 19)
        return false;
    if (!all_digits(s, 4) || !all_digits(s + 5, 2) || !all_digits(s + 8, 2) ||
        !all_digits(s + 11, 2) || !all_digits(s + 14, 2) || !all_digits(s + 17, 2))
        return false;
    if ((s[4] != ':' && s[4] != '-') || s[7] != s[4] || (s[10] != ' ' && s[10] != 'T') ||
        s[13] != ':' || s[16] != ':')
        return false;
    int year = digits(s, 4), mon = digits(s + 5, 2), day = digits(s + 8, 2);
    int hour = digits(s + 11, 2), min = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (year < YEAR_MIN || year >= YEAR_MAX || mon < 1 || mon > 12 || day < 1)
        return false;
    if (day > mdays[mon - 1] + (mon == 2 && is_leap(year)))
        return false;
    if (hour > 23 || min > 59 || sec > 60)
        return false;
    struct tm tm = {.tm_year = year - 1900,
                    .tm_mon = mon - 1,
                    .tm_mday = day,
                    .tm_hour = hour,
                    .tm_min = min,
                    .tm_sec = sec};
    *ret = (int64_t)timegm(&tm);
    return true;
}

/* "+02:00" or "-05:30" as seconds east of UTC. */
static bool parse_exif_offset(const char *s, size_t len, int32_t *ret)
{
    if (len < 6 || (s[0] != '+' && s[0] != '-') || !all_digits(s + 1, 2) || s[3] != ':' ||
        !all_digits(s + 4, 2))
        return false;
    int hours = digits(s + 1, 2), mins = digits(s + 4, 2);
    if (hours > 14 || mins > 59)
        return false;
    int32_t v = hours * 3600 + mins * 60;
    *ret = s[0] == '-' ? -v : v;
    return true;
}

/*
 * Stores the text in src[0..len) into dst (MEDIA_TEXT_MAX bytes) unless dst already holds a value:
 * the first one found wins. Leading spaces and NULs are skipped, the text ends at the next NUL,
 * trailing spaces go, and a text too long is cut before a UTF-8 lead byte so that no sequence is
 * split. An empty result leaves dst as it was, so a later source may still fill it.
 */
static void text_set(char *dst, const uint8_t *src, size_t len)
{
    size_t start = 0, end;

    if (dst[0])
        return;
    while (start < len && (src[start] == ' ' || src[start] == '\0'))
        start++;
    const uint8_t *nul = memchr(src + start, '\0', len - start);
    end = nul ? (size_t)(nul - src) : len;
    if (end - start > MEDIA_TEXT_MAX - 1) {
        end = start + MEDIA_TEXT_MAX - 1;
        /* src[end] is the first byte left out: back off while it continues a sequence (at most
         * three bytes, so text that is not UTF-8 still keeps almost all of its room). */
        for (int i = 0; i < 3 && (src[end] & 0xc0) == 0x80; i++)
            end--;
    }
    while (end > start && src[end - 1] == ' ')
        end--;
    memcpy(dst, src + start, end - start);
    dst[end - start] = '\0';
}

static void text_resolve(const struct media_text *t, struct media_info *info)
{
    memcpy(info->make, t->v[TEXT_MAKE], MEDIA_TEXT_MAX);
    memcpy(info->model, t->v[t->v[TEXT_MODEL][0] ? TEXT_MODEL : TEXT_CANON_MODEL], MEDIA_TEXT_MAX);
    memcpy(info->lens, t->v[TEXT_LENS], MEDIA_TEXT_MAX);
    memcpy(info->serial, t->v[t->v[TEXT_SERIAL][0] ? TEXT_SERIAL : TEXT_DNG_SERIAL],
           MEDIA_TEXT_MAX);
}

/* ---- TIFF / EXIF ---------------------------------------------------------------------------- */

/* Which tags an IFD holds: TIFF's and EXIF's, or those of a maker's private IFD. */
enum tiff_tags { TIFF_TAGS, TIFF_TAGS_CANON, TIFF_TAGS_NIKON };

struct tiff {
    struct probe *p;
    struct window w;
    bool be;
    enum tiff_tags tags;
    uint32_t queue[TIFF_MAX_IFDS]; /* every IFD offset ever queued: also the loop detector */
    size_t nqueue;
    uint32_t maker_note; /* offset of the EXIF MakerNote, 0 if none */
    uint32_t maker_note_len;
};

static void tiff_queue(struct tiff *t, uint32_t off)
{
    if (off == 0 || t->nqueue >= TIFF_MAX_IFDS)
        return;
    for (size_t i = 0; i < t->nqueue; i++)
        if (t->queue[i] == off)
            return;
    t->queue[t->nqueue++] = off;
}

/* Reads up to size bytes of a string-valued entry (ASCII, BYTE or UNDEFINED) into buf, the count
 * into *ret_n. Returns 1 if the entry has another type (ignored), 0 or an error. */
static int tiff_bytes(struct tiff *t, const uint8_t *e, uint8_t *buf, size_t size, size_t *ret_n)
{
    uint16_t type = get_u16(e + 2, t->be);
    uint32_t count = get_u32(e + 4, t->be);
    size_t n = count < size ? count : size;

    if (type != 1 && type != 2 && type != 7)
        return 1;
    if (count <= 4) {
        memcpy(buf, e + 8, n);
    } else {
        int r = win_read(t->p, &t->w, get_u32(e + 8, t->be), buf, n, "TIFF value");
        if (r < 0)
            return r;
    }
    *ret_n = n;
    return 0;
}

/* A string-valued entry as a C string in buf. */
static int tiff_string(struct tiff *t, const uint8_t *e, char *buf, size_t size, size_t *ret_len)
{
    size_t n;
    int r = tiff_bytes(t, e, (uint8_t *)buf, size - 1, &n);
    if (r != 0)
        return r;
    buf[n] = '\0';
    *ret_len = strlen(buf);
    return 0;
}

/* A text entry into dst, unless dst is already set. */
static int tiff_text(struct tiff *t, const uint8_t *e, char *dst)
{
    uint8_t buf[TEXT_READ_MAX];
    size_t n;

    if (dst[0])
        return 0;
    int r = tiff_bytes(t, e, buf, sizeof(buf), &n);
    if (r == 0)
        text_set(dst, buf, n);
    return r < 0 ? r : 0;
}

/* An entry of a maker note's IFD: only the text the EXIF tags leave out on older cameras. */
static int maker_entry(struct tiff *t, const uint8_t *e, struct exif_found *d)
{
    uint16_t tag = get_u16(e, t->be);
    if (t->tags == TIFF_TAGS_CANON && tag == TAG_CANON_LENS_MODEL)
        return tiff_text(t, e, d->text.v[TEXT_LENS]);
    if (t->tags == TIFF_TAGS_NIKON && tag == TAG_NIKON_SERIAL)
        return tiff_text(t, e, d->text.v[TEXT_SERIAL]);
    return 0;
}

static int tiff_entry(struct tiff *t, const uint8_t *e, struct exif_found *d)
{
    uint16_t tag = get_u16(e, t->be);
    int slot;
    bool is_offset = false;

    if (t->tags != TIFF_TAGS)
        return maker_entry(t, e, d);
    switch (tag) {
    case TAG_MAKER_NOTE:
        if (!t->maker_note && get_u16(e + 2, t->be) == 7 && get_u32(e + 4, t->be) > 4) {
            t->maker_note = get_u32(e + 8, t->be);
            t->maker_note_len = get_u32(e + 4, t->be);
        }
        return 0;
    case TAG_EXIF_IFD:
        tiff_queue(t, get_u32(e + 8, t->be));
        return 0;
    case TAG_MAKE:
        return tiff_text(t, e, d->text.v[TEXT_MAKE]);
    case TAG_MODEL:
        return tiff_text(t, e, d->text.v[TEXT_MODEL]);
    case TAG_LENS_MODEL:
        return tiff_text(t, e, d->text.v[TEXT_LENS]);
    case TAG_BODY_SERIAL:
        return tiff_text(t, e, d->text.v[TEXT_SERIAL]);
    case TAG_DNG_SERIAL:
        return tiff_text(t, e, d->text.v[TEXT_DNG_SERIAL]);
    case TAG_DATE_ORIGINAL:
        slot = DATE_ORIGINAL;
        break;
    case TAG_DATE_DIGITIZED:
        slot = DATE_DIGITIZED;
        break;
    case TAG_DATE_TIME:
        slot = DATE_MODIFIED;
        break;
    case TAG_OFFSET_ORIGINAL:
        slot = DATE_ORIGINAL;
        is_offset = true;
        break;
    case TAG_OFFSET_DIGITIZED:
        slot = DATE_DIGITIZED;
        is_offset = true;
        break;
    case TAG_OFFSET_TIME:
        slot = DATE_MODIFIED;
        is_offset = true;
        break;
    default:
        return 0;
    }
    /* The first valid value wins: IFD0 and the EXIF IFD come before thumbnails' IFDs. */
    if (is_offset ? d->has_offset[slot] : d->has[slot])
        return 0;

    char s[DATE_MAX];
    size_t len;
    int r = tiff_string(t, e, s, sizeof(s), &len);
    if (r != 0)
        return r < 0 ? r : 0;
    if (is_offset)
        d->has_offset[slot] = parse_exif_offset(s, len, &d->offset[slot]);
    else
        d->has[slot] = parse_exif_date(s, len, &d->time[slot]);
    return 0;
}

static int tiff_ifd(struct tiff *t, uint32_t off, uint8_t *entries, struct exif_found *d)
{
    uint8_t b[4];
    int r = win_read(t->p, &t->w, off, b, 2, "TIFF IFD");
    if (r < 0)
        return r;
    uint16_t n = get_u16(b, t->be);
    if (n > TIFF_MAX_ENTRIES)
        return error_set(&t->p->err, -EBADMSG,
                         "TIFF IFD at offset %" PRIu64 " has %u entries (limit %d)",
                         t->w.base + off, n, TIFF_MAX_ENTRIES);
    r = win_read(t->p, &t->w, (uint64_t)off + 2, entries, (size_t)n * TIFF_ENTRY_SIZE, "TIFF IFD");
    if (r < 0)
        return r;

    /* A bad value in one entry should not hide the good ones after it. */
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        r = tiff_entry(t, entries + i * TIFF_ENTRY_SIZE, d);
        if (r == -EBADMSG && !bad)
            bad = r;
        else if (r < 0 && r != -EBADMSG)
            return r;
    }

    /* Writers often end the last IFD right at the end of the data without a next pointer. */
    uint64_t next = (uint64_t)off + 2 + (uint64_t)n * TIFF_ENTRY_SIZE;
    if (next <= t->w.len && t->w.len - next >= 4) {
        r = win_read(t->p, &t->w, next, b, 4, "TIFF IFD");
        if (r < 0)
            return r;
        tiff_queue(t, get_u32(b, t->be));
    }
    return bad;
}

/*
 * The maker note of t, if it is one we read: Canon's is a bare IFD whose offsets count from t's
 * header; Nikon's ("Nikon\0\2") holds a TIFF structure of its own after 10 bytes. Only its first
 * IFD is read, at this fixed depth (a maker note's own maker note is never looked at).
 */
static int maker_note_parse(struct tiff *t, uint8_t *entries, struct exif_found *d)
{
    uint8_t h[18];
    struct window w;

    if (!t->maker_note || t->maker_note_len < sizeof(h))
        return 0;
    int r = win_read(t->p, &t->w, t->maker_note, h, sizeof(h), "maker note");
    if (r < 0)
        return r;
    if (memcmp(h, "Nikon\0\2", 7) == 0) {
        struct tiff m = {.p = t->p, .tags = TIFF_TAGS_NIKON};
        r = win_sub(t->p, &t->w, (uint64_t)t->maker_note + 10, t->maker_note_len - 10,
                    "Nikon maker note", &w);
        if (r < 0)
            return r;
        m.w = w;
        if ((h[10] != 'I' || h[11] != 'I') && (h[10] != 'M' || h[11] != 'M'))
            return error_set(&t->p->err, -EBADMSG, "no TIFF header in Nikon maker note");
        m.be = h[10] == 'M';
        return tiff_ifd(&m, get_u32(h + 14, m.be), entries, d);
    }
    if (strncmp(d->text.v[TEXT_MAKE], "Canon", 5) == 0) {
        struct tiff m = {.p = t->p, .w = t->w, .be = t->be, .tags = TIFF_TAGS_CANON};
        return tiff_ifd(&m, t->maker_note, entries, d);
    }
    return 0;
}

/*
 * Collects the dates and texts of the TIFF structure in w into d: IFD0, its chain of next IFDs
 * and the EXIF IFD, in that order, at most TIFF_MAX_IFDS of them, each visited once, then the
 * maker note (a malformed one is ignored). Stops at the first error and returns it; what was
 * found before stays in d.
 */
static int tiff_parse(struct probe *p, const struct window *w, struct exif_found *d)
{
    struct tiff t = {.p = p, .w = *w};
    uint8_t hdr[8];
    uint8_t *entries = NULL;

    int r = win_read(p, w, 0, hdr, sizeof(hdr), "TIFF header");
    if (r < 0)
        return r;
    if (hdr[0] == 'I' && hdr[1] == 'I')
        t.be = false;
    else if (hdr[0] == 'M' && hdr[1] == 'M')
        t.be = true;
    else
        return error_set(&p->err, -EBADMSG, "no TIFF header at offset %" PRIu64, w->base);
    /* 42 for TIFF, "RO"/"RS" for Olympus ORF, "U\0" for Panasonic RW2. */
    uint16_t magic = get_u16(hdr + 2, t.be);
    if (magic != 42 && magic != 0x4f52 && magic != 0x5352 && magic != 0x0055)
        return error_set(&p->err, -EBADMSG, "unknown TIFF magic 0x%04x at offset %" PRIu64, magic,
                         w->base);
    tiff_queue(&t, get_u32(hdr + 4, t.be));

    entries = malloc(TIFF_MAX_ENTRIES * TIFF_ENTRY_SIZE);
    if (!entries)
        return error_set(&p->err, -ENOMEM, "out of memory reading TIFF IFDs");
    for (size_t i = 0; i < t.nqueue; i++) {
        r = tiff_ifd(&t, t.queue[i], entries, d);
        if (r < 0)
            goto out;
    }
    struct error saved = p->err;
    r = maker_note_parse(&t, entries, d);
    if (r == -EBADMSG) {
        p->err = saved;
        r = 0;
    }
out:
    free(entries);
    return r;
}

/* ---- JPEG, PNG, RAF ------------------------------------------------------------------------- */

/* Finds the EXIF APP1 segment of the JPEG in w and parses it. -ENODATA without one. */
static int jpeg_parse(struct probe *p, const struct window *w, struct exif_found *d)
{
    uint64_t pos = 2; /* after SOI, checked by the caller */

    for (int i = 0; i < JPEG_MAX_MARKERS; i++) {
        uint8_t m[4];
        int r = win_read(p, w, pos, m, 2, "JPEG marker");
        if (r < 0)
            return r;
        if (m[0] != 0xff)
            return error_set(&p->err, -EBADMSG, "bad JPEG marker at offset %" PRIu64,
                             w->base + pos);
        if (m[1] == 0xff) { /* fill byte */
            pos++;
            continue;
        }
        if ((m[1] >= 0xd0 && m[1] <= 0xd7) || m[1] == 0x01) { /* no length */
            pos += 2;
            continue;
        }
        if (m[1] == 0xda || m[1] == 0xd9) /* SOS: image data follows; EOI */
            break;
        r = win_read(p, w, pos + 2, m + 2, 2, "JPEG segment");
        if (r < 0)
            return r;
        uint16_t len = get_u16(m + 2, true);
        if (len < 2)
            return error_set(&p->err, -EBADMSG, "bad JPEG segment length at offset %" PRIu64,
                             w->base + pos);
        if (m[1] == 0xe1 && len >= 8) {
            uint8_t id[6];
            r = win_read(p, w, pos + 4, id, sizeof(id), "JPEG APP1");
            if (r < 0)
                return r;
            /* "Exif\0\0"; a few writers get the second NUL wrong. */
            if (memcmp(id, "Exif\0", 5) == 0) {
                struct window tw;
                r = win_sub(p, w, pos + 10, (uint64_t)len - 8, "EXIF data", &tw);
                if (r < 0)
                    return r;
                return tiff_parse(p, &tw, d);
            }
        }
        pos += 2 + (uint64_t)len;
    }
    return error_set(&p->err, -ENODATA, "no EXIF in JPEG");
}

static int png_parse(struct probe *p, const struct window *w, struct exif_found *d)
{
    uint64_t pos = 8; /* after the signature */

    for (int i = 0; i < PNG_MAX_CHUNKS; i++) {
        uint8_t c[8];
        int r = win_read(p, w, pos, c, sizeof(c), "PNG chunk");
        if (r < 0)
            return r;
        uint32_t len = get_u32(c, true), type = get_u32(c + 4, true);
        if (len > INT32_MAX)
            return error_set(&p->err, -EBADMSG, "bad PNG chunk length at offset %" PRIu64,
                             w->base + pos);
        if (type == FOURCC('e', 'X', 'I', 'f')) {
            struct window tw;
            r = win_sub(p, w, pos + 8, len, "PNG eXIf chunk", &tw);
            if (r < 0)
                return r;
            return tiff_parse(p, &tw, d);
        }
        if (type == FOURCC('I', 'E', 'N', 'D'))
            break;
        pos += 12 + (uint64_t)len;
    }
    return error_set(&p->err, -ENODATA, "no eXIf chunk in PNG");
}

/* WebP: a RIFF file whose EXIF chunk holds a TIFF structure, sometimes after "Exif\0\0". */
static int webp_parse(struct probe *p, const struct window *w, struct exif_found *d)
{
    uint64_t pos = 12; /* after "RIFF", the size and "WEBP" */

    for (int i = 0; i < RIFF_MAX_CHUNKS; i++) {
        uint8_t c[8];
        int r = win_read(p, w, pos, c, sizeof(c), "WebP chunk");
        if (r < 0)
            return r;
        uint32_t type = get_u32(c, true), len = get_u32(c + 4, false);
        if (type == FOURCC('E', 'X', 'I', 'F')) {
            struct window tw;
            r = win_sub(p, w, pos + 8, len, "WebP EXIF chunk", &tw);
            if (r < 0)
                return r;
            r = win_read(p, &tw, 0, c, 6, "WebP EXIF chunk");
            if (r < 0)
                return r;
            if (memcmp(c, "Exif\0\0", 6) == 0 && (r = win_sub(p, &tw, 6, tw.len, "EXIF", &tw)) < 0)
                return r;
            return tiff_parse(p, &tw, d);
        }
        pos += 8 + (uint64_t)len + (len & 1);
    }
    return error_set(&p->err, -ENODATA, "no EXIF chunk in WebP");
}

/* Fujifilm RAF: the EXIF lives in the embedded full-size JPEG preview. */
static int raf_parse(struct probe *p, const struct window *w, struct exif_found *d)
{
    uint8_t b[8];
    int r = win_read(p, w, 84, b, sizeof(b), "RAF header");
    if (r < 0)
        return r;
    struct window jw;
    r = win_sub(p, w, get_u32(b, true), get_u32(b + 4, true), "RAF JPEG", &jw);
    if (r < 0)
        return r;
    r = win_read(p, &jw, 0, b, 3, "RAF JPEG");
    if (r < 0)
        return r;
    if (b[0] != 0xff || b[1] != 0xd8 || b[2] != 0xff)
        return error_set(&p->err, -EBADMSG, "no JPEG at offset %" PRIu64 " in RAF", jw.base);
    return jpeg_parse(p, &jw, d);
}

/* ---- ISO-BMFF (MP4, MOV, CR3, HEIF) -------------------------------------------------------- */

/* Reads the box header at pos, which must end by end (the end of the parent). */
static int box_read(struct probe *p, uint64_t pos, uint64_t end, struct box *b)
{
    uint8_t h[16];
    char cc[5];
    uint64_t hdr = 8;

    if (pos > end || end - pos < 8)
        return error_set(&p->err, -EBADMSG, "truncated box header at offset %" PRIu64, pos);
    int r = probe_read(p, pos, h, 8);
    if (r < 0)
        return r;
    uint64_t size = get_u32(h, true);
    b->type = get_u32(h + 4, true);
    if (size == 1) {
        if (end - pos < 16)
            return error_set(&p->err, -EBADMSG, "truncated box header at offset %" PRIu64, pos);
        r = probe_read(p, pos + 8, h + 8, 8);
        if (r < 0)
            return r;
        size = get_u64be(h + 8);
        hdr = 16;
    } else if (size == 0) { /* to the end of the file (or parent) */
        size = end - pos;
    }
    if (size < hdr)
        return error_set(&p->err, -EBADMSG, "box '%s' at offset %" PRIu64 " has bad size %" PRIu64,
                         fourcc_str(b->type, cc), pos, size);
    if (size > end - pos)
        return error_set(&p->err, -EBADMSG,
                         "box '%s' at offset %" PRIu64 " runs past the end of its parent",
                         fourcc_str(b->type, cc), pos);
    if (b->type == FOURCC('u', 'u', 'i', 'd')) {
        if (size - hdr < 16)
            return error_set(&p->err, -EBADMSG, "truncated uuid box at offset %" PRIu64, pos);
        r = probe_read(p, pos + hdr, b->uuid, 16);
        if (r < 0)
            return r;
        hdr += 16;
    }
    b->start = pos;
    b->payload = pos + hdr;
    b->end = pos + size;
    return 0;
}

/* Finds the first box of type (and uuid, for 'uuid' boxes) between start and end, looking at no
 * more than max boxes. -ENOENT, without a message, when there is none. */
static int box_find(struct probe *p, uint64_t start, uint64_t end, uint32_t type,
                    const uint8_t *uuid, int max, struct box *ret)
{
    uint64_t pos = start;

    /* Fewer than 8 bytes left is padding some writers leave, not a box. */
    for (int i = 0; i < max && pos < end && end - pos >= 8; i++) {
        int r = box_read(p, pos, end, ret);
        if (r < 0)
            return r;
        if (ret->type == type && (!uuid || memcmp(ret->uuid, uuid, 16) == 0))
            return 0;
        pos = ret->end;
    }
    return -ENOENT;
}

static int box_need(struct probe *p, int r, uint32_t type, const char *where)
{
    char cc[5];
    if (r == -ENOENT)
        return error_set(&p->err, -EBADMSG, "no '%s' box in %s", fourcc_str(type, cc), where);
    return r;
}

static int mvhd_parse(struct probe *p, const struct box *moov, struct media_info *info)
{
    struct box mvhd;
    uint8_t m[12];

    int r = box_find(p, moov->payload, moov->end, FOURCC('m', 'v', 'h', 'd'), NULL,
                     BMFF_MAX_CHILD_BOXES, &mvhd);
    if (r < 0)
        return box_need(p, r, FOURCC('m', 'v', 'h', 'd'), "'moov'");
    struct window w = {mvhd.payload, mvhd.end - mvhd.payload};
    r = win_read(p, &w, 0, m, 4, "mvhd box");
    if (r < 0)
        return r;
    uint64_t created;
    if (m[0] == 0) {
        r = win_read(p, &w, 4, m + 4, 4, "mvhd box");
        created = get_u32(m + 4, true);
    } else if (m[0] == 1) {
        r = win_read(p, &w, 4, m + 4, 8, "mvhd box");
        created = get_u64be(m + 4);
    } else {
        return error_set(&p->err, -EBADMSG, "unknown mvhd version %u at offset %" PRIu64, m[0],
                         mvhd.start);
    }
    if (r < 0)
        return r;
    if (created == 0)
        return error_set(&p->err, -ENODATA, "mvhd creation time is not set");
    if (created < QT_EPOCH_OFFSET || created - QT_EPOCH_OFFSET >= (uint64_t)TIME_MAX)
        return error_set(&p->err, -ENODATA, "implausible mvhd creation time %" PRIu64, created);
    info->capture_time = media_floating_time((int64_t)(created - QT_EPOCH_OFFSET));
    info->utc_offset = 0;
    info->has_offset = 0;
    return 0;
}

/* Canon's uuid box (in CR3, and in the MP4s of the same cameras): CMT1 holds IFD0 (DateTime, Make,
 * Model), CMT2 the EXIF IFD (DateTimeOriginal, LensModel, BodySerialNumber). Each is a complete
 * TIFF structure of its own; CMT2 goes first for its better date. */
static int canon_cmt_parse(struct probe *p, const struct box *canon, struct exif_found *d)
{
    static const uint32_t cmt[2] = {FOURCC('C', 'M', 'T', '2'), FOURCC('C', 'M', 'T', '1')};
    struct box b;

    int first = 0;
    for (int i = 0; i < 2; i++) {
        int r = box_find(p, canon->payload, canon->end, cmt[i], NULL, BMFF_MAX_CHILD_BOXES, &b);
        if (r == 0) {
            struct window w = {b.payload, b.end - b.payload};
            r = tiff_parse(p, &w, d);
        } else {
            r = box_need(p, r, cmt[i], "Canon uuid box");
        }
        if (r < 0 && r != -EBADMSG)
            return r;
        if (r < 0 && !first)
            first = r;
    }
    return first;
}

static int cr3_parse(struct probe *p, const struct box *moov, struct exif_found *d)
{
    struct box canon;

    int r = box_find(p, moov->payload, moov->end, FOURCC('u', 'u', 'i', 'd'), canon_uuid,
                     BMFF_MAX_CHILD_BOXES, &canon);
    if (r < 0)
        return box_need(p, r, FOURCC('u', 'u', 'i', 'd'), "CR3 'moov'");
    return canon_cmt_parse(p, &canon, d);
}

/* Up to size bytes of a box's payload from skip on; the count read into *ret_n. */
static int box_payload(struct probe *p, const struct box *b, uint64_t skip, uint8_t *buf,
                       size_t size, size_t *ret_n)
{
    uint64_t have = b->end - b->payload;
    *ret_n = 0;
    if (skip >= have)
        return 0;
    *ret_n = have - skip < size ? (size_t)(have - skip) : size;
    return probe_read(p, b->payload + skip, buf, *ret_n);
}

/* The first 'data' box of an item list entry as text: well-known type 1 (UTF-8), or 0 (none
 * given, text in practice). */
static int qt_data_text(struct probe *p, const struct box *item, char *dst)
{
    uint8_t buf[8 + TEXT_READ_MAX];
    struct box b;
    size_t n;

    if (dst[0])
        return 0;
    int r = box_find(p, item->payload, item->end, FOURCC('d', 'a', 't', 'a'), NULL,
                     BMFF_MAX_CHILD_BOXES, &b);
    if (r < 0)
        return r == -ENOENT ? 0 : r;
    r = box_payload(p, &b, 0, buf, sizeof(buf), &n);
    if (r < 0)
        return r;
    if (n < 8)
        return error_set(&p->err, -EBADMSG, "truncated data box at offset %" PRIu64, b.start);
    uint32_t type = get_u32(buf, true);
    if (type == 0 || type == 1)
        text_set(dst, buf + 8, n - 8);
    return 0;
}

/* A QuickTime user data text such as (c)mak: a 16-bit length, a 16-bit language code and the text
 * (the first of its translations is taken). */
static int qt_udta_text(struct probe *p, const struct box *b, char *dst)
{
    uint8_t buf[4 + TEXT_READ_MAX];
    size_t n;

    if (dst[0])
        return 0;
    int r = box_payload(p, b, 0, buf, sizeof(buf), &n);
    if (r < 0 || n < 4)
        return r;
    size_t len = get_u16(buf, true);
    text_set(dst, buf + 4, len < n - 4 ? len : n - 4);
    return 0;
}

/* Which field a QuickTime 'keys' name fills, or -1. */
static int qt_key_field(const uint8_t *name, size_t len)
{
    static const struct {
        const char *name;
        int field;
    } keys[] = {
        {"com.apple.quicktime.make", TEXT_MAKE},
        {"com.apple.quicktime.model", TEXT_MODEL},
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strlen(keys[i].name) == len && memcmp(keys[i].name, name, len) == 0)
            return keys[i].field;
    return -1;
}

/* Reads a 'keys' box: fields[i] is the text field (plus one) that the ilst entry of type i fills,
 * for the first QT_KEYS_MAX keys. */
static int qt_keys(struct probe *p, const struct box *keys, uint8_t fields[QT_KEYS_MAX + 1])
{
    struct window w = {keys->payload, keys->end - keys->payload};
    uint8_t h[8], name[64];

    int r = win_read(p, &w, 0, h, 8, "keys box");
    if (r < 0)
        return r;
    uint32_t count = get_u32(h + 4, true);
    uint64_t pos = 8;
    for (uint32_t i = 1; i <= count && i <= QT_KEYS_MAX; i++) {
        r = win_read(p, &w, pos, h, 8, "keys entry");
        if (r < 0)
            return r;
        uint32_t size = get_u32(h, true);
        if (size < 8)
            return error_set(&p->err, -EBADMSG, "bad keys entry size at offset %" PRIu64,
                             w.base + pos);
        if (size - 8 <= sizeof(name) && get_u32(h + 4, true) == FOURCC('m', 'd', 't', 'a')) {
            r = win_read(p, &w, pos + 8, name, size - 8, "keys entry");
            if (r < 0)
                return r;
            int f = qt_key_field(name, size - 8);
            fields[i] = (uint8_t)(f + 1);
        }
        pos += size;
    }
    return 0;
}

/* The value of attribute name="..." inside the element el[0..len), or NULL. */
static const char *xml_attr(const char *el, size_t len, const char *name, size_t *ret_len)
{
    char pat[32];
    int n = snprintf(pat, sizeof(pat), " %s=\"", name);
    assert(n > 0 && (size_t)n < sizeof(pat));
    const char *v = memmem(el, len, pat, (size_t)n);
    if (!v)
        return NULL;
    v += n;
    const char *q = memchr(v, '"', len - (size_t)(v - el));
    if (!q)
        return NULL;
    *ret_len = (size_t)(q - v);
    return v;
}

/*
 * Sony's NonRealTimeMeta XML in a movie's 'meta' ('xml ' box): the camera is the attributes of
 * <Device manufacturer="Sony" modelName="ILCE-7M4" serialNo="..."/>. Entities are left as they
 * are (camera names have none).
 */
static int xml_parse(struct probe *p, const struct box *b, struct media_text *t)
{
    static const struct {
        const char *attr;
        int field;
    } attrs[] = {{"manufacturer", TEXT_MAKE}, {"modelName", TEXT_MODEL}, {"serialNo", TEXT_SERIAL}};
    char *buf = malloc(XML_READ_MAX);
    size_t n, len;

    if (!buf)
        return error_set(&p->err, -ENOMEM, "out of memory reading XML");
    /* a FullBox: the text follows the version and flags */
    int r = box_payload(p, b, 4, (uint8_t *)buf, XML_READ_MAX, &n);
    if (r < 0)
        goto out;
    const char *el = memmem(buf, n, "<Device ", 8);
    const char *end = el ? memchr(el, '>', n - (size_t)(el - buf)) : NULL;
    for (size_t i = 0; end && i < sizeof(attrs) / sizeof(attrs[0]); i++) {
        const char *v = xml_attr(el, (size_t)(end - el), attrs[i].attr, &len);
        if (v)
            text_set(t->v[attrs[i].field], (const uint8_t *)v, len);
    }
out:
    free(buf);
    return r;
}

/* A movie's 'meta' box: 'keys' and 'ilst' (QuickTime's com.apple.quicktime.make and model), or
 * Sony's 'xml '. */
static int qt_meta_parse(struct probe *p, const struct box *meta, struct media_text *t)
{
    uint8_t fields[QT_KEYS_MAX + 1] = {0};
    bool has_keys = false;
    uint8_t h[4];
    struct box b, item;
    int bad = 0;

    /* ISO's meta is a FullBox, QuickTime's is not: zeros where the first child's size would be
     * are the version and flags. */
    uint64_t pos = meta->payload;
    if (meta->end - pos >= 4) {
        int r = probe_read(p, pos, h, 4);
        if (r < 0)
            return r;
        if (get_u32(h, true) == 0)
            pos += 4;
    }
    for (int i = 0; i < BMFF_MAX_CHILD_BOXES && pos < meta->end && meta->end - pos >= 8; i++) {
        int r = box_read(p, pos, meta->end, &b);
        if (r < 0)
            return r;
        pos = b.end;
        if (b.type == FOURCC('k', 'e', 'y', 's') && !has_keys) {
            has_keys = true;
            r = qt_keys(p, &b, fields);
        } else if (b.type == FOURCC('x', 'm', 'l', ' ')) {
            r = xml_parse(p, &b, t);
        } else if (b.type == FOURCC('i', 'l', 's', 't') && has_keys) {
            uint64_t ipos = b.payload;
            for (int j = 0; j < BMFF_MAX_CHILD_BOXES && ipos < b.end && b.end - ipos >= 8; j++) {
                r = box_read(p, ipos, b.end, &item);
                if (r < 0)
                    break;
                ipos = item.end;
                int f = item.type >= 1 && item.type <= QT_KEYS_MAX ? fields[item.type] - 1 : -1;
                if (f >= 0 && (r = qt_data_text(p, &item, t->v[f])) < 0 && r != -EBADMSG)
                    return r;
            }
        }
        if (r < 0 && r != -EBADMSG)
            return r;
        if (r < 0 && !bad)
            bad = r;
    }
    return bad;
}

/* A GPMF text entry (KLV: key, type, size, repeat, value padded to 4 bytes) of type 'c'. */
static void gpmf_text(const uint8_t *v, size_t n, uint8_t type, char *dst)
{
    if (type == 'c')
        text_set(dst, v, n);
}

/*
 * GoPro's udta 'GPMF' box: KLV entries, the camera's in a DEVC container (one level down, walked
 * by a second loop, not by recursion): MINF the model, CASN the serial number.
 */
static int gpmf_parse(struct probe *p, const struct box *b, struct media_text *t)
{
    uint8_t *buf = malloc(GPMF_READ_MAX);
    size_t n;

    if (!buf)
        return error_set(&p->err, -ENOMEM, "out of memory reading GPMF");
    int r = box_payload(p, b, 0, buf, GPMF_READ_MAX, &n);
    if (r < 0)
        goto out;
    /* [pos, end) is the level being walked: the whole box, or one DEVC container */
    size_t pos = 0, end = n;
    bool inside = false;
    for (int i = 0; i < GPMF_READ_MAX / 4; i++) {
        size_t size = end - pos >= 8 ? (size_t)buf[pos + 5] * get_u16(buf + pos + 6, true) : 0;
        if (end - pos < 8 || size > end - pos - 8) {
            if (!inside)
                break; /* the end, or cut by GPMF_READ_MAX: what was found stays */
            /* out of the container (or past a malformed entry in it) to its next sibling */
            inside = false;
            pos = ((end + 3) & ~(size_t)3) < n ? (end + 3) & ~(size_t)3 : n;
            end = n;
            continue;
        }
        const uint8_t *k = buf + pos;
        pos += 8;
        if (!inside && memcmp(k, "DEVC", 4) == 0 && k[4] == 0) {
            inside = true;
            end = pos + size;
            continue;
        }
        if (memcmp(k, "MINF", 4) == 0)
            gpmf_text(buf + pos, size, k[4], t->v[TEXT_MODEL]);
        else if (memcmp(k, "CASN", 4) == 0)
            gpmf_text(buf + pos, size, k[4], t->v[TEXT_SERIAL]);
        size_t padded = (size + 3) & ~(size_t)3;
        pos += padded < end - pos ? padded : end - pos;
    }
    r = 0;
out:
    free(buf);
    return r;
}

/* A movie's 'udta': QuickTime texts ((c)mak, (c)mod), GoPro's GPMF and Canon's model name (CNMN,
 * second to the Model of Canon's CMT1 box, as for exiftool). */
static int qt_udta_parse(struct probe *p, const struct box *udta, struct media_text *t)
{
    uint8_t buf[TEXT_READ_MAX];
    struct box b;
    size_t n;
    int bad = 0;

    uint64_t pos = udta->payload;
    for (int i = 0; i < BMFF_MAX_CHILD_BOXES && pos < udta->end && udta->end - pos >= 8; i++) {
        int r = box_read(p, pos, udta->end, &b);
        if (r < 0)
            return r;
        pos = b.end;
        if (b.type == FOURCC(0xa9, 'm', 'a', 'k')) {
            r = qt_udta_text(p, &b, t->v[TEXT_MAKE]);
        } else if (b.type == FOURCC(0xa9, 'm', 'o', 'd')) {
            r = qt_udta_text(p, &b, t->v[TEXT_MODEL]);
        } else if (b.type == FOURCC('G', 'P', 'M', 'F')) {
            r = gpmf_parse(p, &b, t);
        } else if (b.type == FOURCC('C', 'N', 'M', 'N') && !t->v[TEXT_CANON_MODEL][0]) {
            r = box_payload(p, &b, 0, buf, sizeof(buf), &n);
            if (r == 0)
                text_set(t->v[TEXT_CANON_MODEL], buf, n);
        }
        if (r < 0 && r != -EBADMSG)
            return r;
        if (r < 0 && !bad)
            bad = r;
    }
    return bad;
}

/*
 * The camera of a movie, from the boxes in its moov: 'meta' (QuickTime keys), 'udta' (QuickTime
 * texts, Canon's CNMN) and Canon's uuid box (CMT1/CMT2 as in a CR3). The first
 * value found for a field wins. -EBADMSG when some part was malformed (what was found stays).
 */
static int movie_text(struct probe *p, const struct box *moov, struct exif_found *d)
{
    struct box b;
    int bad = 0;

    uint64_t pos = moov->payload;
    for (int i = 0; i < BMFF_MAX_CHILD_BOXES && pos < moov->end && moov->end - pos >= 8; i++) {
        int r = box_read(p, pos, moov->end, &b);
        if (r < 0)
            return r;
        pos = b.end;
        if (b.type == FOURCC('m', 'e', 't', 'a'))
            r = qt_meta_parse(p, &b, &d->text);
        else if (b.type == FOURCC('u', 'd', 't', 'a'))
            r = qt_udta_parse(p, &b, &d->text);
        else if (b.type == FOURCC('u', 'u', 'i', 'd') && memcmp(b.uuid, canon_uuid, 16) == 0)
            r = canon_cmt_parse(p, &b, d);
        if (r < 0 && r != -EBADMSG)
            return r;
        if (r < 0 && !bad)
            bad = r;
    }
    return bad;
}

struct heif_loc {
    unsigned method; /* 0: file offset, 1: inside idat */
    uint64_t offset;
    uint64_t length; /* 0: to the end of the source */
};

struct cursor {
    const uint8_t *buf;
    size_t len;
    size_t pos;
};

/* A big-endian unsigned of 0, 2, 4 or 8 bytes. */
static bool cur_uint(struct cursor *c, unsigned n, uint64_t *v)
{
    if (n > c->len - c->pos)
        return false;
    *v = 0;
    for (unsigned i = 0; i < n; i++)
        *v = *v << 8 | c->buf[c->pos++];
    return true;
}

static int heif_exif_item(struct probe *p, const struct box *iinf, uint32_t *ret_id)
{
    uint8_t e[16];
    struct box b;
    struct window w = {iinf->payload, iinf->end - iinf->payload};

    int r = win_read(p, &w, 0, e, 4, "iinf box");
    if (r < 0)
        return r;
    uint64_t pos = iinf->payload + 4 + (e[0] == 0 ? 2 : 4);
    for (int i = 0; i < HEIF_MAX_ITEMS && pos < iinf->end && iinf->end - pos >= 8; i++) {
        r = box_read(p, pos, iinf->end, &b);
        if (r < 0)
            return r;
        pos = b.end;
        /* Only infe version 2 and 3 have an item_type. */
        if (b.type != FOURCC('i', 'n', 'f', 'e') || b.end - b.payload < 12)
            continue;
        size_t n = b.end - b.payload < sizeof(e) ? (size_t)(b.end - b.payload) : sizeof(e);
        r = probe_read(p, b.payload, e, n);
        if (r < 0)
            return r;
        if (e[0] == 2 && get_u32(e + 8, true) == FOURCC('E', 'x', 'i', 'f')) {
            *ret_id = get_u16(e + 4, true);
            return 0;
        }
        if (e[0] == 3 && n >= 14 && get_u32(e + 10, true) == FOURCC('E', 'x', 'i', 'f')) {
            *ret_id = get_u32(e + 4, true);
            return 0;
        }
    }
    return error_set(&p->err, -ENODATA, "no Exif item in HEIF");
}

static int heif_iloc_find(struct cursor *c, uint32_t id, struct heif_loc *ret)
{
    uint64_t ver, b1, b2, count, v;
    size_t extents = 0;

    if (!cur_uint(c, 1, &ver) || !cur_uint(c, 3, &v) || !cur_uint(c, 1, &b1) ||
        !cur_uint(c, 1, &b2) || ver > 2)
        return -EBADMSG;
    unsigned off_size = (unsigned)(b1 >> 4), len_size = (unsigned)(b1 & 15);
    unsigned base_size = (unsigned)(b2 >> 4), idx_size = ver >= 1 ? (unsigned)(b2 & 15) : 0;
    /* 0, 4 or 8 bytes each; anything else would make the rest unparseable */
    unsigned sizes[4] = {off_size, len_size, base_size, idx_size};
    for (int i = 0; i < 4; i++)
        if (sizes[i] != 0 && sizes[i] != 4 && sizes[i] != 8)
            return -EBADMSG;
    if (!cur_uint(c, ver < 2 ? 2 : 4, &count))
        return -EBADMSG;
    for (uint64_t i = 0; i < count && i < HEIF_MAX_ITEMS; i++) {
        uint64_t item, method = 0, base, n;
        if (!cur_uint(c, ver < 2 ? 2 : 4, &item))
            return -EBADMSG;
        if (ver >= 1) {
            if (!cur_uint(c, 2, &method))
                return -EBADMSG;
            method &= 15;
        }
        if (!cur_uint(c, 2, &v) || !cur_uint(c, base_size, &base) || !cur_uint(c, 2, &n))
            return -EBADMSG;
        for (uint64_t j = 0; j < n; j++) {
            uint64_t off, len;
            if (++extents > HEIF_MAX_EXTENTS)
                return -EBADMSG;
            if (!cur_uint(c, idx_size, &v) || !cur_uint(c, off_size, &off) ||
                !cur_uint(c, len_size, &len))
                return -EBADMSG;
            /* Exif items are one extent in practice; the first one carries the header. */
            if (item == id && j == 0) {
                if (off > UINT64_MAX - base)
                    return -EBADMSG;
                ret->method = (unsigned)method;
                ret->offset = base + off;
                ret->length = len;
            }
        }
        if (item == id)
            return n > 0 ? 0 : -EBADMSG;
    }
    return -ENOENT;
}

static int heif_parse(struct probe *p, const struct box *meta, struct exif_found *d)
{
    struct box b, iinf = {0}, iloc = {0}, idat = {0};
    uint8_t *buf = NULL;
    uint32_t id = 0;
    struct heif_loc loc = {0};
    struct cursor c;
    struct window src = {0, p->rd->size}, item = {0}, tw = {0};
    uint8_t h[4];

    /* meta is a FullBox: children start after version and flags. */
    uint64_t pos = meta->payload + 4;
    for (int i = 0; i < BMFF_MAX_CHILD_BOXES && pos < meta->end && meta->end - pos >= 8; i++) {
        int r = box_read(p, pos, meta->end, &b);
        if (r < 0)
            return r;
        if (b.type == FOURCC('i', 'i', 'n', 'f') && !iinf.type)
            iinf = b;
        else if (b.type == FOURCC('i', 'l', 'o', 'c') && !iloc.type)
            iloc = b;
        else if (b.type == FOURCC('i', 'd', 'a', 't') && !idat.type)
            idat = b;
        pos = b.end;
    }
    if (!iinf.type)
        return error_set(&p->err, -ENODATA, "no iinf box in HEIF: no Exif item");
    int r = heif_exif_item(p, &iinf, &id);
    if (r < 0)
        return r;
    if (!iloc.type)
        return error_set(&p->err, -EBADMSG, "no iloc box in HEIF");

    size_t n =
        iloc.end - iloc.payload < HEIF_ILOC_MAX ? (size_t)(iloc.end - iloc.payload) : HEIF_ILOC_MAX;
    buf = malloc(n ? n : 1);
    if (!buf)
        return error_set(&p->err, -ENOMEM, "out of memory reading HEIF iloc");
    r = probe_read(p, iloc.payload, buf, n);
    if (r < 0)
        goto out;
    c = (struct cursor){buf, n, 0};
    r = heif_iloc_find(&c, id, &loc);
    if (r == -ENOENT) {
        r = error_set(&p->err, -EBADMSG, "HEIF Exif item %" PRIu32 " has no location", id);
        goto out;
    }
    if (r < 0) {
        r = error_set(&p->err, -EBADMSG, "malformed HEIF iloc box at offset %" PRIu64, iloc.start);
        goto out;
    }

    if (loc.method == 1) {
        if (!idat.type) {
            r = error_set(&p->err, -EBADMSG, "HEIF Exif item in idat, but no idat box");
            goto out;
        }
        src = (struct window){idat.payload, idat.end - idat.payload};
    } else if (loc.method != 0) {
        r = error_set(&p->err, -ENODATA, "HEIF Exif item stored by item reference");
        goto out;
    }
    r = win_sub(p, &src, loc.offset, loc.length ? loc.length : UINT64_MAX, "HEIF Exif item", &item);
    if (r < 0)
        goto out;
    /* The item starts with the offset of the TIFF header after these 4 bytes (6, to skip
     * "Exif\0\0"); some writers leave the offset out and start with "Exif\0\0" itself. */
    r = win_read(p, &item, 0, h, sizeof(h), "HEIF Exif item");
    if (r < 0)
        goto out;
    uint64_t skip = memcmp(h, "Exif", 4) == 0 ? 6 : 4 + (uint64_t)get_u32(h, true);
    r = win_sub(p, &item, skip, UINT64_MAX, "HEIF EXIF data", &tw);
    if (r < 0)
        goto out;
    r = tiff_parse(p, &tw, d);
out:
    free(buf);
    return r;
}

enum bmff_flavor { BMFF_MOVIE, BMFF_CR3, BMFF_HEIF };

static bool heif_brand(uint32_t brand)
{
    static const uint32_t brands[] = {
        FOURCC('h', 'e', 'i', 'c'), FOURCC('h', 'e', 'i', 'x'), FOURCC('h', 'e', 'i', 'm'),
        FOURCC('h', 'e', 'i', 's'), FOURCC('m', 'i', 'f', '1'), FOURCC('m', 'i', 'f', '2'),
        FOURCC('a', 'v', 'i', 'f'), FOURCC('a', 'v', 'i', 'o'),
    };
    for (size_t i = 0; i < sizeof(brands) / sizeof(brands[0]); i++)
        if (brand == brands[i])
            return true;
    return false;
}

static int bmff_flavor(struct probe *p, enum bmff_flavor *ret)
{
    struct box ftyp;
    uint8_t buf[8 + 4 * BMFF_MAX_BRANDS];

    *ret = BMFF_MOVIE; /* old QuickTime files have no ftyp */
    int r = box_read(p, 0, p->rd->size, &ftyp);
    if (r < 0 || ftyp.type != FOURCC('f', 't', 'y', 'p'))
        return r;
    size_t n =
        ftyp.end - ftyp.payload < sizeof(buf) ? (size_t)(ftyp.end - ftyp.payload) : sizeof(buf);
    if (n < 4)
        return error_set(&p->err, -EBADMSG, "truncated ftyp box");
    r = probe_read(p, ftyp.payload, buf, n);
    if (r < 0)
        return r;
    uint32_t major = get_u32(buf, true);
    if (major == FOURCC('c', 'r', 'x', ' ')) {
        *ret = BMFF_CR3;
        return 0;
    }
    if (heif_brand(major)) {
        *ret = BMFF_HEIF;
        return 0;
    }
    /* Compatible brands follow the minor version. */
    for (size_t i = 8; i + 4 <= n; i += 4) {
        if (get_u32(buf + i, true) == FOURCC('c', 'r', 'x', ' ')) {
            *ret = BMFF_CR3;
            return 0;
        }
        if (heif_brand(get_u32(buf + i, true)))
            *ret = BMFF_HEIF;
    }
    return 0;
}

static int bmff_parse(struct probe *p, struct media_info *info, struct exif_found *d,
                      bool *ret_exif)
{
    enum bmff_flavor flavor;
    struct box b;

    int r = bmff_flavor(p, &flavor);
    if (r < 0)
        return r;
    if (flavor == BMFF_HEIF) {
        info->kind = MEDIA_KIND_PHOTO;
        *ret_exif = true;
        r = box_find(p, 0, p->rd->size, FOURCC('m', 'e', 't', 'a'), NULL, BMFF_MAX_TOP_BOXES, &b);
        if (r == -ENOENT)
            return error_set(&p->err, -ENODATA, "no meta box in HEIF");
        if (r < 0)
            return r;
        return heif_parse(p, &b, d);
    }
    /* moov may come after a mdat of any size: walking the top-level headers finds it with a
     * read per box, never touching the media data. */
    r = box_find(p, 0, p->rd->size, FOURCC('m', 'o', 'o', 'v'), NULL, BMFF_MAX_TOP_BOXES, &b);
    if (r < 0)
        return box_need(p, r, FOURCC('m', 'o', 'o', 'v'), "file");
    if (flavor == BMFF_CR3) {
        info->kind = MEDIA_KIND_RAW;
        *ret_exif = true;
        return cr3_parse(p, &b, d);
    }
    info->kind = MEDIA_KIND_VIDEO;
    *ret_exif = false;
    r = mvhd_parse(p, &b, info);
    if (r < 0 && r != -ENODATA)
        return r;
    /* The camera's name is a bonus: a malformed part of it changes neither the result nor the
     * message; only a failure to read counts. */
    struct error saved = p->err;
    int t = movie_text(p, &b, d);
    /* Sony puts its XML in a 'meta' box at the top level */
    if (t == 0 || t == -EBADMSG) {
        t = box_find(p, 0, p->rd->size, FOURCC('m', 'e', 't', 'a'), NULL, BMFF_MAX_TOP_BOXES, &b);
        if (t == 0)
            t = qt_meta_parse(p, &b, &d->text);
    }
    if (t < 0 && t != -EBADMSG && t != -ENOENT)
        return t;
    p->err = saved;
    return r;
}

/* ---- Detection and the public functions ----------------------------------------------------- */

static bool is_tiff(const uint8_t *h, size_t n)
{
    if (n < 8)
        return false;
    if (h[0] == 'I' && h[1] == 'I')
        return (h[2] == 42 && h[3] == 0) || (h[2] == 'R' && (h[3] == 'O' || h[3] == 'S')) ||
               (h[2] == 'U' && h[3] == 0);
    if (h[0] == 'M' && h[1] == 'M')
        return (h[2] == 0 && h[3] == 42) || (h[2] == 'O' && h[3] == 'R');
    return false;
}

static bool is_bmff(const uint8_t *h, size_t n)
{
    static const char *const types[] = {"ftyp", "moov", "mdat", "free", "skip", "wide", "pnot"};
    if (n < 8)
        return false;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (memcmp(h + 4, types[i], 4) == 0)
            return true;
    return false;
}

static bool byte_at_is(struct probe *p, uint64_t off, uint8_t want)
{
    uint8_t b;
    return off < p->rd->size && probe_read(p, off, &b, 1) == 0 && b == want;
}

/* Containers we recognise but hold no date we read: -ENODATA rather than "malformed". */
static const char *unsupported_format(struct probe *p, const uint8_t *h, size_t n)
{
    if (n >= 12 && memcmp(h, "RIFF", 4) == 0 && memcmp(h + 8, "AVI ", 4) == 0)
        return "AVI";
    if (n >= 4 && memcmp(h, "\x1a\x45\xdf\xa3", 4) == 0)
        return "Matroska";
    if (n >= 4 && memcmp(h, "FOVb", 4) == 0)
        return "Sigma X3F";
    if (n >= 14 && memcmp(h + 6, "HEAPCCDR", 8) == 0)
        return "Canon CRW";
    if (n >= 6 && (memcmp(h, "GIF87a", 6) == 0 || memcmp(h, "GIF89a", 6) == 0))
        return "GIF";
    /* MPEG-TS packets are 188 bytes; AVCHD's .MTS/.M2TS add a 4-byte timestamp to each. */
    if ((h[0] == 0x47 && byte_at_is(p, 188, 0x47)) ||
        (n >= 5 && h[4] == 0x47 && byte_at_is(p, 196, 0x47)))
        return "MPEG transport stream";
    return NULL;
}

static int dates_resolve(struct probe *p, const struct exif_found *d, int r,
                         struct media_info *info)
{
    /* A read error may have hidden a better date; a malformed part after a good one may not. */
    if (r < 0 && r != -EBADMSG && r != -ENODATA)
        return r;
    for (int i = 0; i < DATE_COUNT; i++) {
        if (d->has[i]) {
            info->capture_time = d->time[i];
            info->has_offset = d->has_offset[i];
            info->utc_offset = d->has_offset[i] ? d->offset[i] : 0;
            return 0;
        }
    }
    if (r < 0)
        return r;
    return error_set(&p->err, -ENODATA, "no capture date in EXIF");
}

int media_probe(const struct media_reader *rd, const char *ext, struct media_info *ret,
                struct error *err)
{
    struct probe p = {.rd = rd};
    struct media_info info = {.kind = media_kind_from_ext(ext)};
    struct exif_found d = {0};
    struct window all;
    uint8_t h[16];
    bool exif = true;
    int r;

    assert(rd && rd->read_at && ret);
    all = (struct window){0, rd->size};
    if (rd->size == 0) {
        r = error_set(&p.err, -EBADMSG, "empty file");
        goto out;
    }
    size_t n = rd->size < sizeof(h) ? (size_t)rd->size : sizeof(h);
    r = probe_read(&p, 0, h, n);
    if (r < 0)
        goto out;

    const char *other;
    if (n >= 3 && h[0] == 0xff && h[1] == 0xd8 && h[2] == 0xff) {
        info.kind = MEDIA_KIND_PHOTO;
        r = jpeg_parse(&p, &all, &d);
    } else if (n >= 15 && memcmp(h, "FUJIFILMCCD-RAW", 15) == 0) {
        info.kind = MEDIA_KIND_RAW;
        r = raf_parse(&p, &all, &d);
    } else if (n >= 8 && memcmp(h, "\x89PNG\r\n\x1a\n", 8) == 0) {
        info.kind = MEDIA_KIND_PHOTO;
        r = png_parse(&p, &all, &d);
    } else if (n >= 12 && memcmp(h, "RIFF", 4) == 0 && memcmp(h + 8, "WEBP", 4) == 0) {
        info.kind = MEDIA_KIND_PHOTO;
        r = webp_parse(&p, &all, &d);
    } else if (is_tiff(h, n)) {
        /* Plain TIFF and most RAW formats look the same: trust the extension unless it is not a
         * still image, or the magic is a RAW one (ORF, RW2) or CR2's "CR" marker. */
        bool raw =
            h[2] == 'R' || h[3] == 'R' || h[2] == 'U' || (n >= 10 && h[8] == 'C' && h[9] == 'R');
        if (raw)
            info.kind = MEDIA_KIND_RAW;
        else if (info.kind != MEDIA_KIND_RAW)
            info.kind = MEDIA_KIND_PHOTO;
        r = tiff_parse(&p, &all, &d);
    } else if (is_bmff(h, n)) {
        r = bmff_parse(&p, &info, &d, &exif);
    } else if ((other = unsupported_format(&p, h, n))) {
        r = error_set(&p.err, -ENODATA, "no capture date support for %s files", other);
        goto out;
    } else {
        r = error_set(&p.err, -EBADMSG, "unrecognised file format");
        goto out;
    }
    if (exif)
        r = dates_resolve(&p, &d, r, &info);
    text_resolve(&d.text, &info);
out:
    if (r < 0) {
        if (err)
            *err = p.err;
        if (r != -ENODATA)
            return r;
        /* The format was read, without a date: the kind and the camera are still worth having. */
        info.capture_time = 0;
        info.utc_offset = 0;
        info.has_offset = 0;
    }
    *ret = info;
    return r;
}

struct mem_reader {
    const uint8_t *data;
    size_t len;
};

static long mem_read_at(void *ctx, uint64_t offset, void *buf, size_t len)
{
    const struct mem_reader *m = ctx;
    if (offset >= m->len)
        return 0;
    size_t n = m->len - (size_t)offset < len ? m->len - (size_t)offset : len;
    memcpy(buf, m->data + offset, n);
    return (long)n;
}

int media_probe_buffer(const uint8_t *data, size_t len, const char *ext, struct media_info *ret,
                       struct error *err)
{
    struct mem_reader m = {data, len};
    struct media_reader rd = {.read_at = mem_read_at, .ctx = &m, .size = len};
    return media_probe(&rd, ext, ret, err);
}

static long fd_read_at(void *ctx, uint64_t offset, void *buf, size_t len)
{
    int fd = *(const int *)ctx;
    if (offset > INT64_MAX)
        return 0;
    for (;;) {
        ssize_t n = pread(fd, buf, len, (off_t)offset);
        if (n >= 0)
            return (long)n;
        if (errno != EINTR)
            return -errno;
    }
}

int media_probe_fd(int fd, uint64_t size, const char *ext, struct media_info *ret,
                   struct error *err)
{
    struct media_reader rd = {.read_at = fd_read_at, .ctx = &fd, .size = size};
    return media_probe(&rd, ext, ret, err);
}

enum media_kind media_kind_from_ext(const char *ext)
{
    static const struct {
        const char *ext;
        enum media_kind kind;
    } table[] = {
        {"jpg", MEDIA_KIND_PHOTO},  {"jpeg", MEDIA_KIND_PHOTO}, {"jpe", MEDIA_KIND_PHOTO},
        {"heic", MEDIA_KIND_PHOTO}, {"heif", MEDIA_KIND_PHOTO}, {"hif", MEDIA_KIND_PHOTO},
        {"avif", MEDIA_KIND_PHOTO}, {"png", MEDIA_KIND_PHOTO},  {"tif", MEDIA_KIND_PHOTO},
        {"tiff", MEDIA_KIND_PHOTO}, {"webp", MEDIA_KIND_PHOTO}, {"gif", MEDIA_KIND_PHOTO},
        {"cr2", MEDIA_KIND_RAW},    {"cr3", MEDIA_KIND_RAW},    {"crw", MEDIA_KIND_RAW},
        {"nef", MEDIA_KIND_RAW},    {"nrw", MEDIA_KIND_RAW},    {"arw", MEDIA_KIND_RAW},
        {"sr2", MEDIA_KIND_RAW},    {"srf", MEDIA_KIND_RAW},    {"dng", MEDIA_KIND_RAW},
        {"orf", MEDIA_KIND_RAW},    {"rw2", MEDIA_KIND_RAW},    {"rwl", MEDIA_KIND_RAW},
        {"pef", MEDIA_KIND_RAW},    {"raf", MEDIA_KIND_RAW},    {"srw", MEDIA_KIND_RAW},
        {"3fr", MEDIA_KIND_RAW},    {"erf", MEDIA_KIND_RAW},    {"kdc", MEDIA_KIND_RAW},
        {"dcr", MEDIA_KIND_RAW},    {"mef", MEDIA_KIND_RAW},    {"mos", MEDIA_KIND_RAW},
        {"iiq", MEDIA_KIND_RAW},    {"x3f", MEDIA_KIND_RAW},    {"mp4", MEDIA_KIND_VIDEO},
        {"mov", MEDIA_KIND_VIDEO},  {"m4v", MEDIA_KIND_VIDEO},  {"3gp", MEDIA_KIND_VIDEO},
        {"avi", MEDIA_KIND_VIDEO},  {"mts", MEDIA_KIND_VIDEO},  {"m2ts", MEDIA_KIND_VIDEO},
        {"mkv", MEDIA_KIND_VIDEO},
    };
    if (!ext)
        return MEDIA_KIND_UNKNOWN;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcasecmp(ext, table[i].ext) == 0)
            return table[i].kind;
    return MEDIA_KIND_UNKNOWN;
}

const char *media_kind_to_string(enum media_kind kind)
{
    switch (kind) {
    case MEDIA_KIND_PHOTO:
        return "photo";
    case MEDIA_KIND_RAW:
        return "raw";
    case MEDIA_KIND_VIDEO:
        return "video";
    case MEDIA_KIND_UNKNOWN:
        break;
    }
    return "unknown";
}

int64_t media_floating_time(int64_t utc_seconds)
{
    time_t t = (time_t)utc_seconds;
    struct tm tm;
    if (!localtime_r(&t, &tm))
        return utc_seconds;
    return (int64_t)timegm(&tm);
}

void media_date_path(int64_t capture_time, char *buf, size_t size)
{
    time_t t = (time_t)capture_time;
    struct tm tm;
    if (!buf || size == 0)
        return;
    if (!gmtime_r(&t, &tm)) {
        snprintf(buf, size, "0000/00/00");
        return;
    }
    snprintf(buf, size, "%04lld/%02d/%02d", (long long)tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday);
}
