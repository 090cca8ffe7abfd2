/* SPDX-License-Identifier: MIT */
/*
 * Configuration: config.yaml, then .env, then the environment.
 *
 * Everything about a key lives in one row of `keys[]`: section, name, type, where it is stored in
 * struct config, its default (as YAML text, applied through the same setter as a file value, so a
 * default cannot escape the checks), the value of the embedded default when it differs, bounds,
 * flags (secret, extension list, ...) and a one-line help. Parsing, defaults, bounds checks,
 * `config --template` and masked printing all walk that table; the few rules that tie keys
 * together ("immich.enabled needs a url") are a second, smaller table, `rules[]`.
 *
 * The YAML is read with libyaml's event API, one event at a time, by a small state machine that
 * knows the only shape we accept (a mapping of sections, each a mapping of keys, a value being a
 * scalar or a list of scalars). Anything else stops the parse at once with the line it was on, so
 * hostile nesting or aliases never grow anything. Values are bounded (CONFIG_VALUE_MAX bytes,
 * CONFIG_LIST_MAX items) and files are bounded by CONFIG_FILE_MAX.
 *
 * Secret values never reach an error message or config_print.
 */
#include "config.h"

#include "fileio.h"
#include "notify_hook.h"
#include "notify_mail.h"
#include "pattern.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <yaml.h>

#define CONFIG_VALUE_MAX 4096 /* longest string value, list item or secret */
#define CONFIG_LIST_MAX 256   /* most items in a list */
#define CONFIG_WARNINGS_MAX 32
#define CONFIG_SYSTEM_PATH "/etc/snapsync/config.yaml"
#define SHOW_MAX 48 /* how much of a bad value an error message quotes */
#define MASK "********"

enum section {
    SEC_SERVICE,
    SEC_SD_CARD,
    SEC_FILES,
    SEC_IMMICH,
    SEC_UNRAID,
    SEC_LOCAL,
    SEC_S3,
    SEC_RCLONE,
    SEC_MQTT,
    SEC_BACKUP,
    SEC_NOTIFY,
    SEC_NOTIFY_EMAIL, /* notify.email, a mapping inside notify */
    N_SECTIONS
};

/* A nested section (notify.email) names its parent and is written inside it; path is how keys
 * are named in messages ("notify.email.host"). */
static const struct section_row {
    const char *name;
    const char *help;
    const char *path; /* NULL: name */
    bool nested;
    enum section parent;
} sections[N_SECTIONS] = {
    [SEC_SERVICE] = {.name = "service", .help = "The service itself."},
    [SEC_SD_CARD] = {.name = "sd_card", .help = "Where SD cards show up."},
    [SEC_FILES] = {.name = "files", .help = "Which files on a card are backed up."},
    [SEC_IMMICH] = {.name = "immich", .help = "Upload to an Immich server."},
    [SEC_UNRAID] = {.name = "unraid",
                    .help = "Copy to a file share (SMB or NFS on Unraid or any NAS) or a local "
                            "folder.\n# file_mode, dir_mode, owner, group: nfs and local only; "
                            "with smb the server\n# decides (force user, create mask)."},
    [SEC_LOCAL] = {.name = "local",
                   .help = "Also copy to a local folder (a USB disk), next to unraid."},
    [SEC_S3] = {.name = "s3",
                .help =
                    "Also upload to an S3-compatible object store (AWS, MinIO, Ceph, B2, R2 ...)."},
    [SEC_RCLONE] = {.name = "rclone",
                    .help = "Also copy to any rclone remote (Google Drive, OneDrive, Dropbox, B2, "
                            "SFTP, WebDAV ...)\n# through Debian's rclone; set the remote up "
                            "first with `rclone config`."},
    [SEC_MQTT] = {.name = "mqtt", .help = "Report to Home Assistant through MQTT."},
    [SEC_BACKUP] = {.name = "backup", .help = "How files are copied."},
    [SEC_NOTIFY] = {.name = "notify",
                    .help =
                        "Notifications of session results by e-mail and webhooks "
                        "(docs/notifications.md);\n# `snapsync notify-test` sends a sample. For "
                        "example:\n#   notify:\n#     email: {enabled: true, host: smtp.gmail.com, "
                        "from: me@gmail.com, to: [me@gmail.com]}\n#     webhooks:\n#       - {url: "
                        "\"https://ntfy.sh/my-topic\", format: ntfy, token_env: NTFY_TOKEN}"},
    [SEC_NOTIFY_EMAIL] = {.name = "email",
                          .help = "E-mail through an SMTP server.",
                          .path = "notify.email",
                          .nested = true,
                          .parent = SEC_NOTIFY},
};

enum key_type {
    KT_STRING,
    KT_PATH,     /* a string; relative values in a file are resolved against its directory */
    KT_ENUM,     /* char *, one of choices[], stored in the spelling of choices[] */
    KT_PROTOCOL, /* enum config_protocol, choices[] in enum order */
    KT_BOOL,
    KT_INT,    /* int, min..max */
    KT_SIZE,   /* uint64_t bytes, min..max */
    KT_NUMBER, /* double, min..max */
    KT_LIST,   /* char ** NULL-terminated + size_t count at off_n */
    KT_MODE,   /* unsigned permission bits, written in octal ("0644"); min: bits that must be
                  set, max: bits that may be set */
    KT_USER,   /* char * user name or number ("" none), resolved at load to int64_t at off_n */
    KT_GROUP,  /* the same for a group */
    KT_HOOKS,  /* struct config_webhook * + size_t count at off_n: a list of mappings */
};

#define KF_SECRET 0x01u    /* masked when printed, overridable from .env and the environment */
#define KF_NONEMPTY 0x02u  /* "" is refused */
#define KF_EXTENSION 0x04u /* list items are file extensions: dot stripped, lower case */
#define KF_ABSOLUTE 0x08u  /* list items are absolute paths */
#define KF_URL 0x10u       /* http:// or https:// when not empty */
#define KF_ADDRESS 0x20u   /* an IPv4 or IPv6 address literal, or "localhost" */
#define KF_HOSTNAME 0x40u  /* list items are host names: letters, digits, '-', '.' */
#define KF_MAILADDR 0x80u  /* an e-mail address (notify_mail_address_ok) when not empty */
#define KF_FOLDERS 0x100u  /* a folder pattern (pattern.h) */
#define KF_FILENAME 0x200u /* a file name pattern; "" allowed in a section: backup's */
#define KF_ALBUM 0x400u    /* an album name pattern; "" allowed: album_mode decides */

struct key_row {
    enum section section;
    const char *name;
    enum key_type type;
    size_t off;   /* of the value in struct config */
    size_t off_n; /* KT_LIST: of the item count; KT_USER, KT_GROUP: of the resolved id */
    const char *def;
    const char *embedded; /* value in the embedded default and the template, when not def */
    const char *const *def_list;
    int64_t min, max; /* numbers: bounds; strings and list items: max is the longest length */
    const char *const *choices;
    const char *env; /* secrets: environment / .env variable */
    unsigned flags;
    const char *help;
};

/* offsetof that refuses to compile when the field does not have the C type the row claims. */
#define AT(ctype, field)                                                                           \
    _Generic(((struct config *)0)->field, ctype : offsetof(struct config, field))

static const char *const log_levels[] = {"debug", "info", "warning", "error", NULL};
static const char *const protocols[] = {[CONFIG_PROTOCOL_SMB] = "smb",
                                        [CONFIG_PROTOCOL_NFS] = "nfs",
                                        [CONFIG_PROTOCOL_LOCAL] = "local",
                                        NULL};
static const char *const album_modes[] = {"auto", "none", "fixed", "session", "date", NULL};
static const char *const s3_addressings[] = {"path", "virtual", NULL};
const char *const config_notify_event_names[] = {"completed",      "partial", "failed",
                                                 "interrupted",    "empty",   "destination_down",
                                                 "verify_problem", NULL};
static const char *const mail_securities[] = {"starttls", "tls", "none", NULL};
static const char *const default_mount_points[] = {"/media", "/run/media", NULL};
static const char *const no_items[] = {NULL};
static const char *const default_extensions[] = {
    "jpg", "jpeg", "heic", "heif", "png", "tif", "tiff", "dng", "cr2", "cr3", "crw",  "nef",
    "nrw", "arw",  "srf",  "sr2",  "raf", "orf", "rw2",  "pef", "srw", "x3f", "3fr",  "erf",
    "kdc", "mef",  "mos",  "iiq",  "mp4", "mov", "m4v",  "3gp", "avi", "mts", "m2ts", NULL};

#define STR(sec, nm, field, deflt, fl, hlp)                                                        \
    {                                                                                              \
        .section = (sec), .name = (nm), .type = KT_STRING, .off = AT(char *, field),               \
        .def = (deflt), .max = CONFIG_VALUE_MAX, .flags = (fl), .help = (hlp)                      \
    }
#define SECRET(sec, nm, field, var, hlp)                                                           \
    {                                                                                              \
        .section = (sec), .name = (nm), .type = KT_STRING, .off = AT(char *, field), .def = "",    \
        .max = CONFIG_VALUE_MAX, .env = (var), .flags = KF_SECRET, .help = (hlp)                   \
    }
#define PATHKEY(sec, nm, field, deflt, fl, hlp)                                                    \
    {                                                                                              \
        .section = (sec), .name = (nm), .type = KT_PATH, .off = AT(char *, field), .def = (deflt), \
        .max = PATH_MAX - 1, .flags = (fl), .help = (hlp)                                          \
    }
#define BOOL(sec, nm, field, deflt, hlp)                                                           \
    {                                                                                              \
        .section = (sec), .name = (nm), .type = KT_BOOL, .off = AT(bool, field), .def = (deflt),   \
        .help = (hlp)                                                                              \
    }
#define INT(sec, nm, field, deflt, lo, hi, hlp)                                                    \
    {                                                                                              \
        .section = (sec), .name = (nm), .type = KT_INT, .off = AT(int, field), .def = (deflt),     \
        .min = (lo), .max = (hi), .help = (hlp)                                                    \
    }
#define NUMBER(sec, nm, field, deflt, lo, hi, hlp)                                                 \
    {                                                                                              \
        .section = (sec), .name = (nm), .type = KT_NUMBER, .off = AT(double, field),               \
        .def = (deflt), .min = (lo), .max = (hi), .help = (hlp)                                    \
    }
#define MODE(sec, nm, field, deflt, must, may, hlp)                                                \
    {                                                                                              \
        .section = (sec), .name = (nm), .type = KT_MODE, .off = AT(unsigned, field),               \
        .def = (deflt), .min = (must), .max = (may), .help = (hlp)                                 \
    }
#define OWNER(sec, nm, kt, field, id_field, hlp)                                                   \
    {                                                                                              \
        .section = (sec), .name = (nm), .type = (kt), .off = AT(char *, field),                    \
        .off_n = AT(int64_t, id_field), .def = "", .max = 255, .help = (hlp)                       \
    }
/* The permission keys of a folder destination (struct config_perms). Modes: the copy must stay
 * readable by SnapSync (read back to verify it) and a folder writable and searchable; no set-id or
 * sticky bit on a file. */
#define PERMS(sec, perms)                                                                          \
    MODE(sec, "file_mode", perms.file_mode, "0644", 0400, 0777,                                    \
         "Permissions of the copies, octal, whatever the umask; at least 0400."),                  \
        MODE(sec, "dir_mode", perms.dir_mode, "0755", 0700, 07777,                                 \
             "Permissions of the folders SnapSync creates, octal; at least 0700."),                \
        OWNER(sec, "owner", KT_USER, perms.owner, perms.uid,                                       \
              "Owner of copies and new folders, name or number (Unraid's nobody: 99); "            \
              "empty: ours."),                                                                     \
        OWNER(sec, "group", KT_GROUP, perms.group, perms.gid,                                      \
              "Group of copies and new folders, name or number (Unraid's users: 100); "            \
              "empty: ours.")

/* A destination section's patterns: "" takes backup's (config_dest_patterns). */
#define PATTERNS(sec, folder, file)                                                                \
    STR(sec, "folder_pattern", folder, "", KF_FOLDERS,                                             \
        "Folders here (as backup.folder_pattern); empty: backup's, none if organize_by_date "      \
        "is false."),                                                                              \
        STR(sec, "file_pattern", file, "", KF_FILENAME,                                            \
            "File names here, as backup.file_pattern; empty: backup's.")

