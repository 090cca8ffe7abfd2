/* SPDX-License-Identifier: MIT */
/*
 * Home Assistant over MQTT (libmosquitto): one device announced by device-based discovery
 * (<discovery_prefix>/device/<id>/config, retained), availability with a last will, one retained
 * JSON state on <topic_prefix>/<id>/state that every entity reads with a value template, and
 * buttons on <topic_prefix>/<id>/cmd/<action>.
 *
 * The broker being down never slows a backup: publishing only copies the state under a lock;
 * libmosquitto's own thread connects, reconnects with growing delay, and sends.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "engine.h"
#include "error.h"

#define MQTT_DEST_MAX 8

/* What SnapSync shows; plain values, copied on publish. */
struct mqtt_state {
    char status[16]; /* idle | scanning | backing_up | completed | partial | failed | interrupted
                      * | empty (db_session_status_to_string, or idle) */
    bool has_progress;
    double progress; /* 0..100 */
    int64_t files_completed;
    int64_t files_total;
    int64_t files_failed;
    int64_t files_skipped;
    int64_t files_duplicate;
    int64_t bytes_done;
    int64_t bytes_total;
    double speed_bps;
    bool has_eta;
    double eta_s;
    char current_file[256];
    char card_label[128];
    int64_t session_id;
    bool card_present;
    int64_t last_backup_at; /* seconds since the epoch, 0 never */
    char last_result[16];   /* completed | empty | partial | failed | interrupted; "": keep the
                             * last one mqtt_publish_state knows (with its last_backup_at) */
    int64_t scan_problems;  /* entries of the card the session could not read */
    char error[256];        /* the session's first failure (naming the first unreadable entry) */
    size_t n_dests;
    struct {
        char kind[16];     /* "local", "smb", "immich" */
        char section[16];  /* "unraid", "local", "immich": the config section it comes from */
        char id[1024];     /* the destination's id, as the database names it */
        bool reachable;
        char problem[256]; /* why it is down, "" while reachable */
    } dests[MQTT_DEST_MAX];
};

/* The state Home Assistant gets for an engine progress report. status is the session's status
 * as db_session_status_to_string names it. final: the session ended (last_backup now,
 * last_result the session's status, card not present). error: the session's first failure
 * (the engine's final report: a destination that was down, an entry the scan could not read,
 * a file that failed), or for an interrupted session why it is not done. Before the end,
 * last_result is "" (mqtt_publish_state keeps the previous one). */
void mqtt_state_from_progress(const struct engine_progress *p, bool final, struct mqtt_state *s);

enum mqtt_command { MQTT_COMMAND_EJECT, MQTT_COMMAND_RETRY };

/* Called from libmosquitto's thread for a valid command message. */
struct mqtt_handler {
    void (*on_command)(enum mqtt_command cmd, void *userdata);
    void *userdata;
};

struct mqtt;

/*
 * Prepares the client from cfg->mqtt (broker, port, credentials, client_id, prefixes, TLS).
 * web_url (may be NULL) becomes the device's configuration_url; when its host only names this
 * machine (http://0.0.0.0:..., http://[::]:..., http://localhost:...), that host is replaced on
 * each connect by this end's address of the connection to the broker. The last result and last
 * backup start as those of the newest finished session in cfg->service.database_path (none when
 * the database does not exist or cannot be read; it is opened read-only and closed again).
 * Nothing is connected yet. Errors: -EINVAL (bad prefix or client id), -ENOMEM. *ret is the
 * caller's (mqtt_free).
 */
int mqtt_new(const struct config *cfg, const char *web_url, const struct mqtt_handler *handler,
             struct mqtt **ret, struct error *err);

/* Starts connecting in the background (returns at once; the broker may be down). */
int mqtt_start(struct mqtt *m, struct error *err);

/* Records the state and publishes it, at most about twice a second unless force (use force for
 * transitions and the final state). A state whose last_result is "" gets the last result and
 * last backup known (the newest one published, else the database's), so a new session never
 * shows "none" before it ends. Never blocks on the network. Any thread. */
void mqtt_publish_state(struct mqtt *m, const struct mqtt_state *s, bool force);

/* The last connection problem ("not authorised: check MQTT_USERNAME/MQTT_PASSWORD"), or "" when
 * connected. Copied into buf. */
void mqtt_last_error(struct mqtt *m, char *buf, size_t size);

/* True once connected and discovery was published. */
bool mqtt_connected(struct mqtt *m);

/* Publishes the final state and "offline", disconnects, stops the thread. NULL-safe. */
void mqtt_stop(struct mqtt *m);

/* Removes the device from Home Assistant: clears the retained discovery, state and
 * availability, and publishes nothing more (used when MQTT is turned off while the service
 * runs). Other threads may go on calling mqtt_publish_state; it does nothing. NULL-safe. */
void mqtt_remove_device(struct mqtt *m);

/* Frees (stops first if needed). NULL-safe. */
void mqtt_free(struct mqtt *m);

/* The dashboard's URL from the config: "http://<service.web_ui_bind>:<service.web_ui_port>/"
 * (an IPv6 literal in brackets), for mqtt_new's web_url. Written into buf (truncated to size). */
void mqtt_dashboard_url(const struct config *cfg, char *buf, size_t size);

/* The installation's stable device id ("snapsync_<12 hex>") from /etc/machine-id (or the host
 * name) and service.name. */
void mqtt_device_id(const struct config *cfg, char *buf, size_t size);

/* Connects synchronously (timeout_s), checks that the broker accepts us, disconnects. For
 * test-connection. Errors: -ECONNREFUSED, -EACCES (credentials), -ETIMEDOUT, -EHOSTUNREACH. */
int mqtt_probe(const struct config *cfg, int timeout_s, char *detail, size_t detail_size,
               struct error *err);

/* Builds the device discovery payload (JSON text, the caller frees) for tests and debugging. */
char *mqtt_discovery_json(struct mqtt *m);

/* Parses a command topic suffix ("eject", "retry") and payload ("PRESS"). Returns 0 or -EINVAL
 * for anything unexpected. */
int mqtt_parse_command(const char *action, const void *payload, int len, enum mqtt_command *ret);
