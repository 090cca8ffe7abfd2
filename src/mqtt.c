/* SPDX-License-Identifier: MIT */
/*
 * Home Assistant MQTT publisher.
 *
 * libmosquitto runs its own network thread (mosquitto_loop_start); everything here only takes
 * the lock, copies, and calls mosquitto_publish, which queues. On every connect the client
 * publishes "online", the retained device discovery, subscribes to Home Assistant's birth topic
 * and to its command topics, and publishes the current state and the verification state (each
 * retained on its own topic); the same happens again when Home Assistant announces itself.
 * A finished session is one event (not retained) on its own topic, sent at once or, when not
 * connected, with the next connect; never a second time.
 * The last will marks the device offline if SnapSync dies.
 *
 * Discovery follows the facts in docs/home-assistant.md: device-based discovery, unique ids
 * "<device id>_<component>", and the entity id given twice: object_id "snapsync_<component>"
 * (read by Home Assistant 2024.11 to 2026.3) and default_entity_id "<domain>.snapsync_<component>"
 * (2025.10 on), so it comes out the same on every version that has device discovery.
 *
 * last_result and last_backup describe the newest finished session: taken from the database
 * when the client is made, kept while a new session runs, replaced when one ends.
 */
#include "mqtt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <mosquitto.h>
#include <openssl/evp.h>

#include "db.h"
#include "hasher.h"
#include "jsonout.h"
#include "log.h"

#define TOPIC_MAX 256
#define KEEPALIVE_S 30
#define MIN_INTERVAL_S 0.5
#define STOP_CONNECT_WAIT_S 3
#define LAST_RESULT_LOOKBACK 50 /* sessions looked at for the newest finished one */
#define EVENTS_PENDING_MAX 8    /* finished sessions kept while not connected */

/* A finished session not yet published to the event entity (the broker was not connected). */
struct session_event {
    int64_t session_id;
    enum db_session_status status;
    struct db_totals totals;
    double duration_s;
    bool safe_to_remove;
    char card[128];
    char error[256];
};

struct mqtt {
    struct mosquitto *mosq;
    pthread_mutex_t lock;
    pthread_cond_t conn_cond; /* signalled on every connect answer */
    bool answered;            /* the broker answered a connect (yes or no) */
    int wait_mid;             /* mqtt_stop waits for the broker to acknowledge this message */
    bool removed;             /* mqtt_remove_device: publish nothing more */
    bool ever_connected;
    bool stopping;
    pthread_t retry_thread; /* first connection attempts (libmosquitto retries only after one) */
    bool retry_started;
    struct mqtt_handler handler;
    char device_id[64];
    char name[64];
    char web_url[256];     /* the dashboard, "" when there is none */
    char web_url_tail[64]; /* ":<port>/...": after the host, when the host is replaced */
    bool web_url_any_host; /* the host only names this machine: use the broker link's address */
    char discovery_prefix[128];
    char topic_base[TOPIC_MAX]; /* <topic_prefix>/<device id> */
    char broker[256];
    int port;
    bool has_unraid, has_immich, has_s3, has_rclone;
    /* guarded by lock */
    struct status_live state;
    bool have_state;
    bool connected;
    bool started;
    double last_pub;
    char last_error[256];
    char last_result[16];   /* the newest finished session's status, "" when none is known */
    int64_t last_backup_at; /* and when it ended */
    struct status_verification verification; /* the last one published (or the database's) */
    bool have_verification;
    struct session_event events[EVENTS_PENDING_MAX]; /* oldest first */
    size_t n_events;
};

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

#define SYSTEM_CA_PATH "/etc/ssl/certs"

/* TLS from mqtt.tls / mqtt.tls_ca_file; the broker's certificate is always verified. */
static int tls_setup(struct mosquitto *mosq, const struct config *cfg, struct error *err)
{
    if (!cfg->mqtt.tls)
        return 0;
    const char *ca =
        cfg->mqtt.tls_ca_file && cfg->mqtt.tls_ca_file[0] ? cfg->mqtt.tls_ca_file : NULL;
    int rc = mosquitto_tls_set(mosq, ca, ca ? NULL : SYSTEM_CA_PATH, NULL, NULL, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        return error_set(err, -EINVAL, "mqtt.tls_ca_file: cannot use '%s': %s",
                         ca ? ca : SYSTEM_CA_PATH, mosquitto_strerror(rc));
    return 0;
}

static void lib_init(void)
{
    mosquitto_lib_init();
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Topic ids may only hold [a-zA-Z0-9_-]; everything else becomes '_'. */
static void topic_safe(char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-'))
            *s = '_';
}

void mqtt_device_id(const struct config *cfg, char *buf, size_t size)
{
    char seed[512] = "";
    int fd = open("/etc/machine-id", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, seed, 64);
        close(fd);
        seed[n > 0 ? n : 0] = '\0';
    }
    if (!seed[0])
        gethostname(seed, 255);
    size_t len = strlen(seed);
    snprintf(seed + len, sizeof(seed) - len, "/%s", cfg->service.name ? cfg->service.name : "");
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1] = "000000000000";
    if (EVP_Digest(seed, strlen(seed), md, &mdlen, EVP_sha1(), NULL) == 1)
        hasher_hex(md, 6, hex);
    snprintf(buf, size, "snapsync_%s", hex);
}

/* ---- the entities ---- */

enum entity_when {
    ENTITY_ALWAYS,
    ENTITY_WITH_UNRAID,
    ENTITY_WITH_IMMICH,
    ENTITY_WITH_S3,
    ENTITY_WITH_RCLONE
};

/* One Home Assistant entity of the device. Everything about an entity is here: adding one is
 * adding a row (and documenting it in docs/home-assistant.md). */
