/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for config.c: the table defaults and the embedded default, the template and its
 * round trip, masked printing, every class of error with its exact line, sizes and numbers,
 * .env syntax, secret precedence (environment > .env > YAML), the search order, path resolution,
 * permission warnings, and hostile input (deep nesting, aliases, huge values, garbage, NUL bytes).
 *
 * Files are written under $SNAPSYNC_TEST_TMP (set by CTest) or a fresh directory in /tmp.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "config.h"

static const char *const secret_vars[] = {"IMMICH_API_KEY", "UNRAID_USERNAME", "UNRAID_PASSWORD",
                                          "MQTT_USERNAME",  "MQTT_PASSWORD",   "SMTP_USERNAME",
                                          "SMTP_PASSWORD",  "NTFY_TOKEN"};
#define N_SECRET_VARS (sizeof(secret_vars) / sizeof(secret_vars[0]))

static char base_dir[PATH_MAX];
static char start_cwd[PATH_MAX];

/* ---- helpers ---- */

static void mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        mkdir(buf, 0755);
        *p = '/';
    }
    mkdir(buf, 0755);
}

/* A fresh, empty directory for one test. */
static void new_dir(char *out, size_t size)
{
    assert_true((size_t)snprintf(out, size, "%s/t-XXXXXX", base_dir) < size);
    assert_non_null(mkdtemp(out));
}

static void write_file(const char *dir, const char *name, const char *text, size_t len, mode_t mode,
                       char *ret_path, size_t ret_size)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
    if (ret_path)
        snprintf(ret_path, ret_size, "%s", path);
}

static void write_str(const char *dir, const char *name, const char *text, mode_t mode,
                      char *ret_path, size_t ret_size)
{
    write_file(dir, name, text, strlen(text), mode, ret_path, ret_size);
}

static struct config *parse_ok(const char *yaml)
{
    struct config *cfg = NULL;
    struct error err = {0};
    int r = config_parse_buffer("config.yaml", yaml, strlen(yaml), &cfg, &err);
    if (r < 0)
        fail_msg("unexpected error %d: %s\n--- input:\n%s", r, err.msg, yaml);
    assert_non_null(cfg);
    return cfg;
}

/* Parses yaml, expecting failure with exactly `code` and `msg`. */
static void parse_fails_len(const char *yaml, size_t len, int code, const char *msg)
{
    struct config *cfg = NULL;
    struct error err = {0};
    int r = config_parse_buffer("config.yaml", yaml, len, &cfg, &err);
    if (r != code || (msg && strcmp(err.msg, msg) != 0))
        fail_msg("input:\n%.200s\nexpected %d '%s'\ngot      %d '%s'", yaml, code,
                 msg ? msg : "(any)", r, err.msg);
    assert_null(cfg);
}

static void parse_fails(const char *yaml, const char *msg)
{
    parse_fails_len(yaml, strlen(yaml), -EINVAL, msg);
}

static char *print_config(const struct config *cfg, bool template)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(template ? config_print_template(f) : config_print(cfg, f), 0);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void assert_list_equal(char *const *a, size_t na, char *const *b, size_t nb)
{
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++)
        assert_string_equal(a[i], b[i]);
    assert_null(a[na]);
    assert_null(b[nb]);
}

/* Field by field; secrets compared only when with_secrets. */
static void assert_config_equal(const struct config *a, const struct config *b, bool with_secrets)
{
    assert_string_equal(a->service.name, b->service.name);
    assert_string_equal(a->service.database_path, b->service.database_path);
    assert_string_equal(a->service.log_level, b->service.log_level);
    assert_int_equal(a->service.web_ui_port, b->service.web_ui_port);
    assert_int_equal(a->sd_card.auto_detect, b->sd_card.auto_detect);
    assert_list_equal(a->sd_card.mount_points, a->sd_card.n_mount_points, b->sd_card.mount_points,
                      b->sd_card.n_mount_points);
    assert_list_equal(a->files.extensions, a->files.n_extensions, b->files.extensions,
                      b->files.n_extensions);
    assert_true(a->files.min_size == b->files.min_size);
    assert_int_equal(a->immich.enabled, b->immich.enabled);
    assert_string_equal(a->immich.url, b->immich.url);
    assert_int_equal(a->immich.timeout, b->immich.timeout);
    assert_int_equal(a->immich.organize_by_date, b->immich.organize_by_date);
    assert_int_equal(a->unraid.enabled, b->unraid.enabled);
    assert_int_equal(a->unraid.protocol, b->unraid.protocol);
    assert_string_equal(a->unraid.host, b->unraid.host);
    assert_string_equal(a->unraid.share, b->unraid.share);
    assert_string_equal(a->unraid.path, b->unraid.path);
    assert_string_equal(a->unraid.mount_point, b->unraid.mount_point);
    assert_int_equal(a->unraid.organize_by_date, b->unraid.organize_by_date);
    assert_int_equal(a->mqtt.enabled, b->mqtt.enabled);
    assert_string_equal(a->mqtt.broker, b->mqtt.broker);
    assert_int_equal(a->mqtt.port, b->mqtt.port);
    assert_string_equal(a->mqtt.discovery_prefix, b->mqtt.discovery_prefix);
    assert_string_equal(a->mqtt.topic_prefix, b->mqtt.topic_prefix);
    assert_string_equal(a->mqtt.client_id, b->mqtt.client_id);
    assert_int_equal(a->backup.parallel, b->backup.parallel);
    assert_int_equal(a->backup.concurrent_files, b->backup.concurrent_files);
    assert_int_equal(a->backup.verify_checksums, b->backup.verify_checksums);
    assert_int_equal(a->backup.max_retries, b->backup.max_retries);
    assert_true(a->backup.retry_delay == b->backup.retry_delay);
    assert_int_equal(a->backup.verify_interval_days, b->backup.verify_interval_days);
    assert_true(a->backup.verify_rate == b->backup.verify_rate);
    if (with_secrets) {
        assert_string_equal(a->immich.api_key, b->immich.api_key);
        assert_string_equal(a->unraid.username, b->unraid.username);
        assert_string_equal(a->unraid.password, b->unraid.password);
        assert_string_equal(a->mqtt.username, b->mqtt.username);
        assert_string_equal(a->mqtt.password, b->mqtt.password);
    }
}

static bool has_warning(const struct config *cfg, const char *needle)
{
    for (size_t i = 0; i < cfg->n_warnings; i++)
        if (strstr(cfg->warnings[i], needle))
            return true;
    return false;
}

static const char *source_dir(void)
{
    const char *s = getenv("SNAPSYNC_SOURCE_DIR");
    if (s && *s)
        return s;
    static char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", __FILE__); /* .../tests/unit/test_config.c */
    for (int i = 0; i < 3; i++) {
        char *slash = strrchr(dir, '/');
        assert_non_null(slash);
        *slash = '\0';
    }
    return dir;
}

static char *slurp(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    char *buf = malloc(1 << 20);
    assert_non_null(buf);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (ret_len)
        *ret_len = n;
    return buf;
}

/* Every test starts with no secrets or SNAPSYNC_CONFIG in the environment, in its start cwd. */
static int setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_SECRET_VARS; i++)
        unsetenv(secret_vars[i]);
    unsetenv("SNAPSYNC_CONFIG");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    setup(state);
    return chdir(start_cwd);
}

static int group_setup(void **state)
{
    (void)state;
    if (!getcwd(start_cwd, sizeof(start_cwd)))
        return -1;
    const char *tmp = getenv("SNAPSYNC_TEST_TMP");
    if (tmp && *tmp) {
        mkdir_p(tmp);
        snprintf(base_dir, sizeof(base_dir), "%s/config-XXXXXX", tmp);
    } else {
        snprintf(base_dir, sizeof(base_dir), "/tmp/snapsync-test-config-XXXXXX");
    }
    return mkdtemp(base_dir) ? 0 : -1;
}

/* ---- defaults, template, printing ---- */

static void test_default(void **state)
{
    (void)state;
    struct config *cfg = NULL;
    struct error err = {0};
    assert_int_equal(config_default(&cfg, &err), 0);
    assert_null(cfg->path);
    assert_string_equal(cfg->service.name, "snapsync");
    assert_string_equal(cfg->service.database_path, "./snapsync.db");
    assert_string_equal(cfg->service.log_level, "info");
    assert_int_equal(cfg->service.web_ui_port, 8080);
    assert_true(cfg->sd_card.auto_detect);
    assert_int_equal(cfg->sd_card.n_mount_points, 2);
    assert_string_equal(cfg->sd_card.mount_points[0], "/media");
    assert_string_equal(cfg->sd_card.mount_points[1], "/run/media");
    assert_null(cfg->sd_card.mount_points[2]);
    assert_int_equal(cfg->files.n_extensions, 35);
    assert_string_equal(cfg->files.extensions[0], "jpg");
    assert_string_equal(cfg->files.extensions[34], "m2ts");
    assert_null(cfg->files.extensions[35]);
    assert_true(cfg->files.min_size == 1);
    assert_false(cfg->immich.enabled);
    assert_string_equal(cfg->immich.url, "");
    assert_string_equal(cfg->immich.api_key, "");
    assert_int_equal(cfg->immich.timeout, 30);
    assert_true(cfg->immich.organize_by_date);
    assert_true(cfg->unraid.enabled);
    assert_int_equal(cfg->unraid.protocol, CONFIG_PROTOCOL_LOCAL);
    assert_string_equal(cfg->unraid.mount_point, "./snapsync-backup");
    assert_string_equal(cfg->unraid.host, "");
    assert_string_equal(cfg->unraid.password, "");
    assert_true(cfg->unraid.organize_by_date);
    assert_false(cfg->mqtt.enabled);
    assert_string_equal(cfg->mqtt.broker, "localhost");
    assert_int_equal(cfg->mqtt.port, 1883);
    assert_string_equal(cfg->mqtt.discovery_prefix, "homeassistant");
    assert_string_equal(cfg->mqtt.topic_prefix, "snapsync");
    assert_string_equal(cfg->mqtt.client_id, "snapsync");
    assert_true(cfg->backup.parallel);
    assert_int_equal(cfg->backup.concurrent_files, 2);
    assert_true(cfg->backup.verify_checksums);
    assert_int_equal(cfg->backup.max_retries, 3);
    assert_true(cfg->backup.retry_delay == 5.0);
    assert_int_equal(cfg->n_warnings, 0);
    config_free(cfg);
    config_free(NULL);
}

