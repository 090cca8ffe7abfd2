# SPDX-License-Identifier: MIT
"""The Home Assistant add-on and the Unraid template, as far as they can be checked without a
Supervisor or an Unraid server: the add-on's config.yaml against the Supervisor's documented
rules, its run script turning options.json into a configuration that snapsync accepts (secrets
and the Supervisor's MQTT service included, checked against a real mosquitto and the Immich test
server), the Unraid template well-formed with what Community Applications needs, and
docker-compose.yml binding the image's volumes and port."""

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import BIN, SnapsyncTest, ImmichServer, tool  # noqa: E402
from broker import Broker  # noqa: E402

import yaml  # python3-yaml (Debian), for the add-on's YAML files

SRC = os.environ.get("SNAPSYNC_SOURCE_DIR",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
ADDON = os.path.join(SRC, "ha-addon", "snapsync")
RUN_SH = os.path.join(ADDON, "run.sh")


def project_version():
    with open(os.path.join(SRC, "CMakeLists.txt")) as f:
        return re.search(r"project\(snapsync VERSION ([0-9.]+)", f.read()).group(1)


def load_yaml(*parts):
    with open(os.path.join(*parts)) as f:
        return yaml.safe_load(f)


# What the Supervisor accepts (developers.home-assistant.io/docs/add-ons/configuration)
ARCHES = {"armhf", "armv7", "aarch64", "amd64", "i386"}
MAP_TYPES = {"homeassistant_config", "addon_config", "ssl", "addons", "backup", "share", "media",
             "all_addon_configs", "data"}
PRIVILEGES = {"BPF", "CHECKPOINT_RESTORE", "DAC_READ_SEARCH", "IPC_LOCK", "NET_ADMIN", "NET_RAW",
              "PERFMON", "SYS_ADMIN", "SYS_MODULE", "SYS_NICE", "SYS_PTRACE", "SYS_RAWIO",
              "SYS_RESOURCE", "SYS_TIME"}
SCHEMA_TYPE = re.compile(r"^(str|bool|email|url|password|port|device(\(.*\))?|match\(.+\)|"
                         r"list\([^|()]+(\|[^|()]+)*\)|(int|float)(\(-?[0-9.]*,-?[0-9.]*\))?)\??$")


class AddonConfig(unittest.TestCase):
    def setUp(self):
        self.cfg = load_yaml(ADDON, "config.yaml")

    def test_required_keys_and_values(self):
        for key in ("name", "version", "slug", "description", "arch"):
            self.assertIn(key, self.cfg, f"config.yaml lacks {key}")
        self.assertEqual(self.cfg["version"], project_version())
        self.assertRegex(self.cfg["slug"], r"^[a-z0-9_]+$")
        self.assertTrue(set(self.cfg["arch"]) <= ARCHES)
        self.assertTrue({"amd64", "aarch64"} <= set(self.cfg["arch"]))
        self.assertIs(self.cfg["ingress"], True)
        self.assertIsInstance(self.cfg["ingress_port"], int)
        self.assertRegex(self.cfg["panel_icon"], r"^mdi:[a-z0-9-]+$")
        for m in self.cfg["map"]:
            self.assertIn(m["type"], MAP_TYPES)
        self.assertTrue(set(self.cfg.get("privileged", [])) <= PRIVILEGES)
        for s in self.cfg["services"]:
            self.assertRegex(s, r"^(mqtt|mysql):(want|need|provide)$")
        self.assertIn("mqtt:want", self.cfg["services"])
        for port in self.cfg.get("ports", {}):
            self.assertRegex(port, r"^[0-9]+/(tcp|udp)$")

    def test_options_match_schema(self):
        options, schema = self.cfg["options"], self.cfg["schema"]
        for key in options:
            self.assertIn(key, schema, f"option {key} has no schema")
        for key, kind in schema.items():
            kinds = kind if isinstance(kind, list) else [kind]
            for k in kinds:
                self.assertRegex(k, SCHEMA_TYPE, f"schema of {key}")
            # a required key without a default keeps the add-on from starting until it is set
            if not isinstance(kind, list) and not kind.endswith("?"):
                self.assertIn(key, options, f"required option {key} has no default")
        for secret in ("immich_api_key", "smb_password", "mqtt_password", "web_ui_token"):
            self.assertTrue(schema[secret].startswith("password"), secret)
        # every option's default is one its schema allows
        for key, value in options.items():
            m = re.match(r"^list\((.*)\)\??$", str(schema[key]))
            if m:
                self.assertIn(value, m.group(1).split("|"), key)

    def test_translations_name_every_option(self):
        tr = load_yaml(ADDON, "translations", "en.yaml")["configuration"]
        self.assertEqual(set(tr), set(self.cfg["schema"]))

    def test_repository_and_build(self):
        repo = load_yaml(SRC, "ha-addon", "repository.yaml")
        self.assertTrue(repo.get("name"))
        build = load_yaml(ADDON, "build.yaml")
        self.assertEqual(set(build["build_from"]), set(self.cfg["arch"]))
        for f in ("Dockerfile", "run.sh", "DOCS.md", "README.md", "CHANGELOG.md", "icon.png"):
            self.assertTrue(os.path.isfile(os.path.join(ADDON, f)), f)
        with open(os.path.join(ADDON, "CHANGELOG.md")) as f:
            self.assertIn(self.cfg["version"], f.read())

    def test_one_published_image(self):
        """The add-on builds on the image of its own version, which the Unraid template pulls
        (docs/container.md, "Publishing"): one repository, nothing left from another release."""
        build = load_yaml(ADDON, "build.yaml")
        with open(os.path.join(ADDON, "Dockerfile")) as f:
            default = re.search(r"^ARG BUILD_FROM=(\S+)$", f.read(), re.M).group(1)
        unraid = ET.parse(os.path.join(SRC, "unraid", "snapsync.xml")).getroot()
        repository = unraid.findtext("Repository").rsplit(":", 1)[0]
        for image in list(build["build_from"].values()) + [default]:
            self.assertEqual(image, f"{repository}:{project_version()}")


class FakeSupervisor:
    """The Supervisor's GET /services/mqtt on a free port, answering only the right token."""

    def __init__(self, token, answer):
        outer = self
        self.asked = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.asked += 1
                if self.path != "/services/mqtt" or \
                        self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_response(401)
                    body = b'{"result": "error", "message": "Unauthorized"}'
                else:
                    self.send_response(200)
                    body = json.dumps({"result": "ok", "data": answer}).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class RunScript(SnapsyncTest):
    """ha-addon/snapsync/run.sh with jq, on options.json files like the Supervisor writes."""

    def run_addon(self, options, token=None, supervisor=None):
        data = os.path.join(self.dir, "addon-data")
        os.makedirs(data, exist_ok=True)
        with open(os.path.join(data, "options.json"), "w") as f:
            json.dump(options, f)
        env = dict(self.env, SNAPSYNC_ADDON_DATA=data, SNAPSYNC_ADDON_NO_EXEC="1")
        env.pop("SUPERVISOR_TOKEN", None)
        if token:
            env["SUPERVISOR_TOKEN"] = token
        if supervisor:
            env["SUPERVISOR_URL"] = supervisor.url
        p = subprocess.run(["sh", RUN_SH], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        config = os.path.join(data, "config.yaml")
        self.assertEqual(os.stat(config).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.join(data, ".env")).st_mode & 0o777, 0o600)
        shown = subprocess.run([BIN, "--config", config, "config", "--json"], env=self.env,
                               capture_output=True, text=True, timeout=60)
        self.assertEqual(shown.returncode, 0, shown.stderr)
        return config, json.loads(shown.stdout), p.stderr

    def test_defaults_give_a_folder_destination_and_ingress(self):
        defaults = load_yaml(ADDON, "config.yaml")
        addon = defaults
        _, cfg, _ = self.run_addon(dict(addon["options"], mqtt_enabled=False))
        self.assertEqual(cfg["service"]["web_ui_port"], addon["ingress_port"])
        self.assertEqual(cfg["service"]["web_ui_bind"], "0.0.0.0")
        self.assertIn("homeassistant.local", cfg["service"]["web_ui_hosts"])
        self.assertTrue(cfg["service"]["database_path"].endswith("addon-data/snapsync.db"))
        self.assertEqual(cfg["unraid"]["protocol"], "local")
        self.assertEqual(cfg["unraid"]["mount_point"], "/share/snapsync")
        self.assertFalse(cfg["immich"]["enabled"])
        self.assertFalse(cfg["mqtt"]["enabled"])

    def test_smb_destination_and_extra_hosts(self):
        _, cfg, _ = self.run_addon({
            "destination": "smb", "folder": "/share/x", "organize_by_date": False,
            "smb_host": "tower", "smb_share": "photos", "smb_path": "cards",
            "smb_username": "me", "smb_password": "p w", "immich_enabled": False,
            "mqtt_enabled": False, "auto_detect": True, "verify_checksums": True,
            "log_level": "debug", "web_ui_hosts": ["ha.example.org"], "name": 'Kitchen "Pi"'})
        u = cfg["unraid"]
        self.assertEqual((u["protocol"], u["host"], u["share"], u["path"]),
                         ("smb", "tower", "photos", "cards"))
        self.assertFalse(u["organize_by_date"])
        self.assertEqual(u["password"], "********")  # set (from .env), masked
        self.assertEqual(cfg["service"]["name"], 'Kitchen "Pi"')
        self.assertEqual(cfg["service"]["log_level"], "debug")
        self.assertIn("ha.example.org", cfg["service"]["web_ui_hosts"])
        # no pattern options: the built-in defaults
        self.assertEqual(cfg["backup"]["folder_pattern"], "{year}/{month}/{day}")
        self.assertEqual(cfg["backup"]["file_pattern"], "{name}{ext}")

    def test_pattern_options_reach_the_config(self):
        _, cfg, _ = self.run_addon({
            "destination": "folder", "folder": "/share/x", "organize_by_date": True,
            "folder_pattern": "{year}/{date} {model|nocamera}",
            "file_pattern": "IMG_{year}{month}{day}_{hour}{minute}{second}{EXT}",
            "immich_enabled": False, "immich_album_pattern": "{year}-{month} {card}",
            "mqtt_enabled": False, "auto_detect": True, "verify_checksums": True,
            "log_level": "info"})
        self.assertEqual(cfg["backup"]["folder_pattern"], "{year}/{date} {model|nocamera}")
        self.assertEqual(cfg["backup"]["file_pattern"],
                         "IMG_{year}{month}{day}_{hour}{minute}{second}{EXT}")
        self.assertEqual(cfg["immich"]["album_pattern"], "{year}-{month} {card}")

    def test_immich_key_with_quotes_reaches_the_server(self):
        key = 'k"e\\y #1 \'x'
        immich = ImmichServer(self.dir, api_key=key)
        self.addCleanup(immich.stop)
        config, cfg, _ = self.run_addon({
            "destination": "folder", "folder": self.dest, "organize_by_date": True,
            "immich_enabled": True, "immich_url": immich.url, "immich_api_key": key,
            "immich_album_mode": "none", "mqtt_enabled": False, "auto_detect": False,
            "verify_checksums": True, "log_level": "info"})
        self.assertEqual(cfg["immich"]["api_key"], "********")
        p = subprocess.run([BIN, "--config", config, "test-connection", "--json"], env=self.env,
                           capture_output=True, text=True, timeout=120)
        checks = {c["name"]: c for c in json.loads(p.stdout)["checks"]}
        immich_checks = [c for n, c in checks.items() if n.startswith("immich")]
        self.assertTrue(immich_checks and all(c["ok"] for c in immich_checks), p.stdout)

    def test_mqtt_from_the_supervisor(self):
        broker = Broker(self.dir, user="addons", password='s3cr"t')
        broker.launch()
        self.addCleanup(broker.stop)
        sup = FakeSupervisor("tok", {"host": "127.0.0.1", "port": broker.port, "ssl": False,
                                     "protocol": "3.1.1", "username": "addons",
                                     "password": 's3cr"t'})
        self.addCleanup(sup.stop)
        options = {"destination": "folder", "folder": self.dest, "organize_by_date": True,
                   "immich_enabled": False, "mqtt_enabled": True, "auto_detect": False,
                   "verify_checksums": True, "log_level": "info"}
        config, cfg, _ = self.run_addon(options, token="tok", supervisor=sup)
        self.assertTrue(cfg["mqtt"]["enabled"])
        self.assertEqual((cfg["mqtt"]["broker"], cfg["mqtt"]["port"]), ("127.0.0.1", broker.port))
        p = subprocess.run([BIN, "--config", config, "test-connection", "--json"], env=self.env,
                           capture_output=True, text=True, timeout=120)
        checks = {c["name"]: c for c in json.loads(p.stdout)["checks"]}
        self.assertTrue(checks["mqtt"]["ok"], p.stdout)

        # a token the Supervisor refuses: MQTT stays off, and the log says why
        _, cfg, log = self.run_addon(options, token="wrong", supervisor=sup)
        self.assertFalse(cfg["mqtt"]["enabled"])
        self.assertIn("Mosquitto", log)
        self.assertEqual(sup.asked, 2)


class UnraidTemplate(unittest.TestCase):
    PATH = os.path.join(SRC, "unraid", "snapsync.xml")

    def test_well_formed(self):
        subprocess.run([tool("xmllint"), "--noout", self.PATH], check=True, timeout=60)

    def test_what_community_applications_needs(self):
        root = ET.parse(self.PATH).getroot()
        self.assertEqual(root.tag, "Container")
        for tag in ("Name", "Repository", "Registry", "Network", "Privileged", "Support",
                    "Project", "Overview", "Category", "WebUI", "Icon"):
            el = root.find(tag)
            self.assertIsNotNone(el, tag)
            self.assertTrue((el.text or "").strip(), tag)
        self.assertEqual(root.findtext("WebUI"), "http://[IP]:[PORT:8080]/")
        self.assertIn(root.findtext("Privileged"), ("true", "false"))
        configs = root.findall("Config")
        for c in configs:
            for attr in ("Name", "Target", "Default", "Mode", "Description", "Type", "Display",
                         "Required", "Mask"):
                self.assertIn(attr, c.attrib, f"{c.get('Name')}: {attr}")
            self.assertIn(c.get("Type"), ("Path", "Port", "Variable", "Device", "Label"))
        targets = {c.get("Target"): c.get("Type") for c in configs}
        # the image's volumes and port (Dockerfile)
        volumes, port = dockerfile_volumes_and_port()
        for v in volumes:
            self.assertEqual(targets.get(v), "Path", v)
        self.assertEqual(targets.get(port), "Port")
        self.assertEqual(targets.get("/run/udev"), "Path")
        for secret in ("IMMICH_API_KEY", "SNAPSYNC_WEB_TOKEN", "MQTT_PASSWORD"):
            c = [c for c in configs if c.get("Target") == secret][0]
            self.assertEqual(c.get("Mask"), "true", secret)


def dockerfile_volumes_and_port():
    with open(os.path.join(SRC, "Dockerfile")) as f:
        dockerfile = f.read()
    volumes = json.loads(re.search(r"^VOLUME (\[.*\])$", dockerfile, re.M).group(1))
    port = re.search(r"^EXPOSE ([0-9]+)/tcp$", dockerfile, re.M).group(1)
    return volumes, port


class ComposeFile(unittest.TestCase):
    """docker-compose.yml (no Docker here): the service builds this Dockerfile, binds each of
    the image's volumes, reaches its port, and gives card detection what docs/container.md
    names, with the host's mounts propagating in only."""

    def test_service_matches_the_image(self):
        compose = load_yaml(SRC, "docker-compose.yml")
        svc = compose["services"]["snapsync"]
        self.assertEqual(svc["build"], ".")
        self.assertIs(svc["init"], True)
        binds = {}
        for v in svc["volumes"]:
            if isinstance(v, str):
                parts = v.split(":")
                binds[parts[1]] = {"source": parts[0], "mode": parts[2] if len(parts) > 2 else "rw"}
            else:
                self.assertEqual(v["type"], "bind")
                binds[v["target"]] = {"source": v["source"],
                                      "propagation": v.get("bind", {}).get("propagation")}
        volumes, port = dockerfile_volumes_and_port()
        for target in volumes:
            self.assertIn(target, binds, f"docker-compose.yml does not bind the volume {target}")
        if svc.get("network_mode") != "host":
            self.assertIn(f"{port}:{port}", [str(p) for p in svc.get("ports", [])])
        self.assertEqual(binds["/run/udev"]["mode"], "ro")
        self.assertEqual(binds["/media"]["propagation"], "rslave")
        self.assertIs(svc["privileged"], True)


class ContainerDefaults(SnapsyncTest):
    def test_the_image_default_config_is_accepted(self):
        path = os.path.join(SRC, "packaging", "container", "config.yaml")
        p = subprocess.run([BIN, "--config", path, "config", "--json"], env=self.env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        cfg = json.loads(p.stdout)
        self.assertEqual(cfg["service"]["database_path"], "/data/snapsync.db")
        self.assertEqual(cfg["unraid"]["mount_point"], "/backup")


if __name__ == "__main__":
    unittest.main()
