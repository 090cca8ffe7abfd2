#!/bin/sh
# SPDX-License-Identifier: MIT
# The Home Assistant add-on's entrypoint: turns the add-on options the Supervisor wrote
# (/data/options.json) into SnapSync's configuration (/data/config.yaml, secrets in /data/.env,
# 0600), takes the MQTT broker from the Supervisor's services API when the user named none, and
# runs the service in the foreground.
# Environment (for tests; the Supervisor sets none of these but SUPERVISOR_TOKEN):
#   SNAPSYNC_ADDON_DATA   folder of options.json and of what is written (default /data)
#   SUPERVISOR_URL        the Supervisor's API (default http://supervisor)
#   SNAPSYNC_ADDON_NO_EXEC  when set, only write the configuration
set -eu
data=${SNAPSYNC_ADDON_DATA:-/data}
supervisor=${SUPERVISOR_URL:-http://supervisor}
options="$data/options.json"
[ -r "$options" ] || { echo "snapsync add-on: $options is missing" >&2; exit 1; }
opt() { jq -r --arg k "$1" '.[$k] // empty' "$options"; }

# MQTT: the user's broker, else the Supervisor's MQTT service (the Mosquitto add-on) when one
# is installed (services: mqtt:want)
mqtt_service='{}'
if [ "$(opt mqtt_enabled)" = "true" ] && [ -z "$(opt mqtt_broker)" ]; then
    if [ -n "${SUPERVISOR_TOKEN:-}" ] &&
        answer=$(curl -fsS --max-time 10 -H "Authorization: Bearer $SUPERVISOR_TOKEN" \
            "$supervisor/services/mqtt") &&
        echo "$answer" | jq -e '.result == "ok" and (.data.host | type == "string")' >/dev/null; then
        mqtt_service=$(echo "$answer" | jq -c '.data')
        echo "snapsync add-on: MQTT broker from the Supervisor: $(echo "$mqtt_service" | jq -r '.host + ":" + (.port | tostring)')" >&2
    else
        echo "snapsync add-on: MQTT is on but no broker is set and the Supervisor offers none (install the Mosquitto broker add-on); MQTT stays off" >&2
        mqtt_service='null'
    fi
fi

# The configuration as JSON, which is YAML too: jq does all the quoting.
umask 077
{
    echo "# Written by the SnapSync add-on from options.json at every start: change the add-on's options, not this file."
    # o: an option, or its default when left out (jq's // would also replace false)
    jq --argjson mqtt "$mqtt_service" '
    def o($k; $d): if .[$k] == null then $d else .[$k] end;
    {
      service: {
        name: o("name"; "snapsync"),
        database_path: "snapsync.db",
        log_level: o("log_level"; "info"),
        web_ui_port: 8099,
        web_ui_bind: "0.0.0.0",
        # the Host names a browser reaches Home Assistant under: ingress passes them on
        web_ui_hosts: (["homeassistant", "homeassistant.local"] + o("web_ui_hosts"; []))
      },
      sd_card: {
        auto_detect: o("auto_detect"; true),
        mount_points: ["/media"],
        mount_base: "/run/snapsync/cards",
        unmount_when_done: true,
        ignore_devices: o("ignore_devices"; [])
      },
      unraid: (
        if .destination == "smb" then
          {enabled: true, protocol: "smb", host: o("smb_host"; ""), share: o("smb_share"; ""),
           path: o("smb_path"; ""), organize_by_date: o("organize_by_date"; true)}
        elif .destination == "folder" then
          {enabled: true, protocol: "local", mount_point: o("folder"; "/share/snapsync"),
           organize_by_date: o("organize_by_date"; true)}
        else {enabled: false} end),
      immich: {
        enabled: o("immich_enabled"; false),
        url: o("immich_url"; ""),
        album_mode: o("immich_album_mode"; "auto"),
        album_pattern: o("immich_album_pattern"; "")
      },
      mqtt: (
        if o("mqtt_enabled"; false) and (o("mqtt_broker"; "") != "") then
          {enabled: true, broker: .mqtt_broker, port: o("mqtt_port"; 1883)}
        elif o("mqtt_enabled"; false) and $mqtt != null and $mqtt.host != null then
          {enabled: true, broker: $mqtt.host, port: ($mqtt.port // 1883), tls: ($mqtt.ssl // false)}
        else {enabled: false} end),
      # an empty pattern option: the built-in default ({year}/{month}/{day}, {name}{ext})
      backup: ({verify_checksums: o("verify_checksums"; true)}
               + (if o("folder_pattern"; "") != "" then {folder_pattern: .folder_pattern} else {} end)
               + (if o("file_pattern"; "") != "" then {file_pattern: .file_pattern} else {} end))
    }' "$options"
} >"$data/config.yaml.new"
mv "$data/config.yaml.new" "$data/config.yaml"

# Secrets: .env next to the configuration, KEY="value" with \ and " escaped
jq -r --argjson mqtt "$mqtt_service" '
    def q: "\"" + (tostring | gsub("\\\\"; "\\\\") | gsub("\""; "\\\"")) + "\"";
    [["IMMICH_API_KEY", .immich_api_key],
     ["UNRAID_USERNAME", (if .destination == "smb" then .smb_username else null end)],
     ["UNRAID_PASSWORD", (if .destination == "smb" then .smb_password else null end)],
     ["MQTT_USERNAME", (if (.mqtt_broker // "") != "" then .mqtt_username
                        else ($mqtt // {}).username end)],
     ["MQTT_PASSWORD", (if (.mqtt_broker // "") != "" then .mqtt_password
                        else ($mqtt // {}).password end)],
     ["SNAPSYNC_WEB_TOKEN", .web_ui_token]]
    | .[] | select(.[1] != null and .[1] != "") | "\(.[0])=\(.[1] | q)"' "$options" >"$data/.env.new"
mv "$data/.env.new" "$data/.env"

[ -z "${SNAPSYNC_ADDON_NO_EXEC:-}" ] || exit 0
exec snapsync --config "$data/config.yaml" start