struct entity {
    const char *platform; /* "sensor", "binary_sensor", "button" */
    const char *id;       /* component key; entity id <platform>.snapsync_<id> */
    const char *name;
    const char *value;          /* value_template on the state topic; NULL: none (a button) */
    const char *device_class;   /* NULL: none */
    const char *unit;           /* unit_of_measurement; NULL: none */
    bool measurement;           /* state_class measurement */
    bool precision0;            /* suggested_display_precision 0 */
    const char *icon;           /* NULL: Home Assistant's for the class */
    const char *attributes;     /* json_attributes_template on the state topic; NULL: none */
    const char *const *options; /* an enum sensor's values, NULL-terminated */
    const char *category;       /* entity_category; NULL: none */
    const char *command; /* a button's command topic: <topic_prefix>/<device id>/cmd/<command> */
    const char *topic;   /* the state topic it reads: <topic_prefix>/<device id>/<topic>;
                          * NULL: "state" */
    const char *const *event_types; /* an event entity's types, NULL-terminated; its payload
                                     * is the event itself (no value template) */
    enum entity_when when;          /* which configurations have it (others get a removal stub) */
};

static const char *const statuses[] = {"idle",      "scanning", "backing_up", "verifying",
                                       "completed", "partial",  "failed",     "interrupted",
                                       "empty",     NULL};
static const char *const results[] = {"none",   "completed",   "empty", "partial",
                                      "failed", "interrupted", NULL};

/* The verification entities read their own retained topic (status_verification_mqtt_json), so
 * a backup's frequent state messages do not carry the problem list. */
#define VERIFICATION_TOPIC "verification"

/* A session's end as an event (mqtt_publish_session): never retained, since Home Assistant
 * drops retained events and a retained one would fire again for every new subscriber. */
#define EVENT_TOPIC "event"
static const char *const event_types[] = {"completed",   "partial", "failed",
                                          "interrupted", "empty",   NULL};

static const struct entity entities[] = {
    {.platform = "sensor",
     .id = "status",
     .name = "Status",
     .value = "{{ value_json.status }}",
     .device_class = "enum",
     .options = statuses,
     .icon = "mdi:sd",
     .attributes =
         "{{ {'card': value_json.card_label, 'session_id': value_json.session_id, "
         "'error': value_json.error, 'scan_problems': value_json.scan_problems} | tojson }}"},
    {.platform = "sensor",
     .id = "progress",
     .name = "Progress",
     .value = "{{ value_json.progress }}",
     .unit = "%",
     .measurement = true,
     .precision0 = true,
     .icon = "mdi:progress-upload",
     .attributes =
         "{{ {'bytes_done': value_json.bytes_done, 'bytes_total': value_json.bytes_total, "
         "'files_done': value_json.files_done, 'files_total': value_json.files_total} "
         "| tojson }}"},
    {.platform = "sensor",
     .id = "files",
     .name = "Files",
     .value = "{{ value_json.files_copied }}",
     .measurement = true,
     .icon = "mdi:file-image",
     .attributes = "{{ {'completed': value_json.files_copied, 'total': value_json.files_total, "
                   "'failed': value_json.files_failed, 'skipped': value_json.files_skipped, "
                   "'duplicate': value_json.files_duplicate} | tojson }}"},
    {.platform = "sensor",
     .id = "current_file",
     .name = "Current file",
     .value = "{{ value_json.current_file }}",
     .icon = "mdi:file-sync"},
    {.platform = "binary_sensor",
     .id = "card_present",
     .name = "Card present",
     .value = "{{ value_json.card_present }}",
     .device_class = "plug"},
    {.platform = "sensor",
     .id = "speed",
     .name = "Speed",
     .value = "{{ value_json.rate_bps }}",
     .device_class = "data_rate",
     .unit = "B/s",
     .measurement = true},
    {.platform = "sensor",
     .id = "bytes_copied",
     .name = "Copied",
     .value = "{{ value_json.bytes_done }}",
     .device_class = "data_size",
     .unit = "B",
     .measurement = true},
    {.platform = "sensor",
     .id = "bytes_total",
     .name = "Total size",
     .value = "{{ value_json.bytes_total }}",
     .device_class = "data_size",
     .unit = "B",
     .measurement = true},
    {.platform = "sensor",
     .id = "eta",
     .name = "Time left",
     .value = "{{ value_json.eta_s }}",
     .device_class = "duration",
     .unit = "s"},
    {.platform = "sensor",
     .id = "last_backup",
     .name = "Last backup",
     .value = "{{ value_json.last_backup }}",
     .device_class = "timestamp"},
    {.platform = "sensor",
     .id = "last_result",
     .name = "Last result",
     .value = "{{ value_json.last_result }}",
     .device_class = "enum",
     .options = results,
     .attributes = "{{ {'error': value_json.error, 'scan_problems': value_json.scan_problems} "
                   "| tojson }}"},
    {.platform = "binary_sensor",
     .id = "unraid_reachable",
     .name = "Share reachable",
     .value = "{{ value_json.unraid_reachable }}",
     .device_class = "connectivity",
     .attributes = "{{ {'problem': value_json.unraid_problem} | tojson }}",
     .category = "diagnostic",
     .when = ENTITY_WITH_UNRAID},
    {.platform = "binary_sensor",
     .id = "immich_reachable",
     .name = "Immich reachable",
     .value = "{{ value_json.immich_reachable }}",
     .device_class = "connectivity",
     .attributes = "{{ {'problem': value_json.immich_problem} | tojson }}",
     .category = "diagnostic",
     .when = ENTITY_WITH_IMMICH},
    {.platform = "binary_sensor",
     .id = "s3_reachable",
     .name = "Object store reachable",
     .value = "{{ value_json.s3_reachable }}",
     .device_class = "connectivity",
     .attributes = "{{ {'problem': value_json.s3_problem} | tojson }}",
     .category = "diagnostic",
     .when = ENTITY_WITH_S3},
    {.platform = "binary_sensor",
     .id = "rclone_reachable",
     .name = "Cloud remote reachable",
     .value = "{{ value_json.rclone_reachable }}",
     .device_class = "connectivity",
     .attributes = "{{ {'problem': value_json.rclone_problem} | tojson }}",
     .category = "diagnostic",
     .when = ENTITY_WITH_RCLONE},
    {.platform = "sensor",
     .id = "last_verification",
     .name = "Last verification",
     .value = "{{ value_json.last_verification }}",
     .device_class = "timestamp",
     .icon = "mdi:file-check",
     .topic = VERIFICATION_TOPIC,
     .attributes = "{{ {'status': value_json.last_status, 'checked': value_json.checked, "
                   "'ok': value_json.ok, 'missing': value_json.missing, "
                   "'changed': value_json.changed, 'errors': value_json.errors, "
                   "'running': value_json.running} | tojson }}"},
    {.platform = "sensor",
     .id = "verification_problems",
     .name = "Copies with problems",
     .value = "{{ value_json.problems }}",
     .measurement = true,
     .icon = "mdi:file-alert",
     .topic = VERIFICATION_TOPIC},
    {.platform = "binary_sensor",
     .id = "verification_problem",
     .name = "Verification problem",
     .value = "{{ value_json.problem }}",
     .device_class = "problem",
     .topic = VERIFICATION_TOPIC,
     .attributes = "{{ {'count': value_json.problems, 'files': value_json.problem_files} "
                   "| tojson }}"},
    {.platform = "event",
     .id = "backup_finished",
     .name = "Backup finished",
     .icon = "mdi:sd",
     .topic = EVENT_TOPIC,
     .event_types = event_types},
    {.platform = "button",
     .id = "eject",
     .name = "Eject card",
     .icon = "mdi:eject",
     .command = "eject"},
    {.platform = "button",
     .id = "retry_failed",
     .name = "Retry failed files",
     .icon = "mdi:refresh",
     .command = "retry"},
};

