#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""An Immich test server that checks every request against the official OpenAPI spec.

Standard library only. It loads tests/immich/immich-openapi-specs.json (see PROVENANCE.md; the
sha256 is checked), finds the operation of every request by path template and method, and checks
the x-api-key security, the query parameters, headers, and the JSON or multipart/form-data body
against the operation's schema. Anything invalid gets a 400 with the problem and is kept in the
list of validation errors, which a test asserts to be empty at the end. It is stricter than Immich
on purpose: a property the schema does not name, a query parameter the spec does not list, a text
field sent after the file part, or a body without Content-Length is an error here.

Behaviour follows tests/immich/NOTES-derived rules (docs/design.md, "Immich destination"):
ping, server/version (a 2.x or 3.x server, --version), api-keys/me (--permissions), users/me and
server/media-types (what the official CLI asks first), uploads stored by SHA-1 answering 201
created or 200 duplicate, `x-immich-checksum` answered before the body is read, getAssetInfo with
the base64 SHA-1, bulk-upload-check (base64 or hex checksums), albums (list, create, add).
As a 2.x server it applies the 2.x field set of uploadAsset (an overlay on the 3.x spec below).
An upload field named in --ignore-fields is dropped unchecked, as Immich drops every unknown
field (the official CLI sends a stray `fileSize`); any other unknown field stays an error.
Uploads are read 1 MiB at a time and only SHA-1 is computed (as Immich does), so the server
keeps up with a fast client on loopback (bench/immich.py measures clients against it).

Control, outside /api (no key):
  GET  /control/state        requests, validation errors, assets, albums (JSON)
  POST /control/faults       {"faults": [rule, ...]} appended; rule = {"op": operationId,
                             "action": status|reset|stall|slow|malformed|wrong_checksum|
                             close_after_reply, "status": 500, "retry_after": "1", "at": bytes,
                             "seconds": s, "rate": bytes/s (slow), "times": n,
                             "message": text, "echo_key": true (the key sent, after it)}
                             stall: reading stops for `seconds` at byte `at`; slow: from byte
                             `at` on, the body is read at `rate` bytes a second (a slow link)
  POST /control/config       {"version": "2.7.0", "permissions": [...], "dup_close": bool,
                             "ignore_fields": [...], "trash": [asset id, ...],
                             "delete": [asset id, ...]}
  POST /control/reset        forget assets, albums, requests, errors and faults

Run: server.py --port 0 [--version 3.1.0] [--api-key KEY] [--permissions all,...]
[--ignore-fields fileSize,...]; it prints
"PORT <n>" on stdout once listening.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import re
import socket
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC_PATH = os.path.join(HERE, "immich-openapi-specs.json")
SPEC_SHA256 = "bc6712603e980faef3277d2417b123a5787ed445b077f084b3b181b098f856da"
JSON_MAX = 10 * 1000 * 1000  # Immich's JSON body limit (NOTES §4)
TEXT_PART_MAX = 1 << 20
READ_CHUNK = 1 << 20  # body reads without a pending fault; with one, 64 KiB as the faults expect
HEADERS_MAX = 16384

# What Immich accepts as media (server/src/utils/mime-types.ts, a subset large enough for cards).
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".heic", ".heif", ".hif", ".tif", ".tiff", ".dng", ".cr2",
             ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2",
             ".pef", ".srw", ".x3f", ".3fr", ".erf", ".kdc", ".mef", ".mos", ".iiq", ".gif",
             ".webp", ".avif", ".insp"}
VIDEO_EXT = {".mp4", ".mov", ".m4v", ".3gp", ".avi", ".mts", ".m2ts", ".mkv", ".webm", ".insv"}


# ---- a small OpenAPI 3.0 schema validator (what this spec uses) ----