static const struct key_row keys[] = {
    STR(SEC_SERVICE, "name", service.name, "snapsync", KF_NONEMPTY,
        "Name shown in the web UI and in Home Assistant."),
    PATHKEY(SEC_SERVICE, "database_path", service.database_path, "./snapsync.db", KF_NONEMPTY,
            "SQLite database of what was backed up; relative to this file."),
    {.section = SEC_SERVICE,
     .name = "log_level",
     .type = KT_ENUM,
     .off = AT(char *, service.log_level),
     .def = "info",
     .choices = log_levels,
     .help = "How much to log."},
    INT(SEC_SERVICE, "web_ui_port", service.web_ui_port, "8080", 1, 65535, "Port of the web UI."),
    STR(SEC_SERVICE, "web_ui_bind", service.web_ui_bind, "0.0.0.0", KF_NONEMPTY | KF_ADDRESS,
        "Web UI address (IP or localhost): 0.0.0.0 every IPv4 interface, 127.0.0.1 this host."),
    SECRET(SEC_SERVICE, "web_ui_token", service.web_ui_token, "SNAPSYNC_WEB_TOKEN",
           "Asked by the web UI for retry and eject."),
    {.section = SEC_SERVICE,
     .name = "web_ui_hosts",
     .type = KT_LIST,
     .off = AT(char **, service.web_ui_hosts),
     .off_n = AT(size_t, service.n_web_ui_hosts),
     .def_list = no_items,
     .max = 253,
     .flags = KF_HOSTNAME,
     .help = "Without a token, actions need Host: an IP, localhost, this machine's name or these."},

    BOOL(SEC_SD_CARD, "auto_detect", sd_card.auto_detect, "true",
         "Notice cards as they are inserted."),
    {.section = SEC_SD_CARD,
     .name = "mount_points",
     .type = KT_LIST,
     .off = AT(char **, sd_card.mount_points),
     .off_n = AT(size_t, sd_card.n_mount_points),
     .def_list = default_mount_points,
     .max = PATH_MAX - 1,
     .flags = KF_ABSOLUTE,
     .help = "Folders under which cards get mounted."},
    {.section = SEC_SD_CARD,
     .name = "devices",
     .type = KT_LIST,
     .off = AT(char **, sd_card.devices),
     .off_n = AT(size_t, sd_card.n_devices),
     .def_list = no_items,
     .max = 255,
     .help =
         "More kernel device names, * ? allowed, taken as cards (\"loop*\"); removable, USB, MMC "
         "always are."},
    {.section = SEC_SD_CARD,
     .name = "ignore_devices",
     .type = KT_LIST,
     .off = AT(char **, sd_card.ignore_devices),
     .off_n = AT(size_t, sd_card.n_ignore_devices),
     .def_list = no_items,
     .max = 255,
     .help = "Kernel device names never taken as cards, * ? allowed (\"sdb*\")."},
    PATHKEY(SEC_SD_CARD, "mount_base", sd_card.mount_base, "/run/snapsync/cards", KF_NONEMPTY,
            "SnapSync mounts cards read-only in a folder here named after the label or UUID."),
    BOOL(SEC_SD_CARD, "unmount_when_done", sd_card.unmount_when_done, "true",
         "Unmount a card SnapSync mounted when its backup completed, so it can be pulled."),
    INT(SEC_SD_CARD, "poll_interval", sd_card.poll_interval, "2", 0, 3600,
        "Seconds between polls of readers for new media; 0: never."),

    {.section = SEC_FILES,
     .name = "extensions",
     .type = KT_LIST,
     .off = AT(char **, files.extensions),
     .off_n = AT(size_t, files.n_extensions),
     .def_list = default_extensions,
     .max = 16,
     .flags = KF_EXTENSION,
     .help = "File extensions to back up, any case, with or without the dot."},
    {.section = SEC_FILES,
     .name = "min_size",
     .type = KT_SIZE,
     .off = AT(uint64_t, files.min_size),
     .def = "1",
     .min = 0,
     .max = INT64_C(1) << 40,
     .help = "Skip smaller files; bytes, or 100KB, 1 MiB, 2M (KB = 1000, KiB = K = 1024)."},

    BOOL(SEC_IMMICH, "enabled", immich.enabled, "false", "Upload to Immich."),
    STR(SEC_IMMICH, "url", immich.url, "", KF_URL,
        "Server address, http:// or https://, with or without /api."),
    SECRET(SEC_IMMICH, "api_key", immich.api_key, "IMMICH_API_KEY", "API key of the Immich user."),
    INT(SEC_IMMICH, "timeout", immich.timeout, "30", 1, 3600,
        "Seconds without progress before a request gives up (not a total time)."),
    BOOL(SEC_IMMICH, "organize_by_date", immich.organize_by_date, "true",
         "With album_mode auto: one album per capture day."),
    {.section = SEC_IMMICH,
     .name = "album_mode",
     .type = KT_ENUM,
     .off = AT(char *, immich.album_mode),
     .def = "auto",
     .choices = album_modes,
     .help = "Albums: fixed (album below), one per session or date."},
    STR(SEC_IMMICH, "album", immich.album, "", 0, "Album name for album_mode fixed."),
    STR(SEC_IMMICH, "album_pattern", immich.album_pattern, "", KF_ALBUM,
        "Album name pattern (\"{year} {card}\", docs/patterns.md); empty: album_mode."),
    PATHKEY(SEC_IMMICH, "tls_ca_file", immich.tls_ca_file, "", 0,
            "For https: CA certificate (PEM) of a self-signed server; empty: the system's CAs."),

    {.section = SEC_UNRAID,
     .name = "enabled",
     .type = KT_BOOL,
     .off = AT(bool, unraid.enabled),
     .def = "false",
     .embedded = "true",
     .help = "Copy files to the share or folder."},
    {.section = SEC_UNRAID,
     .name = "protocol",
     .type = KT_PROTOCOL,
     .off = AT(enum config_protocol, unraid.protocol),
     .def = "local",
     .choices = protocols,
     .help = "smb: SnapSync talks SMB itself; nfs, local: copy into mount_point."},
    STR(SEC_UNRAID, "host", unraid.host, "", 0, "SMB server name or address."),
    STR(SEC_UNRAID, "share", unraid.share, "", 0, "SMB share name."),
    STR(SEC_UNRAID, "path", unraid.path, "", 0, "Folder inside the share or mount point."),
    SECRET(SEC_UNRAID, "username", unraid.username, "UNRAID_USERNAME", "SMB user."),
    SECRET(SEC_UNRAID, "password", unraid.password, "UNRAID_PASSWORD", "SMB password."),
    {.section = SEC_UNRAID,
     .name = "mount_point",
     .type = KT_PATH,
     .off = AT(char *, unraid.mount_point),
     .def = "",
     .embedded = "./snapsync-backup",
     .max = PATH_MAX - 1,
     .help = "Folder to copy into (nfs, local); relative to this file."},
    BOOL(SEC_UNRAID, "organize_by_date", unraid.organize_by_date, "true",
         "Sort copies into folders (backup.folder_pattern); false: all in one folder."),
    PATTERNS(SEC_UNRAID, unraid.folder_pattern, unraid.file_pattern),
    /* nfs, local; with smb the server decides (validate() refuses other values) */
    BOOL(SEC_UNRAID, "mhl", unraid.mhl, "true",
         "Keep an ASC MHL history in ascmhl/ (docs/verification.md); smb, nfs, local."),
    INT(SEC_UNRAID, "timeout", unraid.timeout, "30", 1, 600,
        "With protocol smb: seconds a request waits for the server before it is down."),
    PERMS(SEC_UNRAID, unraid.perms),

    BOOL(SEC_LOCAL, "enabled", local.enabled, "false", "Copy files to the folder below too."),
    PATHKEY(SEC_LOCAL, "path", local.path, "", 0, "Folder to copy into; relative to this file."),
    BOOL(SEC_LOCAL, "organize_by_date", local.organize_by_date, "true",
         "Sort copies into folders (backup.folder_pattern); false: all in one folder."),
    PATTERNS(SEC_LOCAL, local.folder_pattern, local.file_pattern),
    BOOL(SEC_LOCAL, "mhl", local.mhl, "true",
         "Keep an ASC MHL history in ascmhl/ (docs/verification.md)."),
    PERMS(SEC_LOCAL, local.perms),

    BOOL(SEC_S3, "enabled", s3.enabled, "false", "Upload files to the bucket below too."),
    STR(SEC_S3, "endpoint", s3.endpoint, "", KF_URL,
        "Service URL, http:// or https:// (https://s3.us-east-1.amazonaws.com, "
        "http://minio:9000)."),
    STR(SEC_S3, "region", s3.region, "us-east-1", KF_NONEMPTY,
        "Region the requests are signed for (most non-AWS servers take us-east-1)."),
    STR(SEC_S3, "bucket", s3.bucket, "", 0, "Bucket to upload into (it must exist)."),
    STR(SEC_S3, "prefix", s3.prefix, "", 0,
        "Folder inside the bucket (\"camera-backups\"); empty: none."),
    {.section = SEC_S3,
     .name = "addressing",
     .type = KT_ENUM,
     .off = AT(char *, s3.addressing),
     .def = "path",
     .choices = s3_addressings,
     .help = "path: <endpoint>/<bucket>/<key>; virtual: <bucket>.<endpoint host>/<key>."},
    STR(SEC_S3, "storage_class", s3.storage_class, "", 0,
        "Storage class of new objects (STANDARD_IA, ...); empty: the bucket's default."),
    BOOL(SEC_S3, "organize_by_date", s3.organize_by_date, "true",
         "Sort objects into folders (backup.folder_pattern); false: all in one folder."),
    PATTERNS(SEC_S3, s3.folder_pattern, s3.file_pattern),
    PATHKEY(SEC_S3, "tls_ca_file", s3.tls_ca_file, "", 0,
            "For https: CA certificate (PEM) of a self-signed server; empty: the system's CAs."),
    INT(SEC_S3, "part_size", s3.part_size, "8", 5, 512,
        "MiB; larger files go up in parts this size (one part in memory per file)."),
    INT(SEC_S3, "timeout", s3.timeout, "30", 1, 3600,
        "Seconds without progress before a request gives up (not a total time)."),
    SECRET(SEC_S3, "access_key_id", s3.access_key_id, "S3_ACCESS_KEY_ID", "Access key id."),
    SECRET(SEC_S3, "secret_access_key", s3.secret_access_key, "S3_SECRET_ACCESS_KEY",
           "Secret access key."),

    BOOL(SEC_RCLONE, "enabled", rclone.enabled, "false", "Copy files to the remote below too."),
    STR(SEC_RCLONE, "remote", rclone.remote, "", 0,
        "rclone remote and folder to copy into (\"gdrive:Photos\", \"b2:bucket/photos\")."),
    PATHKEY(SEC_RCLONE, "config_file", rclone.config_file, "", 0,
            "rclone's config file (rclone config file); empty: rclone's default for the user."),
    BOOL(SEC_RCLONE, "organize_by_date", rclone.organize_by_date, "true",
         "Sort copies into folders (backup.folder_pattern); false: all in one folder."),
    PATTERNS(SEC_RCLONE, rclone.folder_pattern, rclone.file_pattern),
    INT(SEC_RCLONE, "timeout", rclone.timeout, "60", 1, 3600,
        "Seconds without progress before rclone gives up on a connection (--timeout)."),
    {.section = SEC_RCLONE,
     .name = "extra_args",
     .type = KT_LIST,
     .off = AT(char **, rclone.extra_args),
     .off_n = AT(size_t, rclone.n_extra_args),
     .def_list = no_items,
     .max = 1024,
     .help = "More options for the rclone rcd, one item each (\"--drive-chunk-size=64M\"; "
             "not --rc-*)."},

    BOOL(SEC_MQTT, "enabled", mqtt.enabled, "false", "Publish state to an MQTT broker."),
    STR(SEC_MQTT, "broker", mqtt.broker, "localhost", 0, "Broker host name or address."),
    INT(SEC_MQTT, "port", mqtt.port, "1883", 1, 65535, "Broker port."),
    SECRET(SEC_MQTT, "username", mqtt.username, "MQTT_USERNAME", "Broker user."),
    SECRET(SEC_MQTT, "password", mqtt.password, "MQTT_PASSWORD", "Broker password."),
    STR(SEC_MQTT, "discovery_prefix", mqtt.discovery_prefix, "homeassistant", 0,
        "Home Assistant discovery prefix."),
    STR(SEC_MQTT, "topic_prefix", mqtt.topic_prefix, "snapsync", 0, "Prefix of our topics."),
    STR(SEC_MQTT, "client_id", mqtt.client_id, "snapsync", 0, "MQTT client id."),
    BOOL(SEC_MQTT, "tls", mqtt.tls, "false", "Connect with TLS only (the port is usually 8883)."),
    PATHKEY(SEC_MQTT, "tls_ca_file", mqtt.tls_ca_file, "", 0,
            "With tls: CA certificate (PEM); empty: the system's CAs."),

    BOOL(SEC_BACKUP, "parallel", backup.parallel, "true",
         "Write to all destinations at once; false: one after another (one read)."),
    INT(SEC_BACKUP, "concurrent_files", backup.concurrent_files, "2", 1, 64,
        "Files copied at the same time."),
    BOOL(SEC_BACKUP, "verify_checksums", backup.verify_checksums, "true",
         "Read copies back and compare checksums."),
    INT(SEC_BACKUP, "max_retries", backup.max_retries, "3", 0, 100,
        "Attempts after a failed copy."),
    NUMBER(SEC_BACKUP, "retry_delay", backup.retry_delay, "5", 0, 3600,
           "Seconds before the first retry; doubles each time."),
    NUMBER(SEC_BACKUP, "destination_wait", backup.destination_wait, "60", 0, 86400,
           "Seconds to wait at the end for a destination that is down."),
    INT(SEC_BACKUP, "verify_interval_days", backup.verify_interval_days, "0", 0, 3650,
        "The service re-checks copies older than this many days when idle (scrub); 0 off."),
    NUMBER(SEC_BACKUP, "verify_rate", backup.verify_rate, "0", 0, 100000,
           "MB/s the scrub reads at most, so a NAS is not flooded; 0 unlimited."),
    STR(SEC_BACKUP, "folder_pattern", backup.folder_pattern, "{year}/{month}/{day}", KF_FOLDERS,
        "Folders below a destination (docs/patterns.md): {year} {date} {model} ...; "
        "empty: none."),
    STR(SEC_BACKUP, "file_pattern", backup.file_pattern, "{name}{ext}", KF_FILENAME | KF_NONEMPTY,
        "File name of each copy (docs/patterns.md): {name}{ext} keeps the card's name."),

    /* notify: notifications (docs/notifications.md) */
    {.section = SEC_NOTIFY,
     .name = "events",
     .type = KT_LIST,
     .off = AT(char **, notify.events),
     .off_n = AT(size_t, notify.n_events),
     .def_list = config_notify_event_names,
     .max = 32,
     .choices = config_notify_event_names,
     .help = "What is notified: session results, a destination down, a verification problem."},
    INT(SEC_NOTIFY, "destination_down_minutes", notify.destination_down_minutes, "30", 1, 10080,
        "Minutes a destination must be down before destination_down is sent."),
    STR(SEC_NOTIFY, "dashboard_url", notify.dashboard_url, "", KF_URL,
        "Link to the dashboard in messages; empty: from service.web_ui_bind and web_ui_port."),
    {.section = SEC_NOTIFY,
     .name = "webhooks",
     .type = KT_HOOKS,
     .off = AT(struct config_webhook *, notify.webhooks),
     .off_n = AT(size_t, notify.n_webhooks),
     .max = CONFIG_WEBHOOKS_MAX,
     .help = "Up to 8 of {url, format: json|ntfy|gotify, token or token_env: VAR, tls_ca_file}."},
    BOOL(SEC_NOTIFY_EMAIL, "enabled", notify.email.enabled, "false", "Send e-mail."),
    STR(SEC_NOTIFY_EMAIL, "host", notify.email.host, "", 0, "SMTP server name or address."),
    INT(SEC_NOTIFY_EMAIL, "port", notify.email.port, "0", 0, 65535,
        "SMTP port; 0: 587 for starttls, 465 for tls, 25 for none."),
    {.section = SEC_NOTIFY_EMAIL,
     .name = "security",
     .type = KT_ENUM,
     .off = AT(char *, notify.email.security),
     .def = "starttls",
     .choices = mail_securities,
     .help = "How to connect; starttls never falls back to clear text."},
    SECRET(SEC_NOTIFY_EMAIL, "username", notify.email.username, "SMTP_USERNAME",
           "SMTP user; empty: no login."),
    SECRET(SEC_NOTIFY_EMAIL, "password", notify.email.password, "SMTP_PASSWORD",
           "SMTP password (an app password with Gmail)."),
    STR(SEC_NOTIFY_EMAIL, "from", notify.email.from, "", KF_MAILADDR,
        "Sender address, user@domain."),
    {.section = SEC_NOTIFY_EMAIL,
     .name = "to",
     .type = KT_LIST,
     .off = AT(char **, notify.email.to),
     .off_n = AT(size_t, notify.email.n_to),
     .def_list = no_items,
     .max = NOTIFY_MAIL_ADDR_MAX,
     .flags = KF_MAILADDR,
     .help = "Recipient addresses, at most 16."},
    PATHKEY(SEC_NOTIFY_EMAIL, "tls_ca_file", notify.email.tls_ca_file, "", 0,
            "CA certificate (PEM) of a self-signed server; empty: the system's CAs."),
};