/* A file without a section gets the table defaults, which differ from the embedded default
 * only where the table says so: unraid is off and has no mount point. */
static void test_empty_documents(void **state)
{
    (void)state;
    static const char *const empty[] = {"",    "# only a comment\n", "---\n", "---\n...\n",
                                        "~\n", "service:\n",         "{}\n"};
    struct config *def = NULL;
    assert_int_equal(config_default(&def, NULL), 0);
    def->unraid.enabled = false;
    free(def->unraid.mount_point);
    def->unraid.mount_point = strdup("");
    for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
        struct config *cfg = parse_ok(empty[i]);
        assert_config_equal(cfg, def, true);
        config_free(cfg);
    }
    config_free(def);
}

static void test_template_round_trip(void **state)
{
    (void)state;
    char *tpl = print_config(NULL, true);
    struct config *def = NULL, *cfg = parse_ok(tpl);
    assert_int_equal(config_default(&def, NULL), 0);
    assert_config_equal(cfg, def, true);

    /* Every key, the search order and the .env advice are in it. */
    static const char *const words[] = {"service:",
                                        "  name: snapsync",
                                        "  database_path: ./snapsync.db",
                                        "  log_level: info",
                                        "  web_ui_port: 8080",
                                        "sd_card:",
                                        "  auto_detect: true",
                                        "  mount_points:",
                                        "files:",
                                        "  extensions: [jpg, jpeg",
                                        "  min_size: 1",
                                        "immich:",
                                        "  url:",
                                        "  api_key: \"\"",
                                        "  timeout: 30",
                                        "unraid:",
                                        "  enabled: true",
                                        "  protocol: local",
                                        "  host:",
                                        "  share:",
                                        "  path:",
                                        "  username: \"\"",
                                        "  password: \"\"",
                                        "  mount_point: ./snapsync-backup",
                                        "mqtt:",
                                        "  broker: localhost",
                                        "  port: 1883",
                                        "  discovery_prefix: homeassistant",
                                        "  topic_prefix: snapsync",
                                        "  client_id: snapsync",
                                        "backup:",
                                        "  parallel: true",
                                        "  concurrent_files: 2",
                                        "  verify_checksums: true",
                                        "  max_retries: 3",
                                        "  retry_delay: 5",
                                        "$SNAPSYNC_CONFIG",
                                        "/etc/snapsync/config.yaml",
                                        "./config.yaml",
                                        ".env",
                                        "IMMICH_API_KEY",
                                        "MQTT_PASSWORD",
                                        "1..65535"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (!strstr(tpl, words[i]))
            fail_msg("template lacks '%s'", words[i]);
    /* Lines fit in 100 columns. */
    for (const char *l = tpl; *l;) {
        const char *nl = strchr(l, '\n');
        assert_non_null(nl);
        assert_true(nl - l <= 100);
        l = nl + 1;
    }

    /* The shipped example is exactly the template. */
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/config.yaml.example", source_dir());
    char *example = slurp(path, NULL);
    assert_string_equal(example, tpl);
    free(example);

    /* .env.example names every secret, commented out. */
    snprintf(path, sizeof(path), "%s/.env.example", source_dir());
    char *env = slurp(path, NULL);
    for (size_t i = 0; i < N_SECRET_VARS; i++) {
        char line[64];
        snprintf(line, sizeof(line), "# %s=", secret_vars[i]);
        if (!strstr(env, line))
            fail_msg(".env.example lacks '%s'", line);
    }
    struct error err = {0};
    assert_int_equal(config_apply_dotenv(def, ".env.example", env, strlen(env), &err), 0);
    assert_string_equal(def->immich.api_key, "");
    free(env);

    config_free(cfg);
    config_free(def);
    free(tpl);
}

static const char *const custom_yaml = "service:\n"
                                       "  name: \"My \\\"Snap\\\" box: #1\"\n"
                                       "  database_path: /var/lib/snapsync/db.sqlite\n"
                                       "  log_level: Debug\n"
                                       "  web_ui_port: 9090\n"
                                       "  web_ui_bind: '::1'\n"
                                       "  web_ui_hosts: [pi.lan, snapsync.example.org]\n"
                                       "sd_card:\n"
                                       "  auto_detect: off\n"
                                       "  mount_points:\n"
                                       "    - /mnt/cards\n"
                                       "    - '/media/with space'\n"
                                       "files:\n"
                                       "  extensions: [JPG, .Cr2, raf, jpg, 'MP4']\n"
                                       "  min_size: 100KB\n"
                                       "immich:\n"
                                       "  enabled: Yes\n"
                                       "  url: https://photos.example.org/api\n"
                                       "  api_key: yaml-immich-key\n"
                                       "  timeout: 3600\n"
                                       "  organize_by_date: NO\n"
                                       "unraid:\n"
                                       "  enabled: on\n"
                                       "  protocol: smb\n"
                                       "  host: tower.local\n"
                                       "  share: photos\n"
                                       "  path: 'cards/2024'\n"
                                       "  username: yaml-unraid-user\n"
                                       "  password: 'yaml unraid pass'\n"
                                       "  organize_by_date: false\n"
                                       "mqtt:\n"
                                       "  enabled: TRUE\n"
                                       "  broker: 192.168.1.2\n"
                                       "  port: 8883\n"
                                       "  username: yaml-mqtt-user\n"
                                       "  password: yaml-mqtt-pass\n"
                                       "  discovery_prefix: ha\n"
                                       "  topic_prefix: 'null'\n"
                                       "  client_id: \"123\"\n"
                                       "backup:\n"
                                       "  parallel: false\n"
                                       "  concurrent_files: 64\n"
                                       "  verify_checksums: off\n"
                                       "  max_retries: 0\n"
                                       "  retry_delay: 0.1\n";

static void test_scrub_secrets(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(custom_yaml);
    char text[256];
    snprintf(text, sizeof(text),
             "HTTP 401 Invalid API key yaml-immich-key (yaml-immich-key); "
             "pass 'yaml unraid pass', mqtt yaml-mqtt-pass.");
    config_scrub_secrets(cfg, text);
    assert_string_equal(text, "HTTP 401 Invalid API key *** (***); pass '***', mqtt ***.");
    /* a user name stays: errors name the user that was refused */
    snprintf(text, sizeof(text), "access denied for %s", cfg->unraid.username);
    config_scrub_secrets(cfg, text);
    assert_non_null(strstr(text, cfg->unraid.username));
    /* a host is not a secret; a secret shorter than 4 bytes would match everywhere */
    free(cfg->service.web_ui_token);
    cfg->service.web_ui_token = strdup("abc");
    snprintf(text, sizeof(text), "tower.local abc");
    config_scrub_secrets(cfg, text);
    assert_string_equal(text, "tower.local abc");
    config_scrub_secrets(cfg, NULL);
    config_scrub_secrets(NULL, text);
    config_free(cfg);
}

static void test_values(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(custom_yaml);
    assert_string_equal(cfg->service.name, "My \"Snap\" box: #1");
    assert_string_equal(cfg->service.log_level, "debug");
    assert_int_equal(cfg->service.web_ui_port, 9090);
    assert_string_equal(cfg->service.web_ui_bind, "::1");
    assert_int_equal(cfg->service.n_web_ui_hosts, 2);
    assert_string_equal(cfg->service.web_ui_hosts[1], "snapsync.example.org");
    assert_false(cfg->sd_card.auto_detect);
    assert_int_equal(cfg->sd_card.n_mount_points, 2);
    assert_string_equal(cfg->sd_card.mount_points[1], "/media/with space");
    /* lower case, dot stripped, duplicates dropped */
    assert_int_equal(cfg->files.n_extensions, 4);
    assert_string_equal(cfg->files.extensions[0], "jpg");
    assert_string_equal(cfg->files.extensions[1], "cr2");
    assert_string_equal(cfg->files.extensions[2], "raf");
    assert_string_equal(cfg->files.extensions[3], "mp4");
    assert_true(cfg->files.min_size == 100000);
    assert_true(cfg->immich.enabled);
    assert_string_equal(cfg->immich.api_key, "yaml-immich-key");
    assert_int_equal(cfg->immich.timeout, 3600);
    assert_false(cfg->immich.organize_by_date);
    assert_int_equal(cfg->unraid.protocol, CONFIG_PROTOCOL_SMB);
    assert_string_equal(cfg->unraid.path, "cards/2024");
    assert_string_equal(cfg->unraid.password, "yaml unraid pass");
    assert_string_equal(cfg->unraid.mount_point, "");
    assert_true(cfg->mqtt.enabled);
    assert_string_equal(cfg->mqtt.broker, "192.168.1.2");
    assert_string_equal(cfg->mqtt.topic_prefix, "null");
    assert_string_equal(cfg->mqtt.client_id, "123");
    assert_false(cfg->backup.parallel);
    assert_int_equal(cfg->backup.concurrent_files, 64);
    assert_int_equal(cfg->backup.max_retries, 0);
    assert_true(cfg->backup.retry_delay == 0.1);

    assert_true(config_extension_wanted(cfg, "JPG"));
    assert_true(config_extension_wanted(cfg, "Cr2"));
    assert_true(config_extension_wanted(cfg, ".mp4"));
    assert_false(config_extension_wanted(cfg, "jpeg"));
    assert_false(config_extension_wanted(cfg, ""));
    assert_false(config_extension_wanted(cfg, NULL));
    assert_false(config_extension_wanted(NULL, "jpg"));
    config_free(cfg);

    /* Flow style, null strings, plain and quoted scalars, integers written as decimals. */
    cfg = parse_ok("{service: {name: 'x y', log_level: \"error\"}, unraid: {host: ~, path: null,"
                   " share: }, backup: {retry_delay: 2, max_retries: +7}, sd_card: {mount_points:"
                   " }}");
    assert_string_equal(cfg->service.name, "x y");
    assert_string_equal(cfg->service.log_level, "error");
    assert_string_equal(cfg->unraid.host, "");
    assert_true(cfg->backup.retry_delay == 2.0);
    assert_int_equal(cfg->backup.max_retries, 7);
    assert_int_equal(cfg->sd_card.n_mount_points, 0);
    assert_null(cfg->sd_card.mount_points[0]);
    config_free(cfg);
}

static void test_print_masked_round_trip(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(custom_yaml);
    char *out = print_config(cfg, false);
    static const char *const secrets[] = {"yaml-immich-key", "yaml-unraid-user", "unraid pass",
                                          "yaml-mqtt-user", "yaml-mqtt-pass"};
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        if (strstr(out, secrets[i]))
            fail_msg("config_print shows secret '%s':\n%s", secrets[i], out);
    assert_non_null(strstr(out, "  api_key: \"********\"\n"));
    assert_non_null(strstr(out, "  password: \"********\"\n"));
    assert_non_null(strstr(out, "  topic_prefix: \"null\"\n"));

    /* What is printed parses back to the same values (secrets now being the mask). */
    struct config *again = parse_ok(out);
    assert_config_equal(again, cfg, false);
    assert_string_equal(again->mqtt.password, "********");
    config_free(again);
    free(out);
    config_free(cfg);

    /* Unset secrets print as "". */
    assert_int_equal(config_default(&cfg, NULL), 0);
    out = print_config(cfg, false);
    assert_null(strstr(out, "********"));
    assert_non_null(strstr(out, "  api_key: \"\"\n"));
    again = parse_ok(out);
    assert_config_equal(again, cfg, true);
    config_free(again);
    free(out);
    config_free(cfg);
}

/* ---- errors ---- */

struct bad {
    const char *yaml;
    const char *msg;
};

static void check_bad(const struct bad *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        parse_fails(cases[i].yaml, cases[i].msg);
}

static void test_errors_structure(void **state)
{
    (void)state;
    static const struct bad cases[] = {
        {"service:\n  name: a\nimmich:\n  enabled: false\n  apikey: x\n",
         "config.yaml:5: immich.apikey: unknown key (did you mean api_key?)"},
        {"servic:\n  name: a\n", "config.yaml:1: servic: unknown section (did you mean service?)"},
        {"\n\nwebui:\n", "config.yaml:3: webui: unknown section"},
        {"service:\n  nmae: a\n", "config.yaml:2: service.nmae: unknown key (did you mean name?)"},
        {"service:\n  colour: blue\n", "config.yaml:2: service.colour: unknown key"},
        {"service:\n  Name: a\n", "config.yaml:2: service.Name: unknown key (did you mean name?)"},
        {"service:\n  \"bad\\x01key\": a\n", "config.yaml:2: service.bad\\x01key: unknown key"},
        {"mqtt:\n  port: 1\n  port: 2\n",
         "config.yaml:3: mqtt.port: duplicate key (first set on line 2)"},
        {"mqtt:\n  port: 1\nbackup:\nmqtt:\n",
         "config.yaml:4: mqtt: duplicate section (first on line 1)"},
        {"- service\n- mqtt\n",
         "config.yaml:1: expected a mapping of sections (service:, immich:, ...), got a list"},
        {"just text\n",
         "config.yaml:1: expected a mapping of sections (service:, immich:, ...), got a value"},
        {"service: 5\n", "config.yaml:1: service: expected a mapping of keys, got a value"},
        {"service:\n  - name\n", "config.yaml:2: service: expected a mapping of keys, got a list"},
        {"service:\n  ? [a]\n  : b\n", "config.yaml:2: service: expected a key name, got a list"},
        {"? {a: b}\n: c\n", "config.yaml:1: expected a section name, got a mapping"},
        {"service:\n  name: [a]\n", "config.yaml:2: service.name: expected a string, got a list"},
        {"service:\n  name:\n    first: a\n",
         "config.yaml:3: service.name: expected a string, got a mapping"},
        {"files:\n  extensions: jpg\n",
         "config.yaml:2: files.extensions: expected a list of strings, got 'jpg'"},
        {"files:\n  extensions:\n    - jpg\n    - [cr2]\n",
         "config.yaml:4: files.extensions: expected a string, got a list (nested too deep)"},
        {"service:\n  name: &n a\nmqtt:\n  broker: *n\n",
         "config.yaml:4: aliases (*name) are not supported"},
        {"service:\n  name: a\n---\nmqtt:\n", "config.yaml:3: only one YAML document is allowed"},
        {"service:\n  name: 'a\n", "config.yaml:3: invalid YAML: found unexpected end of stream "
                                   "(while scanning a quoted scalar on line 2)"},
        {"service:\n  name: a\n mqtt: b\n",
         "config.yaml:3: invalid YAML: did not find expected key (while parsing a block mapping "
         "on line 1)"},
        {"service: {name: a\n", "config.yaml:2: invalid YAML: did not find expected ',' or '}' "
                                "(while parsing a flow mapping on line 1)"},
        {"\tservice:\n", "config.yaml:1: invalid YAML: found character that cannot start any token "
                         "(while scanning for the next token on line 1)"},
    };
    check_bad(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_errors_values(void **state)
{
    (void)state;
    static const struct bad cases[] = {
        {"sd_card:\n  auto_detect: maybe\n",
         "config.yaml:2: sd_card.auto_detect: expected a boolean (true/false), got 'maybe'"},
        {"s3:\n  part_size: 4\n", "config.yaml:2: s3.part_size: 4 is out of range (5..512)"},
        {"s3:\n  addressing: vhost\n",
         "config.yaml:2: s3.addressing: expected one of path, virtual, got 'vhost'"},
        {"s3:\n  endpoint: s3.example.com\n", "config.yaml:2: s3.endpoint: expected an http:// or "
                                              "https:// address, got 's3.example.com'"},
        {"sd_card:\n  auto_detect: 1\n",
         "config.yaml:2: sd_card.auto_detect: expected a boolean (true/false), got '1'"},
        {"sd_card:\n  auto_detect:\n",
         "config.yaml:2: sd_card.auto_detect: expected a boolean (true/false), got an empty "
         "value"},
        {"service:\n  web_ui_port: 70000\n",
         "config.yaml:2: service.web_ui_port: 70000 is out of range (1..65535)"},
        {"service:\n  web_ui_port: 0\n",
         "config.yaml:2: service.web_ui_port: 0 is out of range (1..65535)"},
        {"service:\n  web_ui_port: -1\n",
         "config.yaml:2: service.web_ui_port: -1 is out of range (1..65535)"},
        {"service:\n  web_ui_port: 99999999999999999999999\n",
         "config.yaml:2: service.web_ui_port: 99999999999999999999999 is out of range (1..65535)"},
        {"service:\n  web_ui_port: 0x50\n",
         "config.yaml:2: service.web_ui_port: expected an integer, got '0x50'"},
        {"service:\n  web_ui_port: 80.5\n",
         "config.yaml:2: service.web_ui_port: expected an integer, got '80.5'"},
        {"service:\n  web_ui_port: 1_000\n",
         "config.yaml:2: service.web_ui_port: expected an integer, got '1_000'"},
        {"service:\n  web_ui_bind: 999.1.1.1\n",
         "config.yaml:2: service.web_ui_bind: expected an IPv4 or IPv6 address or localhost, got "
         "'999.1.1.1'"},
        {"service:\n  web_ui_bind: my-pi.lan\n",
         "config.yaml:2: service.web_ui_bind: expected an IPv4 or IPv6 address or localhost, got "
         "'my-pi.lan'"},
        {"service:\n  web_ui_hosts:\n    - pi.lan\n    - 'evil.example/x'\n",
         "config.yaml:4: service.web_ui_hosts: expected a host name such as pi.lan, got "
         "'evil.example/x'"},
        {"service:\n  web_ui_port: \" 80\"\n",
         "config.yaml:2: service.web_ui_port: expected an integer, got ' 80'"},
        {"service:\n  web_ui_port: \"80\\0\"\n",
         "config.yaml:2: service.web_ui_port: expected an integer, got a value with a NUL byte"},
        {"backup:\n  concurrent_files: 65\n",
         "config.yaml:2: backup.concurrent_files: 65 is out of range (1..64)"},
        {"backup:\n  max_retries: 101\n",
         "config.yaml:2: backup.max_retries: 101 is out of range (0..100)"},
        {"immich:\n  timeout: 0\n", "config.yaml:2: immich.timeout: 0 is out of range (1..3600)"},
        {"backup:\n  retry_delay: -0.5\n",
         "config.yaml:2: backup.retry_delay: -0.5 is out of range (0..3600)"},
        {"backup:\n  retry_delay: 3600.01\n",
         "config.yaml:2: backup.retry_delay: 3600.01 is out of range (0..3600)"},
        {"backup:\n  retry_delay: 1e999\n",
         "config.yaml:2: backup.retry_delay: 1e999 is out of range (0..3600)"},
        {"backup:\n  retry_delay: nan\n",
         "config.yaml:2: backup.retry_delay: expected a number, got 'nan'"},
        {"backup:\n  retry_delay: inf\n",
         "config.yaml:2: backup.retry_delay: expected a number, got 'inf'"},
        {"backup:\n  retry_delay: 0x1p3\n",
         "config.yaml:2: backup.retry_delay: expected a number, got '0x1p3'"},
        {"backup:\n  retry_delay: 5s\n",
         "config.yaml:2: backup.retry_delay: expected a number, got '5s'"},
        {"service:\n  log_level: verbose\n",
         "config.yaml:2: service.log_level: expected one of debug, info, warning, error, got "
         "'verbose'"},
        {"unraid:\n  protocol: ftp\n",
         "config.yaml:2: unraid.protocol: expected one of smb, nfs, local, got 'ftp'"},
        {"files:\n  min_size: 1.5MB\n",
         "config.yaml:2: files.min_size: expected a size such as 1024, 100KB or 1 MiB, got "
         "'1.5MB'"},
        {"files:\n  min_size: 10 XB\n",
         "config.yaml:2: files.min_size: expected a size such as 1024, 100KB or 1 MiB, got "
         "'10 XB'"},
        {"files:\n  min_size: -1\n",
         "config.yaml:2: files.min_size: expected a size such as 1024, 100KB or 1 MiB, got '-1'"},
        {"files:\n  min_size: 2 TiB\n",
         "config.yaml:2: files.min_size: 2 TiB is out of range (0..1099511627776 bytes)"},
        {"files:\n  min_size: 18446744073709551615 KB\n",
         "config.yaml:2: files.min_size: 18446744073709551615 KB is out of range "
         "(0..1099511627776 bytes)"},
        {"files:\n  min_size: 99999999999999999999999\n",
         "config.yaml:2: files.min_size: 99999999999999999999999 is out of range "
         "(0..1099511627776 bytes)"},
        {"service:\n  name: \"\"\n", "config.yaml:2: service.name: must not be empty"},
        {"service:\n  database_path:\n", "config.yaml:2: service.database_path: must not be empty"},
        {"service:\n  name: \"a\\0b\"\n", "config.yaml:2: service.name: value contains a NUL byte"},
        {"service:\n  name: \"a\\tb\"\n",
         "config.yaml:2: service.name: value contains a control character"},
        {"service:\n  name: \"a\\Lb\"\n",
         "config.yaml:2: service.name: value contains a line separator"},
        {"service:\n  name: \"a\\x85b\"\n",
         "config.yaml:2: service.name: value contains a control character"},
        {"immich:\n  api_key: \"a\\nb\"\n",
         "config.yaml:2: immich.api_key: value contains a control character"},
        {"immich:\n  url: ftp://photos\n",
         "config.yaml:2: immich.url: expected an http:// or https:// address, got 'ftp://photos'"},
        {"immich:\n  url: http://\n",
         "config.yaml:2: immich.url: expected an http:// or https:// address, got 'http://'"},
        {"files:\n  extensions: []\n",
         "config.yaml:2: files.extensions: must list at least one extension"},
        {"files:\n  extensions:\n", "config.yaml:2: files.extensions: must list at least one "
                                    "extension"},
        {"files:\n  extensions:\n    - jpg\n    - 'a/b'\n",
         "config.yaml:4: files.extensions: expected a file extension such as jpg or .CR2, got "
         "'a/b'"},
        {"files:\n  extensions: [jpg, .]\n",
         "config.yaml:2: files.extensions: expected a file extension such as jpg or .CR2, got "
         "'.'"},
        {"files:\n  extensions: [abcdefghijklmnopq]\n",
         "config.yaml:2: files.extensions: item too long (17 bytes, at most 16)"},
        {"sd_card:\n  mount_points:\n    - /media\n    - media\n",
         "config.yaml:4: sd_card.mount_points: expected an absolute path, got 'media'"},
    };
    check_bad(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_errors_validation(void **state)
{
    (void)state;
    static const struct bad cases[] = {
        {"immich:\n  url: https://x\n  api_key: k\n  enabled: true\n",
         NULL}, /* placeholder replaced below: valid */
        {"service:\n  name: a\nimmich:\n  timeout: 5\n  enabled: true\n  api_key: k\n",
         "config.yaml:5: immich.url: required when immich is enabled"},
        {"immich:\n  enabled: true\n  url: https://photos\n",
         "config.yaml:2: immich.api_key: required when immich is enabled (set IMMICH_API_KEY "
         "in .env)"},
        {"unraid:\n  enabled: true\n  protocol: smb\n  share: photos\n",
         "config.yaml:2: unraid.host: required when unraid is enabled with protocol smb"},
        {"unraid:\n  protocol: smb\n  host: tower\n  enabled: true\n",
         "config.yaml:4: unraid.share: required when unraid is enabled with protocol smb"},
        {"unraid:\n  enabled: true\n  protocol: nfs\n",
         "config.yaml:2: unraid.mount_point: required when unraid is enabled with protocol nfs "
         "or local"},
        {"# comment\nunraid:\n  enabled: true\n",
         "config.yaml:3: unraid.mount_point: required when unraid is enabled with protocol nfs "
         "or local"},
        {"mqtt:\n  enabled: true\n  broker: \"\"\n",
         "config.yaml:2: mqtt.broker: required when mqtt is enabled"},
        {"mqtt:\n\n  enabled: true\n  client_id: ''\n",
         "config.yaml:3: mqtt.client_id: required when mqtt is enabled"},
        {"s3:\n  enabled: true\n  endpoint: http://127.0.0.1:9000\n",
         "config.yaml:2: s3.bucket: required when s3 is enabled"},
        {"s3:\n  enabled: true\n  endpoint: http://127.0.0.1:9000\n  bucket: photos\n",
         "config.yaml:2: s3.access_key_id: required when s3 is enabled (set S3_ACCESS_KEY_ID in "
         ".env)"},
        {"s3:\n  enabled: true\n  endpoint: http://h\n  bucket: b\n  access_key_id: AKIA1\n",
         "config.yaml:2: s3.secret_access_key: required when s3 is enabled (set "
         "S3_SECRET_ACCESS_KEY in .env)"},
        {"rclone:\n  enabled: true\n", "config.yaml:2: rclone.remote: required when rclone is "
                                       "enabled"},
    };
    struct config *cfg = parse_ok(cases[0].yaml);
    config_free(cfg);
    check_bad(cases + 1, sizeof(cases) / sizeof(cases[0]) - 1);

    /* Disabled sections may stay incomplete; an smb share needs no mount point. */
    cfg = parse_ok("immich:\n  enabled: false\nunraid:\n  enabled: true\n  protocol: smb\n"
                   "  host: h\n  share: s\nmqtt:\n  broker: ''\n");
    config_free(cfg);
    cfg = parse_ok("unraid:\n  enabled: true\n  protocol: local\n  mount_point: /srv/photos\n");
    assert_string_equal(cfg->unraid.mount_point, "/srv/photos");
    config_free(cfg);

    /* rclone: the remote as written, its options as a list, the defaults */
    cfg = parse_ok("rclone:\n  enabled: true\n  remote: gdrive:Camera backups\n"
                   "  extra_args: [--drive-chunk-size=64M, --fast-list]\n");
    assert_true(cfg->rclone.enabled);
    assert_string_equal(cfg->rclone.remote, "gdrive:Camera backups");
    assert_int_equal(cfg->rclone.n_extra_args, 2);
    assert_string_equal(cfg->rclone.extra_args[0], "--drive-chunk-size=64M");
    assert_string_equal(cfg->rclone.extra_args[1], "--fast-list");
    assert_true(cfg->rclone.organize_by_date);
    assert_int_equal(cfg->rclone.timeout, 60);
    assert_string_equal(cfg->rclone.config_file, "");
    config_free(cfg);
}

/* backup.folder_pattern / file_pattern, the sections' own, organize_by_date false, and the
 * errors at load with file:line and the pattern's column. */
static void test_patterns(void **state)
{
    (void)state;
    const char *folder, *file;
    struct config *cfg = parse_ok("");
    assert_string_equal(cfg->backup.folder_pattern, "{year}/{month}/{day}");
    assert_string_equal(cfg->backup.file_pattern, "{name}{ext}");
    assert_string_equal(cfg->immich.album_pattern, "");
    config_dest_patterns(cfg, "local", &folder, &file);
    assert_string_equal(folder, "{year}/{month}/{day}");
    assert_string_equal(file, "{name}{ext}");
    config_free(cfg);

    cfg = parse_ok("backup:\n  folder_pattern: \"{year}/{model|nocamera}\"\n"
                   "  file_pattern: \"{date}_{seq:4}{EXT}\"\n"
                   "unraid:\n  organize_by_date: false\n"
                   "local:\n  organize_by_date: false\n  folder_pattern: \"{card}\"\n"
                   "rclone:\n  file_pattern: \"{md5:8}{ext}\"\n"
                   "immich:\n  album_pattern: \"{year} {card}\"\n");
    config_dest_patterns(cfg, "unraid", &folder, &file); /* organize_by_date false: none */
    assert_string_equal(folder, "");
    assert_string_equal(file, "{date}_{seq:4}{EXT}");
    config_dest_patterns(cfg, "local", &folder, &file); /* its own pattern wins */
    assert_string_equal(folder, "{card}");
    config_dest_patterns(cfg, "s3", &folder, &file);
    assert_string_equal(folder, "{year}/{model|nocamera}");
    config_dest_patterns(cfg, "rclone", &folder, &file);
    assert_string_equal(file, "{md5:8}{ext}");
    assert_string_equal(cfg->immich.album_pattern, "{year} {card}");
    config_free(cfg);

    cfg = parse_ok("backup:\n  folder_pattern: \"\"\n");
    config_dest_patterns(cfg, "local", &folder, &file);
    assert_string_equal(folder, "");
    config_free(cfg);

    parse_fails("backup:\n  folder_pattern: \"{year}/{mnth}\"\n",
                "config.yaml:2: backup.folder_pattern: pattern '{year}/{mnth}': column 8: unknown "
                "token '{mnth}'");
    parse_fails("local:\n  enabled: false\n  folder_pattern: \"{year\"\n",
                "config.yaml:3: local.folder_pattern: pattern '{year': column 1: '{' without '}'");
    parse_fails("unraid:\n  file_pattern: \"{seq:x}\"\n",
                "config.yaml:2: unraid.file_pattern: pattern '{seq:x}': column 5: bad width in "
                "'{seq:x}' (a number from 1 to 9)");
    parse_fails("backup:\n  folder_pattern: \"{year}/../x\"\n",
                "config.yaml:2: backup.folder_pattern: pattern '{year}/../x': column 8: '..' is "
                "not allowed (it could name a parent folder)");
    parse_fails("backup:\n  folder_pattern: /srv/{year}\n",
                "config.yaml:2: backup.folder_pattern: pattern '/srv/{year}': column 1: absolute "
                "path (a folder pattern is relative to the destination)");
    parse_fails("backup:\n  file_pattern: \"\"\n",
                "config.yaml:2: backup.file_pattern: must not be empty");
    parse_fails("backup:\n  file_pattern: \"{year}/{name}\"\n",
                "config.yaml:2: backup.file_pattern: pattern '{year}/{name}': column 7: a file "
                "pattern cannot hold '/' (folders belong in folder_pattern)");
    parse_fails("immich:\n  album_pattern: \"{md5}\"\n",
                "config.yaml:2: immich.album_pattern: pattern '{md5}': {md5} cannot name an "
                "album (it is chosen before the content is read)");
    /* S3 picks a key before the content is read: {md5} is refused there, from its own key or
     * from backup's */
    const char *s3 = "s3:\n  enabled: true\n  endpoint: http://minio:9000\n  bucket: b\n"
                     "  access_key_id: k\n  secret_access_key: s\n";
    char yaml[512];
    snprintf(yaml, sizeof(yaml), "%s  file_pattern: \"{name}_{md5:8}{ext}\"\n", s3);
    parse_fails(yaml, "config.yaml:7: s3.file_pattern: {md5} cannot be used for s3: an object's "
                      "key is chosen before its content is read (a large file's multipart upload "
                      "starts first); set s3.file_pattern without it");
    snprintf(yaml, sizeof(yaml), "backup:\n  folder_pattern: \"{md5:2}\"\n%s", s3);
    parse_fails(yaml, "config.yaml:2: backup.folder_pattern: {md5} cannot be used for s3: an "
                      "object's key is chosen before its content is read (a large file's "
                      "multipart upload starts first); set s3.folder_pattern without it");
    snprintf(yaml, sizeof(yaml),
             "backup:\n  folder_pattern: \"{md5:2}\"\n%s  folder_pattern: \"{year}\"\n", s3);
    config_free(parse_ok(yaml)); /* s3's own pattern overrides backup's */
}

/* unraid and local: file_mode, dir_mode, owner, group. Modes are octal; owner and group are a
 * name (resolved at load) or a number; with protocol smb they are refused unless left as the
 * defaults, because the server decides. */
static void test_copy_permissions(void **state)
{
    (void)state;
    struct config *cfg = parse_ok("");
    assert_int_equal(cfg->unraid.perms.file_mode, 0644);
    assert_int_equal(cfg->unraid.perms.dir_mode, 0755);
    assert_string_equal(cfg->unraid.perms.owner, "");
    assert_int_equal(cfg->unraid.perms.uid, -1);
    assert_int_equal(cfg->unraid.perms.gid, -1);
    assert_int_equal(cfg->local.perms.file_mode, 0644);
    assert_int_equal(cfg->local.perms.gid, -1);
    config_free(cfg);

    /* root and its group 0 exist everywhere; "nobody" is in every Debian base system */
    cfg = parse_ok("unraid:\n  file_mode: 0640\n  dir_mode: \"2775\"\n  owner: nobody\n"
                   "  group: 0\nlocal:\n  file_mode: 600\n  dir_mode: 0700\n  owner: 1234\n"
                   "  group: root\n");
    assert_int_equal(cfg->unraid.perms.file_mode, 0640);
    assert_int_equal(cfg->unraid.perms.dir_mode, 02775);
    assert_string_equal(cfg->unraid.perms.owner, "nobody");
    assert_int_equal(cfg->unraid.perms.uid, 65534);
    assert_string_equal(cfg->unraid.perms.group, "0");
    assert_int_equal(cfg->unraid.perms.gid, 0);
    assert_int_equal(cfg->local.perms.file_mode, 0600);
    assert_int_equal(cfg->local.perms.dir_mode, 0700);
    assert_int_equal(cfg->local.perms.uid, 1234);
    assert_int_equal(cfg->local.perms.gid, 0);
    /* printed in octal and as written, and parsed back the same */
    char *out = print_config(cfg, false);
    assert_non_null(strstr(out, "  file_mode: \"0640\"\n  dir_mode: \"2775\"\n  owner: nobody\n"
                                "  group: \"0\"\n"));
    struct config *back = parse_ok(out);
    assert_int_equal(back->unraid.perms.dir_mode, 02775);
    assert_int_equal(back->local.perms.file_mode, 0600);
    assert_int_equal(back->unraid.perms.uid, 65534);
    config_free(back);
    free(out);
    config_free(cfg);

    /* the template's defaults are fine with smb; other values are refused at their line */
    cfg = parse_ok("unraid:\n  enabled: true\n  protocol: smb\n  host: h\n  share: s\n"
                   "  file_mode: \"0644\"\n  dir_mode: 0755\n  owner: \"\"\n  group:\n");
    config_free(cfg);

    static const struct bad cases[] = {
        {"unraid:\n  file_mode: rw-r--r--\n",
         "config.yaml:2: unraid.file_mode: expected an octal mode such as \"0644\", got "
         "'rw-r--r--'"},
        {"local:\n  file_mode: 0648\n",
         "config.yaml:2: local.file_mode: expected an octal mode such as \"0644\", got '0648'"},
        {"local:\n  file_mode: 0x1a4\n",
         "config.yaml:2: local.file_mode: expected an octal mode such as \"0644\", got '0x1a4'"},
        {"local:\n  file_mode:\n",
         "config.yaml:2: local.file_mode: expected an octal mode such as \"0644\", got an empty "
         "value"},
        {"local:\n  file_mode: -644\n",
         "config.yaml:2: local.file_mode: expected an octal mode such as \"0644\", got '-644'"},
        {"local:\n  file_mode: 4755\n",
         "config.yaml:2: local.file_mode: '4755' is not allowed: at most 0777, and at least 0400 "
         "(SnapSync reads its copies back and writes into its folders)"},
        {"local:\n  file_mode: 0044\n",
         "config.yaml:2: local.file_mode: '0044' is not allowed: at most 0777, and at least 0400 "
         "(SnapSync reads its copies back and writes into its folders)"},
        {"unraid:\n\n  dir_mode: 0555\n",
         "config.yaml:3: unraid.dir_mode: '0555' is not allowed: at most 7777, and at least 0700 "
         "(SnapSync reads its copies back and writes into its folders)"},
        {"unraid:\n  dir_mode: 10755\n",
         "config.yaml:2: unraid.dir_mode: '10755' is not allowed: at most 7777, and at least 0700 "
         "(SnapSync reads its copies back and writes into its folders)"},
        {"unraid:\n  owner: snapsync-no-such-user\n",
         "config.yaml:2: unraid.owner: unknown user 'snapsync-no-such-user' (not in /etc/passwd "
         "on this system)"},
        {"local:\n  group: snapsync-no-such-group\n",
         "config.yaml:2: local.group: unknown group 'snapsync-no-such-group' (not in /etc/group "
         "on this system)"},
        {"local:\n  owner: 4294967295\n",
         "config.yaml:2: local.owner: unknown user '4294967295' (not in /etc/passwd on this "
         "system)"},
        {"local:\n  owner: \"a\\tb\"\n",
         "config.yaml:2: local.owner: value contains a control character"},
        {"unraid:\n  enabled: true\n  protocol: smb\n  host: h\n  share: s\n  owner: nobody\n",
         "config.yaml:6: unraid.owner: cannot be applied with protocol smb: the SMB server "
         "decides (force user, create mask in its share settings); remove it"},
        {"unraid:\n  enabled: true\n  protocol: smb\n  host: h\n  share: s\n  file_mode: 0664\n",
         "config.yaml:6: unraid.file_mode: cannot be applied with protocol smb: the SMB server "
         "decides (force user, create mask in its share settings); remove it"},
    };
    check_bad(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_sizes(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t bytes;
    } cases[] = {
        {"0", 0},           {"1024", 1024},       {"\"4096\"", 4096},    {"100KB", 100000},
        {"100kb", 100000},  {"1 MiB", 1048576},   {"1MiB", 1048576},     {"2M", 2097152},
        {"2 m", 2097152},   {"3K", 3072},         {"3 KiB", 3072},       {"5 MB", 5000000},
        {"1G", 1073741824}, {"2 GB", 2000000000}, {"1 GiB", 1073741824}, {"1 TiB", 1099511627776},
        {"7 B", 7},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "files:\n  min_size: %s\n", cases[i].text);
        struct config *cfg = parse_ok(yaml);
        if (cfg->files.min_size != cases[i].bytes)
            fail_msg("'%s' gave %llu, expected %llu", cases[i].text,
                     (unsigned long long)cfg->files.min_size, (unsigned long long)cases[i].bytes);
        config_free(cfg);
    }
}

static void test_numbers(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        double value;
    } cases[] = {{"0", 0},       {"5", 5},     {"2.5", 2.5},  {".5", 0.5}, {"1e3", 1000},
                 {"3600", 3600}, {"0.000", 0}, {"1e-400", 0}, {"-0", 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "backup:\n  retry_delay: %s\n", cases[i].text);
        struct config *cfg = parse_ok(yaml);
        assert_true(cfg->backup.retry_delay == cases[i].value);
        config_free(cfg);
    }
    struct config *cfg = parse_ok("backup:\n  max_retries: 0100\n");
    assert_int_equal(cfg->backup.max_retries, 100);
    config_free(cfg);
    cfg = parse_ok("backup:\n  max_retries: \"42\"\n");
    assert_int_equal(cfg->backup.max_retries, 42);
    config_free(cfg);
}

/* ---- hostile input ---- */

static void test_hostile(void **state)
{
    (void)state;
    size_t n = CONFIG_FILE_MAX;
    char *buf = malloc(n + 2);
    assert_non_null(buf);

    /* Deep nesting, at the top and inside a list. */
    memset(buf, '[', n);
    parse_fails_len(buf, n, -EINVAL,
                    "config.yaml:1: expected a mapping of sections (service:, immich:, ...), got "
                    "a list");
    memcpy(buf, "files:\n  extensions: [", 22);
    parse_fails_len(buf, n, -EINVAL,
                    "config.yaml:2: files.extensions: expected a string, got a list (nested too "
                    "deep)");
    memset(buf, '{', n);
    parse_fails_len(buf, n, -EINVAL, NULL);
    for (size_t i = 0; i + 2 <= n; i += 2)
        memcpy(buf + i, "- ", 2);
    parse_fails_len(buf, n, -EINVAL, NULL);

    /* One byte over the limit. */
    memset(buf, '#', n + 1);
    parse_fails_len(buf, n + 1, -EFBIG, NULL);

    /* A huge scalar, as value and as key. */
    int len = snprintf(buf, n, "service:\n  name: ");
    memset(buf + len, 'a', n - (size_t)len);
    parse_fails_len(buf, n, -EINVAL,
                    "config.yaml:2: service.name: value too long (1048559 bytes, at most 4096)");
    memset(buf, 'k', n - 3);
    memcpy(buf + n - 3, ": 1", 3);
    parse_fails_len(buf, n, -EINVAL, NULL);

    /* Too many list items. */
    len = snprintf(buf, n, "sd_card:\n  mount_points:\n");
    for (int i = 0; i < 300; i++)
        len += snprintf(buf + len, n - (size_t)len, "    - /m%d\n", i);
    parse_fails_len(buf, (size_t)len, -EINVAL,
                    "config.yaml:259: sd_card.mount_points: too many items (at most 256)");

    /* A billion laughs stops at the first alias. */
    const char *laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                         "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                         "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n";
    parse_fails(laughs, "config.yaml:1: a: unknown section");
    parse_fails("service:\n  name: &a x\n  log_level: *a\n",
                "config.yaml:3: aliases (*name) are not supported");
    parse_fails("service: &s\n  name: x\nmqtt: *s\n",
                "config.yaml:3: aliases (*name) are not supported");

    /* NUL bytes, invalid UTF-8, binary garbage. */
    static const char nul[] = "service:\n  name: a\0b\n";
    parse_fails_len(nul, sizeof(nul) - 1, -EINVAL,
                    "config.yaml:2: invalid YAML: control characters are not allowed");
    parse_fails("service:\n  name: \xff\xfe\n",
                "config.yaml:2: invalid YAML: invalid leading UTF-8 octet");
    uint32_t seed = 12345;
    for (int round = 0; round < 200; round++) {
        size_t m = 1 + (size_t)(round * 37 % 4000);
        for (size_t i = 0; i < m; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (char)(seed >> 16);
        }
        struct config *cfg = NULL;
        struct error err = {0};
        int r = config_parse_buffer("garbage", buf, m, &cfg, &err);
        if (r == 0)
            config_free(cfg);
        else
            assert_true(r == -EINVAL || r == -ENOMEM);
    }
    free(buf);
}

/* ---- .env ---- */

static void test_dotenv_syntax(void **state)
{
    (void)state;
    struct config *cfg = NULL;
    struct error err = {0};
    assert_int_equal(config_default(&cfg, NULL), 0);
    const char *env = "# secrets\n"
                      "\n"
                      "IMMICH_API_KEY=plain-key   # comment\n"
                      "export UNRAID_USERNAME = 'single # not a comment'\n"
                      "  UNRAID_PASSWORD=\"dq \\\"quoted\\\" \\\\ pass\"  \r\n"
                      "MQTT_USERNAME=pa#ss\n"
                      "OTHER_THING=ignored\n"
                      "lower_case=also ignored\n"
                      "MQTT_PASSWORD=first\n"
                      "MQTT_PASSWORD=second";
    assert_int_equal(config_apply_dotenv(cfg, ".env", env, strlen(env), &err), 0);
    assert_string_equal(cfg->immich.api_key, "plain-key");
    assert_string_equal(cfg->unraid.username, "single # not a comment");
    assert_string_equal(cfg->unraid.password, "dq \"quoted\" \\ pass");
    assert_string_equal(cfg->mqtt.username, "pa#ss");
    assert_string_equal(cfg->mqtt.password, "second");

    /* Empty values do not erase. */
    const char *empty = "IMMICH_API_KEY=\nexport MQTT_PASSWORD=''\n";
    assert_int_equal(config_apply_dotenv(cfg, ".env", empty, strlen(empty), &err), 0);
    assert_string_equal(cfg->immich.api_key, "plain-key");
    assert_string_equal(cfg->mqtt.password, "second");

    /* Malformed lines: error with the line, never the value; nothing applied. */
    static const struct bad cases[] = {
        {"IMMICH_API_KEY=new\njust words\n", ".env:2: expected KEY=value"},
        {"\n\n=value\n", ".env:3: expected KEY=value"},
        {"1KEY=value\n", ".env:1: expected KEY=value"},
        {"MQTT-PASSWORD=x\n", ".env:1: expected KEY=value"},
        {"export\n", ".env:1: expected KEY=value"},
        {"MQTT_PASSWORD='secret-value\n", ".env:1: MQTT_PASSWORD: unterminated single quote"},
        {"# c\nMQTT_PASSWORD=\"secret-value\n", ".env:2: MQTT_PASSWORD: unterminated double quote"},
        {"MQTT_PASSWORD='secret' value\n",
         ".env:1: MQTT_PASSWORD: unexpected text after the closing quote"},
        {"MQTT_PASSWORD=secret\x01value\n",
         ".env:1: MQTT_PASSWORD: value contains a control character"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int r = config_apply_dotenv(cfg, ".env", cases[i].yaml, strlen(cases[i].yaml), &err);
        assert_int_equal(r, -EINVAL);
        assert_string_equal(err.msg, cases[i].msg);
        assert_null(strstr(err.msg, "secret"));
    }
    static const char nul[] = "A=1\nMQTT_PASSWORD=se\0cret\n";
    assert_int_equal(config_apply_dotenv(cfg, ".env", nul, sizeof(nul) - 1, &err), -EINVAL);
    assert_string_equal(err.msg, ".env:2: NUL byte");
    assert_string_equal(cfg->immich.api_key, "plain-key");
    assert_string_equal(cfg->mqtt.password, "second");

    char *big = malloc(8192);
    assert_non_null(big);
    memcpy(big, "MQTT_PASSWORD=", 14);
    memset(big + 14, 'x', 8000);
    assert_int_equal(config_apply_dotenv(cfg, ".env", big, 8014, &err), -EINVAL);
    assert_string_equal(err.msg,
                        ".env:1: MQTT_PASSWORD: value too long (8000 bytes, at most 4096)");
    free(big);
    config_free(cfg);
}

static const char *const secret_yaml = "immich:\n"
                                       "  enabled: true\n"
                                       "  url: http://immich:2283\n"
                                       "  api_key: yaml-key\n"
                                       "mqtt:\n"
                                       "  username: yaml-mqtt-user\n";

static void test_precedence(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX];
    struct config *cfg = NULL;
    struct error err = {0};
    new_dir(dir, sizeof(dir));
    write_str(dir, "config.yaml", secret_yaml, 0600, path, sizeof(path));

    /* YAML alone. */
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_string_equal(cfg->immich.api_key, "yaml-key");
    assert_string_equal(cfg->mqtt.username, "yaml-mqtt-user");
    config_free(cfg);

    /* .env beats YAML. */
    write_str(dir, ".env", "IMMICH_API_KEY=dotenv-key\nMQTT_PASSWORD=dotenv-pass\n", 0600, NULL, 0);
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_string_equal(cfg->immich.api_key, "dotenv-key");
    assert_string_equal(cfg->mqtt.username, "yaml-mqtt-user");
    assert_string_equal(cfg->mqtt.password, "dotenv-pass");
    config_free(cfg);

    /* The environment beats both; an empty variable counts as unset. */
    setenv("IMMICH_API_KEY", "env-key", 1);
    setenv("MQTT_PASSWORD", "", 1);
    setenv("UNRAID_USERNAME", "env-user", 1);
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_string_equal(cfg->immich.api_key, "env-key");
    assert_string_equal(cfg->mqtt.password, "dotenv-pass");
    assert_string_equal(cfg->unraid.username, "env-user");
    char *out = print_config(cfg, false);
    assert_null(strstr(out, "env-key"));
    assert_null(strstr(out, "dotenv-pass"));
    assert_null(strstr(out, "env-user"));
    free(out);
    config_free(cfg);

    /* Validation runs after the overrides: the key may come only from .env or the environment. */
    write_str(dir, "config.yaml", "immich:\n  enabled: true\n  url: https://immich\n", 0600, path,
              sizeof(path));
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_string_equal(cfg->immich.api_key, "env-key");
    config_free(cfg);
    unsetenv("IMMICH_API_KEY");
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_string_equal(cfg->immich.api_key, "dotenv-key");
    config_free(cfg);
    write_str(dir, ".env", "# nothing\n", 0600, NULL, 0);
    cfg = NULL;
    assert_int_equal(config_load(path, &cfg, &err), -EINVAL);
    assert_null(cfg);
    char expect[PATH_MAX + 128];
    snprintf(expect, sizeof(expect),
             "%s:2: immich.api_key: required when immich is enabled (set IMMICH_API_KEY in .env)",
             path);
    assert_string_equal(err.msg, expect);

    /* Bad values from the environment are errors that do not quote them. */
    setenv("MQTT_USERNAME", "bad\001secret", 1);
    assert_int_equal(config_load(path, &cfg, &err), -EINVAL);
    assert_string_equal(err.msg, "environment: MQTT_USERNAME: value contains a control character");
    unsetenv("MQTT_USERNAME");

    /* A malformed .env fails the load with its path and line. */
    write_str(dir, ".env", "IMMICH_API_KEY=x\nnonsense\n", 0600, NULL, 0);
    assert_int_equal(config_load(path, &cfg, &err), -EINVAL);
    snprintf(expect, sizeof(expect), "%s/.env:2: expected KEY=value", dir);
    assert_string_equal(err.msg, expect);
}

static void test_permissions(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX], envpath[PATH_MAX];
    struct config *cfg = NULL;
    struct error err = {0};
    new_dir(dir, sizeof(dir));

    /* A secret in a file others can read. */
    write_str(dir, "config.yaml", secret_yaml, 0644, path, sizeof(path));
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_int_equal(cfg->n_warnings, 1);
    assert_true(has_warning(cfg, "is readable by other users; chmod 600 it"));
    assert_true(has_warning(cfg, path));
    assert_null(cfg->warnings[1]);
    assert_null(strstr(cfg->warnings[0], "yaml-key"));
    config_free(cfg);

    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_int_equal(cfg->n_warnings, 0);
    config_free(cfg);
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_int_equal(cfg->n_warnings, 1);
    config_free(cfg);

    /* No secret in the file: no warning however readable. A secret from .env only warns about
     * the .env. */
    write_str(dir, "config.yaml", "immich:\n  enabled: true\n  url: https://i\n", 0644, path,
              sizeof(path));
    write_str(dir, ".env", "IMMICH_API_KEY=k\n", 0600, envpath, sizeof(envpath));
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_int_equal(cfg->n_warnings, 0);
    config_free(cfg);
    assert_int_equal(chmod(envpath, 0644), 0);
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_int_equal(cfg->n_warnings, 1);
    char expect[PATH_MAX + 64];
    snprintf(expect, sizeof(expect), "'%s' is readable by other users; chmod 600 it", envpath);
    assert_string_equal(cfg->warnings[0], expect);
    config_free(cfg);
    assert_int_equal(chmod(envpath, 0604), 0);
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_int_equal(cfg->n_warnings, 1);
    config_free(cfg);
}

/* ---- files and the search order ---- */

static void test_paths(void **state)
{
    (void)state;
    char dir[PATH_MAX], sub[PATH_MAX], path[PATH_MAX], expect[PATH_MAX + 64];
    struct config *cfg = NULL;
    struct error err = {0};
    new_dir(dir, sizeof(dir));
    snprintf(sub, sizeof(sub), "%s/etc", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    write_str(sub, "config.yaml",
              "service:\n  database_path: data/../snapsync.db\nunraid:\n  enabled: true\n"
              "  mount_point: ./backup\n",
              0600, path, sizeof(path));
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_string_equal(cfg->path, path);
    snprintf(expect, sizeof(expect), "%s/data/../snapsync.db", sub);
    assert_string_equal(cfg->service.database_path, expect);
    snprintf(expect, sizeof(expect), "%s/backup", sub);
    assert_string_equal(cfg->unraid.mount_point, expect);
    config_free(cfg);

    /* Absolute paths stay; a relative config path is made absolute. */
    write_str(sub, "config.yaml",
              "service:\n  database_path: /var/lib/s.db\nunraid:\n  enabled: true\n"
              "  mount_point: /srv/b\n",
              0600, NULL, 0);
    assert_int_equal(chdir(dir), 0);
    assert_int_equal(config_load("./etc//config.yaml", &cfg, &err), 0);
    assert_string_equal(cfg->path, path);
    assert_string_equal(cfg->service.database_path, "/var/lib/s.db");
    assert_string_equal(cfg->unraid.mount_point, "/srv/b");
    config_free(cfg);

    /* Errors from a file name it. */
    write_str(sub, "config.yaml", "\nmqtt:\n  port: many\n", 0600, NULL, 0);
    assert_int_equal(config_load("etc/config.yaml", &cfg, &err), -EINVAL);
    assert_string_equal(err.msg, "etc/config.yaml:3: mqtt.port: expected an integer, got 'many'");

    /* Too big, not a regular file. */
    char *big = malloc(CONFIG_FILE_MAX + 1);
    assert_non_null(big);
    memset(big, '#', CONFIG_FILE_MAX + 1);
    write_file(sub, "big.yaml", big, CONFIG_FILE_MAX + 1, 0600, path, sizeof(path));
    free(big);
    assert_int_equal(config_load(path, &cfg, &err), -EFBIG);
    assert_non_null(strstr(err.msg, "is larger than 1048576 bytes"));
    assert_int_equal(config_load(sub, &cfg, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "is not a regular file"));
}

static void test_search_order(void **state)
{
    (void)state;
    char dir[PATH_MAX], a[PATH_MAX], b[PATH_MAX], cwd_cfg[PATH_MAX], missing[PATH_MAX];
    struct config *cfg = NULL;
    struct error err = {0};
    new_dir(dir, sizeof(dir));
    write_str(dir, "a.yaml", "service:\n  name: from-a\n", 0600, a, sizeof(a));
    write_str(dir, "b.yaml", "service:\n  name: from-b\n", 0600, b, sizeof(b));
    write_str(dir, "config.yaml", "service:\n  name: from-cwd\n", 0600, cwd_cfg, sizeof(cwd_cfg));
    snprintf(missing, sizeof(missing), "%s/nope.yaml", dir);
    assert_int_equal(chdir(dir), 0);

    /* An explicit path wins, even over $SNAPSYNC_CONFIG and ./config.yaml. */
    setenv("SNAPSYNC_CONFIG", b, 1);
    assert_int_equal(config_load(a, &cfg, &err), 0);
    assert_string_equal(cfg->service.name, "from-a");
    config_free(cfg);

    /* A missing explicit file is an error, not a fallback. */
    cfg = NULL;
    assert_int_equal(config_load(missing, &cfg, &err), -ENOENT);
    assert_null(cfg);
    char expect[PATH_MAX + 64];
    snprintf(expect, sizeof(expect), "config file '%s' not found", missing);
    assert_string_equal(err.msg, expect);

    /* Then $SNAPSYNC_CONFIG, also strict. */
    assert_int_equal(config_load(NULL, &cfg, &err), 0);
    assert_string_equal(cfg->service.name, "from-b");
    assert_string_equal(cfg->path, b);
    config_free(cfg);
    setenv("SNAPSYNC_CONFIG", missing, 1);
    assert_int_equal(config_load(NULL, &cfg, &err), -ENOENT);
    snprintf(expect, sizeof(expect), "config file '%s' (from $SNAPSYNC_CONFIG) not found", missing);
    assert_string_equal(err.msg, expect);

    /* Then ./config.yaml (an empty $SNAPSYNC_CONFIG counts as unset). */
    setenv("SNAPSYNC_CONFIG", "", 1);
    assert_int_equal(config_load(NULL, &cfg, &err), 0);
    assert_string_equal(cfg->service.name, "from-cwd");
    assert_string_equal(cfg->path, cwd_cfg);
    config_free(cfg);

    /* Then /etc/snapsync/config.yaml, else the embedded default with ./.env. */
    assert_int_equal(unlink(cwd_cfg), 0);
    write_str(dir, ".env", "MQTT_PASSWORD=cwd-dotenv\n", 0600, NULL, 0);
    assert_int_equal(config_load(NULL, &cfg, &err), 0);
    if (access("/etc/snapsync/config.yaml", F_OK) == 0) {
        assert_string_equal(cfg->path, "/etc/snapsync/config.yaml");
    } else {
        assert_null(cfg->path);
        assert_true(cfg->unraid.enabled);
        assert_int_equal(cfg->unraid.protocol, CONFIG_PROTOCOL_LOCAL);
        assert_string_equal(cfg->unraid.mount_point, "./snapsync-backup");
        assert_string_equal(cfg->service.database_path, "./snapsync.db");
        assert_string_equal(cfg->mqtt.password, "cwd-dotenv");
        assert_int_equal(cfg->n_warnings, 0);
        config_free(cfg);
        assert_int_equal(chmod(".env", 0644), 0);
        assert_int_equal(config_load(NULL, &cfg, &err), 0);
        assert_true(has_warning(cfg, "'.env' is readable by other users"));
        setenv("MQTT_PASSWORD", "env-wins", 1);
        config_free(cfg);
        assert_int_equal(config_load(NULL, &cfg, &err), 0);
        assert_string_equal(cfg->mqtt.password, "env-wins");
    }
    config_free(cfg);
}

/* ---- notify ---- */

static const char notify_yaml[] = "notify:\n"                                         /* 1 */
                                  "  events: [completed, failed, destination_down]\n" /* 2 */
                                  "  destination_down_minutes: 15\n"                  /* 3 */
                                  "  email:\n"                                        /* 4 */
                                  "    enabled: true\n"                               /* 5 */
                                  "    host: smtp.example.org\n"                      /* 6 */
                                  "    security: tls\n"                               /* 7 */
                                  "    username: ann\n"                               /* 8 */
                                  "    password: pw-SECRET-4711\n"                    /* 9 */
                                  "    from: snapsync@pi.example\n"                   /* 10 */
                                  "    to: [ann@example.com, bob@example.org]\n"      /* 11 */
                                  "  webhooks:\n"                                     /* 12 */
                                  "    - url: https://ntfy.sh/topic\n"                /* 13 */
                                  "      format: ntfy\n"                              /* 14 */
                                  "      token: tk-SECRET-0815\n"                     /* 15 */
                                  "    - {url: \"http://127.0.0.1:8/x\"}\n"           /* 16 */
                                  "    - {url: \"https://gotify.lan\", format: gotify, "
                                  "token_env: GOTIFY_TOKEN}\n"; /* 17 */

static void test_notify_values(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(notify_yaml);
    assert_int_equal(cfg->notify.n_events, 3);
    assert_true(config_notify_event_wanted(cfg, "failed"));
    assert_true(config_notify_event_wanted(cfg, "destination_down"));
    assert_false(config_notify_event_wanted(cfg, "partial"));
    assert_int_equal(cfg->notify.destination_down_minutes, 15);
    assert_string_equal(cfg->notify.dashboard_url, "");
    assert_true(cfg->notify.email.enabled);
    assert_string_equal(cfg->notify.email.host, "smtp.example.org");
    assert_string_equal(cfg->notify.email.security, "tls");
    assert_int_equal(cfg->notify.email.port, 0);
    assert_int_equal(config_notify_email_port(cfg), 465);
    assert_string_equal(cfg->notify.email.password, "pw-SECRET-4711");
    assert_int_equal(cfg->notify.email.n_to, 2);
    assert_string_equal(cfg->notify.email.to[1], "bob@example.org");
    assert_int_equal(cfg->notify.n_webhooks, 3);
    assert_string_equal(cfg->notify.webhooks[0].format, "ntfy");
    assert_string_equal(cfg->notify.webhooks[0].token, "tk-SECRET-0815");
    assert_int_equal(cfg->notify.webhooks[0].line, 13);
    assert_string_equal(cfg->notify.webhooks[1].format, "json"); /* the default */
    assert_string_equal(cfg->notify.webhooks[1].token, "");
    assert_string_equal(cfg->notify.webhooks[2].token_env, "GOTIFY_TOKEN");
    assert_int_equal(cfg->n_warnings, 0); /* the http:// hook has no token, and is loopback */

    /* masked in the text and the JSON output; the text parses back to the same shape */
    char *out = print_config(cfg, false);
    assert_null(strstr(out, "pw-SECRET-4711"));
    assert_null(strstr(out, "tk-SECRET-0815"));
    assert_non_null(strstr(out, "  email:\n"));
    assert_non_null(strstr(out, "token: \"********\""));
    struct config *back = parse_ok(out);
    assert_int_equal(back->notify.n_webhooks, 3);
    assert_string_equal(back->notify.webhooks[2].token_env, "GOTIFY_TOKEN");
    assert_string_equal(back->notify.email.to[0], "ann@example.com");
    config_free(back);
    free(out);
    json_object *j = config_to_json(cfg);
    assert_non_null(j);
    const char *js = json_object_to_json_string(j);
    assert_null(strstr(js, "pw-SECRET-4711"));
    assert_null(strstr(js, "tk-SECRET-0815"));
    json_object *email, *hooks;
    assert_true(json_object_object_get_ex(json_object_object_get(j, "notify"), "email", &email));
    assert_string_equal(json_object_get_string(json_object_object_get(email, "password")),
                        "********");
    assert_true(json_object_object_get_ex(json_object_object_get(j, "notify"), "webhooks", &hooks));
    assert_string_equal(json_object_get_string(
                            json_object_object_get(json_object_array_get_idx(hooks, 0), "token")),
                        "********");
    json_object_put(j);

    /* scrubbed from log lines */
    char line[] = "ntfy said: bad token tk-SECRET-0815; smtp: pw-SECRET-4711 refused";
    config_scrub_secrets(cfg, line);
    assert_string_equal(line, "ntfy said: bad token ***; smtp: *** refused");
    config_free(cfg);

    /* a token in clear to another host is warned about */
    cfg = parse_ok("notify:\n  webhooks:\n    - {url: \"http://ntfy.lan/t\", token: abcdef}\n"
                   "    - {url: \"http://[::1]:80/t\", token: abcdef}\n"
                   "    - {url: \"http://localhost/t\", token: abcdef}\n");
    assert_int_equal(cfg->n_warnings, 1);
    assert_non_null(strstr(cfg->warnings[0], "notify.webhooks[0]"));
    assert_non_null(strstr(cfg->warnings[0], "https://"));
    config_free(cfg);
}

static void test_notify_errors(void **state)
{
    (void)state;
    static const struct {
        const char *yaml, *msg;
    } cases[] = {
        {"notify:\n  events: [completed, finished]\n",
         "config.yaml:2: notify.events: unknown item 'finished' (one of completed, partial, "
         "failed, interrupted, empty, destination_down, verify_problem)"},
        {"notify:\n  destination_down_minutes: 0\n",
         "config.yaml:2: notify.destination_down_minutes: 0 is out of range (1..10080)"},
        {"notify:\n  dashboard_url: ftp://pi\n",
         "config.yaml:2: notify.dashboard_url: expected an http:// or https:// address, got "
         "'ftp://pi'"},
        {"notify:\n  email:\n    enabled: true\n    hots: x\n",
         "config.yaml:4: notify.email.hots: unknown key (did you mean host?)"},
        {"notify:\n  email:\n    security: ssl\n",
         "config.yaml:3: notify.email.security: expected one of starttls, tls, none, got 'ssl'"},
        {"notify:\n  email:\n    from: \"a@b.c\\r\\nBcc: eve@x.y\"\n",
         "config.yaml:3: notify.email.from: value contains a control character"},
        {"notify:\n  email:\n    to: [ann@example.com, \"bob at example\"]\n",
         "config.yaml:3: notify.email.to: expected an address such as user@example.com, got "
         "'bob at example'"},
        {"notify:\n  email:\n    enabled: true\n    from: a@b.c\n    to: [a@b.c]\n",
         "config.yaml:3: notify.email.host: required when notify.email is enabled"},
        {"notify:\n  email:\n    enabled: true\n    host: h\n    from: a@b.c\n",
         "config.yaml:3: notify.email.to: required when notify.email is enabled (a list of "
         "addresses)"},
        {"notify:\n  email:\n    enabled: true\n    host: h\n    from: a@b.c\n    to: [a@b.c]\n"
         "    security: none\n    username: u\n    password: secret\n",
         "config.yaml:7: notify.email.security: none sends in clear: a username or password "
         "(SMTP_USERNAME, SMTP_PASSWORD) needs starttls or tls"},
        {"notify:\n  email: [a]\n",
         "config.yaml:2: notify.email: expected a mapping of keys, got a list"},
        {"notify:\n  email:\n    enabled: false\n  email:\n    enabled: true\n",
         "config.yaml:4: notify.email: duplicate section (first on line 2)"},
        {"email:\n  enabled: true\n",
         "config.yaml:1: email: unknown section (did you mean notify.email?)"},
        {"notify:\n  webhooks:\n    - url: https://a\n      fromat: ntfy\n",
         "config.yaml:4: notify.webhooks[0].fromat: unknown key (url, format, token, token_env, "
         "tls_ca_file)"},
        {"notify:\n  webhooks:\n    - {url: https://a}\n    - {url: https://b, format: slack}\n",
         "config.yaml:4: notify.webhooks[1].format: expected one of json, ntfy, gotify, got "
         "'slack'"},
        {"notify:\n  webhooks:\n    - {url: \"file:///etc/passwd\"}\n",
         "config.yaml:3: notify.webhooks[0].url: expected an http:// or https:// address, got "
         "'file:///etc/passwd'"},
        {"notify:\n  webhooks:\n    - {format: ntfy}\n",
         "config.yaml:3: notify.webhooks[0].url: required"},
        {"notify:\n  webhooks:\n    - {url: https://a, token: \"x\\ny\"}\n",
         "config.yaml:3: notify.webhooks[0].token: value contains a control character"},
        {"notify:\n  webhooks:\n    - {url: https://a, token: abcd, token_env: T}\n",
         "config.yaml:3: notify.webhooks[0].token_env: token and token_env are both set; keep one "
         "(token_env, with the token in .env)"},
        {"notify:\n  webhooks:\n    - {url: https://a, token_env: \"1 x\"}\n",
         "config.yaml:3: notify.webhooks[0].token_env: expected a variable name such as "
         "NTFY_TOKEN, got '1 x'"},
        {"notify:\n  webhooks:\n    - https://a\n",
         "config.yaml:3: notify.webhooks[0]: expected a mapping {url, format, token}, got a "
         "value"},
        {"notify:\n  webhooks:\n    - {url: [https://a]}\n",
         "config.yaml:3: notify.webhooks[0].url: expected a string, got a list"},
        {"notify:\n  webhooks:\n    - {url: https://a, url: https://b}\n",
         "config.yaml:3: notify.webhooks[0].url: duplicate key (first set on line 3)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        parse_fails(cases[i].yaml, cases[i].msg);

    /* ceilings: 8 webhooks, 16 recipients */
    char buf[4096];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "notify:\n  webhooks:\n");
    for (int i = 0; i < 9; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "    - {url: https://h%d}\n", i);
    parse_fails(buf, "config.yaml:11: notify.webhooks: too many webhooks (at most 8)");
    n = (size_t)snprintf(buf, sizeof(buf),
                         "notify:\n  email:\n    enabled: true\n    host: h\n    from: a@b.c\n"
                         "    to:\n");
    for (int i = 0; i < 17; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "      - u%d@example.com\n", i);
    parse_fails(buf, "config.yaml:6: notify.email.to: too many recipients (17, at most 16)");
}

static void test_notify_secrets(void **state)
{
    (void)state;
    char dir[PATH_MAX], path[PATH_MAX];
    struct config *cfg = NULL;
    struct error err = {0};
    new_dir(dir, sizeof(dir));
    write_str(dir, "config.yaml",
              "notify:\n  email:\n    enabled: true\n    host: smtp\n    from: a@b.c\n"
              "    to: [a@b.c]\n  webhooks:\n    - {url: https://ntfy.sh/t, format: ntfy, "
              "token_env: NTFY_TOKEN, tls_ca_file: ca.pem}\n",
              0600, path, sizeof(path));

    /* token_env set nowhere: an error naming the variable and the webhook's line */
    assert_int_equal(config_load(path, &cfg, &err), -EINVAL);
    assert_non_null(strstr(err.msg, ":8: notify.webhooks[0].token_env: NTFY_TOKEN is set neither"));

    /* from .env, then the environment wins */
    write_str(dir, ".env",
              "SMTP_USERNAME=ann\nSMTP_PASSWORD=dotenv-pw-1234\nNTFY_TOKEN=tk_dotenv\n", 0600, NULL,
              0);
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_string_equal(cfg->notify.email.username, "ann");
    assert_string_equal(cfg->notify.email.password, "dotenv-pw-1234");
    assert_string_equal(cfg->notify.webhooks[0].token, "tk_dotenv");
    char ca[PATH_MAX + 8];
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    assert_string_equal(cfg->notify.webhooks[0].tls_ca_file, ca);
    char *out = print_config(cfg, false);
    assert_null(strstr(out, "dotenv-pw-1234"));
    assert_null(strstr(out, "tk_dotenv"));
    free(out);
    config_free(cfg);
    setenv("NTFY_TOKEN", "tk_environment", 1);
    setenv("SMTP_PASSWORD", "env-pw-5678", 1);
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_string_equal(cfg->notify.webhooks[0].token, "tk_environment");
    assert_string_equal(cfg->notify.email.password, "env-pw-5678");
    char line[] = "refused tk_environment and env-pw-5678";
    config_scrub_log_line(line, cfg);
    assert_string_equal(line, "refused *** and ***");
    config_free(cfg);

    /* a bad token in .env is refused without quoting it */
    write_str(dir, ".env", "NTFY_TOKEN=\"tk-bad\001token\"\n", 0600, NULL, 0);
    unsetenv("NTFY_TOKEN");
    unsetenv("SMTP_PASSWORD");
    assert_int_equal(config_load(path, &cfg, &err), -EINVAL);
    assert_non_null(strstr(err.msg, ".env:1: NTFY_TOKEN: value contains a control character"));
    assert_null(strstr(err.msg, "tk-bad"));

    /* a token in a file others can read is warned about */
    write_str(dir, ".env", "", 0600, NULL, 0);
    write_str(dir, "config.yaml", "notify:\n  webhooks:\n    - {url: https://a/t, token: abcdef}\n",
              0644, path, sizeof(path));
    assert_int_equal(config_load(path, &cfg, &err), 0);
    assert_int_equal(cfg->n_warnings, 1);
    assert_non_null(strstr(cfg->warnings[0], "holds a webhook token and is readable"));
    config_free(cfg);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_default),          T(test_empty_documents),  T(test_template_round_trip),
        T(test_values),           T(test_scrub_secrets),    T(test_print_masked_round_trip),
        T(test_errors_structure), T(test_errors_values),    T(test_errors_validation),
        T(test_patterns),         T(test_copy_permissions), T(test_sizes),
        T(test_numbers),          T(test_hostile),          T(test_dotenv_syntax),
        T(test_precedence),       T(test_permissions),      T(test_paths),
        T(test_search_order),     T(test_notify_values),    T(test_notify_errors),
        T(test_notify_secrets),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
