/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the MQTT messages SnapSync subscribes to (Home Assistant's status topic,
 * the command topics): anyone allowed to publish on the broker chooses their topic and payload.
 * The input is "<topic>\n<payload>"; a topic starting "~/" means this device's own topics
 * ("snapsync/<device id>/", the id differs per machine), so the corpus reaches them. A message is a
 * command only on a command topic with the payload PRESS, and the birth message only on the status
 * topic with "online".
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "mqtt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char base[128]; /* "snapsync/<device id>/" */

static struct mqtt *instance(void)
{
    static struct mqtt *m;
    static struct config *cfg;
    if (m)
        return m;
    static const char yaml[] = "service:\n  name: fuzz\n  database_path: "
                               "/nonexistent/snapsync.db\nmqtt:\n  enabled: true\n"
                               "  topic_prefix: snapsync\n  discovery_prefix: homeassistant\n";
    struct error err;
    if (config_parse_buffer("fuzz", yaml, sizeof(yaml) - 1, &cfg, &err) != 0 ||
        mqtt_new(cfg, "", &(struct mqtt_handler){0}, &m, &err) != 0) {
        fprintf(stderr, "fuzz_mqtt: %s\n", err.msg);
        abort();
    }
    char id[64];
    mqtt_device_id(cfg, id, sizeof(id));
    snprintf(base, sizeof(base), "snapsync/%s/", id);
    return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mqtt *m = instance();
    const uint8_t *nl = memchr(data, '\n', size);
    size_t tlen = nl ? (size_t)(nl - data) : size;
    bool own = tlen >= 2 && data[0] == '~' && data[1] == '/';
    size_t blen = own ? strlen(base) : 0, skip = own ? 2 : 0;
    char *topic = malloc(blen + tlen + 1);
    if (!topic)
        return 0;
    memcpy(topic, base, blen);
    memcpy(topic + blen, data + skip, tlen - skip);
    topic[blen + tlen - skip] = '\0';
    const uint8_t *payload = nl ? nl + 1 : data + size;
    int plen = (int)(size - (size_t)(payload - data));
    enum mqtt_command c;
    enum mqtt_inbound k = mqtt_parse_message(m, topic, plen ? payload : NULL, plen, &c);
    if (k == MQTT_INBOUND_COMMAND &&
        (plen != 5 || memcmp(payload, "PRESS", 5) != 0 || strncmp(topic, base, strlen(base)) != 0))
        abort();
    if (k == MQTT_INBOUND_HA_ONLINE && strcmp(topic, "homeassistant/status") != 0)
        abort();
    free(topic);
    return 0;
}
