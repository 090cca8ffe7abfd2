/* SPDX-License-Identifier: MIT */
/*
 * Home Assistant over MQTT (libmosquitto): one device announced by device-based discovery
 * (<discovery_prefix>/device/<id>/config, retained), availability with a last will, one retained
 * JSON state on <topic_prefix>/<id>/state that the entities read with a value template (the
 * verification entities: <topic_prefix>/<id>/verification), one event per finished session on
 * <topic_prefix>/<id>/event (not retained), and buttons on <topic_prefix>/<id>/cmd/<action>.
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
#include "status.h"

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
 * backup start as those of the newest finished session in cfg->service.database_path, the
 * verification state as status_verification_get reads it there (none when the database does
 * not exist or cannot be read; it is opened read-only and closed again).
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
void mqtt_publish_state(struct mqtt *m, const struct status_live *s, bool force);

/* Records the verification state v (status_verification_get after a run or a scrub slice) and
 * publishes it, retained, on <topic_prefix>/<id>/verification (status_verification_mqtt_json),
 * which the entities "Last verification", "Copies with problems" and "Verification problem"
 * read. Kept and published again on every connect and Home Assistant birth; until the first
 * call, the database's state when the client was made. Never blocks on the network. Any
 * thread. */
void mqtt_publish_verification(struct mqtt *m, const struct status_verification *v);

/* A session ended: publishes one event, not retained, on <topic_prefix>/<id>/event for the
 * event entity "Backup finished" (event.snapsync_backup_finished): a JSON object with
 * event_type (rep->status: completed, partial, failed, interrupted or empty), card,
 * session_id, files_total, files_copied, files_skipped, files_duplicate, files_failed,
 * bytes_copied, bytes_total, scan_problems, duration_s, safe_to_remove, error (null when none)
 * and dashboard_url (only with a dashboard). Not connected: kept (the newest 8) and published on
 * the next connect. Published once: never again on a reconnect or Home Assistant's birth
 * (QoS 1: a connection lost before the broker acknowledged it repeats it, as MQTT says). A
 * report without a session or with a status that is not a result is ignored. Never blocks on
 * the network. Any thread. */
void mqtt_publish_session(struct mqtt *m, const struct engine_report *rep, bool safe_to_remove);

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

enum mqtt_inbound {
    MQTT_INBOUND_HA_ONLINE,  /* Home Assistant's birth message: publish discovery and state again */
    MQTT_INBOUND_HA_OTHER,   /* another payload on its status topic ("offline"): nothing to do */
    MQTT_INBOUND_COMMAND,    /* a button: *ret_cmd says which */
    MQTT_INBOUND_UNEXPECTED, /* anything else: ignored and logged */
};

/* What a message that arrived (topic, len bytes of payload; untrusted: anyone allowed to publish
 * on the broker sent it) means for m. Pure: reads m's topics only. Any thread. */
enum mqtt_inbound mqtt_parse_message(const struct mqtt *m, const char *topic, const void *payload,
                                     int len, enum mqtt_command *ret_cmd);