/* ---- JSON ---- */

static void add_str(json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v));
}

static bool entity_enabled(const struct mqtt *m, const struct entity *e)
{
    switch (e->when) {
    case ENTITY_WITH_UNRAID:
        return m->has_unraid;
    case ENTITY_WITH_IMMICH:
        return m->has_immich;
    case ENTITY_WITH_S3:
        return m->has_s3;
    case ENTITY_WITH_RCLONE:
        return m->has_rclone;
    case ENTITY_ALWAYS:
        break;
    }
    return true;
}

/* The discovery component of entity e. */
static json_object *component(const struct mqtt *m, const struct entity *e)
{
    char buf[TOPIC_MAX + 64], state[TOPIC_MAX + 16];
    snprintf(state, sizeof(state), "%s/%s", m->topic_base, e->topic ? e->topic : "state");
    json_object *c = json_object_new_object();
    add_str(c, "p", e->platform);
    snprintf(buf, sizeof(buf), "%s_%s", m->device_id, e->id);
    add_str(c, "unique_id", buf);
    /* both keys carry the same id: each Home Assistant reads the one it knows */
    snprintf(buf, sizeof(buf), "snapsync_%s", e->id);
    add_str(c, "object_id", buf);
    snprintf(buf, sizeof(buf), "%s.snapsync_%s", e->platform, e->id);
    add_str(c, "default_entity_id", buf);
    add_str(c, "name", e->name);
    if (e->value || e->event_types)
        add_str(c, "state_topic", state);
    if (e->value)
        add_str(c, "value_template", e->value);
    if (e->event_types) {
        json_object *types = json_object_new_array();
        for (const char *const *t = e->event_types; *t; t++)
            json_object_array_add(types, json_object_new_string(*t));
        json_object_object_add(c, "event_types", types);
    }
    if (e->device_class)
        add_str(c, "device_class", e->device_class);
    if (e->unit)
        add_str(c, "unit_of_measurement", e->unit);
    if (e->measurement)
        add_str(c, "state_class", "measurement");
    if (e->precision0)
        json_object_object_add(c, "suggested_display_precision", json_object_new_int(0));
    if (e->options) {
        json_object *opts = json_object_new_array();
        for (const char *const *o = e->options; *o; o++)
            json_object_array_add(opts, json_object_new_string(*o));
        json_object_object_add(c, "options", opts);
    }
    if (e->icon)
        add_str(c, "icon", e->icon);
    if (e->attributes) {
        add_str(c, "json_attributes_topic", state);
        add_str(c, "json_attributes_template", e->attributes);
    }
    if (e->category)
        add_str(c, "entity_category", e->category);
    if (e->command) {
        snprintf(buf, sizeof(buf), "%s/cmd/%s", m->topic_base, e->command);
        add_str(c, "command_topic", buf);
        add_str(c, "payload_press", "PRESS");
    }
    return c;
}

/* with_stubs: entities that are not enabled appear as {"p": platform}, which is how device
 * discovery removes an entity that an earlier configuration had. */