#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

/* Checks that span keys: `key` must not be empty when `when` holds. */
static bool immich_on(const struct config *c)
{
    return c->immich.enabled;
}

static bool unraid_smb(const struct config *c)
{
    return c->unraid.enabled && c->unraid.protocol == CONFIG_PROTOCOL_SMB;
}

static bool unraid_mounted(const struct config *c)
{
    return c->unraid.enabled && c->unraid.protocol != CONFIG_PROTOCOL_SMB;
}

static bool local_on(const struct config *c)
{
    return c->local.enabled;
}

static bool s3_on(const struct config *c)
{
    return c->s3.enabled;
}

static bool rclone_on(const struct config *c)
{
    return c->rclone.enabled;
}

static bool mqtt_on(const struct config *c)
{
    return c->mqtt.enabled;
}

static bool email_on(const struct config *c)
{
    return c->notify.email.enabled;
}

static bool immich_album_fixed(const struct config *c)
{
    return c->immich.enabled && c->immich.album_mode && strcmp(c->immich.album_mode, "fixed") == 0;
}

static const struct rule {
    enum section section;
    const char *key;
    bool (*when)(const struct config *);
    const char *why;
} rules[] = {
    {SEC_IMMICH, "url", immich_on, "immich is enabled"},
    {SEC_IMMICH, "api_key", immich_on, "immich is enabled"},
    {SEC_IMMICH, "album", immich_album_fixed, "immich.album_mode is fixed"},
    {SEC_UNRAID, "host", unraid_smb, "unraid is enabled with protocol smb"},
    {SEC_UNRAID, "share", unraid_smb, "unraid is enabled with protocol smb"},
    {SEC_UNRAID, "mount_point", unraid_mounted, "unraid is enabled with protocol nfs or local"},
    {SEC_LOCAL, "path", local_on, "local is enabled"},
    {SEC_S3, "endpoint", s3_on, "s3 is enabled"},
    {SEC_S3, "bucket", s3_on, "s3 is enabled"},
    {SEC_S3, "access_key_id", s3_on, "s3 is enabled"},
    {SEC_S3, "secret_access_key", s3_on, "s3 is enabled"},
    {SEC_RCLONE, "remote", rclone_on, "rclone is enabled"},
    {SEC_MQTT, "broker", mqtt_on, "mqtt is enabled"},
    {SEC_MQTT, "discovery_prefix", mqtt_on, "mqtt is enabled"},
    {SEC_MQTT, "topic_prefix", mqtt_on, "mqtt is enabled"},
    {SEC_MQTT, "client_id", mqtt_on, "mqtt is enabled"},
    {SEC_NOTIFY_EMAIL, "host", email_on, "notify.email is enabled"},
    {SEC_NOTIFY_EMAIL, "from", email_on, "notify.email is enabled"},
};

/* Where each section and key was set in the file (1-based lines; 0 = not in the file). */
struct lines {
    size_t section[N_SECTIONS];
    size_t key[N_KEYS];
};

/* ---- small helpers ---- */

static void *field(struct config *cfg, size_t off)
{
    return (char *)cfg + off;
}

static const void *cfield(const struct config *cfg, size_t off)
{
    return (const char *)cfg + off;
}

static const struct key_row *key_find(enum section sec, const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].section == sec && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static size_t key_index(const struct key_row *row)
{
    return (size_t)(row - keys);
}

static const char *sec_path(enum section sec)
{
    return sections[sec].path ? sections[sec].path : sections[sec].name;
}

static void key_path(char *buf, size_t size, const struct key_row *row)
{
    const struct section_row *sec = &sections[row->section];
    snprintf(buf, size, "%s.%s", sec->path ? sec->path : sec->name, row->name);
}

/* Copies outside text into buf for an error message: escaped, cut at SHOW_MAX bytes. */
static const char *show(char *buf, size_t size, const char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 8 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= SHOW_MAX) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\')
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    buf[o] = '\0';
    return buf;
}

/* Fails with "name:line: key: problem" (line 0 and key NULL are left out). */
static int fail_code(struct error *err, int code, const char *name, size_t line, const char *key,
                     const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int fail_code(struct error *err, int code, const char *name, size_t line, const char *key,
                     const char *fmt, ...)
{
    char problem[ERROR_MSG_MAX];
    char where[64] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof(problem), fmt, ap);
    va_end(ap);
    if (line > 0)
        snprintf(where, sizeof(where), ":%zu", line);
    if (key)
        return error_set(err, code, "%s%s: %s: %s", name, where, key, problem);
    return error_set(err, code, "%s%s: %s", name, where, problem);
}

#define fail(err, name, line, key, ...) fail_code(err, -EINVAL, name, line, key, __VA_ARGS__)

static int add_warning(struct config *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int add_warning(struct config *cfg, const char *fmt, ...)
{
    if (cfg->n_warnings >= CONFIG_WARNINGS_MAX)
        return 0;
    char **w = realloc(cfg->warnings, (cfg->n_warnings + 2) * sizeof(*w));
    if (!w)
        return -ENOMEM;
    cfg->warnings = w;
    char buf[ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    w[cfg->n_warnings] = strdup(buf);
    if (!w[cfg->n_warnings])
        return -ENOMEM;
    w[++cfg->n_warnings] = NULL;
    return 0;
}

static void list_free(char **list)
{
    if (!list)
        return;
    for (char **p = list; *p; p++)
        free(*p);
    free(list);
}

static void hook_done(struct config_webhook *h)
{
    free(h->url);
    free(h->format);
    free(h->token);
    free(h->token_env);
    free(h->tls_ca_file);
    memset(h, 0, sizeof(*h));
}

static void hooks_free(struct config_webhook *hooks, size_t n)
{
    for (size_t i = 0; hooks && i < n; i++)
        hook_done(&hooks[i]);
    free(hooks);
}

/* ---- values ---- */

/* "a boolean (true/false)", "one of debug, info, warning, error", ... */
static const char *type_expect(char *buf, size_t size, const struct key_row *row)
{
    if (row->type == KT_LIST && !row->choices)
        return "a list of strings";
    switch (row->type) {
    case KT_STRING:
    case KT_PATH:
        return "a string";
    case KT_LIST:
    case KT_ENUM:
    case KT_PROTOCOL: {
        size_t n = (size_t)snprintf(buf, size, "one of");
        for (size_t c = 0; row->choices[c] && n < size; c++)
            n += (size_t)snprintf(buf + n, size - n, "%s %s", c ? "," : "", row->choices[c]);
        return buf;
    }
    case KT_BOOL:
        return "a boolean (true/false)";
    case KT_INT:
        return "an integer";
    case KT_SIZE:
        return "a size such as 1024, 100KB or 1 MiB";
    case KT_NUMBER:
        return "a number";
    case KT_HOOKS:
        return "a list of {url, format, token}";
    case KT_MODE:
        return "an octal mode such as \"0644\"";
    case KT_USER:
        return "a user name or number";
    case KT_GROUP:
        return "a group name or number";
    }
    return "a value";
}

static int parse_bool(const char *s, bool *ret)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *ret = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *ret = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* Decimal integer, optional sign, nothing else (no spaces, no 0x, no 1_000). */
static int parse_int64(const char *s, int64_t *ret)
{
    const char *d = (*s == '-' || *s == '+') ? s + 1 : s;
    if (!isdigit((unsigned char)*d))
        return -EINVAL;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (errno != 0 || end == s || *end != '\0')
        return -EINVAL;
    *ret = v;
    return 0;
}

static int parse_number(const char *s, double *ret)
{
    if (*s == '\0' || strspn(s, "0123456789+-.eE") != strlen(s))
        return -EINVAL;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0')
        return -EINVAL;
    if (errno == ERANGE && fabs(v) < 1.0)
        v = 0.0; /* underflow: a denormal or zero is zero to us */
    else if (errno == ERANGE || !isfinite(v))
        return -ERANGE;
    *ret = v + 0.0; /* no -0 */
    return 0;
}

/* "1024", "100KB", "1 MiB", "2M": digits, optional spaces, optional unit. */
static int parse_size(const char *s, uint64_t *ret)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"k", UINT64_C(1) << 10},
        {"kb", UINT64_C(1000)},
        {"kib", UINT64_C(1) << 10},
        {"m", UINT64_C(1) << 20},
        {"mb", UINT64_C(1000000)},
        {"mib", UINT64_C(1) << 20},
        {"g", UINT64_C(1) << 30},
        {"gb", UINT64_C(1000000000)},
        {"gib", UINT64_C(1) << 30},
        {"t", UINT64_C(1) << 40},
        {"tb", UINT64_C(1000000000000)},
        {"tib", UINT64_C(1) << 40},
    };
    uint64_t n = 0;
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -ERANGE;
        n = n * 10 + d;
    }
    while (*p == ' ')
        p++;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(p, units[i].unit) != 0)
            continue;
        if (n > UINT64_MAX / units[i].mult)
            return -ERANGE;
        *ret = n * units[i].mult;
        return 0;
    }
    return -EINVAL;
}

/* "0644", "644", "2775": octal digits only, at most 07777. */
static int parse_mode(const char *s, unsigned *ret)
{
    size_t len = strlen(s);
    if (len == 0 || len > 5 || strspn(s, "01234567") != len)
        return -EINVAL;
    unsigned v = 0;
    for (const char *p = s; *p; p++)
        v = v * 8 + (unsigned)(*p - '0');
    if (v > 07777)
        return -ERANGE;
    *ret = v;
    return 0;
}

/* A user or group id written as a number: decimal digits, below the (uid_t)-1 that means "no
 * change" to chown. */
static int parse_id(const char *s, int64_t *ret)
{
    int64_t v;
    if (!isdigit((unsigned char)*s) || parse_int64(s, &v) < 0 || v >= (int64_t)UINT32_MAX)
        return -EINVAL;
    *ret = v;
    return 0;
}

/* The id of user (group: of group) `name` in the system's databases (NSS). -ENOENT when there is
 * none, another negative errno when the lookup failed. */
static int lookup_id(const char *name, bool group, int64_t *ret)
{
    enum { BUF_START = 4096, BUF_MAX = 1024 * 1024 };
    int r = 0;
    for (size_t size = BUF_START; size <= BUF_MAX; size *= 2) {
        char *buf = malloc(size);
        if (!buf)
            return -ENOMEM;
        if (group) {
            struct group gr, *found = NULL;
            r = getgrnam_r(name, &gr, buf, size, &found);
            if (r == 0 && found)
                *ret = found->gr_gid;
            else if (r == 0)
                r = ENOENT;
        } else {
            struct passwd pw, *found = NULL;
            r = getpwnam_r(name, &pw, buf, size, &found);
            if (r == 0 && found)
                *ret = found->pw_uid;
            else if (r == 0)
                r = ENOENT;
        }
        free(buf);
        if (r != ERANGE)
            break;
    }
    return -r;
}

/* Refuses what no string value should hold: NUL, control characters, Unicode line breaks. */
static const char *string_problem(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0)
            return "contains a NUL byte";
        if (c < 0x20 || c == 0x7f)
            return "contains a control character";
        if (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] < 0xa0)
            return "contains a control character";
        if (c == 0xe2 && i + 2 < len && (unsigned char)s[i + 1] == 0x80 &&
            ((unsigned char)s[i + 2] == 0xa8 || (unsigned char)s[i + 2] == 0xa9))
            return "contains a line separator";
    }
    return NULL;
}

/* Where a value came from, for messages. */
struct origin {
    const char *name; /* "config.yaml", ".env", "environment", "built-in default" */
    size_t line;
    const char *key; /* as the user spells it: "immich.api_key", "IMMICH_API_KEY" */
};

/* An address to listen on: an IP literal, or localhost (127.0.0.1). */
static bool address_ok(const char *s, size_t len)
{
    char text[INET6_ADDRSTRLEN];
    unsigned char buf[sizeof(struct in6_addr)];
    if (len >= sizeof(text))
        return false;
    memcpy(text, s, len);
    text[len] = '\0';
    return strcmp(text, "localhost") == 0 || inet_pton(AF_INET, text, buf) == 1 ||
           inet_pton(AF_INET6, text, buf) == 1;
}

