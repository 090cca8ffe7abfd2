/* SPDX-License-Identifier: MIT */
/*
 * Configuration: config.yaml + .env + environment, described by one table of keys (config.c)
 * that drives parsing, validation, `snapsync config --template` and masked printing.
 *
 * Precedence for secrets (IMMICH_API_KEY, UNRAID_USERNAME, UNRAID_PASSWORD, MQTT_USERNAME,
 * MQTT_PASSWORD, SNAPSYNC_WEB_TOKEN, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, SMTP_USERNAME,
 * SMTP_PASSWORD, and a webhook's token_env): environment > .env (next to the config file; the
 * working directory for the embedded default) > config.yaml.
 *
 * Relative paths in a config file (service.database_path, unraid.mount_point) are resolved
 * against the directory of that file; in the embedded default, against the working directory.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"

struct json_object; /* json-c */

/* Largest config file or .env we read; bigger is refused with -EFBIG. */
#define CONFIG_FILE_MAX (1024 * 1024)

enum config_protocol { CONFIG_PROTOCOL_SMB, CONFIG_PROTOCOL_NFS, CONFIG_PROTOCOL_LOCAL };

/* Permissions of the files and folders a folder destination (local, nfs) creates, applied
 * whatever the process umask is. owner and group are kept as written (a name or a number, "" to
 * leave them as the process creates them); uid and gid are what they resolved to at load, -1 for
 * "". */
struct config_perms {
    unsigned file_mode; /* 0..0777 with at least 0400, default 0644 */
    unsigned dir_mode;  /* 0..07777 with at least 0700, default 0755 */
    char *owner;        /* user name or number; "" */
    char *group;        /* group name or number; "" */
    int64_t uid;        /* -1: unchanged */
    int64_t gid;        /* -1: unchanged */
};

#define CONFIG_WEBHOOKS_MAX 8 /* entries of notify.webhooks */

/* One entry of notify.webhooks. */
struct config_webhook {
    char *url;         /* http:// or https:// */
    char *format;      /* "json", "ntfy", "gotify" (notify_hook_format_parse) */
    char *token;       /* secret; "" none; from token_env when that is set */
    char *token_env;   /* name of the environment / .env variable holding the token; "" none */
    char *tls_ca_file; /* PEM CA file for https, absolute after loading a file; "" system CAs */
    size_t line;       /* where it starts in the file; 0 when not from a file */
};

struct config {
    char *path; /* file it came from; NULL for the embedded default */

    struct {
        char *name;          /* "snapsync" */
        char *database_path; /* absolute after loading a file, "./snapsync.db" by default */
        char *log_level;     /* debug | info | warning | error */
        int web_ui_port;     /* 1..65535, default 8080 */
        char *web_ui_bind;   /* IPv4 or IPv6 address literal or "localhost", default "0.0.0.0" */
        char *web_ui_token;  /* secret; "" none: actions of the web UI need it when set */
        char **web_ui_hosts; /* more Host names actions are taken from without a token */
        size_t n_web_ui_hosts;
    } service;

    struct {
        bool auto_detect;
        char **mount_points; /* NULL-terminated array */
        size_t n_mount_points;
        char **devices; /* extra accepted kernel device names, fnmatch patterns ("loop*") */
        size_t n_devices;
        char **ignore_devices; /* device names never treated as cards, fnmatch patterns */
        size_t n_ignore_devices;
        char *mount_base;       /* folder under which SnapSync mounts cards itself */
        bool unmount_when_done; /* unmount what SnapSync mounted after a completed session */
        int poll_interval;      /* seconds between polls of readers for media; 0 never */
    } sd_card;

    struct {
        char **extensions; /* NULL-terminated, lower case, without the dot: "jpg", "cr2" */
        size_t n_extensions;
        uint64_t min_size; /* bytes; YAML may say 1024, "100KB", "1 MiB" */
    } files;

    struct {
        bool enabled;
        char *url;
        char *api_key; /* secret */
        int timeout;   /* seconds without progress before a request gives up (stall) */
        bool organize_by_date;
        char *album_mode;    /* auto | none | fixed | session | date */
        char *album;         /* album name for album_mode fixed */
        char *album_pattern; /* pattern.h album pattern; "" album_mode decides */
        char *tls_ca_file; /* PEM CA file for an https url, absolute after loading; "" system CAs */
    } immich;