static json_object *discovery(struct mqtt *m, bool with_stubs)
{
    char buf[TOPIC_MAX + 64];
    json_object *root = json_object_new_object();

    json_object *dev = json_object_new_object();
    json_object *ids = json_object_new_array();
    json_object_array_add(ids, json_object_new_string(m->device_id));
    json_object_object_add(dev, "identifiers", ids);
    add_str(dev, "name", m->name);
    add_str(dev, "manufacturer", "SnapSync");
    add_str(dev, "model", "SD card backup");
    add_str(dev, "sw_version", SNAPSYNC_VERSION);
    if (m->web_url[0])
        add_str(dev, "configuration_url", m->web_url);
    json_object_object_add(root, "device", dev);

    json_object *origin = json_object_new_object();
    add_str(origin, "name", "snapsync");
    add_str(origin, "sw_version", SNAPSYNC_VERSION);
    json_object_object_add(root, "origin", origin);

    snprintf(buf, sizeof(buf), "%s/availability", m->topic_base);
    add_str(root, "availability_topic", buf);
    add_str(root, "payload_available", "online");
    add_str(root, "payload_not_available", "offline");
    json_object_object_add(root, "qos", json_object_new_int(1));

    json_object *cmps = json_object_new_object();
    for (size_t i = 0; i < sizeof(entities) / sizeof(entities[0]); i++) {
        const struct entity *e = &entities[i];
        if (entity_enabled(m, e)) {
            json_object_object_add(cmps, e->id, component(m, e));
        } else if (with_stubs) {
            json_object *stub = json_object_new_object();
            add_str(stub, "p", e->platform);
            json_object_object_add(cmps, e->id, stub);
        }
    }
    json_object_object_add(root, "components", cmps);
    return root;
}

char *mqtt_discovery_json(struct mqtt *m)
{
    json_object *o = discovery(m, false);
    char *s = strdup(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return s;
}

/* ---- publishing (lock held) ---- */

/* Returns the message id (0 when it could not be queued). */
static int publish_locked(struct mqtt *m, const char *suffix, const char *payload, bool retain)
{
    char topic[TOPIC_MAX + 32];
    int mid = 0;
    snprintf(topic, sizeof(topic), "%s/%s", m->topic_base, suffix);
    if (mosquitto_publish(m->mosq, &mid, topic, (int)strlen(payload), payload, 1, retain) !=
        MOSQ_ERR_SUCCESS)
        return 0;
    return mid;
}

static void on_publish(struct mosquitto *mosq, void *ud, int mid)
{
    struct mqtt *m = ud;
    (void)mosq;
    pthread_mutex_lock(&m->lock);
    if (mid == m->wait_mid) {
        m->wait_mid = 0;
        pthread_cond_broadcast(&m->conn_cond);
    }
    pthread_mutex_unlock(&m->lock);
}

static void publish_state_locked(struct mqtt *m)
{
    if (!m->connected || !m->have_state || m->removed)
        return;
    json_object *o = status_live_json(&m->state);
    publish_locked(
        m, "state",
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
        true);
    json_object_put(o);
    m->last_pub = now_s();
}

static void publish_verification_locked(struct mqtt *m)
{
    if (!m->connected || !m->have_verification || m->removed)
        return;
    json_object *o = status_verification_mqtt_json(&m->verification);
    publish_locked(
        m, VERIFICATION_TOPIC,
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
        true);
    json_object_put(o);
}

/* Publishes the events kept while not connected, oldest first, each once. */
static void publish_events_locked(struct mqtt *m)
{
    if (!m->connected || m->removed)
        return;
    for (size_t i = 0; i < m->n_events; i++) {
        const struct session_event *ev = &m->events[i];
        const struct db_totals *t = &ev->totals;
        json_object *o = json_object_new_object();
        add_str(o, "event_type", db_session_status_to_string(ev->status));
        json_object_object_add(o, "card", jsonout_string(ev->card));
        json_object_object_add(o, "session_id", json_object_new_int64(ev->session_id));
        json_object_object_add(o, "files_total", json_object_new_int64(t->files_total));
        json_object_object_add(o, "files_copied", json_object_new_int64(t->files_copied));
        json_object_object_add(o, "files_skipped", json_object_new_int64(t->files_skipped));
        json_object_object_add(o, "files_duplicate", json_object_new_int64(t->files_duplicate));
        json_object_object_add(o, "files_failed", json_object_new_int64(t->files_failed));
        json_object_object_add(o, "bytes_copied", json_object_new_int64(t->bytes_copied));
        json_object_object_add(o, "bytes_total", json_object_new_int64(t->bytes_total));
        json_object_object_add(o, "scan_problems", json_object_new_int64(t->scan_problems));
        json_object_object_add(o, "duration_s", json_object_new_double(ev->duration_s));
        json_object_object_add(o, "safe_to_remove", json_object_new_boolean(ev->safe_to_remove));
        json_object_object_add(o, "error", jsonout_string_or_null(ev->error));
        if (m->web_url[0])
            add_str(o, "dashboard_url", m->web_url);
        publish_locked(m, EVENT_TOPIC,
                       json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE),
                       false);
        json_object_put(o);
    }
    m->n_events = 0;
}

static void publish_discovery_locked(struct mqtt *m)
{
    char topic[TOPIC_MAX + 64];
    snprintf(topic, sizeof(topic), "%s/device/%s/config", m->discovery_prefix, m->device_id);
    if (!m->has_unraid || !m->has_immich || !m->has_s3 || !m->has_rclone) {
        /* first remove the entities of destinations that are not enabled (any more) */
        json_object *o = discovery(m, true);
        const char *stubbed = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                                    JSON_C_TO_STRING_NOSLASHESCAPE);
        mosquitto_publish(m->mosq, NULL, topic, (int)strlen(stubbed), stubbed, 1, true);
        json_object_put(o);
    }
    char *payload = mqtt_discovery_json(m);
    if (payload)
        mosquitto_publish(m->mosq, NULL, topic, (int)strlen(payload), payload, 1, true);
    free(payload);
}

/* The dashboard as Home Assistant can reach it: a host that only names this machine
 * (0.0.0.0, ::, localhost) is replaced by this end's address of the connection to the broker,
 * which is on Home Assistant's side of the network. Keeps the URL as it is when that address is
 * not known. */