static bool hostname_ok(const char *s, size_t len)
{
    return len > 0 && s[0] != '.' && s[0] != '-' &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") == len;
}

/* Checks a string value (or list item) against its row; *ret_dup is a fresh copy. */
static int string_check(const struct key_row *row, const char *s, size_t len, bool item,
                        const struct origin *o, char **ret_dup, struct error *err)
{
    char shown[4 * SHOW_MAX + 16];
    bool secret = row->flags & KF_SECRET;
    if (len > (size_t)row->max)
        return fail(err, o->name, o->line, o->key, "%s too long (%zu bytes, at most %" PRId64 ")",
                    item ? "item" : "value", len, row->max);
    const char *problem = string_problem(s, len);
    if (problem)
        return fail(err, o->name, o->line, o->key, "%s %s", item ? "item" : "value", problem);
    if (len == 0 && (row->flags & KF_NONEMPTY))
        return fail(err, o->name, o->line, o->key, "must not be empty");
    if (len > 0 && (row->flags & KF_URL)) {
        size_t skip = strncasecmp(s, "https://", 8) == 0  ? 8
                      : strncasecmp(s, "http://", 7) == 0 ? 7
                                                          : 0;
        if (skip == 0 || skip == len || s[skip] == '/')
            return fail(err, o->name, o->line, o->key,
                        "expected an http:// or https:// address, got '%s'",
                        secret ? "(hidden)" : show(shown, sizeof(shown), s, len));
    }
    if (len > 0 && (row->flags & KF_ADDRESS) && !address_ok(s, len))
        return fail(err, o->name, o->line, o->key,
                    "expected an IPv4 or IPv6 address or localhost, got '%s'",
                    show(shown, sizeof(shown), s, len));
    if (item && (row->flags & KF_HOSTNAME) && !hostname_ok(s, len))
        return fail(err, o->name, o->line, o->key, "expected a host name such as pi.lan, got '%s'",
                    show(shown, sizeof(shown), s, len));
    if (len > 0 && (row->flags & KF_MAILADDR)) {
        char addr[NOTIFY_MAIL_ADDR_MAX + 1];
        bool ok = len <= NOTIFY_MAIL_ADDR_MAX;
        if (ok) {
            memcpy(addr, s, len);
            addr[len] = '\0';
            ok = notify_mail_address_ok(addr);
        }
        if (!ok)
            return fail(err, o->name, o->line, o->key,
                        "expected an address such as user@example.com, got '%s'",
                        show(shown, sizeof(shown), s, len));
    }
    if (item && row->choices) {
        size_t c = 0;
        while (row->choices[c] &&
               (strlen(row->choices[c]) != len || strncmp(row->choices[c], s, len) != 0))
            c++;
        if (!row->choices[c]) {
            char expect[256];
            return fail(err, o->name, o->line, o->key, "unknown item '%s' (%s)",
                        show(shown, sizeof(shown), s, len),
                        type_expect(expect, sizeof(expect), row));
        }
    }
    if (item && (row->flags & KF_ABSOLUTE) && s[0] != '/')
        return fail(err, o->name, o->line, o->key, "expected an absolute path, got '%s'",
                    show(shown, sizeof(shown), s, len));
    char *dup;
    if (item && (row->flags & KF_EXTENSION)) {
        const char *e = (len > 0 && s[0] == '.') ? s + 1 : s;
        size_t elen = len - (size_t)(e - s);
        if (elen == 0 || strspn(e, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789_-") != elen)
            return fail(err, o->name, o->line, o->key,
                        "expected a file extension such as jpg or .CR2, got '%s'",
                        show(shown, sizeof(shown), s, len));
        dup = strndup(e, elen);
        if (dup)
            for (char *c = dup; *c; c++)
                *c = (char)tolower((unsigned char)*c);
    } else {
        dup = strndup(s, len);
    }
    if (!dup)
        return error_set(err, -ENOMEM, "out of memory");
    unsigned pat = row->flags & (KF_FOLDERS | KF_FILENAME | KF_ALBUM);
    if (pat && (dup[0] || (row->flags & KF_FOLDERS))) {
        struct pattern *compiled = NULL;
        struct error perr;
        int r = pattern_compile(dup,
                                pat == KF_FOLDERS    ? PATTERN_FOLDER
                                : pat == KF_FILENAME ? PATTERN_FILE
                                                     : PATTERN_ALBUM,
                                &compiled, &perr);
        bool md5 = r == 0 && pattern_uses_md5(compiled);
        pattern_free(compiled);
        if (r == 0 && md5 && pat == KF_ALBUM) {
            r = -EINVAL;
            snprintf(perr.msg, sizeof(perr.msg),
                     "{md5} cannot name an album (it is chosen before the content is read)");
        }
        if (r < 0) {
            free(dup);
            if (r == -ENOMEM)
                return error_set(err, r, "out of memory");
            return fail(err, o->name, o->line, o->key, "pattern '%s': %s",
                        show(shown, sizeof(shown), s, len), perr.msg);
        }
    }
    *ret_dup = dup;
    return 0;
}

/* Collects list items, then swaps them into cfg in one go. */
struct list_builder {
    char **items;
    size_t n;
};

static int list_add(struct list_builder *lb, const struct key_row *row, const char *s, size_t len,
                    const struct origin *o, struct error *err)
{
    if (lb->n >= CONFIG_LIST_MAX)
        return fail(err, o->name, o->line, o->key, "too many items (at most %d)", CONFIG_LIST_MAX);
    char *dup;
    int r = string_check(row, s, len, true, o, &dup, err);
    if (r < 0)
        return r;
    if (row->flags & KF_EXTENSION)
        for (size_t i = 0; i < lb->n; i++)
            if (strcmp(lb->items[i], dup) == 0) {
                free(dup); /* "JPG" and ".jpg" are the same extension */
                return 0;
            }
    char **items = realloc(lb->items, (lb->n + 2) * sizeof(*items));
    if (!items) {
        free(dup);
        return error_set(err, -ENOMEM, "out of memory");
    }
    lb->items = items;
    items[lb->n++] = dup;
    items[lb->n] = NULL;
    return 0;
}

static int list_commit(struct config *cfg, const struct key_row *row, struct list_builder *lb,
                       const struct origin *o, struct error *err)
{
    if ((row->flags & KF_EXTENSION) && lb->n == 0)
        return fail(err, o->name, o->line, o->key, "must list at least one extension");
    if (!lb->items) {
        lb->items = calloc(1, sizeof(char *));
        if (!lb->items)
            return error_set(err, -ENOMEM, "out of memory");
    }
    list_free(*(char ***)field(cfg, row->off));
    *(char ***)field(cfg, row->off) = lb->items;
    *(size_t *)field(cfg, row->off_n) = lb->n;
    lb->items = NULL;
    lb->n = 0;
    return 0;
}

/* Sets an owner or group key: the text as written, and the id it names (-1 for ""). */
static int owner_set(struct config *cfg, const struct key_row *row, const char *s, size_t len,
                     const struct origin *o, struct error *err)
{
    char shown[4 * SHOW_MAX + 16];
    bool group = row->type == KT_GROUP;
    int64_t id = -1;
    char *dup;
    int r = string_check(row, s, len, false, o, &dup, err);
    if (r < 0)
        return r;
    if (*dup && parse_id(dup, &id) < 0) {
        r = lookup_id(dup, group, &id);
        if (r == -ENOENT)
            r = fail(err, o->name, o->line, o->key, "unknown %s '%s' (not in %s on this system)",
                     group ? "group" : "user", show(shown, sizeof(shown), s, len),
                     group ? "/etc/group" : "/etc/passwd");
        else if (r < 0)
            r = fail(err, o->name, o->line, o->key, "cannot look up %s '%s': %s",
                     group ? "group" : "user", show(shown, sizeof(shown), s, len), strerror(-r));
        if (r < 0) {
            free(dup);
            return r;
        }
    }
    free(*(char **)field(cfg, row->off));
    *(char **)field(cfg, row->off) = dup;
    *(int64_t *)field(cfg, row->off_n) = id;
    return 0;
}

/*
 * Sets a scalar key from text. null is YAML's null (an empty plain value, ~, null): "" for
 * strings, an empty list for lists, an error for the rest.
 */
static int value_set(struct config *cfg, const struct key_row *row, const char *s, size_t len,
                     bool null, const struct origin *o, struct error *err)
{
    char shown[4 * SHOW_MAX + 16];
    char expect[128];
    void *f = field(cfg, row->off);
    int64_t i;
    uint64_t u;
    unsigned m;
    double d;
    bool b;
    int r;

    if (row->type == KT_STRING || row->type == KT_PATH) {
        char *dup;
        r = string_check(row, s, null ? 0 : len, false, o, &dup, err);
        if (r < 0)
            return r;
        free(*(char **)f);
        *(char **)f = dup;
        return 0;
    }
    if (row->type == KT_USER || row->type == KT_GROUP)
        return owner_set(cfg, row, null ? "" : s, null ? 0 : len, o, err);
    if (row->type == KT_HOOKS) {
        if (!null)
            return fail(err, o->name, o->line, o->key, "expected %s, got '%s'",
                        type_expect(expect, sizeof(expect), row),
                        show(shown, sizeof(shown), s, len));
        hooks_free(*(struct config_webhook **)f, *(size_t *)field(cfg, row->off_n));
        *(struct config_webhook **)f = NULL;
        *(size_t *)field(cfg, row->off_n) = 0;
        return 0;
    }
    if (row->type == KT_LIST) {
        struct list_builder empty = {0};
        if (!null)
            return fail(err, o->name, o->line, o->key, "expected %s, got '%s'",
                        type_expect(expect, sizeof(expect), row),
                        show(shown, sizeof(shown), s, len));
        return list_commit(cfg, row, &empty, o, err);
    }
    if (null || len == 0)
        return fail(err, o->name, o->line, o->key, "expected %s, got an empty value",
                    type_expect(expect, sizeof(expect), row));
    if (memchr(s, '\0', len))
        return fail(err, o->name, o->line, o->key, "expected %s, got a value with a NUL byte",
                    type_expect(expect, sizeof(expect), row));

    switch (row->type) {
    case KT_ENUM:
    case KT_PROTOCOL:
        for (size_t c = 0; row->choices[c]; c++) {
            if (strcasecmp(s, row->choices[c]) != 0)
                continue;
            if (row->type == KT_PROTOCOL) {
                *(enum config_protocol *)f = (enum config_protocol)c;
                return 0;
            }
            char *dup = strdup(row->choices[c]);
            if (!dup)
                return error_set(err, -ENOMEM, "out of memory");
            free(*(char **)f);
            *(char **)f = dup;
            return 0;
        }
        break;
    case KT_BOOL:
        if (parse_bool(s, &b) < 0)
            break;
        *(bool *)f = b;
        return 0;
    case KT_INT:
        r = parse_int64(s, &i);
        if (r == -EINVAL)
            break;
        if (r < 0 || i < row->min || i > row->max)
            return fail(err, o->name, o->line, o->key,
                        "%s is out of range (%" PRId64 "..%" PRId64 ")",
                        show(shown, sizeof(shown), s, len), row->min, row->max);
        *(int *)f = (int)i;
        return 0;
    case KT_SIZE:
        r = parse_size(s, &u);
        if (r == -EINVAL)
            break;
        if (r < 0 || u < (uint64_t)row->min || u > (uint64_t)row->max)
            return fail(err, o->name, o->line, o->key,
                        "%s is out of range (%" PRId64 "..%" PRId64 " bytes)",
                        show(shown, sizeof(shown), s, len), row->min, row->max);
        *(uint64_t *)f = u;
        return 0;
    case KT_NUMBER:
        r = parse_number(s, &d);
        if (r == -EINVAL)
            break;
        if (r < 0 || d < (double)row->min || d > (double)row->max)
            return fail(err, o->name, o->line, o->key,
                        "%s is out of range (%" PRId64 "..%" PRId64 ")",
                        show(shown, sizeof(shown), s, len), row->min, row->max);
        *(double *)f = d;
        return 0;
    case KT_MODE:
        r = parse_mode(s, &m);
        if (r == -EINVAL)
            break;
        if (r < 0 || (m & ~(unsigned)row->max) || (m & (unsigned)row->min) != (unsigned)row->min)
            return fail(err, o->name, o->line, o->key,
                        "'%s' is not allowed: at most %04o, and at least %04o (SnapSync reads "
                        "its copies back and writes into its folders)",
                        show(shown, sizeof(shown), s, len), (unsigned)row->max, (unsigned)row->min);
        *(unsigned *)f = m;
        return 0;
    case KT_STRING:
    case KT_PATH:
    case KT_LIST:
    case KT_USER:
    case KT_GROUP:
    case KT_HOOKS:
        break;
    }
    return fail(err, o->name, o->line, o->key, "expected %s, got '%s'",
                type_expect(expect, sizeof(expect), row), show(shown, sizeof(shown), s, len));
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key_row *row = &keys[i];
        if (row->type == KT_STRING || row->type == KT_PATH || row->type == KT_ENUM ||
            row->type == KT_USER || row->type == KT_GROUP)
            free(*(char **)field(cfg, row->off));
        else if (row->type == KT_LIST)
            list_free(*(char ***)field(cfg, row->off));
        else if (row->type == KT_HOOKS)
            hooks_free(*(struct config_webhook **)field(cfg, row->off),
                       *(size_t *)field(cfg, row->off_n));
    }
    list_free(cfg->warnings);
    free(cfg->path);
    free(cfg);
}

/* A config holding the table defaults, or those of the embedded default. */
static int config_new(bool embedded, struct config **ret, struct error *err)
{
    struct config *cfg = calloc(1, sizeof(*cfg));
    struct list_builder lb = {0};
    int r = 0;
    if (!cfg)
        return error_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key_row *row = &keys[i];
        char key[64];
        key_path(key, sizeof(key), row);
        struct origin o = {.name = "built-in default", .key = key};
        if (row->type == KT_LIST) {
            for (size_t j = 0; row->def_list[j]; j++) {
                r = list_add(&lb, row, row->def_list[j], strlen(row->def_list[j]), &o, err);
                if (r < 0)
                    goto out;
            }
            r = list_commit(cfg, row, &lb, &o, err);
        } else if (row->type == KT_HOOKS) {
            r = 0; /* none */
        } else {
            const char *def = (embedded && row->embedded) ? row->embedded : row->def;
            r = value_set(cfg, row, def, strlen(def), false, &o, err);
        }
        if (r < 0)
            goto out;
    }
    *ret = cfg;
    cfg = NULL;
out:
    list_free(lb.items);
    config_free(cfg);
    return r;
}