    struct {
        bool enabled;
        enum config_protocol protocol;
        char *host;
        char *share;
        char *path;     /* folder inside the share / mount point; may be "" */
        char *username; /* secret */
        char *password; /* secret */
        char *mount_point;
        bool organize_by_date;
        char *folder_pattern; /* "": config_dest_patterns */
        char *file_pattern;
        bool mhl;    /* keep an ASC MHL history in ascmhl/ (history.h) */
        int timeout; /* seconds an SMB request may wait for the server (protocol smb) */
        struct config_perms perms; /* protocol nfs, local; with smb the server decides */
    } unraid;

    /* A second destination, a local folder, next to unraid (a USB disk while unraid is SMB). */
    struct {
        bool enabled;
        char *path; /* absolute after loading a file */
        bool organize_by_date;
        char *folder_pattern; /* "": config_dest_patterns */
        char *file_pattern;
        bool mhl; /* keep an ASC MHL history in ascmhl/ (history.h) */
        struct config_perms perms;
    } local;

    /* An S3-compatible object store (dest_s3.c). */
    struct {
        bool enabled;
        char *endpoint; /* http:// or https:// URL of the service */
        char *region;   /* signing region, "us-east-1" by default */
        char *bucket;
        char *prefix;        /* folder inside the bucket, "" none */
        char *addressing;    /* path | virtual */
        char *storage_class; /* x-amz-storage-class, "" the bucket's default */
        bool organize_by_date;
        char *folder_pattern; /* "": config_dest_patterns; no {md5} (refused at load) */
        char *file_pattern;
        char *tls_ca_file;       /* PEM CA file, absolute after loading; "" system CAs */
        int part_size;           /* MiB: larger files go as multipart uploads of such parts */
        int timeout;             /* seconds without progress before a request gives up */
        char *access_key_id;     /* secret */
        char *secret_access_key; /* secret */
    } s3;

    /* Any rclone remote, through the rclone binary (dest_rclone.c). */
    struct {
        bool enabled;
        char *remote;      /* "gdrive:Photos": remote name, ':' and a folder */
        char *config_file; /* rclone.conf, absolute after loading; "" rclone's default */
        bool organize_by_date;
        char *folder_pattern; /* "": config_dest_patterns */
        char *file_pattern;
        int timeout;       /* seconds: rclone's --timeout and --contimeout */
        char **extra_args; /* more options for every rclone call */
        size_t n_extra_args;
    } rclone;

    struct {
        bool enabled;
        char *broker;
        int port;
        char *username; /* secret */
        char *password; /* secret */
        char *discovery_prefix;
        char *topic_prefix;
        char *client_id;
        bool tls;          /* TLS required: never falls back to plain MQTT */
        char *tls_ca_file; /* PEM CA file, absolute after loading a file; "" system CAs */
    } mqtt;

    struct {
        bool parallel;
        int concurrent_files; /* 1..64 */
        bool verify_checksums;
        int max_retries;          /* 0..100 */
        double retry_delay;       /* seconds, first retry; doubles each attempt */
        double destination_wait;  /* seconds to wait at the end for a destination that is down */
        int verify_interval_days; /* 0..3650; the service's scrub re-checks copies older; 0 off */
        double verify_rate;       /* MB/s the scrub reads at most; 0 unlimited */
        char *folder_pattern;     /* pattern.h folder pattern, "{year}/{month}/{day}"; may be "" */
        char *file_pattern;       /* pattern.h file pattern, "{name}{ext}" */
    } backup;

    struct {
        char **events; /* completed partial failed interrupted empty destination_down
                          verify_problem (config_notify_event_names) */
        size_t n_events;
        int destination_down_minutes; /* 1..10080 */
        char *dashboard_url;          /* "": derived from service.web_ui_bind/port */
        struct {
            bool enabled;
            char *host;
            int port;       /* 0: by security, 587 starttls, 465 tls, 25 none */
            char *security; /* starttls | tls | none */
            char *username; /* secret, SMTP_USERNAME */
            char *password; /* secret, SMTP_PASSWORD */
            char *from;
            char **to; /* 1..NOTIFY_MAIL_RCPT_MAX addresses when enabled */
            size_t n_to;
            char *tls_ca_file; /* absolute after loading a file; "" system CAs */
        } email;
        struct config_webhook *webhooks; /* 0..CONFIG_WEBHOOKS_MAX */
        size_t n_webhooks;
    } notify;

    /* Non-fatal findings of loading (".env is readable by others", ...), NULL-terminated. */
    char **warnings;
    size_t n_warnings;
};