static void web_url_for_broker_locked(struct mqtt *m)
{
    if (!m->web_url_any_host)
        return;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd = mosquitto_socket(m->mosq);
    char host[INET6_ADDRSTRLEN] = "";
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
    if (!host[0])
        return;
    bool v6 = strchr(host, ':') != NULL;
    snprintf(m->web_url, sizeof(m->web_url), "http://%s%s%s%s", v6 ? "[" : "", host, v6 ? "]" : "",
             m->web_url_tail);
}

void mqtt_remove_device(struct mqtt *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    if (m->connected) {
        char topic[TOPIC_MAX + 64];
        snprintf(topic, sizeof(topic), "%s/device/%s/config", m->discovery_prefix, m->device_id);
        /* an empty retained payload removes the device from Home Assistant and the broker */
        mosquitto_publish(m->mosq, NULL, topic, 0, NULL, 1, true);
        publish_locked(m, "state", "", true);
        publish_locked(m, VERIFICATION_TOPIC, "", true);
        publish_locked(m, "availability", "", true);
    }
    m->removed = true;
    pthread_mutex_unlock(&m->lock);
}

static void on_connect(struct mosquitto *mosq, void *ud, int rc)
{
    struct mqtt *m = ud;
    (void)mosq;
    pthread_mutex_lock(&m->lock);
    m->answered = true;
    pthread_cond_broadcast(&m->conn_cond);
    if (rc != 0) {
        snprintf(m->last_error, sizeof(m->last_error), "broker %s:%d refused the connection: %s",
                 m->broker, m->port, mosquitto_connack_string(rc));
        log_error("mqtt: %s", m->last_error);
        pthread_mutex_unlock(&m->lock);
        return;
    }
    m->connected = true;
    m->ever_connected = true;
    m->last_error[0] = '\0';
    if (m->removed) {
        pthread_mutex_unlock(&m->lock);
        return;
    }
    /* Subscribed before anything is published: the broker handles one connection's packets in
     * order, so whoever sees the discovery (Home Assistant, about to send its birth message)
     * is already heard. */
    char topic[TOPIC_MAX + 32];
    snprintf(topic, sizeof(topic), "%s/status", m->discovery_prefix);
    mosquitto_subscribe(m->mosq, NULL, topic, 1);
    snprintf(topic, sizeof(topic), "%s/cmd/+", m->topic_base);
    mosquitto_subscribe(m->mosq, NULL, topic, 1);
    publish_locked(m, "availability", "online", true);
    web_url_for_broker_locked(m);
    publish_discovery_locked(m);
    publish_state_locked(m);
    publish_events_locked(m); /* only those that ended while not connected */
    publish_verification_locked(m);
    pthread_mutex_unlock(&m->lock);
    log_info("mqtt: connected to %s:%d", m->broker, m->port);
}

static void on_disconnect(struct mosquitto *mosq, void *ud, int rc)
{
    struct mqtt *m = ud;
    (void)mosq;
    pthread_mutex_lock(&m->lock);
    bool was = m->connected;
    m->connected = false;
    pthread_cond_broadcast(&m->conn_cond);
    if (rc != 0 && !m->last_error[0])
        snprintf(m->last_error, sizeof(m->last_error), "lost the connection to %s:%d", m->broker,
                 m->port);
    pthread_mutex_unlock(&m->lock);
    if (was && rc != 0)
        log_warning("mqtt: lost the connection to %s:%d, reconnecting", m->broker, m->port);
}

int mqtt_parse_command(const char *action, const void *payload, int len, enum mqtt_command *ret)
{
    if (!payload || len != 5 || memcmp(payload, "PRESS", 5) != 0)
        return -EINVAL;
    if (strcmp(action, "eject") == 0)
        *ret = MQTT_COMMAND_EJECT;
    else if (strcmp(action, "retry") == 0)
        *ret = MQTT_COMMAND_RETRY;
    else
        return -EINVAL;
    return 0;
}

enum mqtt_inbound mqtt_parse_message(const struct mqtt *m, const char *topic, const void *payload,
                                     int len, enum mqtt_command *ret_cmd)
{
    char birth[TOPIC_MAX + 32], cmd[TOPIC_MAX + 32];
    snprintf(birth, sizeof(birth), "%s/status", m->discovery_prefix);
    snprintf(cmd, sizeof(cmd), "%s/cmd/", m->topic_base);
    if (!topic || len < 0 || (len > 0 && !payload))
        return MQTT_INBOUND_UNEXPECTED;
    if (strcmp(topic, birth) == 0)
        return len == 6 && memcmp(payload, "online", 6) == 0 ? MQTT_INBOUND_HA_ONLINE
                                                             : MQTT_INBOUND_HA_OTHER;
    if (strncmp(topic, cmd, strlen(cmd)) == 0 &&
        mqtt_parse_command(topic + strlen(cmd), payload, len, ret_cmd) == 0)
        return MQTT_INBOUND_COMMAND;
    return MQTT_INBOUND_UNEXPECTED;
}

static void on_message(struct mosquitto *mosq, void *ud, const struct mosquitto_message *msg)
{
    struct mqtt *m = ud;
    (void)mosq;
    enum mqtt_command c;
    switch (mqtt_parse_message(m, msg->topic, msg->payload, msg->payloadlen, &c)) {
    case MQTT_INBOUND_HA_ONLINE:
        pthread_mutex_lock(&m->lock);
        if (m->removed) {
            pthread_mutex_unlock(&m->lock);
            return;
        }
        publish_discovery_locked(m);
        publish_state_locked(m);
        publish_verification_locked(m);
        pthread_mutex_unlock(&m->lock);
        log_info("mqtt: Home Assistant came online, discovery and state published again");
        return;
    case MQTT_INBOUND_HA_OTHER:
        return;
    case MQTT_INBOUND_COMMAND:
        if (m->handler.on_command)
            m->handler.on_command(c, m->handler.userdata);
        else
            log_info("mqtt: command '%s' ignored: no service is running",
                     c == MQTT_COMMAND_EJECT ? "eject" : "retry");
        return;
    case MQTT_INBOUND_UNEXPECTED:
        break;
    }
    log_warning("mqtt: ignored unexpected message on '%s' (%d bytes)", msg->topic ? msg->topic : "",
                msg->payloadlen);
}