/* ---- validation ---- */

/* True when the key holds its table default (a permission key left as the template has it). */
static bool perm_is_default(const struct config *cfg, const struct key_row *row)
{
    unsigned def = 0;
    if (row->type == KT_MODE)
        return parse_mode(row->def, &def) == 0 && *(const unsigned *)cfield(cfg, row->off) == def;
    return **(char *const *)cfield(cfg, row->off) == '\0';
}

/* An SMB server gives copies the owner and modes of its share settings (force user, create
 * mask); SnapSync cannot set them, so it refuses to pretend it does. */
static int validate_smb_perms(const struct config *cfg, const char *name, const struct lines *lines,
                              struct error *err)
{
    if (!unraid_smb(cfg))
        return 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key_row *row = &keys[i];
        bool perm = row->type == KT_MODE || row->type == KT_USER || row->type == KT_GROUP;
        if (row->section != SEC_UNRAID || !perm || perm_is_default(cfg, row))
            continue;
        char key[64];
        key_path(key, sizeof(key), row);
        return fail(err, name, lines ? lines->key[i] : 0, key,
                    "cannot be applied with protocol smb: the SMB server decides (force user, "
                    "create mask in its share settings); remove it");
    }
    return 0;
}

/* The line of key `key` of section sec in the file, else of the section; 0 when not known. */
static size_t line_of(const struct lines *lines, enum section sec, const char *key)
{
    if (!lines)
        return 0;
    size_t line = lines->key[key_index(key_find(sec, key))];
    return line ? line : lines->section[sec];
}

/* notify.email when enabled: recipients within bounds, no credentials in clear. */
static int validate_notify(const struct config *cfg, const char *name, const struct lines *lines,
                           struct error *err)
{
    if (!cfg->notify.email.enabled)
        return 0;
    if (cfg->notify.email.n_to == 0)
        return fail(err, name, line_of(lines, SEC_NOTIFY_EMAIL, "enabled"), "notify.email.to",
                    "required when notify.email is enabled (a list of addresses)");
    if (cfg->notify.email.n_to > NOTIFY_MAIL_RCPT_MAX)
        return fail(err, name, line_of(lines, SEC_NOTIFY_EMAIL, "to"), "notify.email.to",
                    "too many recipients (%zu, at most %d)", cfg->notify.email.n_to,
                    NOTIFY_MAIL_RCPT_MAX);
    if (strcmp(cfg->notify.email.security, "none") == 0 &&
        (*cfg->notify.email.username || *cfg->notify.email.password))
        return fail(err, name, line_of(lines, SEC_NOTIFY_EMAIL, "security"),
                    "notify.email.security",
                    "none sends in clear: a username or password (SMTP_USERNAME, SMTP_PASSWORD) "
                    "needs starttls or tls");
    if (*cfg->notify.email.password && !*cfg->notify.email.username)
        return fail(err, name, line_of(lines, SEC_NOTIFY_EMAIL, "password"),
                    "notify.email.username",
                    "required with a password (set SMTP_USERNAME in .env)");
    return 0;
}

/* S3 chooses an object's key when its upload starts (a multipart upload is created before the
 * first part is read), so the content's MD5 cannot be in it. */
static int validate_s3_patterns(const struct config *cfg, const char *name,
                                const struct lines *lines, struct error *err)
{
    if (!cfg->s3.enabled)
        return 0;
    const char *pats[2];
    config_dest_patterns(cfg, "s3", &pats[0], &pats[1]);
    for (int i = 0; i < 2; i++) {
        const char *key = i == 0 ? "folder_pattern" : "file_pattern";
        bool own = (i == 0 ? cfg->s3.folder_pattern : cfg->s3.file_pattern)[0] != '\0';
        if (!strstr(pats[i], "{md5"))
            continue;
        char path[64];
        snprintf(path, sizeof(path), "%s.%s", own ? "s3" : "backup", key);
        return fail(err, name, line_of(lines, own ? SEC_S3 : SEC_BACKUP, key), path,
                    "{md5} cannot be used for s3: an object's key is chosen before its content "
                    "is read (a large file's multipart upload starts first); set s3.%s without it",
                    key);
    }
    return 0;
}

static int validate(const struct config *cfg, const char *name, const struct lines *lines,
                    struct error *err)
{
    int r = validate_smb_perms(cfg, name, lines, err);
    if (r < 0)
        return r;
    r = validate_s3_patterns(cfg, name, lines, err);
    if (r < 0)
        return r;
    r = validate_notify(cfg, name, lines, err);
    if (r < 0)
        return r;
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
        const struct rule *rule = &rules[i];
        const struct key_row *row = key_find(rule->section, rule->key);
        if (!rule->when(cfg) || **(char *const *)cfield(cfg, row->off) != '\0')
            continue;
        size_t line = 0;
        if (lines) {
            const struct key_row *enabled = key_find(rule->section, "enabled");
            line = lines->key[key_index(enabled)];
            if (line == 0)
                line = lines->section[rule->section];
        }
        char key[64];
        key_path(key, sizeof(key), row);
        if (row->env)
            return fail(err, name, line, key, "required when %s (set %s in .env)", rule->why,
                        row->env);
        return fail(err, name, line, key, "required when %s", rule->why);
    }
    return 0;
}

/* Whether an http:// URL names this host (localhost, 127.0.0.0/8, ::1), so a token sent over it
 * never crosses the network. */
static bool url_loopback(const char *url)
{
    const char *h = url + 7; /* after "http://" */
    char host[256];
    size_t n;
    if (*h == '[') {
        n = strcspn(++h, "]");
    } else {
        n = strcspn(h, ":/?#");
        const char *at = memchr(h, '@', n);
        if (at) { /* user:password@host */
            h = at + 1;
            n = strcspn(h, ":/?#");
        }
    }
    if (n == 0 || n >= sizeof(host))
        return false;
    memcpy(host, h, n);
    host[n] = '\0';
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return strcasecmp(host, "localhost") == 0 || strcmp(host, "::1") == 0;
}