/*
 * Finds and loads the configuration. explicit_path (from --config) wins; then
 * $SNAPSYNC_CONFIG; then ./config.yaml; then /etc/snapsync/config.yaml; with none of them, the
 * embedded default (local destination ./snapsync-backup, database ./snapsync.db, Immich, SMB and
 * MQTT off). Applies .env and environment overrides, then validates.
 *
 * *ret is the caller's, freed with config_free(); written only on success.
 * Errors: -ENOENT (explicit or $SNAPSYNC_CONFIG file missing), -EACCES, -EFBIG,
 * -EINVAL (validation: err reads "file:line: key: problem"), -ENOMEM. Any thread.
 */
int config_load(const char *explicit_path, struct config **ret, struct error *err);

/*
 * Parses and validates YAML text held in memory, named `name` in messages. Applies no .env and no
 * environment. Used by tests and the fuzzer. Same errors as config_load.
 */
int config_parse_buffer(const char *name, const char *text, size_t len, struct config **ret,
                        struct error *err);

/*
 * Applies the secrets found in .env-format text held in memory (named `name` in messages) to cfg:
 * `KEY=value` or `export KEY=value` lines, `#` comments, blank lines, values optionally in single
 * or double quotes. Unknown keys are ignored; empty values count as unset. Applies all or nothing;
 * does not validate. Used by config_load, tests and the fuzzer.
 * Errors: -EINVAL (err reads "name:line: problem", never quoting a value), -EFBIG, -ENOMEM.
 */
int config_apply_dotenv(struct config *cfg, const char *name, const char *text, size_t len,
                        struct error *err);

/* The embedded default, as config_load returns it when no file exists (without .env/env). */
int config_default(struct config **ret, struct error *err);

/* Frees everything; NULL-safe. */
void config_free(struct config *cfg);

/* Writes the effective configuration as YAML, every secret replaced by "********" (or "" when
 * unset). Returns 0 or -EIO. */
int config_print(const struct config *cfg, FILE *out);

/* The effective configuration as a JSON object: "path" (the file it came from, null for the
 * embedded default) and one object per section holding every key with its typed value (sizes and
 * numbers as numbers, modes as "0644" strings, lists as arrays), secrets replaced by "********"
 * like config_print. The caller owns it (json_object_put); NULL when out of memory. */
struct json_object *config_to_json(const struct config *cfg);

/* Writes a commented template holding every key with its default and help; parsing it back
 * gives a valid configuration equal to the embedded default. Returns 0 or -EIO. */
int config_print_template(FILE *out);

/* Replaces, in place, every occurrence in text of the value of every secret key of cfg (those
 * `config --template` marks as secrets) of at least 4 bytes with "***", so a server that echoes
 * a key or a password in its error message cannot bring it into a log, the database or the web
 * API. Shorter values are left alone (they would match everywhere), and so are user names (an
 * error must say which user was refused). The text only shrinks.
 * NULL-safe; any thread while cfg lives. */
void config_scrub_secrets(const struct config *cfg, char *text);

/* config_scrub_secrets(cfg, line) in the shape of a log scrubber, for
 * log_set_scrubber(config_scrub_log_line, cfg): cfg must live until it is replaced. */
void config_scrub_log_line(char *line, void *cfg);

/* The names notify.events accepts, NULL-terminated (static). */
extern const char *const config_notify_event_names[];

/* True when notify.events holds `event` ("completed", "destination_down", ...). NULL-safe. */
bool config_notify_event_wanted(const struct config *cfg, const char *event);

/* The port notify.email connects to: notify.email.port, or 587 (starttls), 465 (tls), 25 (none)
 * when it is 0. */
int config_notify_email_port(const struct config *cfg);

/*
 * The folder and file name patterns (pattern.h, valid: checked at load) of the destination of
 * config section `section` ("unraid", "local", "s3", "rclone"). Folder: the section's
 * folder_pattern when set; else "" when its organize_by_date is false; else
 * backup.folder_pattern. File: the section's file_pattern when set, else backup.file_pattern.
 * Borrowed from cfg. Another section (immich) gets backup's. Any thread while cfg lives.
 */
void config_dest_patterns(const struct config *cfg, const char *section, const char **ret_folder,
                          const char **ret_file);

/* True when the file extension (without dot, any case) is one of cfg->files.extensions. */
bool config_extension_wanted(const struct config *cfg, const char *ext);
