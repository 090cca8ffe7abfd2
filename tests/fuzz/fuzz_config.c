/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the config parsers: the input is parsed as config.yaml and, on top of the
 * result (or of the embedded default), as a .env file. A configuration that parses must print,
 * and what it prints must parse back to the same values: print and parse cannot disagree.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_round_trip(const struct config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return;
    if (config_print(cfg, f) != 0)
        abort();
    fclose(f);
    struct config *again = NULL;
    struct error err;
    if (config_parse_buffer("printed", text, len, &again, &err) != 0) {
        fprintf(stderr, "printed config does not parse: %s\n%s\n", err.msg, text);
        abort();
    }
    if (strcmp(again->service.name, cfg->service.name) != 0 ||
        strcmp(again->service.database_path, cfg->service.database_path) != 0 ||
        strcmp(again->unraid.path, cfg->unraid.path) != 0 ||
        strcmp(again->immich.url, cfg->immich.url) != 0 ||
        again->files.n_extensions != cfg->files.n_extensions ||
        again->sd_card.n_mount_points != cfg->sd_card.n_mount_points ||
        again->files.min_size != cfg->files.min_size ||
        again->backup.retry_delay != cfg->backup.retry_delay ||
        again->unraid.protocol != cfg->unraid.protocol)
        abort();
    for (size_t i = 0; i < cfg->sd_card.n_mount_points; i++)
        if (strcmp(again->sd_card.mount_points[i], cfg->sd_card.mount_points[i]) != 0)
            abort();
    for (size_t i = 0; i < cfg->files.n_extensions; i++)
        if (!config_extension_wanted(again, cfg->files.extensions[i]))
            abort();
    if (again->notify.n_webhooks != cfg->notify.n_webhooks ||
        again->notify.n_events != cfg->notify.n_events ||
        again->notify.email.n_to != cfg->notify.email.n_to ||
        strcmp(again->notify.email.security, cfg->notify.email.security) != 0)
        abort();
    for (size_t i = 0; i < cfg->notify.n_webhooks; i++)
        if (strcmp(again->notify.webhooks[i].url, cfg->notify.webhooks[i].url) != 0 ||
            strcmp(again->notify.webhooks[i].format, cfg->notify.webhooks[i].format) != 0 ||
            strcmp(again->notify.webhooks[i].token_env, cfg->notify.webhooks[i].token_env) != 0 ||
            (!*cfg->notify.webhooks[i].token_env && /* from the environment: not printed */
             !*again->notify.webhooks[i].token != !*cfg->notify.webhooks[i].token))
            abort();
    config_free(again);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config *cfg = NULL;
    struct error err;
    if (config_parse_buffer("fuzz.yaml", (const char *)data, size, &cfg, &err) == 0) {
        check_round_trip(cfg);
        config_extension_wanted(cfg, "JPG");
    } else if (config_default(&cfg, &err) != 0) {
        return 0;
    }
    if (config_apply_dotenv(cfg, "fuzz.env", (const char *)data, size, &err) == 0)
        check_round_trip(cfg);
    config_free(cfg);
    return 0;
}