/* Warns about a webhook token that would go in clear over the network. */
static int notify_warnings(struct config *cfg)
{
    for (size_t i = 0; i < cfg->notify.n_webhooks; i++) {
        const struct config_webhook *h = &cfg->notify.webhooks[i];
        if (!*h->token || strncasecmp(h->url, "http://", 7) != 0 || url_loopback(h->url))
            continue;
        int r = add_warning(cfg,
                            "notify.webhooks[%zu]: its token goes in clear over http:// to another "
                            "host; use https://",
                            i);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- YAML ---- */

struct yparse {
    yaml_parser_t yp;
    yaml_event_t ev;
    bool have_ev;
    const char *name;
    const char *text;
    size_t len;
    struct config *cfg;
    struct lines *lines;
    struct error *err;
};

static size_t ev_line(const struct yparse *p)
{
    return p->ev.start_mark.line + 1;
}

static size_t line_of_offset(const char *text, size_t len, size_t off)
{
    size_t line = 1;
    for (size_t i = 0; i < off && i < len; i++)
        if (text[i] == '\n')
            line++;
    return line;
}

static int yaml_failed(struct yparse *p)
{
    const yaml_parser_t *yp = &p->yp;
    if (yp->error == YAML_MEMORY_ERROR)
        return error_set(p->err, -ENOMEM, "%s: out of memory", p->name);
    const char *problem = yp->problem ? yp->problem : "syntax error";
    if (yp->error == YAML_READER_ERROR)
        return fail(p->err, p->name, line_of_offset(p->text, p->len, yp->problem_offset), NULL,
                    "invalid YAML: %s", problem);
    if (yp->context)
        return fail(p->err, p->name, yp->problem_mark.line + 1, NULL,
                    "invalid YAML: %s (%s on line %zu)", problem, yp->context,
                    yp->context_mark.line + 1);
    return fail(p->err, p->name, yp->problem_mark.line + 1, NULL, "invalid YAML: %s", problem);
}

static int next_event(struct yparse *p)
{
    if (p->have_ev) {
        yaml_event_delete(&p->ev);
        p->have_ev = false;
    }
    if (!yaml_parser_parse(&p->yp, &p->ev))
        return yaml_failed(p);
    p->have_ev = true;
    if (p->ev.type == YAML_ALIAS_EVENT)
        return fail(p->err, p->name, ev_line(p), NULL, "aliases (*name) are not supported");
    return 0;
}

static bool ev_is_null(const yaml_event_t *ev)
{
    if (ev->type != YAML_SCALAR_EVENT || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    return n == 0 || (n == 1 && v[0] == '~') ||
           (n == 4 && (strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0));
}

static const char *ev_kind(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SEQUENCE_START_EVENT:
        return "a list";
    case YAML_MAPPING_START_EVENT:
        return "a mapping";
    default:
        return "something else";
    }
}

static unsigned edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned row[65];
    if (la > 64 || lb > 64)
        return UINT_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = (unsigned)j;
    for (size_t i = 1; i <= la; i++) {
        unsigned diag = row[0];
        row[0] = (unsigned)i;
        for (size_t j = 1; j <= lb; j++) {
            unsigned up = row[j];
            unsigned cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            unsigned best = diag + cost;
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The closest known name to `s`, or NULL when nothing is close. sec < 0: section names. */
static const char *suggest(int sec, const char *s)
{
    const char *best = NULL;
    unsigned best_d = 3;
    size_t n = sec < 0 ? N_SECTIONS : N_KEYS;
    for (size_t i = 0; i < n; i++) {
        if (sec >= 0 && keys[i].section != (enum section)sec)
            continue;
        const char *cand = sec < 0 ? sections[i].name : keys[i].name;
        unsigned d = edit_distance(s, cand);
        if (d < best_d && d < strlen(cand)) {
            best = sec < 0 ? sec_path((enum section)i) : cand; /* "notify.email" */
            best_d = d;
        }
    }
    return best;
}

static int unknown(struct yparse *p, int sec, const char *s, size_t len)
{
    char shown[4 * SHOW_MAX + 16];
    char key[4 * SHOW_MAX + 64];
    const char *hint = memchr(s, '\0', len) ? NULL : suggest(sec, s);
    show(shown, sizeof(shown), s, len);
    if (sec < 0)
        snprintf(key, sizeof(key), "%s", shown);
    else
        snprintf(key, sizeof(key), "%s.%s", sec_path((enum section)sec), shown);
    if (hint)
        return fail(p->err, p->name, ev_line(p), key, "unknown %s (did you mean %s?)",
                    sec < 0 ? "section" : "key", hint);
    return fail(p->err, p->name, ev_line(p), key, "unknown %s", sec < 0 ? "section" : "key");
}

/* The keys of one notify.webhooks entry; url is required, format defaults to json. */
enum { HK_URL, HK_FORMAT, HK_TOKEN, HK_TOKEN_ENV, HK_CA, N_HOOK_KEYS };
static const struct hook_key {
    const char *name;
    size_t off;
    struct key_row row; /* what string_check needs: max, flags */
} hook_keys[N_HOOK_KEYS] = {
    [HK_URL] = {"url",
                offsetof(struct config_webhook, url),
                {.max = NOTIFY_HOOK_URL_MAX, .flags = KF_URL | KF_NONEMPTY}},
    [HK_FORMAT] = {"format", offsetof(struct config_webhook, format), {.max = 16}},
    [HK_TOKEN] = {"token",
                  offsetof(struct config_webhook, token),
                  {.max = NOTIFY_HOOK_TOKEN_MAX, .flags = KF_SECRET}},
    [HK_TOKEN_ENV] = {"token_env", offsetof(struct config_webhook, token_env), {.max = 63}},
    [HK_CA] = {"tls_ca_file", offsetof(struct config_webhook, tls_ca_file), {.max = PATH_MAX - 1}},
};

static bool env_name_ok(const char *s)
{
    return *s && !isdigit((unsigned char)*s) &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") ==
               strlen(s);
}

/* One mapping of notify.webhooks (the event is its MAPPING-START) into h. */
static int parse_hook(struct yparse *p, const char *key, struct config_webhook *h)
{
    char shown[4 * SHOW_MAX + 16];
    char name[96];
    size_t lines[N_HOOK_KEYS] = {0};
    enum notify_hook_format fmt;
    int r;
    h->line = ev_line(p);
    for (;;) {
        r = next_event(p);
        if (r < 0)
            return r;
        if (p->ev.type == YAML_MAPPING_END_EVENT)
            break;
        if (p->ev.type != YAML_SCALAR_EVENT)
            return fail(p->err, p->name, ev_line(p), key, "expected a key name, got %s",
                        ev_kind(&p->ev));
        const char *s = (const char *)p->ev.data.scalar.value;
        size_t len = p->ev.data.scalar.length;
        size_t k = 0;
        while (k < N_HOOK_KEYS &&
               (strlen(hook_keys[k].name) != len || memcmp(hook_keys[k].name, s, len) != 0))
            k++;
        if (k == N_HOOK_KEYS) {
            snprintf(name, sizeof(name), "%s.%s", key, show(shown, sizeof(shown), s, len));
            return fail(p->err, p->name, ev_line(p), name,
                        "unknown key (url, format, token, token_env, tls_ca_file)");
        }
        snprintf(name, sizeof(name), "%s.%s", key, hook_keys[k].name);
        if (lines[k])
            return fail(p->err, p->name, ev_line(p), name, "duplicate key (first set on line %zu)",
                        lines[k]);
        lines[k] = ev_line(p);
        r = next_event(p);
        if (r < 0)
            return r;
        if (p->ev.type != YAML_SCALAR_EVENT)
            return fail(p->err, p->name, ev_line(p), name, "expected a string, got %s",
                        ev_kind(&p->ev));
        struct origin o = {.name = p->name, .line = ev_line(p), .key = name};
        bool null = ev_is_null(&p->ev);
        char *dup;
        r = string_check(&hook_keys[k].row, (const char *)p->ev.data.scalar.value,
                         null ? 0 : p->ev.data.scalar.length, false, &o, &dup, p->err);
        if (r < 0)
            return r;
        char **f = (char **)((char *)h + hook_keys[k].off);
        free(*f);
        *f = dup;
    }
    for (size_t k = 0; k < N_HOOK_KEYS; k++) {
        char **f = (char **)((char *)h + hook_keys[k].off);
        if (!*f && !(*f = strdup(k == HK_FORMAT ? "json" : "")))
            return error_set(p->err, -ENOMEM, "out of memory");
    }
    if (!*h->url) {
        snprintf(name, sizeof(name), "%s.url", key);
        return fail(p->err, p->name, h->line, name, "required");
    }
    if (notify_hook_format_parse(h->format, &fmt) < 0) {
        snprintf(name, sizeof(name), "%s.format", key);
        return fail(p->err, p->name, lines[HK_FORMAT], name,
                    "expected one of json, ntfy, gotify, got '%s'",
                    show(shown, sizeof(shown), h->format, strlen(h->format)));
    }
    snprintf(name, sizeof(name), "%s.token_env", key);
    if (*h->token_env && !env_name_ok(h->token_env))
        return fail(p->err, p->name, lines[HK_TOKEN_ENV], name,
                    "expected a variable name such as NTFY_TOKEN, got '%s'",
                    show(shown, sizeof(shown), h->token_env, strlen(h->token_env)));
    if (*h->token_env && *h->token)
        return fail(p->err, p->name, lines[HK_TOKEN_ENV], name,
                    "token and token_env are both set; keep one (token_env, with the token in "
                    ".env)");
    return 0;
}

/* notify.webhooks: a list of mappings, at most row->max. */
static int parse_hooks(struct yparse *p, const struct key_row *row, const char *key)
{
    char name[80];
    struct config_webhook *hooks = calloc((size_t)row->max, sizeof(*hooks));
    size_t n = 0;
    int r;
    if (!hooks)
        return error_set(p->err, -ENOMEM, "out of memory");
    for (;;) {
        r = next_event(p);
        if (r < 0)
            goto out;
        if (p->ev.type == YAML_SEQUENCE_END_EVENT)
            break;
        if (n >= (size_t)row->max) {
            r = fail(p->err, p->name, ev_line(p), key, "too many webhooks (at most %" PRId64 ")",
                     row->max);
            goto out;
        }
        snprintf(name, sizeof(name), "%s[%zu]", key, n);
        if (p->ev.type != YAML_MAPPING_START_EVENT) {
            r = fail(p->err, p->name, ev_line(p), name,
                     "expected a mapping {url, format, token}, got %s",
                     p->ev.type == YAML_SCALAR_EVENT ? "a value" : ev_kind(&p->ev));
            goto out;
        }
        r = parse_hook(p, name, &hooks[n++]);
        if (r < 0)
            goto out;
    }
    hooks_free(*(struct config_webhook **)field(p->cfg, row->off),
               *(size_t *)field(p->cfg, row->off_n));
    *(struct config_webhook **)field(p->cfg, row->off) = hooks;
    *(size_t *)field(p->cfg, row->off_n) = n;
    hooks = NULL;
out:
    hooks_free(hooks, n);
    return r;
}

/* The event after a key: the value of `row`. */
static int parse_value(struct yparse *p, const struct key_row *row)
{
    char key[64];
    char expect[128];
    struct list_builder lb = {0};
    int r;
    key_path(key, sizeof(key), row);
    struct origin o = {.name = p->name, .line = ev_line(p), .key = key};

    if (p->ev.type == YAML_SCALAR_EVENT)
        return value_set(p->cfg, row, (const char *)p->ev.data.scalar.value,
                         p->ev.data.scalar.length, ev_is_null(&p->ev), &o, p->err);
    if (row->type == KT_HOOKS && p->ev.type == YAML_SEQUENCE_START_EVENT)
        return parse_hooks(p, row, key);
    if (p->ev.type != YAML_SEQUENCE_START_EVENT || row->type != KT_LIST)
        return fail(p->err, p->name, o.line, key, "expected %s, got %s",
                    type_expect(expect, sizeof(expect), row), ev_kind(&p->ev));
    for (;;) {
        r = next_event(p);
        if (r < 0)
            goto out;
        if (p->ev.type == YAML_SEQUENCE_END_EVENT)
            break;
        o.line = ev_line(p);
        if (p->ev.type != YAML_SCALAR_EVENT) {
            r = fail(p->err, p->name, o.line, key, "expected a string, got %s (nested too deep)",
                     ev_kind(&p->ev));
            goto out;
        }
        r = list_add(&lb, row, (const char *)p->ev.data.scalar.value, p->ev.data.scalar.length, &o,
                     p->err);
        if (r < 0)
            goto out;
    }
    r = list_commit(p->cfg, row, &lb, &o, p->err);
out:
    list_free(lb.items);
    return r;
}

/* The event after a section name: its mapping of keys, or null for all defaults. */
static int parse_section(struct yparse *p, enum section sec)
{
    int r;
    if (ev_is_null(&p->ev))
        return 0;
    if (p->ev.type != YAML_MAPPING_START_EVENT)
        return fail(p->err, p->name, ev_line(p), sec_path(sec),
                    "expected a mapping of keys, got %s",
                    p->ev.type == YAML_SCALAR_EVENT ? "a value" : ev_kind(&p->ev));
    for (;;) {
        r = next_event(p);
        if (r < 0)
            return r;
        if (p->ev.type == YAML_MAPPING_END_EVENT)
            return 0;
        if (p->ev.type != YAML_SCALAR_EVENT)
            return fail(p->err, p->name, ev_line(p), sec_path(sec), "expected a key name, got %s",
                        ev_kind(&p->ev));
        const char *name = (const char *)p->ev.data.scalar.value;
        size_t len = p->ev.data.scalar.length;
        const struct key_row *row = memchr(name, '\0', len) ? NULL : key_find(sec, name);
        int child = -1;
        for (int c = 0; !row && c < N_SECTIONS && !memchr(name, '\0', len); c++)
            if (sections[c].nested && sections[c].parent == sec &&
                strcmp(sections[c].name, name) == 0)
                child = c;
        if (child >= 0) { /* a nested section: one level, as the table says */
            if (p->lines->section[child])
                return fail(p->err, p->name, ev_line(p), sec_path((enum section)child),
                            "duplicate section (first on line %zu)", p->lines->section[child]);
            p->lines->section[child] = ev_line(p);
            r = next_event(p);
            if (r < 0)
                return r;
            r = parse_section(p, (enum section)child);
            if (r < 0)
                return r;
            continue;
        }
        if (!row)
            return unknown(p, (int)sec, name, len);
        size_t *line = &p->lines->key[key_index(row)];
        if (*line) {
            char key[64];
            key_path(key, sizeof(key), row);
            return fail(p->err, p->name, ev_line(p), key, "duplicate key (first set on line %zu)",
                        *line);
        }
        *line = ev_line(p);
        r = next_event(p);
        if (r < 0)
            return r;
        r = parse_value(p, row);
        if (r < 0)
            return r;
    }
}

static int parse_document(struct yparse *p)
{
    int r = next_event(p);
    if (r < 0)
        return r;
    if (p->ev.type != YAML_STREAM_START_EVENT)
        return fail(p->err, p->name, ev_line(p), NULL, "invalid YAML stream");
    r = next_event(p);
    if (r < 0)
        return r;
    if (p->ev.type == YAML_STREAM_END_EVENT)
        return 0; /* empty file or only comments: all defaults */
    r = next_event(p);
    if (r < 0)
        return r;
    if (ev_is_null(&p->ev)) {
        /* "---" alone */
    } else if (p->ev.type != YAML_MAPPING_START_EVENT) {
        return fail(p->err, p->name, ev_line(p), NULL,
                    "expected a mapping of sections (service:, immich:, ...), got %s",
                    p->ev.type == YAML_SCALAR_EVENT ? "a value" : ev_kind(&p->ev));
    } else {
        for (;;) {
            r = next_event(p);
            if (r < 0)
                return r;
            if (p->ev.type == YAML_MAPPING_END_EVENT)
                break;
            if (p->ev.type != YAML_SCALAR_EVENT)
                return fail(p->err, p->name, ev_line(p), NULL, "expected a section name, got %s",
                            ev_kind(&p->ev));
            const char *name = (const char *)p->ev.data.scalar.value;
            size_t len = p->ev.data.scalar.length;
            int sec = -1;
            for (int s = 0; s < N_SECTIONS && !memchr(name, '\0', len); s++)
                if (!sections[s].nested && strcmp(sections[s].name, name) == 0)
                    sec = s;
            if (sec < 0)
                return unknown(p, -1, name, len);
            if (p->lines->section[sec])
                return fail(p->err, p->name, ev_line(p), sections[sec].name,
                            "duplicate section (first on line %zu)", p->lines->section[sec]);
            p->lines->section[sec] = ev_line(p);
            r = next_event(p);
            if (r < 0)
                return r;
            r = parse_section(p, (enum section)sec);
            if (r < 0)
                return r;
        }
    }
    r = next_event(p); /* DOCUMENT-END */
    if (r < 0)
        return r;
    r = next_event(p);
    if (r < 0)
        return r;
    if (p->ev.type != YAML_STREAM_END_EVENT)
        return fail(p->err, p->name, ev_line(p), NULL, "only one YAML document is allowed");
    return 0;
}

/* Parses text over the table defaults; no .env, no environment, no validation. */
static int parse_yaml(const char *name, const char *text, size_t len, struct lines *lines,
                      struct config **ret, struct error *err)
{
    struct yparse p = {.name = name, .text = text, .len = len, .lines = lines, .err = err};
    int r;
    if (len > CONFIG_FILE_MAX)
        return error_set(err, -EFBIG, "%s: larger than %d bytes", name, CONFIG_FILE_MAX);
    memset(lines, 0, sizeof(*lines));
    r = config_new(false, &p.cfg, err);
    if (r < 0)
        return r;
    if (!yaml_parser_initialize(&p.yp)) {
        r = error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    yaml_parser_set_input_string(&p.yp, (const unsigned char *)text, len);
    r = parse_document(&p);
    if (p.have_ev)
        yaml_event_delete(&p.ev);
    yaml_parser_delete(&p.yp);
    if (r < 0)
        goto out;
    *ret = p.cfg;
    p.cfg = NULL;
out:
    config_free(p.cfg);
    return r;
}

int config_parse_buffer(const char *name, const char *text, size_t len, struct config **ret,
                        struct error *err)
{
    struct lines lines;
    struct config *cfg = NULL;
    int r = parse_yaml(name, text, len, &lines, &cfg, err);
    if (r < 0)
        return r;
    r = validate(cfg, name, &lines, err);
    if (r == 0 && notify_warnings(cfg) < 0)
        r = error_set(err, -ENOMEM, "out of memory");
    if (r < 0) {
        config_free(cfg);
        return r;
    }
    *ret = cfg;
    return 0;
}

int config_default(struct config **ret, struct error *err)
{
    struct config *cfg = NULL;
    int r = config_new(true, &cfg, err);
    if (r < 0)
        return r;
    r = validate(cfg, "built-in default", NULL, err);
    if (r < 0) {
        config_free(cfg);
        return r;
    }
    *ret = cfg;
    return 0;
}

/* ---- .env and environment ---- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* One "KEY=value" line (without its newline). Sets *ret_row and *ret_val (row NULL: not ours);
 * for a variable of no row, *ret_val is its value unchecked and var[] its name (a webhook's
 * token_env may name it); *ret_val NULL when the line sets nothing. */
static int dotenv_line(const char *name, size_t line, const char *s, size_t len,
                       const struct key_row **ret_row, char **ret_val, char var[64],
                       struct error *err)
{
    const char *end = s + len;
    *ret_row = NULL;
    *ret_val = NULL;
    while (s < end && is_blank(*s))
        s++;
    if (s == end || *s == '#')
        return 0;
    if (end - s > 7 && memcmp(s, "export", 6) == 0 && is_blank(s[6])) {
        s += 7;
        while (s < end && is_blank(*s))
            s++;
    }
    const char *k = s;
    while (s < end && (isalnum((unsigned char)*s) || *s == '_'))
        s++;
    size_t klen = (size_t)(s - k);
    if (klen == 0 || isdigit((unsigned char)*k))
        return fail(err, name, line, NULL, "expected KEY=value");
    while (s < end && is_blank(*s))
        s++;
    if (s == end || *s != '=')
        return fail(err, name, line, NULL, "expected KEY=value");
    s++;
    if (klen >= 64)
        return 0; /* longer than any of ours */
    memcpy(var, k, klen);
    var[klen] = '\0';
    while (s < end && is_blank(*s))
        s++;

    /* The value: 'single' (verbatim), "double" (\" and \\ escapes), or bare up to " #". */
    char *val = malloc((size_t)(end - s) + 1);
    size_t n = 0;
    int r = 0;
    if (!val)
        return error_set(err, -ENOMEM, "out of memory");
    if (s < end && (*s == '\'' || *s == '"')) {
        char q = *s++;
        for (;; s++) {
            if (s == end) {
                r = fail(err, name, line, var, "unterminated %s quote",
                         q == '"' ? "double" : "single");
                goto out;
            }
            if (*s == q)
                break;
            if (q == '"' && *s == '\\' && s + 1 < end && (s[1] == '"' || s[1] == '\\'))
                s++;
            val[n++] = *s;
        }
        for (s++; s < end && is_blank(*s); s++)
            ;
        if (s < end && *s != '#') {
            r = fail(err, name, line, var, "unexpected text after the closing quote");
            goto out;
        }
    } else {
        for (; s < end; s++) {
            if (*s == '#' && n > 0 && is_blank(val[n - 1]))
                break;
            val[n++] = *s;
        }
        while (n > 0 && is_blank(val[n - 1]))
            n--;
    }
    val[n] = '\0';
    for (size_t i = 0; i < N_KEYS; i++) {
        if (!keys[i].env || strcmp(keys[i].env, var) != 0)
            continue;
        struct origin o = {.name = name, .line = line, .key = var};
        char *dup;
        r = string_check(&keys[i], val, n, false, &o, &dup, err);
        if (r < 0)
            goto out;
        free(*ret_val);
        *ret_row = &keys[i];
        *ret_val = dup;
    }
    if (!*ret_row && r == 0) {
        *ret_val = val;
        val = NULL;
    }
out:
    free(val);
    return r;
}

/* The token of hook h from token_env's value v (from name: .env, environment). */
static int hook_token_check(const struct config_webhook *h, const char *from, size_t line,
                            const char *v, char **ret_dup, struct error *err)
{
    struct origin o = {.name = from, .line = line, .key = h->token_env};
    return string_check(&hook_keys[HK_TOKEN].row, v, strlen(v), false, &o, ret_dup, err);
}

int config_apply_dotenv(struct config *cfg, const char *name, const char *text, size_t len,
                        struct error *err)
{
    char *vals[N_KEYS] = {0};
    char *hook_vals[CONFIG_WEBHOOKS_MAX] = {0};
    size_t line = 1;
    int r = 0;
    if (len > CONFIG_FILE_MAX)
        return error_set(err, -EFBIG, "%s: larger than %d bytes", name, CONFIG_FILE_MAX);
    if (memchr(text, '\0', len))
        return fail(
            err, name,
            line_of_offset(text, len, (size_t)((const char *)memchr(text, '\0', len) - text)), NULL,
            "NUL byte");
    for (const char *s = text, *end = text + len; s < end; line++) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
        const struct key_row *row;
        char *val = NULL;
        char var[64];
        r = dotenv_line(name, line, s, n > 0 && s[n - 1] == '\r' ? n - 1 : n, &row, &val, var, err);
        if (r < 0)
            goto out;
        if (row) {
            free(vals[key_index(row)]);
            vals[key_index(row)] = val;
            val = NULL;
        }
        for (size_t h = 0; val && h < cfg->notify.n_webhooks && h < CONFIG_WEBHOOKS_MAX; h++) {
            if (strcmp(cfg->notify.webhooks[h].token_env, var) != 0 || !*val)
                continue;
            char *dup;
            r = hook_token_check(&cfg->notify.webhooks[h], name, line, val, &dup, err);
            if (r < 0) {
                free(val);
                goto out;
            }
            free(hook_vals[h]);
            hook_vals[h] = dup;
        }
        free(val);
        s += n + 1;
    }
    /* Empty values count as unset, so a blank "MQTT_PASSWORD=" does not erase the YAML's. */
    for (size_t i = 0; i < N_KEYS; i++) {
        if (!vals[i] || !*vals[i])
            continue;
        char **f = field(cfg, keys[i].off);
        free(*f);
        *f = vals[i];
        vals[i] = NULL;
    }
    for (size_t h = 0; h < cfg->notify.n_webhooks && h < CONFIG_WEBHOOKS_MAX; h++) {
        if (!hook_vals[h])
            continue;
        free(cfg->notify.webhooks[h].token);
        cfg->notify.webhooks[h].token = hook_vals[h];
        hook_vals[h] = NULL;
    }
out:
    for (size_t i = 0; i < N_KEYS; i++)
        free(vals[i]);
    for (size_t h = 0; h < CONFIG_WEBHOOKS_MAX; h++)
        free(hook_vals[h]);
    return r;
}

static int apply_environment(struct config *cfg, struct error *err)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        if (!keys[i].env)
            continue;
        const char *v = getenv(keys[i].env);
        if (!v || !*v)
            continue;
        struct origin o = {.name = "environment", .key = keys[i].env};
        char *dup;
        int r = string_check(&keys[i], v, strlen(v), false, &o, &dup, err);
        if (r < 0)
            return r;
        char **f = field(cfg, keys[i].off);
        free(*f);
        *f = dup;
    }
    for (size_t h = 0; h < cfg->notify.n_webhooks; h++) {
        struct config_webhook *hook = &cfg->notify.webhooks[h];
        const char *v = *hook->token_env ? getenv(hook->token_env) : NULL;
        if (!v || !*v)
            continue;
        char *dup;
        int r = hook_token_check(hook, "environment", 0, v, &dup, err);
        if (r < 0)
            return r;
        free(hook->token);
        hook->token = dup;
    }
    return 0;
}

/* ---- files ---- */

/* Reads a regular file of at most CONFIG_FILE_MAX bytes. */
static int read_text(const char *path, char **ret_text, size_t *ret_len, struct stat *ret_st,
                     struct error *err)
{
    struct stat st;
    int r = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return error_set_errno(err, -errno, "cannot open '%s'", path);
    if (fstat(fd, &st) < 0) {
        r = error_set_errno(err, -errno, "cannot stat '%s'", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = error_set(err, -EINVAL, "'%s' is not a regular file", path);
        goto out;
    }
    r = fileio_read_fd(fd, CONFIG_FILE_MAX, ret_text, ret_len);
    if (r == -EFBIG)
        error_set(err, r, "'%s' is larger than %d bytes", path, CONFIG_FILE_MAX);
    else if (r == -ENOMEM)
        error_set(err, r, "out of memory");
    else if (r < 0)
        error_set_errno(err, r, "cannot read '%s'", path);
    else
        *ret_st = st;
out:
    close(fd);
    return r;
}

/* Joins dir and rel ("/" between), dropping "." components and doubled slashes. */
static char *path_join(const char *dir, const char *rel)
{
    size_t cap = strlen(dir) + strlen(rel) + 3;
    char *out = malloc(cap);
    size_t n = 0;
    if (!out)
        return NULL;
    const char *parts[2] = {dir, rel};
    for (int i = 0; i < 2; i++) {
        const char *s = parts[i];
        while (*s) {
            while (*s == '/')
                s++;
            const char *e = strchrnul(s, '/');
            size_t seg = (size_t)(e - s);
            if (seg > 0 && !(seg == 1 && s[0] == '.')) {
                out[n++] = '/';
                memcpy(out + n, s, seg);
                n += seg;
            }
            s = e;
        }
    }
    if (n == 0)
        out[n++] = '/';
    out[n] = '\0';
    return out;
}

/* The absolute form of path, and the directory holding it. */
static int path_absolute(const char *path, char **ret_abs, char **ret_dir)
{
    char cwd[PATH_MAX];
    if (path[0] != '/' && !getcwd(cwd, sizeof(cwd)))
        return -errno;
    char *abs = path_join(path[0] == '/' ? "/" : cwd, path);
    if (!abs)
        return -ENOMEM;
    char *dir = strdup(abs);
    if (!dir) {
        free(abs);
        return -ENOMEM;
    }
    char *slash = strrchr(dir, '/');
    slash[slash == dir ? 1 : 0] = '\0';
    *ret_abs = abs;
    *ret_dir = dir;
    return 0;
}

static int resolve_paths(struct config *cfg, const char *dir, const char *name,
                         const struct lines *lines, struct error *err)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        if (keys[i].type != KT_PATH)
            continue;
        char **f = field(cfg, keys[i].off);
        if (**f == '\0' || **f == '/')
            continue;
        char *abs = path_join(dir, *f);
        if (!abs)
            return error_set(err, -ENOMEM, "out of memory");
        if (strlen(abs) > (size_t)keys[i].max) {
            char key[64];
            key_path(key, sizeof(key), &keys[i]);
            free(abs);
            return fail(err, name, lines->key[i], key, "path too long once made absolute");
        }
        free(*f);
        *f = abs;
    }
    return 0;
}

/* After .env and the environment: each token_env found, relative tls_ca_file made absolute. */
static int hooks_finish(struct config *cfg, const char *dir, const char *name, struct error *err)
{
    for (size_t i = 0; i < cfg->notify.n_webhooks; i++) {
        struct config_webhook *h = &cfg->notify.webhooks[i];
        char key[64];
        snprintf(key, sizeof(key), "notify.webhooks[%zu].token_env", i);
        if (*h->token_env && !*h->token)
            return fail(err, name, h->line, key, "%s is set neither in .env nor in the environment",
                        h->token_env);
        if (*h->tls_ca_file && h->tls_ca_file[0] != '/') {
            char *abs = path_join(dir, h->tls_ca_file);
            if (!abs)
                return error_set(err, -ENOMEM, "out of memory");
            if (strlen(abs) >= PATH_MAX) {
                free(abs);
                snprintf(key, sizeof(key), "notify.webhooks[%zu].tls_ca_file", i);
                return fail(err, name, h->line, key, "path too long once made absolute");
            }
            free(h->tls_ca_file);
            h->tls_ca_file = abs;
        }
    }
    return 0;
}

/* Applies dir/.env when it exists, with a warning when others can read it. */
static int load_dotenv(struct config *cfg, const char *path, struct error *err)
{
    char *text = NULL;
    size_t len;
    struct stat st = {0}; /* read_text sets it on success; -O3 cannot tell */
    struct error e;
    int r = read_text(path, &text, &len, &st, &e);
    if (r == -ENOENT)
        return 0;
    if (r < 0) {
        error_set(err, r, "%s", e.msg);
        return r;
    }
    if (st.st_mode & (S_IRGRP | S_IROTH)) {
        r = add_warning(cfg, "'%s' is readable by other users; chmod 600 it", path);
        if (r < 0) {
            error_set(err, r, "out of memory");
            goto out;
        }
    }
    r = config_apply_dotenv(cfg, path, text, len, err);
out:
    free(text);
    return r;
}

/* Loads one file. how: "" or " (from $SNAPSYNC_CONFIG)", for the not-found message. */
static int load_file(const char *path, const char *how, struct config **ret, struct error *err)
{
    struct config *cfg = NULL;
    struct lines lines;
    char *text = NULL, *abs = NULL, *dir = NULL, *envpath = NULL;
    size_t len;
    struct stat st = {0}; /* as in load_dotenv */
    int r = read_text(path, &text, &len, &st, err);
    if (r == -ENOENT)
        return error_set(err, r, "config file '%s'%s not found", path, how);
    if (r < 0)
        return r;
    r = parse_yaml(path, text, len, &lines, &cfg, err);
    if (r < 0)
        goto out;
    r = path_absolute(path, &abs, &dir);
    if (r < 0) {
        error_set_errno(err, r, "cannot make '%s' absolute", path);
        goto out;
    }
    cfg->path = abs;
    abs = NULL;
    r = resolve_paths(cfg, dir, path, &lines, err);
    if (r < 0)
        goto out;
    for (size_t i = 0; (st.st_mode & (S_IRGRP | S_IROTH)) && i < cfg->notify.n_webhooks; i++) {
        const struct config_webhook *h = &cfg->notify.webhooks[i];
        if (!*h->token)
            continue;
        r = add_warning(cfg,
                        "'%s' holds a webhook token and is readable by other users; chmod 600 it "
                        "(or use token_env with the token in .env)",
                        path);
        if (r < 0) {
            error_set(err, r, "out of memory");
            goto out;
        }
        break;
    }
    if (st.st_mode & (S_IRGRP | S_IROTH)) {
        for (size_t i = 0; i < N_KEYS; i++) {
            if (!(keys[i].flags & KF_SECRET) || !lines.key[i] ||
                !**(char **)field(cfg, keys[i].off))
                continue;
            r = add_warning(cfg,
                            "'%s' holds a secret and is readable by other users; chmod 600 it "
                            "(or move %s to .env)",
                            path, keys[i].env);
            if (r < 0) {
                error_set(err, r, "out of memory");
                goto out;
            }
            break;
        }
    }
    envpath = path_join(dir, ".env");
    if (!envpath) {
        r = error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    r = load_dotenv(cfg, envpath, err);
    if (r < 0)
        goto out;
    r = apply_environment(cfg, err);
    if (r < 0)
        goto out;
    r = hooks_finish(cfg, dir, path, err);
    if (r < 0)
        goto out;
    r = validate(cfg, path, &lines, err);
    if (r < 0)
        goto out;
    r = notify_warnings(cfg);
    if (r < 0) {
        error_set(err, r, "out of memory");
        goto out;
    }
    *ret = cfg;
    cfg = NULL;
out:
    config_free(cfg);
    free(text);
    free(abs);
    free(dir);
    free(envpath);
    return r;
}

int config_load(const char *explicit_path, struct config **ret, struct error *err)
{
    struct config *cfg = NULL;
    int r;
    if (explicit_path)
        return load_file(explicit_path, "", ret, err);
    const char *env = getenv("SNAPSYNC_CONFIG");
    if (env && *env)
        return load_file(env, " (from $SNAPSYNC_CONFIG)", ret, err);
    static const char *const search[] = {"config.yaml", CONFIG_SYSTEM_PATH};
    for (size_t i = 0; i < sizeof(search) / sizeof(search[0]); i++) {
        if (access(search[i], F_OK) == 0 || errno != ENOENT)
            return load_file(search[i], "", ret, err);
    }
    r = config_default(&cfg, err);
    if (r < 0)
        return r;
    r = load_dotenv(cfg, ".env", err);
    if (r < 0)
        goto out;
    r = apply_environment(cfg, err);
    if (r < 0)
        goto out;
    r = validate(cfg, "built-in default", NULL, err);
    if (r < 0)
        goto out;
    *ret = cfg;
    cfg = NULL;
out:
    config_free(cfg);
    return r;
}

void config_scrub_log_line(char *line, void *cfg)
{
    config_scrub_secrets(cfg, line);
}

/* Replaces each occurrence of secret (of at least 4 bytes) in text with "***". */
static void scrub_one(char *text, const char *secret)
{
    size_t ls = secret ? strlen(secret) : 0;
    if (ls < 4)
        return;
    for (char *at = strstr(text, secret); at; at = strstr(at + 3, secret)) {
        memcpy(at, "***", 3);
        memmove(at + 3, at + ls, strlen(at + ls) + 1);
    }
}

void config_scrub_secrets(const struct config *cfg, char *text)
{
    if (!cfg || !text)
        return;
    for (size_t i = 0; i < N_KEYS; i++) {
        /* user names are kept out of the configuration's printing like the rest, but they are
         * what an error must name ("access denied for alice"), and a short one would mangle
         * ordinary words: passwords, keys and tokens are scrubbed */
        if (!(keys[i].flags & KF_SECRET) || strcmp(keys[i].name, "username") == 0)
            continue;
        const char *secret = *(char *const *)cfield(cfg, keys[i].off);
        scrub_one(text, secret);
    }
    for (size_t i = 0; i < cfg->notify.n_webhooks; i++)
        scrub_one(text, cfg->notify.webhooks[i].token);
}

bool config_notify_event_wanted(const struct config *cfg, const char *event)
{
    for (size_t i = 0; cfg && event && i < cfg->notify.n_events; i++)
        if (strcmp(cfg->notify.events[i], event) == 0)
            return true;
    return false;
}

int config_notify_email_port(const struct config *cfg)
{
    const char *sec = cfg->notify.email.security;
    if (cfg->notify.email.port > 0)
        return cfg->notify.email.port;
    return strcmp(sec, "tls") == 0 ? 465 : strcmp(sec, "none") == 0 ? 25 : 587;
}

void config_dest_patterns(const struct config *cfg, const char *section, const char **ret_folder,
                          const char **ret_file)
{
    const char *folder = NULL, *file = NULL;
    bool by_date = true;
    if (strcmp(section, "unraid") == 0) {
        folder = cfg->unraid.folder_pattern, file = cfg->unraid.file_pattern;
        by_date = cfg->unraid.organize_by_date;
    } else if (strcmp(section, "local") == 0) {
        folder = cfg->local.folder_pattern, file = cfg->local.file_pattern;
        by_date = cfg->local.organize_by_date;
    } else if (strcmp(section, "s3") == 0) {
        folder = cfg->s3.folder_pattern, file = cfg->s3.file_pattern;
        by_date = cfg->s3.organize_by_date;
    } else if (strcmp(section, "rclone") == 0) {
        folder = cfg->rclone.folder_pattern, file = cfg->rclone.file_pattern;
        by_date = cfg->rclone.organize_by_date;
    }
    *ret_folder = folder && folder[0] ? folder : by_date ? cfg->backup.folder_pattern : "";
    *ret_file = file && file[0] ? file : cfg->backup.file_pattern;
}

bool config_extension_wanted(const struct config *cfg, const char *ext)
{
    if (!cfg || !ext || !cfg->files.extensions)
        return false;
    if (ext[0] == '.')
        ext++;
    for (size_t i = 0; i < cfg->files.n_extensions; i++)
        if (strcasecmp(cfg->files.extensions[i], ext) == 0)
            return true;
    return false;
}

/* ---- printing ---- */

static bool needs_quotes(const char *s)
{
    static const char *const words[] = {"true", "false", "yes", "no",   "on",
                                        "off",  "y",     "n",   "null", "~"};
    if (!*s || strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-") !=
                   strlen(s))
        return true;
    if (s[0] == '-')
        return true;
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strcasecmp(s, words[i]) == 0)
            return true;
    double d;
    return parse_number(s, &d) != -EINVAL;
}

static void write_string(FILE *out, const char *s)
{
    if (!needs_quotes(s)) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(out, "\\%c", *c);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(out, "\\x%02x", *c);
        else if (c[0] == 0xc2 && c[1] >= 0x80 && c[1] < 0xa0)
            fprintf(out, "\\x%02x", *++c); /* C1 control, U+0080..U+009F */
        else if (c[0] == 0xe2 && c[1] == 0x80 && (c[2] == 0xa8 || c[2] == 0xa9))
            fputs((c += 2)[0] == 0xa8 ? "\\L" : "\\P", out);
        else
            fputc(*c, out);
    }
    fputc('"', out);
}

