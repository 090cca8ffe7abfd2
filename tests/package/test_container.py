# SPDX-License-Identifier: MIT
"""The container image: built by scripts/container.sh (Debian base images made here with
mmdebstrap, podman build, no registry), then run from its own root. `podman run` cannot start
containers on every machine that can build them (here: cgroups in hybrid mode, rlimits refused),
so the image's root is mounted (podman mount of a created container) and its entrypoint run in a
chroot with the image's environment, the volumes bind-mounted as `docker run -v` would:
`--version`, a backup of a card folder into /backup with the database in /data, the dashboard
answering /api/health, and the Home Assistant add-on image built on top of it."""

import json
import os
import shlex
import sqlite3
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import SnapsyncTest, free_port, make_photo, make_video, md5, tool, wait_for  # noqa: E402

SRC = os.path.abspath(os.environ.get(
    "SNAPSYNC_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")))
PODMAN_OPTS = shlex.split(os.environ.get("SNAPSYNC_PODMAN_OPTS",
                                         "--cgroup-manager=cgroupfs --events-backend=file"))
ADDON_TAG = "localhost/snapsync-addon:test"
IMAGE_LIMIT = 200 * 1000 * 1000  # 186 MB with libsmbclient (docs/container.md): a guard on growth


def podman(*args, **kw):
    return subprocess.run([tool("podman")] + PODMAN_OPTS + list(args), check=True,
                          capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)


class Image:
    """Built once for the whole file: (tag, seconds the build took)."""
    tag = None
    seconds = None