class Spec:
    def __init__(self, path):
        raw = open(path, "rb").read()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != SPEC_SHA256:
            raise SystemExit(f"{path}: sha256 {digest} is not the one PROVENANCE.md records")
        self.doc = json.loads(raw)
        self.schemas = self.doc["components"]["schemas"]
        self.ops = []  # (method, regex, template, operation)
        for template, item in self.doc["paths"].items():
            rx = "^/api" + re.sub(r"\\\{([^}]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
            for method, op in item.items():
                if method in ("get", "post", "put", "patch", "delete"):
                    self.ops.append((method.upper(), re.compile(rx), template, op))

    def find(self, method, path):
        """(operation, path params) or (None, reason)."""
        known = False
        for m, rx, _template, op in self.ops:
            mt = rx.match(path)
            if mt:
                known = True
                if m == method:
                    return op, {k: unquote(v) for k, v in mt.groupdict().items()}
        return None, ("method not allowed" if known else "no such path in the spec")

    def resolve(self, schema):
        while "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            schema = self.schemas[name]
        return schema


UUID_RX = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
DATE_TIME_RX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$")


def check(spec, schema, value, where, errors, strict=True):
    """Appends to errors every way value breaks schema."""
    schema = spec.resolve(schema)
    if value is None:
        if not schema.get("nullable"):
            errors.append(f"{where}: null is not allowed")
        return
    for sub in schema.get("allOf", []):
        check(spec, sub, value, where, errors, strict)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            ok = 0
            for sub in schema[key]:
                e = []
                check(spec, sub, value, where, e, strict)
                ok += not e
            if ok == 0 or (key == "oneOf" and ok > 1):
                errors.append(f"{where}: matches {ok} of the {key} schemas")
    t = schema.get("type")
    if t == "object" or (t is None and "properties" in schema):
        if not isinstance(value, dict):
            errors.append(f"{where}: expected an object")
            return
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{where}: required property '{name}' is missing")
        extra = schema.get("additionalProperties", None)
        for name, v in value.items():
            if name in props:
                check(spec, props[name], v, f"{where}.{name}", errors, strict)
            elif isinstance(extra, dict):
                check(spec, extra, v, f"{where}.{name}", errors, strict)
            elif extra is False or (strict and extra is None and props):
                errors.append(f"{where}: property '{name}' is not in the schema")
        return
    if t == "array":
        if not isinstance(value, list):
            errors.append(f"{where}: expected an array")
            return
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: more than {schema['maxItems']} items")
        for i, v in enumerate(value):
            check(spec, schema.get("items", {}), v, f"{where}[{i}]", errors, strict)
        return
    if t == "string":
        if not isinstance(value, str):
            errors.append(f"{where}: expected a string, got {type(value).__name__}")
            return
        fmt = schema.get("format")
        if fmt == "uuid" and not UUID_RX.match(value):
            errors.append(f"{where}: '{value[:60]}' is not a uuid")
        if fmt == "date-time":
            if not DATE_TIME_RX.match(value):
                errors.append(f"{where}: '{value[:60]}' is not a date-time with a zone")
            else:
                try:
                    datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    errors.append(f"{where}: '{value[:60]}' is not a valid date-time")
        if fmt == "date":
            try:
                datetime.date.fromisoformat(value)
            except ValueError:
                errors.append(f"{where}: '{value[:60]}' is not a date")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: '{value[:60]}' does not match {schema['pattern'][:40]}...")
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{where}: shorter than {schema['minLength']}")
    elif t == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{where}: expected an integer")
            return
    elif t == "number":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            errors.append(f"{where}: expected a number")
            return
    elif t == "boolean":
        if not isinstance(value, bool):
            errors.append(f"{where}: expected a boolean")
            return
    if t in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: above {schema['maximum']}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: '{value}' is not one of {schema['enum'][:8]}")


def coerce_text(spec, schema, text, where, errors):
    """A multipart text field or query value, converted as the server does (Zod coerce)."""
    schema = spec.resolve(schema)
    t = schema.get("type")
    if t == "integer":
        if not re.fullmatch(r"\d+", text):
            errors.append(f"{where}: '{text[:40]}' is not an integer")
            return None
        return int(text)
    if t == "boolean":
        if text not in ("true", "false"):
            errors.append(f"{where}: '{text[:40]}' is not true or false")
            return None
        return text == "true"
    if t == "array":
        try:
            return json.loads(text)
        except ValueError:
            errors.append(f"{where}: not JSON")
            return None
    return text


# The 2.x uploadAsset field set (NOTES §3, §11): deviceAssetId and deviceId required, duration a
# free string; getAllAlbums took no `name` filter.
V2_UPLOAD_EXTRA = {"deviceAssetId": {"type": "string"}, "deviceId": {"type": "string"}}


def upload_schema(spec, major):
    s = dict(spec.resolve({"$ref": "#/components/schemas/AssetMediaCreateDto"}))
    if major < 3:
        props = dict(s["properties"])
        props.update(V2_UPLOAD_EXTRA)
        props["duration"] = {"type": "string"}
        s["properties"] = props
        s["required"] = list(s["required"]) + ["deviceAssetId", "deviceId"]
    return s


# ---- server state ----

class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.version = args.version
        self.api_key = args.api_key
        self.permissions = args.permissions.split(",")
        self.dup_close = False
        self.ignore_fields = {f for f in args.ignore_fields.split(",") if f}
        self.owner = str(uuid.uuid4())
        self.key_id = str(uuid.uuid4())
        self.reset()

    def reset(self):
        self.assets = {}  # id -> asset
        self.by_sha1 = {}  # raw sha1 -> id
        self.albums = {}  # id -> {"name", "assets": [ids]}
        self.requests = []
        self.errors = []
        self.faults = []

    def major(self):
        return int(self.version.split(".")[0])

    def take_fault(self, op_id, actions=None):
        with self.lock:
            for f in self.faults:
                if f.get("op") == op_id and f.get("times", 1) > 0 and \
                        (actions is None or f.get("action") in actions):
                    f["times"] = f.get("times", 1) - 1
                    return dict(f)
        return None


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Reject(Exception):
    """A request answered with an error status; validation problems also go to state.errors."""

    def __init__(self, status, message, validation=False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.validation = validation


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "immich-test"
    # TCP_NODELAY, as Node's HTTP server (Immich) sets by default: a reply goes out as two writes
    # (headers, body), and with Nagle on, the body waits for the client's delayed ACK (~40 ms)
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("server: " + (fmt % args) + "\n")

    # -- plumbing --

    def body_left(self):
        return self._left

    def read_body(self, n):
        n = min(n, self._left)
        if n <= 0:
            return b""
        data = self.rfile.read(n)
        if not data:
            raise ConnectionError("client closed the connection")
        self._left -= len(data)
        self._read += len(data)
        return data

    def drain(self):
        while self._left > 0:
            self.read_body(1 << 16)

    def reply(self, status, obj=None, raw=None, headers=None, close=False):
        body = raw if raw is not None else (b"" if obj is None else json.dumps(obj).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self._status = status

    def error_body(self, status, message):
        if self.server.state.major() >= 3:
            return {"message": message}
        names = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
        return {"message": message, "error": names.get(status, "Error"), "statusCode": status,
                "correlationId": uuid.uuid4().hex[:8]}

    def reset_connection(self):
        """Closes with RST (SO_LINGER 0), as a crashed proxy would."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self._status = "reset"

    # -- entry points --

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def handle_any(self, method):
        st = self.server.state
        url = urlsplit(self.path)
        self._status = None
        self._read = 0
        te = self.headers.get("Transfer-Encoding")
        cl = self.headers.get("Content-Length")
        self._left = int(cl) if cl and cl.isdigit() else 0
        rec = {"method": method, "path": url.path, "query": url.query, "op": None,
               "headers": {k.lower(): v for k, v in self.headers.items() if k.lower() in
                           ("content-type", "content-length", "x-immich-checksum", "expect",
                            "user-agent", "connection")},
               "has_api_key": "x-api-key" in self.headers, "fields": {}, "files": {}}
        if url.path.startswith("/control/"):
            return self.control(method, url.path)
        try:
            if te:
                raise Reject(400, "Transfer-Encoding is not accepted: send a Content-Length",
                             validation=True)
            if cl is None and method in ("POST", "PUT", "PATCH"):
                raise Reject(400, "a request body needs a Content-Length", validation=True)
            if url.path == "/.well-known/immich" and method == "GET":
                self.drain()
                return self.reply(200, {"api": {"endpoint": "/api"}})
            op, params = st.spec.find(method, url.path)
            if op is None:
                raise Reject(404 if params == "no such path in the spec" else 405,
                             f"{method} {url.path}: {params}", validation=True)
            rec["op"] = op["operationId"]
            self.check_query_and_headers(op, url.query, params)
            self.authorize(op)
            handler = getattr(self, "op_" + op["operationId"], None)
            if handler is None:
                raise Reject(501, f"{op['operationId']} is not implemented by the test server")
            handler(op, params, rec)
        except Reject as e:
            if e.validation:
                with st.lock:
                    st.errors.append(f"{method} {url.path}: {e.message}")
            try:
                self.drain()
            except (ConnectionError, OSError):
                self.close_connection = True
                return
            self.reply(e.status, self.error_body(e.status, e.message))
        except (ConnectionError, OSError, socket.timeout):
            self.close_connection = True
            rec["status"] = "client gone"
        finally:
            rec["status"] = rec.get("status") or self._status
            with st.lock:
                st.requests.append(rec)

    def check_query_and_headers(self, op, query, path_params):
        st = self.server.state
        errors = []
        declared = {p["name"]: p for p in op.get("parameters", [])}
        q = parse_qs(query, keep_blank_values=True)
        if "apiKey" in q:
            errors.append("the API key must not be sent in the query")
        if st.major() < 3 and op["operationId"] == "getAllAlbums":
            declared = {k: v for k, v in declared.items() if k in ("assetId", "shared")}
        for name, values in q.items():
            p = declared.get(name)
            if not p or p["in"] != "query":
                errors.append(f"query parameter '{name}' is not in the spec")
                continue
            v = coerce_text(st.spec, p["schema"], values[-1], f"query.{name}", errors)
            if v is not None:
                check(st.spec, p["schema"], v, f"query.{name}", errors)
        for name, p in declared.items():
            if p["in"] == "path":
                check(st.spec, p["schema"], path_params.get(name), f"path.{name}", errors)
            elif p["in"] == "query" and p.get("required") and name not in q:
                errors.append(f"required query parameter '{name}' is missing")
            elif p["in"] == "header":
                v = self.headers.get(name)
                if v is None and p.get("required"):
                    errors.append(f"required header '{name}' is missing")
                elif v is not None:
                    check(st.spec, p["schema"], v, f"header.{name}", errors)
        if errors:
            raise Reject(400, "; ".join(errors), validation=True)

    def authorize(self, op):
        st = self.server.state
        if not op.get("security"):
            return
        key = self.headers.get("x-api-key")
        if key is None:
            raise Reject(401, "Authentication required")
        if key != st.api_key:
            raise Reject(401, "Invalid API key")
        perm = op.get("x-immich-permission")
        with st.lock:
            perms = list(st.permissions)
        if perm and "all" not in perms and perm not in perms:
            raise Reject(403, f"Missing required permission: {perm}")

    def json_body(self, op):
        st = self.server.state
        ct = self.headers.get("Content-Type", "")
        if not ct.startswith("application/json"):
            raise Reject(400, f"expected application/json, got '{ct}'", validation=True)
        if self._left > JSON_MAX:
            raise Reject(413, "request entity too large")
        raw = self.read_body(self._left)
        try:
            obj = json.loads(raw)
        except ValueError as e:
            raise Reject(400, f"body is not JSON: {e}", validation=True)
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        errors = []
        check(st.spec, schema, obj, "body", errors)
        if errors:
            raise Reject(400, "; ".join(errors), validation=True)
        return obj

    def respond_checked(self, op, status, obj, headers=None):
        """Replies, first checking the answer against the spec (3.x only: the spec is 3.x)."""
        st = self.server.state
        resp = op["responses"].get(str(status))
        if st.major() >= 3 and resp and "content" in resp:
            errors = []
            check(st.spec, resp["content"]["application/json"]["schema"], obj, "response",
                  errors)
            if errors:
                with st.lock:
                    st.errors.append(f"test server bug, {op['operationId']}: {errors}")
        self.reply(status, obj, headers=headers)

    def fault_reply(self, op_id, when):
        """Applies a status/malformed fault for op at this point; True when it answered."""
        st = self.server.state
        f = st.take_fault(op_id, ("status", "malformed") if when == "before" else
                          ("status_after_body",))
        if not f:
            return False
        self.drain()
        if f["action"] == "malformed":
            self.reply(201 if op_id == "uploadAsset" else 200, raw=b"{\"id\": \"oops")
            return True
        status = f.get("status", 500)
        headers = {"Retry-After": str(f["retry_after"])} if "retry_after" in f else None
        message = f.get("message", "Internal server error")
        if f.get("echo_key"):  # as careless servers do: the refused key in the message
            message += " " + (self.headers.get("x-api-key") or "")
        self.reply(status, self.error_body(status, message),
                   headers=headers)
        return True

    # -- operations --

    def op_pingServer(self, op, params, rec):
        self.drain()
        self.respond_checked(op, 200, {"res": "pong"})

    def op_getServerVersion(self, op, params, rec):
        st = self.server.state
        self.drain()
        if self.fault_reply(op["operationId"], "before"):
            return
        major, minor, patch = (int(x) for x in st.version.split("."))
        v = {"major": major, "minor": minor, "patch": patch}
        if major >= 3:
            v["prerelease"] = None
        self.respond_checked(op, 200, v)

    def op_getMyApiKey(self, op, params, rec):
        st = self.server.state
        self.drain()
        if self.fault_reply(op["operationId"], "before"):
            return
        t = now_iso()
        with st.lock:
            perms = [p for p in st.permissions if p]
        self.respond_checked(op, 200, {"id": st.key_id, "name": "snapsync", "permissions": perms,
                                       "createdAt": t, "updatedAt": t})

    def op_getMyUser(self, op, params, rec):
        st = self.server.state
        self.drain()
        if self.fault_reply(op["operationId"], "before"):
            return
        t = now_iso()
        user = {"avatarColor": "primary", "createdAt": t, "deletedAt": None,
                "email": "owner@example.com", "id": st.owner, "isAdmin": True, "license": None,
                "name": "Owner", "oauthId": "", "profileChangedAt": t, "profileImagePath": "",
                "quotaSizeInBytes": None, "quotaUsageInBytes": 0, "shouldChangePassword": False,
                "status": "active", "storageLabel": "admin", "updatedAt": t}
        self.respond_checked(op, 200, user)

    def op_getSupportedMediaTypes(self, op, params, rec):
        # file extensions with the dot, despite the spec's "MIME types" (NOTES §2)
        self.drain()
        self.respond_checked(op, 200, {"image": sorted(IMAGE_EXT), "video": sorted(VIDEO_EXT),
                                       "sidecar": [".xmp"]})

    def asset_dto(self, a, checksum=None):
        st = self.server.state
        dur = a.get("duration")
        if st.major() >= 3:
            dur = int(dur) if isinstance(dur, int) or (isinstance(dur, str) and dur.isdigit()) \
                else None
        else:
            dur = dur if isinstance(dur, str) else "0:00:00.00000"
        d = {"id": a["id"], "checksum": checksum or a["checksum"], "createdAt": a["createdAt"],
             "duration": dur, "fileCreatedAt": a["fileCreatedAt"],
             "fileModifiedAt": a["fileModifiedAt"], "hasMetadata": False, "height": None,
             "isArchived": False, "isEdited": False, "isFavorite": False, "isOffline": False,
             "isTrashed": a.get("isTrashed", False), "localDateTime": a["fileCreatedAt"],
             "originalFileName": a["originalFileName"], "originalPath": "upload/" + a["id"],
             "ownerId": st.owner, "thumbhash": None, "type": a["type"],
             "updatedAt": a["createdAt"], "visibility": "timeline", "width": None}
        if st.major() < 3:
            d["deviceAssetId"] = a.get("deviceAssetId", "")
            d["deviceId"] = a.get("deviceId", "")
        return d

    def op_getAssetInfo(self, op, params, rec):
        st = self.server.state
        self.drain()
        if self.fault_reply(op["operationId"], "before"):
            return
        with st.lock:
            a = st.assets.get(params["id"])
            a = dict(a) if a else None
        if not a:
            raise Reject(400, "Not found or no asset.read access")
        checksum = None
        if st.take_fault(op["operationId"], ("wrong_checksum",)):
            checksum = base64.b64encode(hashlib.sha1(b"something else").digest()).decode()
        self.respond_checked(op, 200, self.asset_dto(a, checksum))

    def op_checkBulkUpload(self, op, params, rec):
        st = self.server.state
        if self.fault_reply(op["operationId"], "before"):
            return
        body = self.json_body(op)
        rec["fields"] = {"n": len(body["assets"])}
        results = []
        with st.lock:
            for item in body["assets"]:
                raw = decode_checksum(item["checksum"])
                if raw is None:
                    st.errors.append(f"bulk-upload-check: checksum '{item['checksum'][:50]}' "
                                     "is neither base64 nor hex SHA-1")
                    results.append({"id": item["id"], "action": "accept"})
                    continue
                aid = st.by_sha1.get(raw)
                if aid:
                    results.append({"id": item["id"], "action": "reject", "reason": "duplicate",
                                    "assetId": aid,
                                    "isTrashed": st.assets[aid].get("isTrashed", False)})
                else:
                    results.append({"id": item["id"], "action": "accept"})
        self.respond_checked(op, 200, {"results": results})

    def op_uploadAsset(self, op, params, rec):
        st = self.server.state
        op_id = op["operationId"]
        ct = self.headers.get("Content-Type", "")
        m = re.match(r'^multipart/form-data;\s*boundary="?([^";]+)"?$', ct)
        if not m:
            raise Reject(400, f"expected multipart/form-data with a boundary, got '{ct}'",
                         validation=True)
        if self.fault_reply(op_id, "before"):
            return
        checksum = self.headers.get("x-immich-checksum")
        if checksum is not None:
            raw = decode_checksum(checksum)
            if raw is None:
                raise Reject(400, f"x-immich-checksum '{checksum[:50]}' is neither base64 nor "
                                  "hex SHA-1", validation=True)
            with st.lock:
                aid = st.by_sha1.get(raw)
                dup_close = st.dup_close
            if aid:
                # Immich answers before reading the body and the connection is cut (NOTES §4).
                rec["early_duplicate"] = True
                self.reply(200, {"id": aid, "status": "duplicate"}, close=True)
                if dup_close:
                    self.reset_connection()
                else:
                    try:
                        self.connection.shutdown(socket.SHUT_WR)
                        self.connection.settimeout(5)
                        self.drain()
                    except (OSError, ConnectionError):
                        pass
                return
        schema = upload_schema(st.spec, st.major())
        fields, files, errors = self.read_multipart(m.group(1).encode(), schema, op_id)
        rec["fields"] = fields
        rec["files"] = {k: {kk: vv for kk, vv in v.items() if kk != "sha1raw"}
                        for k, v in files.items()}
        if self._status == "reset":
            return
        values = {}
        with st.lock:
            ignored = st.ignore_fields - set(schema["properties"])
        for name, text in fields.items():
            prop = schema["properties"].get(name)
            if prop is None and name in ignored:
                rec.setdefault("ignored", []).append(name)
                continue
            if prop is None:
                errors.append(f"field '{name}' is not in the schema")
                continue
            v = coerce_text(st.spec, prop, text, f"form.{name}", errors)
            if v is not None:
                check(st.spec, prop, v, f"form.{name}", errors)
                values[name] = v
        for name in files:
            prop = schema["properties"].get(name)
            if prop is None or st.spec.resolve(prop).get("format") != "binary":
                errors.append(f"file part '{name}' is not a file field of the schema")
        for name in schema["required"]:
            if name not in fields and name not in files:
                errors.append(f"required field '{name}' is missing")
        if errors:
            raise Reject(400, "; ".join(errors), validation=True)
        asset = files["assetData"]
        if asset["size"] == 0:
            raise Reject(400, "File is empty")
        if self.fault_reply(op_id, "after"):
            return
        name = fields["filename"] if "filename" in self._order else asset["filename"]
        ext = os.path.splitext(name or "")[1].lower()
        if ext not in IMAGE_EXT | VIDEO_EXT:
            raise Reject(400, f"Unsupported file type {name}")
        if "sidecarData" in files and not files["sidecarData"]["filename"].lower().endswith(".xmp"):
            raise Reject(400, f"Unsupported file type {files['sidecarData']['filename']}")
        with st.lock:
            aid = st.by_sha1.get(asset["sha1raw"])
            if aid:
                status, code = "duplicate", 200
            else:
                aid = str(uuid.uuid4())
                st.by_sha1[asset["sha1raw"]] = aid
                st.assets[aid] = {
                    "id": aid, "checksum": base64.b64encode(asset["sha1raw"]).decode(),
                    "sha1": asset["sha1"], "size": asset["size"],
                    "originalFileName": fields.get("filename", asset["filename"]),
                    "fileCreatedAt": fields["fileCreatedAt"],
                    "fileModifiedAt": fields["fileModifiedAt"], "createdAt": now_iso(),
                    "type": "VIDEO" if ext in VIDEO_EXT else "IMAGE",
                    "duration": fields.get("duration"),
                    "deviceAssetId": fields.get("deviceAssetId"),
                    "deviceId": fields.get("deviceId"),
                    "sidecar": files.get("sidecarData", {}).get("sha1"),
                    "sidecarSize": files.get("sidecarData", {}).get("size"),
                }
                status, code = "created", 201
        rec["result"] = status
        self.respond_checked(op, code, {"id": aid, "status": status})

    def read_multipart(self, boundary, schema, op_id):
        """Streams the body: text fields kept, file parts hashed (never held whole)."""
        st = self.server.state
        fields, files, errors, order = {}, {}, [], []
        delim = b"\r\n--" + boundary
        buf = bytearray(b"\r\n")  # so the first delimiter looks like the others
        stall = st.take_fault(op_id, ("stall", "reset", "slow"))
        stall_at = stall.get("at", 0) if stall else None
        slow_rate = None

        def fill(need):
            nonlocal stall_at, slow_rate
            while len(buf) < need:
                if stall_at is not None and self._read >= stall_at:
                    if stall["action"] == "reset":
                        self.reset_connection()
                        raise ConnectionError("reset by fault")
                    if stall["action"] == "slow":
                        slow_rate = max(1024, int(stall.get("rate", 256 << 10)))
                        # a small receive buffer, as a slow link has: the client sees the body
                        # drain at the rate, not vanish into megabytes of loopback buffers
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
                    else:
                        time.sleep(stall.get("seconds", 5))
                    stall_at = None
                if slow_rate is not None:
                    # a tenth of a second's worth at a time: progress never stops for long
                    time.sleep(0.1)
                    chunk = self.read_body(max(1, slow_rate // 10))
                else:
                    chunk = self.read_body(1 << 16 if stall_at is not None else READ_CHUNK)
                if not chunk:
                    return False
                buf.extend(chunk)
            return True

        # preamble up to the first delimiter
        if not fill(len(delim) + 2) or not buf.startswith(delim):
            raise Reject(400, "multipart body does not start with the boundary", validation=True)
        del buf[:len(delim)]
        seen_file = False
        while True:
            fill(2)
            if buf[:2] == b"--":
                break
            if buf[:2] != b"\r\n":
                raise Reject(400, "bad multipart delimiter line", validation=True)
            del buf[:2]
            while b"\r\n\r\n" not in buf:
                if len(buf) > HEADERS_MAX or not fill(len(buf) + 1):
                    raise Reject(400, "bad multipart part headers", validation=True)
            head, _, rest = bytes(buf).partition(b"\r\n\r\n")
            buf[:] = rest
            hdrs = {}
            for line in head.decode("utf-8", "replace").split("\r\n"):
                k, _, v = line.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            cd = hdrs.get("content-disposition", "")
            nm = re.search(r'(?:^|;)\s*name="([^"]*)"', cd)
            fn = re.search(r'(?:^|;)\s*filename="([^"]*)"', cd)
            if not cd.startswith("form-data") or not nm:
                raise Reject(400, f"part without form-data name: '{cd[:80]}'", validation=True)
            name = nm.group(1)
            is_file = fn is not None
            if name in fields or name in files:
                errors.append(f"part '{name}' sent twice")
            if not is_file and seen_file and name != "sidecarData":
                errors.append(f"text field '{name}' comes after the file part assetData")
            sha1, size, text = hashlib.sha1(), 0, bytearray()
            while True:
                # the part's bytes up to the delimiter, or all but a delimiter's length (which
                # may be its start); hashed through a memoryview, not copied
                idx = buf.find(delim)
                end = idx if idx >= 0 else max(0, len(buf) - len(delim))
                if end:
                    if is_file:
                        with memoryview(buf) as view, view[:end] as data:
                            sha1.update(data)
                    else:
                        if len(text) + end > TEXT_PART_MAX:
                            raise Reject(400, f"text field '{name}' too long", validation=True)
                        text.extend(buf[:end])
                    size += end
                del buf[:end + (len(delim) if idx >= 0 else 0)]
                if idx >= 0:
                    break
                if not fill(len(buf) + 1):
                    raise Reject(400, "multipart body ends inside a part", validation=True)
            if is_file:
                files[name] = {"filename": unquote(fn.group(1)), "size": size,
                               "sha1": sha1.hexdigest(), "sha1raw": sha1.digest(),
                               "content_type": hdrs.get("content-type", "")}
                if name == "assetData":
                    seen_file = True
            else:
                fields[name] = text.decode("utf-8", "replace")
                if not seen_file:
                    order.append(name)
        if self._left > 0:
            self.drain()
        self._order = order
        return fields, files, errors

    def op_getAllAlbums(self, op, params, rec):
        st = self.server.state
        self.drain()
        if self.fault_reply(op["operationId"], "before"):
            return
        q = parse_qs(urlsplit(self.path).query)
        name = q.get("name", [None])[-1]
        with st.lock:
            out = [self.album_dto(i, a) for i, a in st.albums.items()
                   if name is None or a["name"] == name]
        self.respond_checked(op, 200, out)

    def album_dto(self, aid, a):
        t = a["createdAt"]
        st = self.server.state
        owner = {"role": "owner",
                 "user": {"avatarColor": "primary", "email": "owner@example.com", "id": st.owner,
                          "name": "Owner", "profileChangedAt": t, "profileImagePath": ""}}
        return {"albumName": a["name"], "albumThumbnailAssetId": None, "albumUsers": [owner],
                "assetCount": len(a["assets"]), "createdAt": t, "description": "",
                "hasSharedLink": False, "id": aid, "isActivityEnabled": True, "shared": False,
                "updatedAt": t}

    def op_createAlbum(self, op, params, rec):
        st = self.server.state
        if self.fault_reply(op["operationId"], "before"):
            return
        body = self.json_body(op)
        rec["fields"] = body
        aid = str(uuid.uuid4())
        with st.lock:
            st.albums[aid] = {"name": body["albumName"], "assets": list(body.get("assetIds", [])),
                              "createdAt": now_iso()}
            dto = self.album_dto(aid, st.albums[aid])
        self.respond_checked(op, 201, dto)

    def op_addAssetsToAlbum(self, op, params, rec):
        st = self.server.state
        if self.fault_reply(op["operationId"], "before"):
            return
        body = self.json_body(op)
        rec["fields"] = {"n": len(body["ids"])}
        out = []
        with st.lock:
            album = st.albums.get(params["id"])
            if album is None:
                raise Reject(400, "Not found or no album.update access")
            for i in body["ids"]:
                if i in album["assets"]:
                    out.append({"id": i, "success": False, "error": "duplicate"})
                elif i not in st.assets:
                    out.append({"id": i, "success": False, "error": "not_found"})
                else:
                    album["assets"].append(i)
                    out.append({"id": i, "success": True})
        self.respond_checked(op, 200, out)

    # -- control --

    def control(self, method, path):
        st = self.server.state
        raw = self.read_body(self._left) if self._left else b""
        body = json.loads(raw) if raw else {}
        with st.lock:
            if path == "/control/state":
                out = {"requests": st.requests, "errors": st.errors,
                       "assets": list(st.assets.values()),
                       "albums": [{"id": i, "name": a["name"], "assets": a["assets"]}
                                  for i, a in st.albums.items()],
                       "faults": st.faults}
            elif path == "/control/faults":
                st.faults.extend(body.get("faults", []))
                out = {"ok": True}
            elif path == "/control/config":
                if "version" in body:
                    st.version = body["version"]
                if "permissions" in body:
                    st.permissions = body["permissions"]
                if "dup_close" in body:
                    st.dup_close = body["dup_close"]
                if "ignore_fields" in body:
                    st.ignore_fields = set(body["ignore_fields"])
                if "trash" in body:
                    for aid in body["trash"]:
                        st.assets[aid]["isTrashed"] = True
                if "delete" in body:  # gone for good, as after emptying the trash
                    for aid in body["delete"]:
                        st.assets.pop(aid)
                        st.by_sha1 = {k: v for k, v in st.by_sha1.items() if v != aid}
                out = {"ok": True}
            elif path == "/control/reset":
                st.reset()
                out = {"ok": True}
            else:
                out = None
        if out is None:
            return self.reply(404, {"message": "no such control"})
        self.reply(200, out)


def decode_checksum(text):
    """Immich decides by length: 28 chars base64, 40 hex (NOTES §4)."""
    try:
        if len(text) == 40:
            return bytes.fromhex(text)
        if len(text) == 28:
            raw = base64.b64decode(text, validate=True)
            return raw if len(raw) == 20 else None
    except ValueError:
        return None
    return None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--version", default="3.1.0", help="server version to report, 2.x or 3.x")
    ap.add_argument("--api-key", default="test-key")
    ap.add_argument("--permissions", default="all")
    ap.add_argument("--ignore-fields", default="",
                    help="upload fields to drop unchecked, comma-separated (Immich drops unknown "
                         "fields; the official CLI sends fileSize)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    srv = Server(("127.0.0.1", args.port), Handler)
    srv.verbose = args.verbose
    srv.state = State(args)
    srv.state.spec = Spec(SPEC_PATH)
    print(f"PORT {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