static void write_number(FILE *out, double d)
{
    char buf[64];
    if (d == (double)(int64_t)d && d > -1e15 && d < 1e15) { /* 60, not 6e+01 */
        fprintf(out, "%" PRId64, (int64_t)d);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    fputs(buf, out);
}

static void write_value(FILE *out, const struct config *cfg, const struct key_row *row)
{
    const void *f = cfield(cfg, row->off);
    switch (row->type) {
    case KT_STRING:
    case KT_PATH:
    case KT_ENUM:
    case KT_USER:
    case KT_GROUP: {
        const char *s = *(char *const *)f;
        if ((row->flags & KF_SECRET) && *s)
            s = MASK;
        write_string(out, s);
        break;
    }
    case KT_PROTOCOL:
        fputs(row->choices[*(const enum config_protocol *)f], out);
        break;
    case KT_BOOL:
        fputs(*(const bool *)f ? "true" : "false", out);
        break;
    case KT_INT:
        fprintf(out, "%d", *(const int *)f);
        break;
    case KT_SIZE:
        fprintf(out, "%" PRIu64, *(const uint64_t *)f);
        break;
    case KT_NUMBER:
        write_number(out, *(const double *)f);
        break;
    case KT_MODE:
        fprintf(out, "\"%04o\"", *(const unsigned *)f);
        break;
    case KT_LIST: {
        char *const *items = *(char **const *)f;
        size_t col = 4 + strlen(row->name) + 3;
        fputc('[', out);
        for (size_t i = 0; items && items[i]; i++) {
            size_t w = strlen(items[i]) + 2;
            if (i > 0) {
                fputc(',', out);
                if (col + w > 96) {
                    fputs("\n     ", out);
                    col = 5;
                }
                fputc(' ', out);
            }
            write_string(out, items[i]);
            col += w;
        }
        fputc(']', out);
        break;
    }
    case KT_HOOKS: {
        const struct config_webhook *h = *(struct config_webhook *const *)f;
        size_t n = *(const size_t *)cfield(cfg, row->off_n);
        if (n == 0)
            fputs("[]", out);
        for (size_t i = 0; i < n; i++) {
            fputs("\n    - {url: ", out);
            write_string(out, h[i].url);
            fputs(", format: ", out);
            write_string(out, h[i].format);
            if (*h[i].token_env) {
                fputs(", token_env: ", out);
                write_string(out, h[i].token_env);
            }
            if (*h[i].token && !*h[i].token_env) /* from token_env: not in the file */
                fputs(", token: \"" MASK "\"", out);
            if (*h[i].tls_ca_file) {
                fputs(", tls_ca_file: ", out);
                write_string(out, h[i].tls_ca_file);
            }
            fputc('}', out);
        }
        break;
    }
    }
}

/* Writes section s at indentation `in` (0, or 2 for a nested one), then its nested sections. */
static void write_section(FILE *out, const struct config *cfg, bool help, int s, int in)
{
    if (help)
        fprintf(out, in ? "%*s# %s\n" : "\n%*s# %s\n", in, "", sections[s].help);
    fprintf(out, "%*s%s:\n", in, "", sections[s].name);
    in += 2;
    {
        for (size_t i = 0; i < N_KEYS; i++) {
            const struct key_row *row = &keys[i];
            if (row->section != (enum section)s)
                continue;
            if (help) {
                fprintf(out, "%*s# %s", in, "", row->help);
                if (row->type == KT_INT || row->type == KT_NUMBER)
                    fprintf(out, " Range: %" PRId64 "..%" PRId64 ".", row->min, row->max);
                if (row->type == KT_ENUM || row->type == KT_PROTOCOL) {
                    fputs(" One of:", out);
                    for (size_t c = 0; row->choices[c]; c++)
                        fprintf(out, "%s %s", c ? "," : "", row->choices[c]);
                    fputc('.', out);
                }
                if (row->env)
                    fprintf(out, " Secret: better set %s in .env.", row->env);
                if (row->embedded)
                    fprintf(out, " When left out: %s.", *row->def ? row->def : "\"\"");
                fputc('\n', out);
            }
            fprintf(out, "%*s%s: ", in, "", row->name);
            write_value(out, cfg, row);
            fputc('\n', out);
        }
    }
    for (int c = 0; c < N_SECTIONS; c++)
        if (sections[c].nested && sections[c].parent == (enum section)s)
            write_section(out, cfg, help, c, in);
}

/* Writes the sections; with help, a comment before each key (the template). */
static int write_config(FILE *out, const struct config *cfg, bool help)
{
    for (int s = 0; s < N_SECTIONS; s++)
        if (!sections[s].nested)
            write_section(out, cfg, help, s, 0);
    return fflush(out) == 0 && !ferror(out) ? 0 : -EIO;
}

static void write_comment(FILE *out, const char *s)
{
    for (; *s; s++)
        fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, out);
}