void mqtt_dashboard_url(const struct config *cfg, char *buf, size_t size)
{
    const char *bind = cfg->service.web_ui_bind && cfg->service.web_ui_bind[0]
                           ? cfg->service.web_ui_bind
                           : "0.0.0.0";
    bool v6 = strchr(bind, ':') != NULL && bind[0] != '[';
    snprintf(buf, size, "http://%s%s%s:%d/", v6 ? "[" : "", bind, v6 ? "]" : "",
             cfg->service.web_ui_port);
}

/* Notes whether the dashboard URL's host only names this machine, and what follows the host. */
static void web_url_split(struct mqtt *m)
{
    static const char *const local_hosts[] = {"0.0.0.0", "[::]", "localhost"};
    const char *scheme = "http://";
    if (strncmp(m->web_url, scheme, strlen(scheme)) != 0)
        return;
    const char *host = m->web_url + strlen(scheme);
    for (size_t i = 0; i < sizeof(local_hosts) / sizeof(local_hosts[0]); i++) {
        size_t n = strlen(local_hosts[i]);
        if (strncmp(host, local_hosts[i], n) == 0 && (host[n] == ':' || host[n] == '/')) {
            m->web_url_any_host = true;
            snprintf(m->web_url_tail, sizeof(m->web_url_tail), "%s", host + n);
        }
    }
}

/* The newest finished session in the database, so that Home Assistant's last result stays what
 * it was when SnapSync starts again. No database (yet) or an unreadable one: none known. */
static void last_result_from_db(const struct config *cfg, struct mqtt *m)
{
    struct db *db = NULL;
    struct db_session *list = NULL;
    size_t n = 0;
    struct error err = {0};
    if (!cfg->service.database_path || !cfg->service.database_path[0])
        goto out;
    int r = status_db_open(cfg, &db, &err);
    /* no database yet: nothing was ever verified (the zeroed state says so) */
    m->have_verification = r == -ENOENT;
    if (r < 0 || status_sessions_list(db, LAST_RESULT_LOOKBACK, &list, &n, &err) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (status_session_running(&list[i]))
            continue; /* still running (another process) */
        /* a session whose process died is interrupted, its end unrecorded: when it began is
         * the nearest known time */
        snprintf(m->last_result, sizeof(m->last_result), "%s", status_session_status(&list[i]));
        m->last_backup_at = list[i].ended_at ? list[i].ended_at : list[i].started_at;
        break;
    }
    /* what Home Assistant shows until the service publishes a verification of its own */
    if (status_verification_get(db, &m->verification, &err) == 0)
        m->have_verification = true;
out:
    free(list);
    db_close(db);
}

int mqtt_new(const struct config *cfg, const char *web_url, const struct mqtt_handler *handler,
             struct mqtt **ret, struct error *err)
{
    pthread_once(&lib_once, lib_init);
    struct mqtt *m = calloc(1, sizeof(*m));
    if (!m)
        return error_set(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->conn_cond, NULL);
    if (handler)
        m->handler = *handler;
    int r = 0;
    mqtt_device_id(cfg, m->device_id, sizeof(m->device_id));
    snprintf(m->name, sizeof(m->name), "%s", cfg->service.name[0] ? cfg->service.name : "SnapSync");
    if (strcmp(m->name, "snapsync") == 0)
        snprintf(m->name, sizeof(m->name), "SnapSync");
    snprintf(m->web_url, sizeof(m->web_url), "%s", web_url ? web_url : "");
    web_url_split(m);
    last_result_from_db(cfg, m);
    snprintf(m->discovery_prefix, sizeof(m->discovery_prefix), "%s", cfg->mqtt.discovery_prefix);
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "%s", cfg->mqtt.topic_prefix);
    if (!prefix[0] || strpbrk(prefix, "#+") || strpbrk(m->discovery_prefix, "#+") ||
        !m->discovery_prefix[0]) {
        r = error_set(err, -EINVAL,
                      "mqtt: topic_prefix and discovery_prefix must be non-empty "
                      "and hold no '#' or '+'");
        goto fail;
    }
    snprintf(m->topic_base, sizeof(m->topic_base), "%s/%s", prefix, m->device_id);
    snprintf(m->broker, sizeof(m->broker), "%s", cfg->mqtt.broker);
    m->port = cfg->mqtt.port;
    m->has_unraid = cfg->unraid.enabled;
    m->has_immich = cfg->immich.enabled;
    m->has_s3 = cfg->s3.enabled;
    m->has_rclone = cfg->rclone.enabled;
    char client_id[128];
    snprintf(client_id, sizeof(client_id), "%s", cfg->mqtt.client_id);
    topic_safe(client_id);
    m->mosq = mosquitto_new(client_id[0] ? client_id : NULL, true, m);
    if (!m->mosq) {
        r = error_set(err, -ENOMEM, "mqtt: cannot create the client");
        goto fail;
    }
    if (cfg->mqtt.username && cfg->mqtt.username[0] &&
        mosquitto_username_pw_set(m->mosq, cfg->mqtt.username, cfg->mqtt.password) !=
            MOSQ_ERR_SUCCESS) {
        r = error_set(err, -EINVAL, "mqtt: cannot use the configured credentials");
        goto fail;
    }
    r = tls_setup(m->mosq, cfg, err);
    if (r < 0)
        goto fail;
    char will[TOPIC_MAX + 32];
    snprintf(will, sizeof(will), "%s/availability", m->topic_base);
    if (mosquitto_will_set(m->mosq, will, 7, "offline", 1, true) != MOSQ_ERR_SUCCESS) {
        r = error_set(err, -EINVAL, "mqtt: cannot set the last will");
        goto fail;
    }
    mosquitto_reconnect_delay_set(m->mosq, 1, 60, true);
    mosquitto_connect_callback_set(m->mosq, on_connect);
    mosquitto_disconnect_callback_set(m->mosq, on_disconnect);
    mosquitto_message_callback_set(m->mosq, on_message);
    mosquitto_publish_callback_set(m->mosq, on_publish);
    snprintf(m->state.status, sizeof(m->state.status), "idle");
    *ret = m;
    return 0;
