/* SPDX-License-Identifier: MIT */
/*
 * Capture date, kind, camera and lens of a photo or video from its metadata. Reads only the small
 * metadata structures of a file (the content itself is read once, by the engine).
 *
 * Supported: JPEG (EXIF APP1), TIFF-based RAW (CR2, NEF, NRW, ARW, SR2, DNG, ORF, RW2, PEF, RAF via
 * its embedded JPEG, SRW, 3FR, ERF, KDC, MEF, MOS, IIQ), ISO-BMFF (CR3 CMT1/CMT2 boxes,
 * HEIC/HEIF/AVIF Exif item, MP4/MOV/M4V/3GP `mvhd` creation time), PNG eXIf and WebP EXIF chunks.
 * Camera and lens: EXIF Make, Model (IFD0), LensModel, BodySerialNumber (EXIF IFD; else a DNG's
 * CameraSerialNumber, Canon's maker note LensModel, Nikon's maker note SerialNumber), wherever the
 * date is read from; in movies QuickTime's `keys` com.apple.quicktime.make/model, the `udta` texts
 * (c)mak/(c)mod, GoPro's `udta` GPMF (MINF model, CASN serial), Canon's CMT1/CMT2 boxes and its
 * `udta` CNMN model name, Sony's XML (<Device manufacturer modelName serialNo>) in a `meta` box.
 * Everything it reads is untrusted: bounds-checked, no recursion without a depth limit, no
 * allocation sized from input.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "error.h"

/* Most bytes media_probe reads from one file, whatever its metadata claims. */
#define MEDIA_PROBE_MAX_BYTES (4 * 1024 * 1024)

/* Bytes of media_info's text fields, with the NUL. */
#define MEDIA_TEXT_MAX 64

enum media_kind { MEDIA_KIND_UNKNOWN, MEDIA_KIND_PHOTO, MEDIA_KIND_RAW, MEDIA_KIND_VIDEO };

struct media_info {
    enum media_kind kind;
    /* Capture time as seconds since the epoch. EXIF times have no zone: they are read as the
     * camera's wall clock and stored as if UTC ("floating"), so YYYY/MM/DD matches what the camera
     * showed. MP4/MOV mvhd times are UTC and are converted to local time the same way. */
    int64_t capture_time;
    /* Offset from UTC in seconds if the file says it (EXIF OffsetTimeOriginal), else 0 and
     * has_offset 0. */
    int32_t utc_offset;
    int has_offset;
    /* Camera and lens as the metadata names them (EXIF Make, Model, LensModel, BodySerialNumber
     * or their equivalents in maker notes and video boxes): NUL-terminated, leading and trailing
     * spaces and NULs removed, cut to fit (never inside a UTF-8 sequence); "" when absent. Raw
     * text: cleaning for file names is the caller's (pattern.h). */
    char make[MEDIA_TEXT_MAX];
    char model[MEDIA_TEXT_MAX];
    char lens[MEDIA_TEXT_MAX];
    char serial[MEDIA_TEXT_MAX];
};

/* Where media_probe reads from: a file (pread) or memory (tests, fuzzer). read_at reads up to
 * len bytes at offset into buf and returns the count (0 at end) or a negative errno. */
struct media_reader {
    long (*read_at)(void *ctx, uint64_t offset, void *buf, size_t len);
    void *ctx;
    uint64_t size; /* total size of the file */
};

/*
 * Reads the capture date, kind and camera of a file: only the metadata structures (EXIF IFDs,
 * box headers, the moov box wherever it lies), never the image or video data, at most
 * MEDIA_PROBE_MAX_BYTES. `ext` is the lower-case extension without dot, a hint for the kind; the
 * content decides the format. Errors: -ENODATA (no capture date found, also for containers
 * recognised but not read: AVI, Matroska, MPEG-TS/AVCHD, GIF, X3F, CRW), -EBADMSG (malformed,
 * unrecognised, or metadata needing more than MEDIA_PROBE_MAX_BYTES of reading), -ENOMEM, -EIO
 * and other read errors from read_at. Never crashes on any input. ret is written on success and
 * on -ENODATA: then capture_time, utc_offset and has_offset are 0, kind is what the content or
 * the extension says, and the text fields hold what was found (a photo without a date may still
 * name its camera); on any other error ret is untouched. A malformed part of a movie's camera
 * boxes does not fail the call (the fields it would have given stay ""). Any thread; the local
 * time zone is read (for MP4 times) as localtime_r sees it, so call tzset() after changing TZ.
 */
int media_probe(const struct media_reader *rd, const char *ext, struct media_info *ret,
                struct error *err);

/* media_probe on bytes in memory. */
int media_probe_buffer(const uint8_t *data, size_t len, const char *ext, struct media_info *ret,
                       struct error *err);

/* media_probe on an open file descriptor (pread; the offset of fd is not changed). */
int media_probe_fd(int fd, uint64_t size, const char *ext, struct media_info *ret,
                   struct error *err);

/* Kind from the extension alone (fallback when media_probe fails). */
enum media_kind media_kind_from_ext(const char *ext);

/* "photo", "raw", "video", "unknown". */
const char *media_kind_to_string(enum media_kind kind);

/* Converts a UTC instant (a file's mtime, an MP4 creation time) to the "floating" wall-clock
 * form of media_info.capture_time, using the local time zone. */
int64_t media_floating_time(int64_t utc_seconds);

/* Formats capture_time as "YYYY/MM/DD" into buf (at least 11 bytes). */
void media_date_path(int64_t capture_time, char *buf, size_t size);