int config_print(const struct config *cfg, FILE *out)
{
    fputs("# SnapSync effective configuration (secrets masked)\n# from: ", out);
    write_comment(out, cfg->path ? cfg->path : "built-in defaults");
    fputc('\n', out);
    return write_config(out, cfg, false);
}

int config_print_template(FILE *out)
{
    struct config *cfg = NULL;
    int r = config_default(&cfg, NULL);
    if (r < 0)
        return r;
    fputs("# SnapSync configuration.\n"
          "#\n"
          "# SnapSync uses the first of:\n"
          "#   1. the file given with --config\n"
          "#   2. the file named by $SNAPSYNC_CONFIG\n"
          "#   3. ./config.yaml in the working directory\n"
          "#   4. /etc/snapsync/config.yaml\n"
          "#   5. built-in defaults, the same as this file: copy to ./snapsync-backup\n"
          "#\n"
          "# Secrets (IMMICH_API_KEY, UNRAID_USERNAME, UNRAID_PASSWORD, MQTT_USERNAME,\n"
          "# MQTT_PASSWORD, SNAPSYNC_WEB_TOKEN, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY,\n"
          "# SMTP_USERNAME, SMTP_PASSWORD, a webhook's token_env) belong in a .env file next\n"
          "# to this one (chmod 600 .env), as KEY=value lines, or in the environment: the\n"
          "# environment wins over .env, which wins over this file. Leave them empty here.\n"
          "#\n"
          "# Relative paths (database_path, mount_point) are relative to the directory of this\n"
          "# file. A key left out takes the value shown, unless its comment says otherwise\n"
          "# (\"When left out\"). Booleans: true/false, yes/no, on/off. `snapsync config` shows "
          "what is\n"
          "# in effect.\n",
          out);
    r = write_config(out, cfg, true);
    config_free(cfg);
    return r;
}

/* One key's value as JSON, masked like write_value; NULL on allocation failure. */
static json_object *value_json(const struct config *cfg, const struct key_row *row)
{
    const void *f = cfield(cfg, row->off);
    char mode[8];
    switch (row->type) {
    case KT_STRING:
    case KT_PATH:
    case KT_ENUM:
    case KT_USER:
    case KT_GROUP: {
        const char *s = *(char *const *)f;
        return json_object_new_string((row->flags & KF_SECRET) && *s ? MASK : s);
    }
    case KT_PROTOCOL:
        return json_object_new_string(row->choices[*(const enum config_protocol *)f]);
    case KT_BOOL:
        return json_object_new_boolean(*(const bool *)f);
    case KT_INT:
        return json_object_new_int(*(const int *)f);
    case KT_SIZE:
        return json_object_new_uint64(*(const uint64_t *)f);
    case KT_NUMBER:
        return json_object_new_double(*(const double *)f);
    case KT_MODE:
        snprintf(mode, sizeof(mode), "%04o", *(const unsigned *)f & 07777);
        return json_object_new_string(mode);
    case KT_LIST: {
        json_object *a = json_object_new_array();
        char *const *items = *(char **const *)f;
        for (size_t i = 0; a && items && items[i]; i++)
            if (json_object_array_add(a, json_object_new_string(items[i])) < 0) {
                json_object_put(a);
                return NULL;
            }
        return a;
    }
    case KT_HOOKS: {
        json_object *a = json_object_new_array();
        const struct config_webhook *h = *(struct config_webhook *const *)f;
        size_t n = *(const size_t *)cfield(cfg, row->off_n);
        for (size_t i = 0; a && i < n; i++) {
            json_object *o = json_object_new_object();
            if (!o || json_object_array_add(a, o) < 0) {
                json_object_put(o);
                json_object_put(a);
                return NULL;
            }
            json_object_object_add(o, "url", json_object_new_string(h[i].url));
            json_object_object_add(o, "format", json_object_new_string(h[i].format));
            json_object_object_add(o, "token", json_object_new_string(*h[i].token ? MASK : ""));
            json_object_object_add(o, "token_env", json_object_new_string(h[i].token_env));
            json_object_object_add(o, "tls_ca_file", json_object_new_string(h[i].tls_ca_file));
        }
        return a;
    }
    }
    return NULL;
}

json_object *config_to_json(const struct config *cfg)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_add(o, "path", cfg->path ? json_object_new_string(cfg->path) : NULL);
    json_object *secs[N_SECTIONS] = {0};
    for (int s = 0; s < N_SECTIONS; s++) { /* a nested section comes after its parent */
        json_object *sec = json_object_new_object();
        json_object *parent = sections[s].nested ? secs[sections[s].parent] : o;
        if (!sec || json_object_object_add(parent, sections[s].name, sec) < 0) {
            json_object_put(sec);
            goto fail;
        }
        secs[s] = sec;
        for (size_t i = 0; i < N_KEYS; i++) {
            if (keys[i].section != (enum section)s)
                continue;
            json_object *v = value_json(cfg, &keys[i]);
            if (!v || json_object_object_add(sec, keys[i].name, v) < 0)
                goto fail;
        }
    }
    return o;
fail:
    json_object_put(o);
    return NULL;
}