fail:
    mqtt_free(m);
    return r;
}

/* Until the first connection succeeds, try again with a delay growing from 1 s to 60 s: a
 * broker that is down when SnapSync starts is found when it comes up. libmosquitto's own loop
 * takes over reconnecting once a connection was made. */
static void *retry_main(void *arg)
{
    struct mqtt *m = arg;
    int delay = 1;
    pthread_mutex_lock(&m->lock);
    while (!m->stopping && !m->ever_connected) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += delay;
        while (!m->stopping && !m->ever_connected &&
               pthread_cond_timedwait(&m->conn_cond, &m->lock, &ts) != ETIMEDOUT)
            ;
        if (m->stopping || m->ever_connected)
            break;
        pthread_mutex_unlock(&m->lock);
        int rc = mosquitto_connect_async(m->mosq, m->broker, m->port, KEEPALIVE_S);
        pthread_mutex_lock(&m->lock);
        if (rc != MOSQ_ERR_SUCCESS)
            log_debug("mqtt: broker %s:%d still unreachable", m->broker, m->port);
        delay = delay * 2 > 60 ? 60 : delay * 2;
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

int mqtt_start(struct mqtt *m, struct error *err)
{
    int rc = mosquitto_connect_async(m->mosq, m->broker, m->port, KEEPALIVE_S);
    if (rc != MOSQ_ERR_SUCCESS) {
        pthread_mutex_lock(&m->lock);
        snprintf(m->last_error, sizeof(m->last_error), "cannot reach broker %s:%d: %s", m->broker,
                 m->port, rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        pthread_mutex_unlock(&m->lock);
        log_warning("mqtt: %s; will keep trying", m->last_error);
    }
    rc = mosquitto_loop_start(m->mosq);
    if (rc != MOSQ_ERR_SUCCESS)
        return error_set(err, -EIO, "mqtt: cannot start the network thread: %s",
                         mosquitto_strerror(rc));
    m->started = true;
    if (pthread_create(&m->retry_thread, NULL, retry_main, m) == 0)
        m->retry_started = true;
    return 0;
}

void mqtt_publish_state(struct mqtt *m, const struct status_live *s, bool force)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->state = *s;
    if (s->last_result[0]) { /* a session ended: the new last result */
        snprintf(m->last_result, sizeof(m->last_result), "%s", s->last_result);
        m->last_backup_at = s->last_backup_at;
    } else { /* none yet in this state: the last one known stays */
        snprintf(m->state.last_result, sizeof(m->state.last_result), "%s", m->last_result);
        m->state.last_backup_at = m->last_backup_at;
    }
    m->have_state = true;
    if (force || now_s() - m->last_pub >= MIN_INTERVAL_S)
        publish_state_locked(m);
    pthread_mutex_unlock(&m->lock);
}

void mqtt_publish_verification(struct mqtt *m, const struct status_verification *v)
{
    if (!m || !v)
        return;
    pthread_mutex_lock(&m->lock);
    m->verification = *v;
    m->have_verification = true;
    publish_verification_locked(m);
    pthread_mutex_unlock(&m->lock);
}

void mqtt_publish_session(struct mqtt *m, const struct engine_report *rep, bool safe_to_remove)
{
    if (!m || !rep || rep->session_id <= 0)
        return;
    bool result = false;
    for (const char *const *t = event_types; *t; t++)
        result = result || strcmp(*t, db_session_status_to_string(rep->status)) == 0;
    if (!result)
        return;
    pthread_mutex_lock(&m->lock);
    if (m->n_events == EVENTS_PENDING_MAX) { /* long disconnected: the newest matter most */
        memmove(&m->events[0], &m->events[1], sizeof(m->events[0]) * (EVENTS_PENDING_MAX - 1));
        m->n_events--;
    }
    struct session_event *ev = &m->events[m->n_events++];
    *ev = (struct session_event){.session_id = rep->session_id,
                                 .status = rep->status,
                                 .totals = rep->totals,
                                 .duration_s = rep->duration_s,
                                 .safe_to_remove = safe_to_remove};
    snprintf(ev->card, sizeof(ev->card), "%s", rep->card_label);
    snprintf(ev->error, sizeof(ev->error), "%s", rep->error);
    publish_events_locked(m);
    pthread_mutex_unlock(&m->lock);
}

void mqtt_last_error(struct mqtt *m, char *buf, size_t size)
{
    pthread_mutex_lock(&m->lock);
    snprintf(buf, size, "%s", m->last_error);
    pthread_mutex_unlock(&m->lock);
}

bool mqtt_connected(struct mqtt *m)
{
    pthread_mutex_lock(&m->lock);
    bool c = m->connected;
    pthread_mutex_unlock(&m->lock);
    return c;
}

void mqtt_stop(struct mqtt *m)
{
    if (!m || !m->started)
        return;
    pthread_mutex_lock(&m->lock);
    /* A session can end while the first connection (a TLS handshake, say) is under way, or
     * while reconnecting to a broker that restarted: give it a moment so the final state is not
     * lost. A broker that never answered is not waited for. */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += STOP_CONNECT_WAIT_S;
    struct timespec connect_deadline = deadline;
    deadline.tv_sec += STOP_CONNECT_WAIT_S; /* and as long again for the last messages */
    while (!m->connected && (m->ever_connected || (!m->answered && !m->last_error[0])))
        if (pthread_cond_timedwait(&m->conn_cond, &m->lock, &connect_deadline) == ETIMEDOUT)
            break;
    if (m->connected && !m->removed) {
        publish_state_locked(m);
        /* a clean DISCONNECT drops the will, so say offline ourselves; messages are delivered
         * in order, so once "offline" is acknowledged the final state is there too */
        m->wait_mid = publish_locked(m, "availability", "offline", true);
        while (m->wait_mid != 0 && m->connected)
            if (pthread_cond_timedwait(&m->conn_cond, &m->lock, &deadline) == ETIMEDOUT)
                break;
    }
    pthread_mutex_unlock(&m->lock);
    pthread_mutex_lock(&m->lock);
    m->stopping = true;
    pthread_cond_broadcast(&m->conn_cond);
    pthread_mutex_unlock(&m->lock);
    if (m->retry_started)
        pthread_join(m->retry_thread, NULL);
    m->retry_started = false;
    mosquitto_disconnect(m->mosq);
    mosquitto_loop_stop(m->mosq, false);
    m->started = false;
}

void mqtt_free(struct mqtt *m)
{
    if (!m)
        return;
    mqtt_stop(m);
    if (m->mosq)
        mosquitto_destroy(m->mosq);
    pthread_cond_destroy(&m->conn_cond);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

struct probe_ctx {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int rc;
};

static void probe_on_connect(struct mosquitto *mosq, void *ud, int rc)
{
    struct probe_ctx *p = ud;
    (void)mosq;
    pthread_mutex_lock(&p->lock);
    p->done = true;
    p->rc = rc;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

int mqtt_probe(const struct config *cfg, int timeout_s, char *detail, size_t detail_size,
               struct error *err)
{
    pthread_once(&lib_once, lib_init);
    struct probe_ctx p = {.rc = -1};
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.cond, NULL);
    int r = 0;
    struct mosquitto *mosq = mosquitto_new(NULL, true, &p);
    if (!mosq) {
        r = error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    if (cfg->mqtt.username && cfg->mqtt.username[0])
        mosquitto_username_pw_set(mosq, cfg->mqtt.username, cfg->mqtt.password);
    r = tls_setup(mosq, cfg, err);
    if (r < 0)
        goto out;
    mosquitto_connect_callback_set(mosq, probe_on_connect);
    int rc = mosquitto_connect(mosq, cfg->mqtt.broker, cfg->mqtt.port, KEEPALIVE_S);
    if (rc != MOSQ_ERR_SUCCESS) {
        r = error_set(err,
                      rc == MOSQ_ERR_ERRNO && errno == ECONNREFUSED ? -ECONNREFUSED : -EHOSTUNREACH,
                      "cannot reach broker %s:%d: %s", cfg->mqtt.broker, cfg->mqtt.port,
                      rc == MOSQ_ERR_ERRNO ? strerror(errno)
                      : rc == MOSQ_ERR_TLS ? "TLS handshake failed (is the broker's certificate "
                                             "signed by mqtt.tls_ca_file? does the port speak TLS?)"
                                           : mosquitto_strerror(rc));
        goto out;
    }
    /* Driven here rather than by a thread, so a TLS or network failure comes back as a
     * return code at once instead of a silent retry. */
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    bool done = false;
    int lrc = MOSQ_ERR_SUCCESS;
    for (;;) {
        lrc = mosquitto_loop(mosq, 200, 1);
        pthread_mutex_lock(&p.lock);
        done = p.done;
        rc = p.rc;
        pthread_mutex_unlock(&p.lock);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (done || lrc != MOSQ_ERR_SUCCESS || now.tv_sec - start.tv_sec >= timeout_s)
            break;
    }
    if (done)
        mosquitto_disconnect(mosq);
    if (!done && lrc != MOSQ_ERR_SUCCESS) {
        r = error_set(err, lrc == MOSQ_ERR_TLS ? -EPROTO : -ECONNRESET, "broker %s:%d: %s",
                      cfg->mqtt.broker, cfg->mqtt.port,
                      lrc == MOSQ_ERR_TLS     ? "TLS handshake failed (is the broker's certificate "
                                                "signed by mqtt.tls_ca_file?)"
                      : lrc == MOSQ_ERR_ERRNO ? strerror(errno)
                                              : mosquitto_strerror(lrc));
        goto out;
    }
    if (!done)
        r = error_set(err, -ETIMEDOUT, "broker %s:%d did not answer within %d s", cfg->mqtt.broker,
                      cfg->mqtt.port, timeout_s);
    else if (rc == 4 || rc == 5)
        r = error_set(err, -EACCES,
                      "broker %s:%d refused the credentials (%s): check "
                      "MQTT_USERNAME/MQTT_PASSWORD",
                      cfg->mqtt.broker, cfg->mqtt.port, mosquitto_connack_string(rc));
    else if (rc != 0)
        r = error_set(err, -ECONNREFUSED, "broker %s:%d refused the connection: %s",
                      cfg->mqtt.broker, cfg->mqtt.port, mosquitto_connack_string(rc));
    else
        snprintf(detail, detail_size, "broker %s:%d accepts us%s", cfg->mqtt.broker, cfg->mqtt.port,
                 cfg->mqtt.tls ? " over TLS" : "");
out:
    if (mosq)
        mosquitto_destroy(mosq);
    pthread_cond_destroy(&p.cond);
    pthread_mutex_destroy(&p.lock);
    return r;
}
