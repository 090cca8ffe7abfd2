# SPDX-License-Identifier: MIT
"""media_probe against exiftool on every sample: the capture date, its UTC offset, and the camera
(make, model, lens, serial) that src/media.c reads must be what exiftool reads from the same file.

The samples: files made here with ffmpeg and exiftool (EXIF in JPEG of both byte orders, TIFF,
DNG, PNG, WebP, and HEIC and AVIF from heif-enc; QuickTime keys and udta texts in MOV and MP4, ffmpeg's own udta texts; files
without a date), and every file of the media fuzz corpus (tests/fuzz/corpus/media: CR3, HEIF,
RAF, ORF, RW2, Canon and Nikon maker notes, Canon, GoPro and Sony movie boxes built byte by byte, cut and looping files, AVI and
MPEG-TS headers).
media_probe's side comes from tests/tools/media_probe_json.c ($SNAPSYNC_MEDIA_PROBE)."""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import TMP_ROOT, run_tool, tool

PROBE = os.environ.get("SNAPSYNC_MEDIA_PROBE", "media_probe_json")
SOURCE = os.environ.get("SNAPSYNC_SOURCE_DIR",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CORPUS = os.path.join(SOURCE, "tests", "fuzz", "corpus", "media")

# exiftool's tags (-G1 names) for each field, in media.c's order of preference
EXIF_DATES = [("ExifIFD:DateTimeOriginal", "ExifIFD:OffsetTimeOriginal"),
              ("ExifIFD:CreateDate", "ExifIFD:OffsetTimeDigitized"),
              ("IFD0:ModifyDate", "IFD0:OffsetTime")]
TEXT_TAGS = {
    "make": ["IFD0:Make", "Keys:Make", "UserData:Make", "XML:DeviceManufacturer"],
    "model": ["IFD0:Model", "Keys:Model", "UserData:Model", "GoPro:Model", "XML:DeviceModelName"],
    "lens": ["ExifIFD:LensModel", "Canon:LensModel"],
    "serial": ["ExifIFD:SerialNumber", "IFD0:CameraSerialNumber", "GoPro:CameraSerialNumber",
               "Nikon:SerialNumber", "XML:DeviceSerialNo"],
}
EXIFTOOL_ARGS = ["-j", "-G1", "-a", "-api", "QuickTimeUTC", "-d", "%Y:%m:%d %H:%M:%S",
                 "-Make", "-Model", "-LensModel", "-SerialNumber", "-CameraSerialNumber",
                 "-DateTimeOriginal", "-CreateDate", "-ModifyDate", "-OffsetTimeOriginal",
                 "-OffsetTimeDigitized", "-OffsetTime", "-DeviceManufacturer", "-DeviceModelName",
                 "-DeviceSerialNo", "-Error", "-Warning"]

# Where exiftool 12.57 (Debian 12) reads less than media.c, and why.
EXIFTOOL_LIMITS = {
    "synthetic-2.heic": "Can't currently extract Exif with construction method 1 (idat)",
    "panasonic.rw2": "a 46-byte RW2 header with IFD0 only: exiftool reads no tag of it",
}

VIDEO_DATE = "creation_time=2022-12-31T23:59:58Z"

# name, how it is made: ("image"|"video"|"video-camera", [exiftool assignments])
SAMPLES = [
    ("photo.jpg", "image", ["-DateTimeOriginal=2023:07:14 18:30:05", "-OffsetTimeOriginal=+02:00"]),
    ("be.jpg", "image", ["-ExifByteOrder=MM", "-CreateDate=2018:03:04 05:06:07",
                         "-OffsetTimeDigitized=-05:30"]),
    ("zero.jpg", "image", ["-DateTimeOriginal#=0000:00:00 00:00:00",
                           "-ModifyDate=2016:06:30 23:59:59"]),
    ("nodate.jpg", "image", []),
    ("camera.jpg", "image", ["-Make=Canon", "-Model=Canon EOS R5",
                             "-LensModel=RF24-105mm F4 L IS USM", "-SerialNumber=012345678901",
                             "-DateTimeOriginal=2024:05:06 07:08:09"]),
    ("camera-be.jpg", "image", ["-ExifByteOrder=MM", "-Make=NIKON CORPORATION",
                                "-Model=NIKON Z 8", "-SerialNumber=3001234",
                                "-LensModel=NIKKOR Z 24-120mm f/4 S"]),
    ("spaces.jpg", "image", ["-Make=  OM Digital Solutions  ", "-Model=OM-1   ",
                             "-LensModel=M.Zuiko Digital ED 12-40mm F2.8 PRO II",
                             "-DateTimeOriginal=2022:03:04 05:06:07"]),
    ("utf8.jpg", "image", ["-Make=Ünïcödé Kamera GmbH", "-Model=Modell Ω",
                           "-DateTimeOriginal=2022:03:04 05:06:07"]),
    ("photo.tif", "image", ["-DateTimeOriginal=2021:01:02 03:04:05", "-Make=Hasselblad",
                            "-Model=X2D 100C"]),
    ("photo.dng", "image", ["-DNGVersion=1.4.0.0", "-DateTimeOriginal=2020:02:29 12:00:00"]),
    ("camera.dng", "image", ["-DNGVersion=1.4.0.0", "-Make=Leica Camera AG", "-Model=LEICA Q3",
                             "-CameraSerialNumber=5551212",
                             "-DateTimeOriginal=2023:10:11 12:13:14"]),
    ("both-serials.dng", "image", ["-DNGVersion=1.4.0.0", "-CameraSerialNumber=DNG-1",
                                   "-SerialNumber=BODY-2"]),
    ("photo.png", "image", ["-DateTimeOriginal=2019:05:06 07:08:09", "-Make=Google",
                            "-Model=Pixel 8", "-LensModel=Pixel 8 back camera"]),
    ("photo.webp", "image", ["-DateTimeOriginal=2017:01:01 00:00:00", "-Make=samsung",
                             "-Model=SM-S918B", "-SerialNumber=R5CW1"]),
    # heif-enc (libheif-examples) carries the JPEG's EXIF into the Exif item
    ("heif-enc.heic", "heif", ["-Make=Apple", "-Model=iPhone 15 Pro",
                               "-LensModel=iPhone 15 Pro back triple camera 6.86mm f/1.78",
                               "-DateTimeOriginal=2024:01:02 03:04:05",
                               "-OffsetTimeOriginal=+01:00"]),
    ("heif-enc.avif", "heif", ["-Make=Xiaomi", "-Model=2304FPN6DG",
                               "-ModifyDate=2023:09:10 11:12:13"]),
    ("clip.mp4", "video", []),
    ("clip.mov", "video", []),
    ("clip.3gp", "video", []),
    ("keys.mov", "video", ["-Keys:Make=Apple", "-Keys:Model=iPhone 15 Pro"]),
    ("keys.mp4", "video", ["-Keys:Make=DJI", "-Keys:Model=Osmo Pocket 3"]),
    ("udta.mp4", "video", ["-UserData:Make=GoPro", "-UserData:Model=HERO12 Black"]),
    ("udta.mov", "video", ["-UserData:Make=Panasonic", "-UserData:Model=DC-GH6"]),
    ("both.mov", "video", ["-Keys:Make=Apple", "-Keys:Model=iPhone 15 Pro",
                           "-UserData:Make=Apple", "-UserData:Model=iPhone 15 Pro"]),
    ("ffmpeg.mov", "video-camera", []),
    ("nodate.mp4", "video-nodate", ["-Keys:Make=DJI", "-Keys:Model=Osmo Pocket 3"]),
]


def make_sample(path, how, assignments):
    ffmpeg = [tool("ffmpeg"), "-nostdin", "-v", "error", "-y", "-f", "lavfi"]
    ext = os.path.splitext(path)[1]
    if how == "heif":
        jpeg = path + ".jpg"
        make_sample(jpeg, "image", assignments)
        run_tool(tool("heif-enc"), *(["-A"] if ext == ".avif" else []), jpeg, "-o", path)
        os.unlink(jpeg)
        return
    if how == "image":
        args = ["-i", "color=red:s=16x16", "-frames:v", "1"]
        if ext in (".tif", ".dng"):
            args += ["-pix_fmt", "rgb24", "-f", "image2", "-c:v", "tiff"]
    else:
        args = ["-i", "testsrc=size=16x16:rate=1", "-t", "1", "-c:v", "mpeg4"]
        if how != "video-nodate":
            args += ["-metadata", VIDEO_DATE]
        if how == "video-camera":
            args += ["-metadata", "make=Sony", "-metadata", "model=ILCE-7M4"]
    run_tool(*ffmpeg, *args, path)
    if assignments:
        run_tool(tool("exiftool"), "-q", "-overwrite_original", *assignments, path)


def valid_date(value):
    return bool(value) and not value.startswith(("0000", "1904:01:01", "    "))


def expected_date(tags, kind):
    """(date, offset) as media.c should find them, from exiftool's tags."""
    if kind == "video":
        date = tags.get("QuickTime:CreateDate")
        return (date, None) if valid_date(date) else (None, None)
    for date_tag, offset_tag in EXIF_DATES:
        if valid_date(tags.get(date_tag)):
            return tags[date_tag], tags.get(offset_tag)
    return None, None


class MediaExiftoolTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.makedirs(TMP_ROOT, exist_ok=True)
        cls.dir = tempfile.mkdtemp(prefix="media-exiftool.", dir=TMP_ROOT)
        cls.files = []
        for name, how, assignments in SAMPLES:
            path = os.path.join(cls.dir, "gen-" + name)
            make_sample(path, how, assignments)
            cls.files.append(path)
        cls.files += sorted(os.path.join(CORPUS, n) for n in os.listdir(CORPUS))
        names = [os.path.basename(f) for f in cls.files]
        assert len(set(names)) == len(names), "two samples of one name"

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def probe(self):
        env = dict(os.environ, TZ="UTC0")
        out = subprocess.run([PROBE, *self.files], check=True, capture_output=True, env=env,
                             timeout=120).stdout
        ours = [json.loads(line) for line in out.decode("utf-8").splitlines()]
        out = subprocess.run([tool("exiftool"), *EXIFTOOL_ARGS, *self.files], capture_output=True,
                             env=env, timeout=300).stdout
        theirs = json.loads(out.decode("utf-8"))
        self.assertEqual(len(ours), len(self.files))
        self.assertEqual(len(theirs), len(self.files))
        return list(zip(self.files, ours, theirs))

    def test_matches_exiftool(self):
        mismatches = []
        compared = {"date": 0, "make": 0, "model": 0, "lens": 0, "serial": 0}
        for path, ours, tags in self.probe():
            name = os.path.basename(path)
            self.assertEqual(ours["file"], path)
            if ours["result"] == -74:  # EBADMSG: exiftool must have seen a problem too
                if "ExifTool:Warning" not in tags and "ExifTool:Error" not in tags:
                    mismatches.append(f"{name}: media_probe: {ours['error']}; exiftool: no warning")
                continue
            if "no capture date support" in ours.get("error", "") or name in EXIFTOOL_LIMITS:
                continue  # AVI, MPEG-TS: recognised, not read
            date, offset = expected_date(tags, ours["kind"])
            if (ours["date"], ours["offset"]) != (date, offset):
                mismatches.append(f"{name}: date {ours['date']} {ours['offset']}, "
                                  f"exiftool {date} {offset}")
            compared["date"] += date is not None
            if (ours["result"] == 0) != (date is not None):
                mismatches.append(f"{name}: result {ours['result']} with exiftool's date {date}")
            for field, names in TEXT_TAGS.items():
                # exiftool keeps leading spaces, media.c removes them (media.h)
                values = [str(tags[n]).strip(" ") for n in names if n in tags]
                if not values and ours[field] == "":
                    continue
                compared[field] += 1
                if ours[field] not in values:
                    mismatches.append(f"{name}: {field} {ours[field]!r}, exiftool {values}")
        self.assertEqual(mismatches, [])
        # the comparison covered each field on several files
        for field, n in compared.items():
            self.assertGreaterEqual(n, 3, f"{field} compared on {n} files only")

    def test_probe_reads_the_samples(self):
        """The samples carry what they should (a sample that lost its tags would make the
        comparison empty)."""
        by_name = {os.path.basename(p): ours for p, ours, _ in self.probe()}
        self.assertEqual(by_name["gen-camera.jpg"]["lens"], "RF24-105mm F4 L IS USM")
        self.assertEqual(by_name["gen-camera-be.jpg"]["result"], -61)  # ENODATA, with the camera
        self.assertEqual(by_name["gen-camera-be.jpg"]["model"], "NIKON Z 8")
        self.assertEqual(by_name["gen-spaces.jpg"]["make"], "OM Digital Solutions")
        self.assertEqual(by_name["gen-utf8.jpg"]["model"], "Modell Ω")
        self.assertEqual(by_name["gen-both-serials.dng"]["serial"], "BODY-2")
        self.assertEqual(by_name["gen-camera.dng"]["serial"], "5551212")
        self.assertEqual(by_name["gen-keys.mov"]["model"], "iPhone 15 Pro")
        self.assertEqual(by_name["gen-udta.mov"]["make"], "Panasonic")
        self.assertEqual(by_name["gen-ffmpeg.mov"]["model"], "ILCE-7M4")
        self.assertEqual(by_name["gen-nodate.mp4"]["result"], -61)
        self.assertEqual(by_name["gen-nodate.mp4"]["make"], "DJI")
        self.assertEqual(by_name["gen-heif-enc.heic"]["offset"], "+01:00")
        self.assertEqual(by_name["gen-heif-enc.avif"]["model"], "2304FPN6DG")
        self.assertEqual(by_name["synthetic.cr3"]["make"], "Canon")
        self.assertEqual(by_name["gopro-gpmf.mov"]["serial"], "C3441325084524")
        self.assertEqual(by_name["canon-cmt-cnmn.mov"]["lens"], "RF50mm F1.8 STM")
        self.assertEqual(by_name["canon-makernote.jpg"]["lens"], "EF24-105mm f/4L IS USM")
        self.assertEqual(by_name["nikon-makernote.jpg"]["serial"], "6012345")
        self.assertEqual(by_name["sony-xml.mp4"]["model"], "ILCE-7M4")


if __name__ == "__main__":
    unittest.main()