def setUpModule():
    if os.geteuid() != 0:
        raise unittest.SkipTest("podman build, image mounts and chroot need root")
    t0 = time.monotonic()
    p = subprocess.run(["sh", os.path.join(SRC, "scripts", "container.sh")], cwd=SRC,
                       capture_output=True, text=True, timeout=1400)
    if p.returncode != 0:
        raise AssertionError(f"scripts/container.sh failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    Image.seconds = time.monotonic() - t0
    Image.tag = p.stdout.strip().splitlines()[-1]
    print(f"\nimage {Image.tag} built in {Image.seconds:.0f} s", file=sys.stderr)


class ImageRoot:
    """A container created from tag (never started) and its root mounted read-write, with
    /proc, /dev and the volumes bound in. run() runs the entrypoint with the image's environment
    in a chroot of that root."""

    def __init__(self, tag, volumes):
        self.inspect = json.loads(podman("image", "inspect", tag).stdout)[0]
        self.info = self.inspect["Config"]
        self.cid = podman("create", "--pull=never", tag).stdout.strip()
        self.root = podman("mount", self.cid).stdout.strip()
        self.mounts = []
        try:
            self._mount(["-t", "proc", "proc"], "/proc")
            self._mount(["--bind", "/dev"], "/dev")
            for host, target in volumes.items():
                self._mount(["--bind", host], target)
        except BaseException:
            self.close()
            raise

    def _mount(self, how, target):
        path = self.root + target
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount"] + how + [path], check=True, timeout=60)
        self.mounts.append(path)

    def env(self):
        return dict(e.split("=", 1) for e in self.info.get("Env", []))

    def argv(self, *args):
        return ["chroot", self.root] + self.info["Entrypoint"] + list(args or self.info.get("Cmd") or [])

    def run(self, *args, timeout=300):
        return subprocess.run(self.argv(*args), env=self.env(), capture_output=True, text=True,
                              timeout=timeout)

    def close(self):
        for path in reversed(self.mounts):
            subprocess.run(["umount", "-l", path], timeout=60)
        self.mounts = []
        subprocess.run([tool("podman")] + PODMAN_OPTS + ["umount", self.cid], capture_output=True)
        subprocess.run([tool("podman")] + PODMAN_OPTS + ["rm", "-f", self.cid], capture_output=True)


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, json.loads(r.read())


class ContainerImage(SnapsyncTest):
    def setUp(self):
        super().setUp()
        self.vol = {}
        for name in ("config", "data", "backup"):
            self.vol[name] = os.path.join(self.dir, "vol-" + name)
            os.makedirs(self.vol[name])
        self.image = ImageRoot(Image.tag, {self.vol["config"]: "/config",
                                           self.vol["data"]: "/data",
                                           self.vol["backup"]: "/backup",
                                           self.card: "/card"})
        self.cleanups.append(self.image.close)

    def test_metadata_and_size(self):
        info = self.image.info
        labels = info["Labels"]
        self.assertEqual(labels["org.opencontainers.image.licenses"], "MIT")
        self.assertTrue(labels["org.opencontainers.image.source"].startswith("https://"))
        version = self.image.run("--version").stdout
        self.assertIn(labels["org.opencontainers.image.version"], version)
        self.assertEqual(info["Cmd"], ["start"])
        self.assertEqual(sorted(info["Volumes"]), ["/backup", "/config", "/data"])
        self.assertIn("8080/tcp", info["ExposedPorts"])
        # kept only in Docker's image format (scripts/container.sh builds with --format=docker)
        self.assertIn("/api/health", " ".join(self.image.inspect["Healthcheck"]["Test"]))
        size = int(podman("image", "inspect", "--format", "{{.Size}}", Image.tag).stdout)
        print(f"\nimage size: {size / 1e6:.1f} MB", file=sys.stderr)
        self.assertLess(size, IMAGE_LIMIT)
        # runtime libraries only: no compiler, no -dev package
        for path in ("/usr/bin/gcc", "/usr/bin/cmake", "/usr/include/sqlite3.h"):
            self.assertFalse(os.path.exists(self.image.root + path), path)

    def test_backup_of_a_card_folder_into_the_volumes(self):
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0001.JPG", self.dir, "2024:05:06 07:08:09")
        make_photo(f"{self.card}/DCIM/100CANON/IMG_0002.JPG", self.dir, "2024:05:06 07:08:10")
        make_video(f"{self.card}/DCIM/100CANON/MVI_0003.MP4", self.dir)
        p = self.image.run("backup", "/card", "--json")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # first start: the default configuration and a private .env appear in /config
        self.assertTrue(os.path.isfile(os.path.join(self.vol["config"], "config.yaml")))
        self.assertEqual(os.stat(os.path.join(self.vol["config"], ".env")).st_mode & 0o777, 0o600)
        card = {md5(os.path.join(d, f)) for d, _, fs in os.walk(self.card) for f in fs}
        copies = {md5(os.path.join(d, f)) for d, _, fs in os.walk(self.vol["backup"]) for f in fs
                  if not f.startswith(".") and os.path.basename(d) != "ascmhl"}
        self.assertEqual(card, copies)
        # and the ASC MHL history next to them (docs/verification.md)
        self.assertTrue(os.path.isfile(os.path.join(self.vol["backup"], "ascmhl",
                                                    "ascmhl_chain.xml")))
        self.assertTrue(os.path.isdir(os.path.join(self.vol["backup"], "2024", "05", "06")))
        con = sqlite3.connect(os.path.join(self.vol["data"], "snapsync.db"))
        rows = con.execute("select f.md5, c.state from files f "
                           "join copies c on c.file_id = f.id").fetchall()
        con.close()
        self.assertEqual({m for m, _ in rows}, card)
        self.assertEqual({s for _, s in rows}, {"completed"})

    def test_dashboard_answers_health(self):
        port = free_port()
        proc = subprocess.Popen(self.image.argv("web", "--port", str(port)), env=self.image.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        def stop():
            proc.terminate()
            proc.wait(timeout=30)
        self.cleanups.append(stop)
        url = f"http://127.0.0.1:{port}/api/health"

        def answers():
            try:
                return get_json(url)[0] == 200
            except OSError:
                self.assertIsNone(proc.poll(), "snapsync web ended")
                return False
        wait_for(answers, 60, "the dashboard in the image")
        status, doc = get_json(url)
        self.assertIn("destinations", doc)
        # the image's own curl, as its HEALTHCHECK uses it
        hc = subprocess.run(["chroot", self.image.root, "curl", "-fsS", url],
                            capture_output=True, text=True, timeout=60)
        self.assertEqual(hc.returncode, 0, hc.stderr)
        self.assertIn("destinations", json.loads(hc.stdout))


class AddonImage(SnapsyncTest):
    """ha-addon/snapsync/Dockerfile on top of the image, as the Supervisor builds it with
    BUILD_FROM; its run script writes a configuration the image's snapsync accepts."""

    def test_addon_image_turns_options_into_a_config(self):
        podman("build", "--pull=never", "--isolation=chroot", "--network=host",
               "--build-arg", f"BUILD_FROM={Image.tag}", "-t", ADDON_TAG,
               os.path.join(SRC, "ha-addon", "snapsync"), timeout=600)
        data = os.path.join(self.dir, "addon-data")
        os.makedirs(data)
        with open(os.path.join(data, "options.json"), "w") as f:
            json.dump({"destination": "folder", "folder": "/share/snapsync",
                       "organize_by_date": True, "immich_enabled": False, "mqtt_enabled": False,
                       "auto_detect": True, "verify_checksums": True, "log_level": "info"}, f)
        image = ImageRoot(ADDON_TAG, {data: "/data"})
        self.cleanups.append(image.close)
        env = dict(image.env(), SNAPSYNC_ADDON_NO_EXEC="1")
        p = subprocess.run(image.argv(), env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = subprocess.run(["chroot", image.root, "snapsync", "--config", "/data/config.yaml",
                            "config", "--json"], env=image.env(), capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        cfg = json.loads(p.stdout)
        self.assertEqual(cfg["service"]["database_path"], "/data/snapsync.db")
        self.assertEqual(cfg["service"]["web_ui_port"], 8099)


if __name__ == "__main__":
    unittest.main()
