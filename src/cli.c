/* SPDX-License-Identifier: MIT */
/*
 * Command line. Global options come before the command (`snapsync --config FILE backup PATH`);
 * each command parses its own. Every failure ends in one message on stderr and an exit code from
 * one table: 0 success, 1 a file or session failed, 2 usage or configuration error.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "config.h"
#include "db.h"
#include "dest.h"
#include "engine.h"
#include "jsonout.h"
#include "log.h"
#include "service.h"
#include "mqtt.h"
#include "notify_channel.h"
#include "notify_outbox.h"
#include "report.h"
#include "status.h"
#include "verify.h"
#include "web.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

struct cli {
    const char *config_path;
    struct config *cfg;
};

struct command {
    const char *name;
    int (*run)(struct cli *cli, int argc, char **argv);
    const char *usage;
    const char *help;
};

static atomic_bool cancel_flag;  /* lock-free, so a signal handler may set it */
static atomic_int cancel_signal; /* the first signal that stopped the backup, 0 if none */

static void on_signal(int sig)
{
    int none = 0;
    atomic_compare_exchange_strong(&cancel_signal, &none, sig);
    atomic_store(&cancel_flag, true);
}

/* SIGINT and SIGTERM set cancel_flag (the work stops and is recorded as stopped); SIGPIPE is
 * ignored. */
static void catch_stop_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Prints o on stdout as one line, slashes unescaped ("./x", not ".\\/x"), and frees it. */
static void json_print(json_object *o)
{
    puts(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

static int load_config(struct cli *cli)
{
    struct error err = {0};
    int r = config_load(cli->config_path, &cli->cfg, &err);
    if (r < 0) {
        fprintf(stderr, "snapsync: %s\n", err.msg);
        return EXIT_USAGE;
    }
    /* from here on no line of the log holds a configured secret, wherever it came from */
    log_set_scrubber(config_scrub_log_line, cli->cfg);
    enum log_level level;
    if (log_level_from_string(cli->cfg->service.log_level, &level) == 0)
        log_set_level(level);
    for (size_t i = 0; i < cli->cfg->n_warnings; i++)
        log_warning("%s", cli->cfg->warnings[i]);
    return EXIT_OK;
}

static void format_bytes(double b, char *buf, size_t size)
{
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
    int u = 0;
    while (b >= 1000 && u < 4) {
        b /= 1000;
        u++;
    }
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", b, units[u]);
}

static void format_duration(double s, char *buf, size_t size)
{
    long t = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
}

static void format_time(int64_t t, char *buf, size_t size)
{
    if (t <= 0) {
        snprintf(buf, size, "-");
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
}

/* ---- backup ---- */

#define PLAIN_PROGRESS_EVERY_S 10.0 /* stderr not a terminal: a line this often, or every 10 % */
#define CLI_STATUS_SESSIONS 20      /* newest sessions status looks at, as the dashboard does */

/*
 * What `snapsync backup` shows while it runs. On a terminal: one line at the bottom, fitted to
 * the width (read again at every redraw, so a resized window is followed), redrawn in place; log
 * lines go above it through log.c's line hooks, which clear it before a log line and draw it again
 * after, under the log's lock. Elsewhere (a pipe, a file, journald): a plain line every 10 s or
 * every 10 %, nothing redrawn.
 */
struct backup_view {
    bool tty;
    bool plain;
    struct mqtt *mqtt;
    enum db_session_status last_status;
    /* the live line, in two parts; drawn under the log's lock */
    char stats[160];
    char file[256];
    bool shown;
    char next_stats[160]; /* the next line, written by the engine's thread */
    char next_file[256];
    /* plain lines */
    double last_plain_s;
    int last_plain_tenth;
    struct dry_view *dry; /* the dry run's list */
};

static int terminal_width(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 80;
}

/* Writes the live line, cut to one column less than the width so the terminal never wraps it:
 * the statistics first, then as much of the tail of the current file as fits. Under the log's
 * lock. */
static void progress_draw(void *userdata)
{
    struct backup_view *v = userdata;
    size_t max = (size_t)terminal_width() - 1;
    size_t n = strlen(v->stats);
    fputs("\r\033[K", stderr);
    fwrite(v->stats, 1, n < max ? n : max, stderr);
    size_t len = strlen(v->file);
    if (n + 2 < max && len > 0) {
        size_t room = max - n - 2; /* bytes: never fewer than the columns they take */
        const char *tail = len > room ? v->file + len - room : v->file;
        while (tail > v->file && ((unsigned char)*tail & 0xc0) == 0x80 && *tail)
            tail++; /* do not start inside a UTF-8 character */
        fprintf(stderr, "  %s", tail);
    }
    fflush(stderr);
    v->shown = true;
}

/* Before a log line: the live line goes away, so the log line starts on a clean line. */
static void progress_clear(void *userdata)
{
    struct backup_view *v = userdata;
    if (v->shown)
        fputs("\r\033[K", stderr);
}

/* After a log line: the live line comes back below it. */
static void progress_redraw(void *userdata)
{
    struct backup_view *v = userdata;
    if (v->shown)
        progress_draw(v);
}

static void progress_erase(void *userdata)
{
    struct backup_view *v = userdata;
    progress_clear(v);
    fflush(stderr);
    v->shown = false;
}

static void progress_update(void *userdata)
{
    struct backup_view *v = userdata;
    memcpy(v->stats, v->next_stats, sizeof(v->stats));
    memcpy(v->file, v->next_file, sizeof(v->file));
    progress_draw(v);
}

static void progress_plain(void *userdata)
{
    struct backup_view *v = userdata;
    fprintf(stderr, "progress: %s\n", v->stats);
    fflush(stderr);
}

/* "42%  12/100 files  1.0 GB/2.4 GB  31.2 MB/s  ETA 0:45" */
static void progress_stats(const struct engine_progress *p, char *buf, size_t size)
{
    if (p->status == DB_SESSION_SCANNING) {
        snprintf(buf, size, "scanning");
        return;
    }
    char done[32], total[32], eta[32] = "--:--";
    format_bytes((double)p->bytes_done, done, sizeof(done));
    format_bytes((double)p->totals.bytes_total, total, sizeof(total));
    double left_s = 0;
    if (status_eta((int64_t)p->bytes_done, p->totals.bytes_total, p->rate_bps, &left_s))
        format_duration(left_s, eta, sizeof(eta));
    int pct = (int)status_progress(false, (int64_t)p->files_done, p->totals.files_total,
                                   (int64_t)p->bytes_done, p->totals.bytes_total);
    snprintf(buf, size, "%d%%  %" PRIu64 "/%" PRId64 " files  %s/%s  %.1f MB/s  ETA %s", pct,
             p->files_done, p->totals.files_total, done, total, p->rate_bps / 1e6, eta);
}

static void on_backup_progress(const struct engine_progress *p, void *userdata)
{
    struct backup_view *v = userdata;
    bool final = status_progress_is_final(p);
    if (v->mqtt) {
        struct status_live s;
        status_live_from_progress(p, final, &s);
        mqtt_publish_state(v->mqtt, &s, final || p->status != v->last_status);
        v->last_status = p->status;
    }
    if (final) /* the summary on stdout says the rest */
        return;
    char stats[sizeof(v->stats)];
    progress_stats(p, stats, sizeof(stats));
    if (v->tty) {
        char file[sizeof(v->file)];
        snprintf(file, sizeof(file), "%s", p->current_file);
        for (char *c = file; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                *c = '?';
        /* the hooks read the line under the lock, from whichever thread logs */
        snprintf(v->next_stats, sizeof(v->next_stats), "%s", stats);
        snprintf(v->next_file, sizeof(v->next_file), "%s", file);
        log_run_locked(progress_update, v);
    } else if (v->plain && p->totals.bytes_total > 0) {
        int tenth = (int)((double)p->bytes_done * 10 / (double)p->totals.bytes_total);
        if (tenth > v->last_plain_tenth ||
            p->elapsed_s - v->last_plain_s >= PLAIN_PROGRESS_EVERY_S) {
            v->last_plain_tenth = tenth;
            v->last_plain_s = p->elapsed_s;
            snprintf(v->stats, sizeof(v->stats), "%s", stats);
            log_run_locked(progress_plain, v);
        }
    }
}

/* "jpg, jpeg, png, ..." from the configured extensions, cut to fit. */
static void extensions_text(const struct config *cfg, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < cfg->files.n_extensions && n < size; i++) {
        int k = snprintf(buf + n, size - n, "%s.%s", i ? ", " : "", cfg->files.extensions[i]);
        if (k < 0)
            break;
        n += (size_t)k;
    }
}

/* The line that says some of the source was never seen (nothing when count is 0). */
static void scan_problems_print(int64_t count)
{
    if (count > 0)
        printf("%" PRId64 " %s of the source could not be read: the files under %s are not "
               "backed up\n",
               count, count == 1 ? "entry" : "entries", count == 1 ? "it" : "them");
}

/* ---- the dry run's list ---- */

struct dry_view {
    json_object *files; /* --json: the list being built; NULL: one line each on stdout */
    int64_t ignored, unreadable;
};

/* "/srv/photos/2024/05/01/A.JPG (already there)" for each destination, "; " between. */
static void dry_targets_text(const struct engine_dry_file *f, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < f->n_targets && n < size; i++) {
        const struct engine_dry_target *t = &f->targets[i];
        int k = snprintf(buf + n, size - n, "%s%s%s%s%s", i ? "; " : "", t->where,
                         t->recorded     ? " (already there)"
                         : t->taken      ? " (name taken: may get _N, or be found the same)"
                         : t->problem[0] ? " (no path: "
                                         : "",
                         t->problem[0] && !t->recorded ? t->problem : "",
                         t->problem[0] && !t->recorded ? ")" : "");
        if (k < 0)
            break;
        n += (size_t)k;
    }
}

static json_object *dry_file_json(const struct engine_dry_file *f)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "path", json_object_new_string(f->rel_path));
    json_object_object_add(o, "size", json_object_new_int64((int64_t)f->size));
    json_object_object_add(o, "verdict",
                           json_object_new_string(engine_verdict_to_string(f->verdict)));
    json_object_object_add(o, "why", f->why[0] ? json_object_new_string(f->why) : NULL);
    json_object_object_add(o, "duplicate_of",
                           f->duplicate_of[0] ? json_object_new_string(f->duplicate_of) : NULL);
    json_object_object_add(o, "date",
                           f->date_path[0] ? json_object_new_string(f->date_path) : NULL);
    json_object_object_add(
        o, "date_from",
        !f->date_path[0] ? NULL
                         : json_object_new_string(f->date_from_metadata ? "metadata" : "mtime"));
    json_object *sc = json_object_new_array();
    for (size_t i = 0; i < f->n_sidecars; i++)
        json_object_array_add(sc, json_object_new_string(f->sidecars[i]));
    json_object_object_add(o, "sidecars", sc);
    json_object *targets = json_object_new_array();
    for (size_t i = 0; i < f->n_targets; i++) {
        const struct engine_dry_target *t = &f->targets[i];
        json_object *to = json_object_new_object();
        json_object_object_add(to, "where", json_object_new_string(t->where));
        json_object_object_add(to, "recorded", json_object_new_boolean(t->recorded));
        json_object_object_add(to, "name_taken", json_object_new_boolean(t->taken));
        json_object_object_add(to, "problem",
                               t->problem[0] ? json_object_new_string(t->problem) : NULL);
        json_object *sidecars = json_object_new_array();
        for (size_t k = 0; k < t->n_sidecars; k++) {
            json_object *so = json_object_new_object();
            json_object_object_add(so, "path",
                                   json_object_new_string(f->sidecars[t->sidecars[k].of]));
            json_object_object_add(so, "where", json_object_new_string(t->sidecars[k].where));
            json_object_array_add(sidecars, so);
        }
        json_object_object_add(to, "sidecars", sidecars);
        json_object_array_add(targets, to);
    }
    json_object_object_add(o, "targets", targets);
    return o;
}

/* ", with its sidecars DCIM/IMG_0001.XMP, DCIM/IMG_0001.WAV", or "" without any. */
static void dry_sidecars_text(const struct engine_dry_file *f, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < f->n_sidecars && n < size; i++) {
        int k =
            snprintf(buf + n, size - n, "%s%s", i ? ", " : ", with its sidecars ", f->sidecars[i]);
        if (k < 0)
            break;
        n += (size_t)k;
    }
}

/* engine_options.on_dry_file: one line on stdout, or one object in the JSON list. */
static void on_dry_file(const struct engine_dry_file *f, void *userdata)
{
    struct dry_view *dv = ((struct backup_view *)userdata)->dry;
    dv->ignored += f->verdict == ENGINE_VERDICT_IGNORED;
    dv->unreadable += f->verdict == ENGINE_VERDICT_UNREADABLE;
    if (dv->files) {
        json_object_array_add(dv->files, dry_file_json(f));
        return;
    }
    char targets[2048];
    dry_targets_text(f, targets, sizeof(targets));
    const char *v = engine_verdict_to_string(f->verdict);
    switch (f->verdict) {
    case ENGINE_VERDICT_NEW: {
        char sidecars[1024];
        dry_sidecars_text(f, sidecars, sizeof(sidecars));
        printf("%-10s %s -> %s%s\n", v, f->rel_path, targets, sidecars);
        break;
    }
    case ENGINE_VERDICT_DONE:
        printf("%-10s %s at %s%s%s%s\n", v, f->rel_path, targets,
               f->duplicate_of[0] ? " (same content as " : "", f->duplicate_of,
               f->duplicate_of[0] ? ")" : "");
        break;
    case ENGINE_VERDICT_DUPLICATE:
        printf("%-10s %s same content as %s, at %s\n", v, f->rel_path, f->duplicate_of, targets);
        break;
    case ENGINE_VERDICT_IGNORED:
    case ENGINE_VERDICT_UNREADABLE:
        printf("%-10s %s: %s\n", v, f->rel_path, f->why);
        break;
    }
}

/* What a dry run prints after its list: the counts, with status "dry_run", never "completed". */
static void dry_run_print(const struct engine_report *rep, struct dry_view *dv)
{
    const struct db_totals *t = &rep->totals;
    if (dv->files) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "dry_run", json_object_new_boolean(true));
        json_object_object_add(o, "status", json_object_new_string("dry_run"));
        json_object_object_add(o, "card_uuid", json_object_new_string(rep->card_uuid));
        json_object_object_add(o, "card_label", json_object_new_string(rep->card_label));
        json_object_object_add(o, "files_total", json_object_new_int64(t->files_total));
        json_object_object_add(o, "bytes_total", json_object_new_int64(t->bytes_total));
        json_object_object_add(o, "files_new", json_object_new_int64(t->files_copied));
        json_object_object_add(o, "bytes_new", json_object_new_int64(t->bytes_copied));
        json_object_object_add(o, "files_done", json_object_new_int64(t->files_skipped));
        json_object_object_add(o, "files_duplicate", json_object_new_int64(t->files_duplicate));
        json_object_object_add(o, "files_ignored", json_object_new_int64(dv->ignored));
        json_object_object_add(o, "scan_problems", json_object_new_int64(t->scan_problems));
        json_object_object_add(o, "error",
                               rep->error[0] ? json_object_new_string(rep->error) : NULL);
        json_object_object_add(o, "files", dv->files);
        dv->files = NULL;
        json_print(o);
        return;
    }
    char bytes[32];
    format_bytes((double)t->bytes_copied, bytes, sizeof(bytes));
    printf("dry run (nothing written): %" PRId64 " %s found, %" PRId64 " new to copy (%s), %" PRId64
           " already backed up, %" PRId64 " %s, %" PRId64 " ignored\n",
           t->files_total, t->files_total == 1 ? "file" : "files", t->files_copied, bytes,
           t->files_skipped, t->files_duplicate,
           t->files_duplicate == 1 ? "duplicate" : "duplicates", dv->ignored);
    scan_problems_print(t->scan_problems);
    if (rep->error[0])
        printf("first error: %s\n", rep->error);
}

/* Delivers the outbox once before the command exits (each send bounded by the channel
 * timeouts; Ctrl-C stops it); what is left stays pending for the service. */
static void notify_deliver_once(const struct config *cfg, struct db *db)
{
    struct error err = {0};
    struct outbox_result res = {0};
    int r = notify_outbox_deliver(cfg, db, time(NULL), &cancel_flag, &res, &err);
    if (r < 0 && r != -ECANCELED)
        log_warning("notifications: %s", err.msg);
    else if (res.next_due > 0)
        log_info("notifications: some are still pending; the service delivers them");
}

/* The session's notification: queued, then delivered once (each send bounded by the channel
 * timeouts; Ctrl-C stops it); what is left stays pending for the service. Never changes the
 * backup's exit status: a failure is logged. */
static void backup_notify(const struct config *cfg, const struct engine_report *rep)
{
    if (rep->session_id <= 0 || notify_channel_count(cfg) == 0)
        return;
    struct db *db = NULL;
    struct error err = {0};
    bool queued = false;
    int r = db_open(cfg->service.database_path, DB_READ_WRITE, &db, &err);
    if (r == 0)
        r = notify_outbox_queue_report(cfg, db, rep, -1, time(NULL), &queued, &err);
    if (r < 0) {
        log_warning("the notification of session %" PRId64 " is not queued: %s", rep->session_id,
                    err.msg);
        goto out;
    }
    if (queued)
        notify_deliver_once(cfg, db);
out:
    db_close(db);
}

static int cmd_backup(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"dry-run", no_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool dry_run = false, json = false;
    int c;
    optind = 0; /* 0: glibc re-initialises its state for this argv */
    while ((c = getopt_long(argc, argv, "njh", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            dry_run = true;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            printf("usage: snapsync backup PATH [--dry-run] [--json]\n\n"
                   "Backs up the photos and videos under PATH (a mounted card or any folder) to\n"
                   "every enabled destination, as one session.\n\n"
                   "  -n, --dry-run  only scan: show what would be copied, write nothing\n"
                   "  -j, --json     print one JSON object with the result on stdout\n\n"
                   "Exit status: 0 every file is backed up (or there were none: status empty),\n"
                   "1 some failed or some of PATH could not be read, 2 usage or configuration "
                   "error,\n130 stopped by Ctrl-C (SIGINT), 143 stopped by SIGTERM (the session "
                   "is\nrecorded as interrupted).\n\n"
                   "On a terminal, one progress line is redrawn in place below the log; otherwise\n"
                   "a plain progress line is written every 10 s or 10 %%.\n");
            return EXIT_OK;
        default:
            return EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "usage: snapsync backup PATH [--dry-run] [--json]\n");
        return EXIT_USAGE;
    }
    const char *path = argv[optind];
    int rc = load_config(cli);
    if (rc)
        return rc;

    catch_stop_signals();

    bool tty = isatty(STDERR_FILENO);
    struct backup_view view = {.tty = tty && !json, .plain = !tty && !json, .last_status = -1};
    struct error err = {0};
    if (cli->cfg->mqtt.enabled && !dry_run) {
        /* the broker being down must not stop a backup: report and go on */
        char web_url[256];
        mqtt_dashboard_url(cli->cfg, web_url, sizeof(web_url));
        if (mqtt_new(cli->cfg, web_url, NULL, &view.mqtt, &err) < 0 ||
            mqtt_start(view.mqtt, &err) < 0) {
            log_warning("%s; backing up without Home Assistant updates", err.msg);
            mqtt_free(view.mqtt);
            view.mqtt = NULL;
        }
    }
    struct dry_view dry = {.files = json && dry_run ? json_object_new_array() : NULL};
    view.dry = &dry;
    struct engine_options opt = {
        .dry_run = dry_run,
        .on_dry_file = dry_run ? on_dry_file : NULL,
        .on_progress = view.tty || view.plain || view.mqtt ? on_backup_progress : NULL,
        .userdata = &view,
        .cancel = &cancel_flag,
    };
    struct engine_report rep = {0};
    if (view.tty)
        log_set_line_hooks(progress_clear, progress_redraw, &view);
    int r = engine_backup(cli->cfg, path, &opt, &rep, &err);
    if (view.tty) {
        log_run_locked(progress_erase, &view);
        log_set_line_hooks(NULL, NULL, NULL);
    }
    /* the card stays mounted: safe to remove means nothing left on it without a copy */
    mqtt_publish_session(view.mqtt, &rep, engine_status_nothing_left(rep.status));
    mqtt_free(view.mqtt); /* publishes what is still pending before it disconnects */
    if (r < 0 && rep.session_id == 0) {
        fprintf(stderr, "snapsync: %s\n", err.msg);
        /* the folder or the configuration is wrong: usage; anything else: failure */
        return r == -ENOENT || r == -ENOTDIR || r == -ENODEV || r == -ENOTSUP || r == -EINVAL
                   ? EXIT_USAGE
                   : EXIT_FAILED;
    }

    const struct db_totals *t = &rep.totals;
    if (dry_run) {
        dry_run_print(&rep, &dry);
        json_object_put(dry.files);
    } else if (json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "session_id", json_object_new_int64(rep.session_id));
        json_object_object_add(o, "status",
                               json_object_new_string(db_session_status_to_string(rep.status)));
        json_object_object_add(o, "dry_run", json_object_new_boolean(dry_run));
        json_object_object_add(o, "card_uuid", jsonout_string(rep.card_uuid));
        json_object_object_add(o, "card_label", jsonout_string(rep.card_label));
        json_object_object_add(o, "files_total", json_object_new_int64(t->files_total));
        json_object_object_add(o, "bytes_total", json_object_new_int64(t->bytes_total));
        json_object_object_add(o, "files_copied", json_object_new_int64(t->files_copied));
        json_object_object_add(o, "files_skipped", json_object_new_int64(t->files_skipped));
        json_object_object_add(o, "files_duplicate", json_object_new_int64(t->files_duplicate));
        json_object_object_add(o, "files_failed", json_object_new_int64(t->files_failed));
        json_object_object_add(o, "bytes_copied", json_object_new_int64(t->bytes_copied));
        json_object_object_add(o, "scan_problems", json_object_new_int64(t->scan_problems));
        json_object_object_add(o, "duration_s", json_object_new_double(rep.duration_s));
        json_object_object_add(o, "error", jsonout_error(cli->cfg, rep.error));
        json_print(o);
    } else {
        char copied[32], dur[32];
        format_bytes((double)t->bytes_copied, copied, sizeof(copied));
        format_duration(rep.duration_s, dur, sizeof(dur));
        printf("session %" PRId64 " %s: %" PRId64 " files, %" PRId64 " copied (%s), %" PRId64
               " already backed up, %" PRId64 " duplicates, %" PRId64 " failed, in %s (%.1f "
               "MB/s)\n",
               rep.session_id, db_session_status_to_string(rep.status), t->files_total,
               t->files_copied, copied, t->files_skipped, t->files_duplicate, t->files_failed, dur,
               rep.duration_s > 0 ? (double)t->bytes_copied / rep.duration_s / 1e6 : 0.0);
        if (rep.status == DB_SESSION_EMPTY) {
            char exts[512];
            extensions_text(cli->cfg, exts, sizeof(exts));
            printf("no photos or videos found in '%s' (looked for %s; files under %" PRIu64
                   " bytes are ignored)\n",
                   path, exts, cli->cfg->files.min_size);
        }
        scan_problems_print(t->scan_problems);
        if (rep.error[0])
            printf("first error: %s\n", rep.error);
    }
    if (!dry_run)
        backup_notify(cli->cfg, &rep);
    /* stopped by a signal: the status shells expect (128 + the signal), the session recorded as
     * interrupted by the engine */
    int sig = atomic_load(&cancel_signal);
    if (sig)
        return 128 + sig;
    bool ok = rep.status == DB_SESSION_COMPLETED || rep.status == DB_SESSION_EMPTY;
    if (r < 0 || !ok || t->files_failed > 0)
        return EXIT_FAILED;
    return EXIT_OK;
}

/* ---- status and sessions ---- */

/* cfg: whose secrets are scrubbed from the errors shown */
static void session_print(const struct db_session *s)
{
    char started[32], copied[32];
    format_time(s->started_at, started, sizeof(started));
    format_bytes((double)s->totals.bytes_copied, copied, sizeof(copied));
    printf("%6" PRId64 "  %s  %-11s  %-20.20s  %5" PRId64 " files  %5" PRId64
           " copied (%s)  %4" PRId64 " skipped  %3" PRId64 " dup  %3" PRId64 " failed\n",
           s->id, started, status_session_status(s), s->card_label, s->totals.files_total,
           s->totals.files_copied, copied, s->totals.files_skipped, s->totals.files_duplicate,
           s->totals.files_failed);
}

static int open_db_ro(struct cli *cli, struct db **db, bool *ret_missing)
{
    struct error err = {0};
    int r = status_db_open(cli->cfg, db, &err);
    *ret_missing = r == -ENOENT;
    if (r < 0 && r != -ENOENT) {
        fprintf(stderr, "snapsync: %s\n", err.msg);
        return EXIT_FAILED;
    }
    return EXIT_OK;
}

static int parse_json_flag(int argc, char **argv, const char *usage, const char *help, bool *json,
                           int *limit)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {"number", required_argument, NULL, 'n'},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 0; /* 0: glibc re-initialises its state for this argv */
    while ((c = getopt_long(argc, argv, limit ? "jhn:" : "jh", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            *json = true;
            break;
        case 'n': {
            if (!limit) { /* --number reaches here even where -n is not offered */
                fprintf(stderr, "usage: %s\n", usage);
                return EXIT_USAGE;
            }
            char *end = NULL;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (errno || !end || *end || v < 1 || v > 10000) {
                fprintf(stderr, "snapsync: -n wants a number from 1 to 10000, got '%s'\n", optarg);
                return EXIT_USAGE;
            }
            *limit = (int)v;
            break;
        }
        case 'h':
            printf("usage: %s\n\n%s\n", usage, help);
            return -1;
        default:
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "usage: %s\n", usage);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* The outbox's pending count and failed deliveries, when there are any. */
static void notifications_print(const struct config *cfg, const struct status_notifications *n)
{
    if (n->pending > 0)
        printf("notifications: %" PRId64 " waiting to be delivered (by the service)\n", n->pending);
    if (n->n_failed > 0)
        printf("notifications not delivered (the most recent %zu):\n", n->n_failed);
    for (size_t i = 0; i < n->n_failed; i++) {
        const struct db_delivery *d = &n->failed[i];
        char when[32], error[sizeof(d->last_error)];
        format_time(d->created_at, when, sizeof(when));
        snprintf(error, sizeof(error), "%s", d->last_error);
        config_scrub_secrets(cfg, error);
        printf("  %s  %-11s  %s: %s\n", when, d->event, d->channel, error);
    }
}

/* The session's copies per destination, a line each (with the last error of one that failed). */
static void dests_print(const struct db_dest_stats *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char bytes[32];
        format_bytes((double)d[i].bytes_completed, bytes, sizeof(bytes));
        printf("        %s: %" PRId64 " verified (%s), %" PRId64 " failed, %" PRId64 " pending\n",
               d[i].dest, d[i].completed, bytes, d[i].failed, d[i].pending);
        if (d[i].failed > 0 && d[i].last_error[0])
            printf("          last error: %s\n", d[i].last_error);
    }
}

static int cmd_status(struct cli *cli, int argc, char **argv)
{
    bool json = false;
    int rc =
        parse_json_flag(argc, argv, "snapsync status [--json]",
                        "Shows the current or last session and overall statistics.", &json, NULL);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if ((rc = load_config(cli)))
        return rc;
    struct db *db = NULL;
    bool missing = false;
    if ((rc = open_db_ro(cli, &db, &missing)))
        return rc;
    struct db_session *list = NULL;
    size_t n = 0;
    struct db_stats st = {0};
    struct error err = {0};
    struct db_problem *problems = NULL;
    size_t n_problems = 0;
    struct db_dest_stats *ds = NULL; /* the session's copies, per destination */
    size_t n_ds = 0;
    if (db && (status_sessions_list(db, CLI_STATUS_SESSIONS, &list, &n, &err) < 0 ||
               db_stats_get(db, &st, &err) < 0 ||
               (n && db_session_problems(db, list[0].id, &problems, &n_problems, &err) < 0) ||
               (n && db_dest_stats(db, list[0].id, &ds, &n_ds, &err) < 0))) {
        fprintf(stderr, "snapsync: %s\n", err.msg);
        free(list);
        free(problems);
        db_close(db);
        return EXIT_FAILED;
    }
    /* the outbox: not worth failing the status for (an older database has none) */
    struct status_notifications notes = {0};
    struct error nerr = {0};
    bool has_notes = db && status_notifications_get(db, &notes, &nerr) == 0;
    const char *state = status_state(list, n);
    bool running = n > 0 && status_session_running(&list[0]);
    /* Home Assistant's side: can we reach the broker with our credentials? (a few seconds at
     * most when it does not answer) */
    char mqtt_msg[ERROR_MSG_MAX] = "";
    bool mqtt_ok = false;
    if (cli->cfg->mqtt.enabled) {
        struct error merr = {0};
        mqtt_ok = mqtt_probe(cli->cfg, 3, mqtt_msg, sizeof(mqtt_msg), &merr) == 0;
        if (!mqtt_ok)
            snprintf(mqtt_msg, sizeof(mqtt_msg), "%s", merr.msg);
    }
    if (json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "state", json_object_new_string(state));
        /* as the status document names it; the CLI alone cannot be "unavailable": it fails */
        json_object_object_add(o, "database", json_object_new_string(missing ? "missing" : "ok"));
        jsonout_add_path(o, "database_path", cli->cfg->service.database_path);
        json_object *session = n ? status_session_json(cli->cfg, &list[0]) : NULL;
        if (session) {
            json_object_object_add(
                session, "scan_problem_entries",
                status_problems_json(cli->cfg, problems, n_problems, n_problems));
            json_object_object_add(session, "destinations", status_dests_json(cli->cfg, ds, n_ds));
        }
        json_object_object_add(o, "session", session);
        json_object_object_add(o, "stats", status_totals_json(&st));
        if (cli->cfg->mqtt.enabled) {
            json_object *mq = json_object_new_object();
            json_object_object_add(mq, "ok", json_object_new_boolean(mqtt_ok));
            json_object_object_add(mq, "message", jsonout_string(mqtt_msg));
            json_object_object_add(o, "mqtt", mq);
        }
        json_object_object_add(o, "notifications",
                               has_notes ? status_notifications_json(cli->cfg, &notes) : NULL);
        json_print(o);
    } else {
        if (missing) {
            printf("no backups yet (database %s does not exist)\n",
                   cli->cfg->service.database_path);
        } else {
            printf("state: %s\n", state);
            if (n) {
                printf("%s session:\n", running ? "current" : "last");
                session_print(&list[0]);
                if (list[0].error[0])
                    printf("        error: %s\n", list[0].error);
                if (list[0].totals.scan_problems > 0) {
                    printf("        ");
                    scan_problems_print(list[0].totals.scan_problems);
                    for (size_t i = 0; i < n_problems; i++)
                        printf("          '%s': %s\n", problems[i].path, problems[i].error);
                    if ((int64_t)n_problems < list[0].totals.scan_problems)
                        printf("          (and %" PRId64 " more)\n",
                               list[0].totals.scan_problems - (int64_t)n_problems);
                }
                if (list[0].status == DB_SESSION_EMPTY)
                    printf("        no photos or videos were found\n");
                if (list[0].safe_to_remove)
                    printf("        the card was unmounted: safe to remove\n");
                dests_print(ds, n_ds);
            }
            char bytes[32];
            format_bytes((double)st.bytes_completed, bytes, sizeof(bytes));
            if (cli->cfg->mqtt.enabled)
                printf("mqtt: %s%s\n", mqtt_ok ? "OK, " : "FAIL, ", mqtt_msg);
            printf("all time: %" PRId64 " sessions, %" PRId64 " cards, %" PRId64
                   " files backed up (%s), %" PRId64 " duplicates, %" PRId64 " failed\n",
                   st.sessions, st.cards, st.files_completed, bytes, st.files_duplicate,
                   st.files_failed);
            notifications_print(cli->cfg, &notes);
        }
    }
    free(list);
    free(problems);
    free(ds);
    db_close(db);
    return EXIT_OK;
}

static int cmd_sessions(struct cli *cli, int argc, char **argv)
{
    bool json = false;
    int limit = 10;
    int rc = parse_json_flag(argc, argv, "snapsync sessions [-n N] [--json]",
                             "Lists the N (default 10) most recent sessions, newest first.", &json,
                             &limit);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if ((rc = load_config(cli)))
        return rc;
    struct db *db = NULL;
    bool missing = false;
    if ((rc = open_db_ro(cli, &db, &missing)))
        return rc;
    struct db_session *list = NULL;
    size_t n = 0;
    struct error err = {0};
    if (db && status_sessions_list(db, limit, &list, &n, &err) < 0) {
        fprintf(stderr, "snapsync: %s\n", err.msg);
        db_close(db);
        return EXIT_FAILED;
    }
    if (json) {
        json_object *a = json_object_new_array();
        for (size_t i = 0; i < n; i++)
            json_object_array_add(a, status_session_json(cli->cfg, &list[i]));
        json_print(a);
    } else if (n == 0) {
        printf("no sessions yet\n");
    } else {
        for (size_t i = 0; i < n; i++)
            session_print(&list[i]);
    }
    free(list);
    db_close(db);
    return EXIT_OK;
}

/* ---- config and test-connection ---- */

/* As comments after the configuration: where an example photo goes on each destination with
 * the configured name patterns (dest_target, as a dry run shows it; nothing is contacted). */
static void config_examples(const struct config *cfg)
{
    static const struct pattern_values v = {
        .capture_time = 1720999805, /* 2024-07-14 23:30:05 on the camera's clock */
        .name = "IMG_0001.JPG",
        .make = "Canon",
        .model = "Canon EOS R6",
        .lens = "RF24-105mm F4 L IS USM",
        .serial = "012345678901",
        .card = "EOS_DIGITAL",
        .session = 1,
        .seq = 1,
        .md5 = "9e107d9d372bb6826bd81d3542a419d6",
    };
    struct dest **dests = NULL;
    size_t n = 0;
    struct error err;
    if (dest_create_all(cfg, &dests, &n, &err) < 0)
        return;
    printf(
        "\n# Where a photo goes with these patterns (docs/patterns.md), for example IMG_0001.JPG\n"
        "# shot 2024-07-14 23:30:05 with a Canon EOS R6 (lens RF24-105mm F4 L IS USM, serial\n"
        "# 012345678901) on card EOS_DIGITAL, the first file of session 1, MD5 9e107d9d...:\n");
    for (size_t i = 0; i < n; i++) {
        struct dest_target t;
        dest_target(dests[i], &v, v.name, NULL, &t);
        printf("#   %s: %s%s%s\n", dest_section(dests[i]), t.where, t.problem[0] ? ": " : "",
               t.problem);
    }
    dest_free_all(dests, n);
}

static int cmd_config(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"template", no_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool template = false, json = false;
    int c;
    optind = 0; /* 0: glibc re-initialises its state for this argv */
    while ((c = getopt_long(argc, argv, "tjh", opts, NULL)) != -1) {
        if (c == 't') {
            template = true;
        } else if (c == 'j') {
            json = true;
        } else if (c == 'h') {
            printf("usage: snapsync config [--template | --json]\n\n"
                   "Prints the effective configuration (secrets masked), or with --template a\n"
                   "commented configuration file holding every key with its default.\n\n"
                   "  -j, --json     the effective configuration as one JSON object: \"path\"\n"
                   "                 (the file read, null for the built-in default) and one\n"
                   "                 object per section with every key\n");
            return EXIT_OK;
        } else {
            return EXIT_USAGE;
        }
    }
    if (optind != argc || (template && json)) {
        fprintf(stderr, "usage: snapsync config [--template | --json]\n");
        return EXIT_USAGE;
    }
    if (template)
        return config_print_template(stdout) < 0 ? EXIT_FAILED : EXIT_OK;
    int rc = load_config(cli);
    if (rc)
        return rc;
    if (json) {
        json_object *o = config_to_json(cli->cfg);
        if (!o) {
            fprintf(stderr, "snapsync: out of memory\n");
            return EXIT_FAILED;
        }
        json_print(o);
        return EXIT_OK;
    }
    if (config_print(cli->cfg, stdout) < 0)
        return EXIT_FAILED;
    config_examples(cli->cfg);
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAILED;
}

/* One check of test-connection: a line, or an entry of the JSON "checks" array. name NULL:
 * the destinations could not be set up ("destinations" in JSON). */
static void check_report(json_object *checks, const char *name, bool ok, const char *detail)
{
    if (!checks) { /* destinations that could not be set up: the message names them */
        printf("%-5s %s%s%s\n", ok ? "OK" : "FAIL", name ? name : "", name ? ": " : "", detail);
        return;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(name ? name : "destinations"));
    json_object_object_add(o, "ok", json_object_new_boolean(ok));
    json_object_object_add(o, "detail", jsonout_string(detail));
    json_object_array_add(checks, o);
}

static int cmd_test_connection(struct cli *cli, int argc, char **argv)
{
    bool json = false;
    int rc = parse_json_flag(argc, argv, "snapsync test-connection [--json]",
                             "Checks every enabled destination: reachable, writable (a probe file\n"
                             "is created and deleted), and the MQTT broker when enabled. One line\n"
                             "per check; exit 0 only if all pass. With --json, one object:\n"
                             "{\"ok\": all passed, \"checks\": [{\"name\", \"ok\", \"detail\"}]}.",
                             &json, NULL);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if ((rc = load_config(cli)))
        return rc;
    json_object *checks = json ? json_object_new_array() : NULL;
    struct dest **dests = NULL;
    size_t n = 0;
    struct error err = {0};
    if (dest_create_all(cli->cfg, &dests, &n, &err) < 0) {
        check_report(checks, NULL, false, err.msg);
        rc = EXIT_FAILED;
    }
    for (size_t i = 0; i < n; i++) {
        char detail[512] = "";
        if (dest_probe(dests[i], detail, sizeof(detail), &err) == 0) {
            check_report(checks, dest_kind(dests[i]), true, detail);
        } else {
            check_report(checks, dest_label(dests[i]), false, err.msg);
            rc = EXIT_FAILED;
        }
    }
    dest_free_all(dests, n);
    if (cli->cfg->mqtt.enabled) {
        char detail[512] = "";
        bool ok = mqtt_probe(cli->cfg, 10, detail, sizeof(detail), &err) == 0;
        check_report(checks, "mqtt", ok, ok ? detail : err.msg);
        if (!ok)
            rc = EXIT_FAILED;
    }
    if (checks) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "ok", json_object_new_boolean(rc == EXIT_OK));
        json_object_object_add(o, "checks", checks);
        json_print(o);
    }
    return rc;
}

static int cmd_notify_test(struct cli *cli, int argc, char **argv)
{
    bool json = false;
    int rc = parse_json_flag(
        argc, argv, "snapsync notify-test [--json]",
        "Sends a sample notification (a completed backup of card SNAPSYNC_TEST) through every\n"
        "enabled channel: notify.email and each of notify.webhooks. One line per channel: OK, or\n"
        "FAIL with the error and whether a real notification would be retried. Exit 0 when all\n"
        "succeeded, 1 otherwise, 2 when no channel is configured. With --json, one object:\n"
        "{\"ok\", \"channels\": [{\"name\", \"ok\", \"error\", \"transient\"}]}.",
        &json, NULL);
    if (rc)
        return rc < 0 ? EXIT_OK : rc;
    if ((rc = load_config(cli)))
        return rc;
    size_t n = notify_channel_count(cli->cfg);
    if (n == 0) {
        fprintf(stderr, "snapsync: no notification channel is configured: enable notify.email or "
                        "add notify.webhooks (docs/notifications.md)\n");
        return EXIT_USAGE;
    }
    struct notify_msg m = {0};
    struct error err = {0};
    if (notify_channel_sample(cli->cfg, &m, &err) < 0) {
        fprintf(stderr, "snapsync: %s\n", err.msg);
        return EXIT_FAILED;
    }
    json_object *channels = json ? json_object_new_array() : NULL;
    for (size_t i = 0; i < n; i++) {
        char name[96];
        notify_channel_name(cli->cfg, i, name, sizeof(name));
        int r = notify_channel_send(cli->cfg, i, &m, &err);
        bool transient = r < 0 && notify_error_transient(r);
        if (r < 0) {
            config_scrub_secrets(cli->cfg, err.msg);
            rc = EXIT_FAILED;
        }
        if (channels) {
            json_object *o = json_object_new_object();
            json_object_object_add(o, "name", json_object_new_string(name));
            json_object_object_add(o, "ok", json_object_new_boolean(r == 0));
            json_object_object_add(o, "error", r < 0 ? jsonout_string(err.msg) : NULL);
            json_object_object_add(o, "transient", json_object_new_boolean(transient));
            json_object_array_add(channels, o);
        } else if (r == 0) {
            printf("OK    %s\n", name);
        } else {
            printf("FAIL  %s [%s]: %s\n", name,
                   transient ? "would be retried" : "would not be retried", err.msg);
        }
    }
    notify_msg_done(&m);
    if (channels) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "ok", json_object_new_boolean(rc == EXIT_OK));
        json_object_object_add(o, "channels", channels);
        json_print(o);
    }
    return rc;
}

static int cmd_start(struct cli *cli, int argc, char **argv)
{
    if (argc > 1) {
        bool help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;
        fprintf(help ? stdout : stderr,
                "usage: snapsync start\n\nRuns in the foreground: backs up every card inserted, "
                "unmounts it when done.\nSIGTERM/SIGINT stop, SIGHUP reloads the "
                "configuration.\n");
        return help ? EXIT_OK : EXIT_USAGE;
    }
    int rc = load_config(cli);
    if (rc != EXIT_OK)
        return rc;
    struct error err = {0};
    if (service_run(cli->config_path, cli->cfg, &err) < 0) {
        log_error("%s", err.msg);
        return EXIT_FAILED;
    }
    return EXIT_OK;
}

static int cmd_web(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int port = -1, c;
    optind = 0; /* 0: glibc re-initialises its state for this argv */
    while ((c = getopt_long(argc, argv, "p:h", opts, NULL)) != -1) {
        if (c == 'p') {
            char *end = NULL;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (errno || !end || *end || v < 0 || v > 65535) {
                fprintf(stderr, "snapsync: --port wants 0 to 65535 (0: any free port), got '%s'\n",
                        optarg);
                return EXIT_USAGE;
            }
            port = (int)v;
        } else if (c == 'h') {
            printf(
                "usage: snapsync web [--port N]\n\n"
                "Serves the dashboard and its JSON API (docs/api.md) on service.web_ui_bind,\n"
                "port service.web_ui_port, until SIGINT or SIGTERM. It shows what the database\n"
                "holds, including backups that other processes run; ejecting needs the service\n"
                "('snapsync start'), which serves the same dashboard itself.\n\n"
                "  -p, --port N   listen on port N instead (0: a free port, printed at start)\n");
            return EXIT_OK;
        } else {
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "usage: snapsync web [--port N]\n");
        return EXIT_USAGE;
    }
    int rc = load_config(cli);
    if (rc)
        return rc;
    /* blocked before any thread starts, so only sigwait below sees them */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct web *w = NULL;
    struct error err = {0};
    int r = web_new(cli->cfg, port, NULL, &w, &err);
    if (r == 0)
        r = web_start(w, &err);
    if (r < 0) {
        fprintf(stderr, "snapsync: %s\n", err.msg);
        web_free(w);
        return r == -EINVAL ? EXIT_USAGE : EXIT_FAILED;
    }
    int sig = 0;
    sigwait(&set, &sig);
    log_info("web: stopping (%s)", sig == SIGINT ? "SIGINT" : "SIGTERM");
    web_free(w);
    return EXIT_OK;
}

/* ---- report ---- */

#define REPORT_USAGE "snapsync report SESSION [--format text|json|html] [--output FILE]"

/* SESSION as a session id (1 or more) into *id; -EINVAL otherwise. */
static int parse_session_id(const char *arg, int64_t *id, struct error *err)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    if (errno || !end || end == arg || *end || v < 1)
        return error_set(err, -EINVAL,
                         "SESSION is a session id (see 'snapsync sessions') or 'last', not '%s'",
                         arg);
    *id = (int64_t)v;
    return 0;
}

static int cmd_report(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"format", required_argument, NULL, 'f'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    enum report_format format = REPORT_TEXT;
    const char *output = NULL;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "f:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (report_format_from_string(optarg, &format) < 0) {
                fprintf(stderr, "snapsync: --format is text, json or html, not '%s'\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'o':
            output = optarg;
            break;
        case 'h':
            printf("usage: %s\n\n"
                   "Writes the report of one backup session (an id from 'snapsync sessions', or\n"
                   "'last' for the newest): the card, start and end, the result, and every file\n"
                   "with its size, capture date, MD5 and SHA-1, and for each destination its path\n"
                   "there and whether the copy was verified, when. text (the default), json, or\n"
                   "html (one self-contained page that prints on A4). --output FILE writes it\n"
                   "there instead of standard output. Exit 1 when there is no such session.\n",
                   REPORT_USAGE);
            return EXIT_OK;
        default:
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: %s\n", REPORT_USAGE);
        return EXIT_USAGE;
    }
    const char *arg = argv[optind];
    bool last = strcmp(arg, "last") == 0;
    struct error err = {0};
    int64_t id = 0;
    if (!last && parse_session_id(arg, &id, &err) < 0) {
        fprintf(stderr, "snapsync: %s\n", err.msg);
        return EXIT_USAGE;
    }
    int rc = load_config(cli);
    if (rc)
        return rc;
    struct db *db = NULL;
    FILE *out = NULL;
    int r = status_db_open(cli->cfg, &db, &err);
    if (r == -ENOENT)
        r = last ? error_set(&err, -ENOENT, "no session yet: no backup has run")
                 : error_set(&err, -ENOENT, "no session %" PRId64 ": no backup has run yet", id);
    if (r == 0 && last)
        r = report_last_session(db, &id, &err);
    bool regular = false; /* output is a regular file: removed when the report fails */
    if (r == 0 && output) {
        struct stat sb;
        out = fopen(output, "w");
        if (!out)
            r = error_set_errno(&err, -errno, "cannot write '%s'", output);
        else
            regular = fstat(fileno(out), &sb) == 0 && S_ISREG(sb.st_mode);
    }
    if (r == 0)
        r = report_write(db, cli->cfg, id, format, out ? out : stdout, &err);
    if (out && fclose(out) != 0 && r == 0)
        r = error_set_errno(&err, -errno, "cannot write '%s'", output);
    if (r < 0 && regular)
        unlink(output); /* no half report left behind (never a device such as /dev/stdout) */
    db_close(db);
    if (r < 0) {
        fprintf(stderr, "snapsync: %s\n", err.msg);
        return r == -EINVAL ? EXIT_USAGE : EXIT_FAILED;
    }
    return EXIT_OK;
}

/* ---- verify ---- */

/* The run's verify_problem notification, when it found problems: queued, then delivered once
 * as backup_notify does. Never changes the exit status: a failure is logged. */
static void verify_notify(const struct config *cfg, struct db *db, const struct verify_summary *sum,
                          const struct verify_scope *scope, const struct notify_outbox_problems *ps)
{
    struct error err = {0};
    char text[64];
    bool queued = false;
    if (notify_channel_count(cfg) == 0)
        return;
    verify_scope_text(scope, text, sizeof(text));
    int r = notify_outbox_queue_verify(cfg, db, sum, text, ps, time(NULL), &queued, &err);
    if (r < 0) {
        log_warning("the notification of verification run %" PRId64 " is not queued: %s",
                    sum->run_id, err.msg);
        return;
    }
    if (queued)
        notify_deliver_once(cfg, db);
}

#define VERIFY_USAGE                                                                               \
    "verify [--session N | --since DATE | --all] [--dest NAME] [--json] [--rate MB/s]"
#define VERIFY_JSON_PROBLEMS_MAX 10000 /* problems listed in --json; the counts have them all */

struct verify_view {
    struct backup_view live; /* the progress line on a terminal (backup's) */
    bool json;
    json_object *problems;
    int64_t listed;
    struct notify_outbox_problems *notify; /* the first problems, for the notification */
};

static void on_verify_progress(const struct verify_progress *p, void *userdata)
{
    struct verify_view *v = userdata;
    if (!v->live.tty)
        return;
    char bytes[32];
    format_bytes((double)p->bytes_read, bytes, sizeof(bytes));
    snprintf(v->live.next_stats, sizeof(v->live.next_stats),
             "%" PRId64 " checked  %" PRId64 " problems  %s read  %.1f MB/s", p->counts->checked,
             p->counts->missing + p->counts->changed + p->counts->errors, bytes,
             p->elapsed_s > 0 ? (double)p->bytes_read / p->elapsed_s / 1e6 : 0.0);
    snprintf(v->live.next_file, sizeof(v->live.next_file), "%s", p->remote);
    for (char *c = v->live.next_file; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    log_run_locked(progress_update, &v->live);
}

struct verify_line {
    struct verify_view *v;
    const struct verify_problem *p;
};

/* Under the log's lock: the progress line steps aside for the problem's line. */
static void verify_problem_print(void *userdata)
{
    const struct verify_line *l = userdata;
    const struct verify_problem *p = l->p;
    if (l->v->live.tty)
        progress_clear(&l->v->live);
    if (p->result == DB_VERIFY_EXTRA)
        printf("extra: %s %s: %s\n", p->dest_label, p->remote, p->detail);
    else
        printf("%s: %s %s (card file %s): %s\n", db_verify_result_to_string(p->result),
               p->dest_label, p->remote, p->rel_path, p->detail);
    fflush(stdout);
    if (l->v->live.tty)
        progress_redraw(&l->v->live);
}

static void on_verify_problem(const struct verify_problem *p, void *userdata)
{
    struct verify_view *v = userdata;
    if (v->notify)
        notify_outbox_problem_add(v->notify, p);
    if (!v->json) {
        struct verify_line l = {v, p};
        log_run_locked(verify_problem_print, &l);
        return;
    }
    if (v->listed++ >= VERIFY_JSON_PROBLEMS_MAX)
        return;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "dest", jsonout_string(p->dest_id));
    json_object_object_add(o, "dest_label", jsonout_string(p->dest_label));
    jsonout_add_path(o, "path", p->remote);
    if (p->result == DB_VERIFY_EXTRA) {
        json_object_object_add(o, "card_path", NULL);
        json_object_object_add(o, "file_id", NULL);
    } else {
        jsonout_add_path(o, "card_path", p->rel_path);
        json_object_object_add(o, "file_id", json_object_new_int64(p->file_id));
    }
    json_object_object_add(o, "result",
                           json_object_new_string(db_verify_result_to_string(p->result)));
    json_object_object_add(o, "detail", jsonout_string(p->detail));
    json_object_array_add(v->problems, o);
}

/* "YYYY-MM-DD" (local midnight) into seconds since the epoch. */
static int parse_date(const char *s, int64_t *ret)
{
    struct tm tm = {0};
    const char *end = strptime(s, "%Y-%m-%d", &tm);
    if (!end || *end)
        return -EINVAL;
    tm.tm_isdst = -1;
    time_t t = mktime(&tm);
    if (t == (time_t)-1)
        return -EINVAL;
    *ret = (int64_t)t;
    return 0;
}

/* The destination NAME stands for: its config section ("unraid", "local", "rclone" ...), its kind
 * ("smb") or its id. NULL when none. */
static struct dest *dest_named(struct dest **dests, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(dest_section(dests[i]), name) == 0 || strcmp(dest_kind(dests[i]), name) == 0 ||
            strcmp(dest_id(dests[i]), name) == 0)
            return dests[i];
    return NULL;
}

static int cmd_verify(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"session", required_argument, NULL, 's'}, {"since", required_argument, NULL, 'S'},
        {"all", no_argument, NULL, 'a'},           {"dest", required_argument, NULL, 'd'},
        {"json", no_argument, NULL, 'j'},          {"rate", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    struct verify_scope scope = {0};
    struct notify_outbox_problems *notify = NULL;
    const char *dest_name = NULL;
    bool json = false;
    double rate_mbps = 0;
    int scopes = 0, c;
    optind = 0; /* 0: glibc re-initialises its state for this argv */
    while ((c = getopt_long(argc, argv, "s:S:ad:jr:h", opts, NULL)) != -1) {
        char *end = NULL;
        errno = 0;
        switch (c) {
        case 's': {
            long long v = strtoll(optarg, &end, 10);
            if (errno || !end || *end || v < 1) {
                fprintf(stderr, "snapsync: --session wants a session number, got '%s'\n", optarg);
                return EXIT_USAGE;
            }
            scope.session_id = v;
            scopes++;
            break;
        }
        case 'S':
            if (parse_date(optarg, &scope.since) < 0) {
                fprintf(stderr, "snapsync: --since wants a date YYYY-MM-DD, got '%s'\n", optarg);
                return EXIT_USAGE;
            }
            scopes++;
            break;
        case 'a':
            scopes++;
            break;
        case 'd':
            dest_name = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'r':
            rate_mbps = strtod(optarg, &end);
            if (errno || !end || *end || !(rate_mbps > 0) || rate_mbps > 1e6) {
                fprintf(stderr, "snapsync: --rate wants MB/s above 0, got '%s'\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'h':
            printf(
                "usage: snapsync " VERIFY_USAGE "\n\n"
                "Reads back the copies the database records and compares them with it: files\n"
                "on local, NFS and SMB destinations are read and hashed (size and MD5), Immich\n"
                "is asked by the SHA-1 whether it still has each asset. Each copy missing,\n"
                "changed or that could not be checked is named; the run is recorded in the\n"
                "database, and a destination with an ASC MHL history gets a generation with\n"
                "the files it re-hashed as verified or failed (docs/verification.md).\n\n"
                "  -s, --session N   only the files of backup session N\n"
                "  -S, --since DATE  only copies made since DATE (YYYY-MM-DD, local time)\n"
                "  -a, --all         every copy (the default)\n"
                "  -d, --dest NAME   only the destination NAME (unraid, s3, rclone ... or an id)\n"
                "  -j, --json        print one JSON object with the result on stdout\n"
                "  -r, --rate MB/s   read at most this many megabytes a second\n\n"
                "Exit status: 0 every copy checked is as recorded, 1 some copy is missing or\n"
                "changed, could not be checked, or the history could not be written, 2 usage\n"
                "or configuration error, 130/143 stopped by SIGINT/SIGTERM (what was checked\n"
                "is recorded).\n");
            return EXIT_OK;
        default:
            return EXIT_USAGE;
        }
    }
    if (optind != argc || scopes > 1) {
        fprintf(stderr, "usage: snapsync " VERIFY_USAGE "\n");
        return EXIT_USAGE;
    }
    int rc = load_config(cli);
    if (rc)
        return rc;
    struct error err = {0};
    struct dest **dests = NULL;
    size_t n = 0;
    struct db *db = NULL;
    json_object *problems = json ? json_object_new_array() : NULL;
    int r = dest_create_all(cli->cfg, &dests, &n, &err);
    if (r < 0) {
        fprintf(stderr, "snapsync: %s\n", err.msg);
        rc = EXIT_USAGE;
        goto out;
    }
    if (dest_name) {
        struct dest *d = dest_named(dests, n, dest_name);
        if (!d) {
            fprintf(stderr, "snapsync: no enabled destination is named '%s'; enabled:", dest_name);
            for (size_t i = 0; i < n; i++)
                fprintf(stderr, " %s (%s)", dest_section(dests[i]), dest_id(dests[i]));
            fputc('\n', stderr);
            rc = EXIT_USAGE;
            goto out;
        }
        scope.dest_id = dest_id(d);
    }
    r = db_open(cli->cfg->service.database_path, DB_READ_WRITE, &db, &err);
    if (r < 0) {
        fprintf(stderr, "snapsync: %s\n", err.msg);
        rc = EXIT_FAILED;
        goto out;
    }

    catch_stop_signals();
    bool tty = isatty(STDERR_FILENO) && !json;
    notify = notify_channel_count(cli->cfg) > 0 ? calloc(1, sizeof(*notify)) : NULL;
    struct verify_view view = {
        .live = {.tty = tty}, .json = json, .problems = problems, .notify = notify};
    struct verify_opts vo = {.rate_bps = rate_mbps * 1e6,
                             .cancel = &cancel_flag,
                             .on_progress = on_verify_progress,
                             .on_problem = on_verify_problem,
                             .userdata = &view};
    struct verify_summary sum;
    if (tty)
        log_set_line_hooks(progress_clear, progress_redraw, &view.live);
    r = verify_run(cli->cfg, db, dests, n, &scope, &vo, &sum, &err);
    if (tty) {
        log_run_locked(progress_erase, &view.live);
        log_set_line_hooks(NULL, NULL, NULL);
    }
    if (r < 0) {
        fprintf(stderr, "snapsync: %s\n", err.msg);
        rc = r == -EINVAL ? EXIT_USAGE : EXIT_FAILED;
        goto out;
    }
    const struct db_verify_counts *k = &sum.counts;
    if (json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "run_id", json_object_new_int64(sum.run_id));
        json_object_object_add(o, "status",
                               json_object_new_string(db_verify_status_to_string(sum.status)));
        status_verify_counts_add(o, k);
        json_object_object_add(o, "skipped", json_object_new_int64(sum.skipped));
        json_object_object_add(o, "bytes_read", json_object_new_int64((int64_t)sum.bytes_read));
        json_object_object_add(o, "duration_s", json_object_new_double(sum.elapsed_s));
        json_object_object_add(o, "mhl_generations",
                               json_object_new_int64((int64_t)sum.generations));
        json_object_object_add(o, "history_error", jsonout_error(cli->cfg, sum.history_error));
        json_object_object_add(o, "extra_error", jsonout_error(cli->cfg, sum.extra_error));
        json_object_object_add(o, "problems", problems);
        problems = NULL;
        json_object_object_add(o, "problems_truncated",
                               json_object_new_boolean(view.listed > VERIFY_JSON_PROBLEMS_MAX));
        json_print(o);
    } else {
        char bytes[32], dur[32];
        format_bytes((double)sum.bytes_read, bytes, sizeof(bytes));
        format_duration(sum.elapsed_s, dur, sizeof(dur));
        printf("verify run %" PRId64 " %s: %" PRId64 " copies checked, %" PRId64 " ok, %" PRId64
               " missing, %" PRId64 " changed, %" PRId64 " could not be checked; %s read in %s\n",
               sum.run_id, db_verify_status_to_string(sum.status), k->checked, k->ok, k->missing,
               k->changed, k->errors, bytes, dur);
        if (k->extra)
            printf("%" PRId64 " extra file%s: at a destination, not a copy SnapSync knows\n",
                   k->extra, k->extra == 1 ? "" : "s");
        if (sum.skipped)
            printf("%" PRId64 " copies at destinations no longer configured were skipped\n",
                   sum.skipped);
        if (sum.generations)
            printf("ASC MHL: %zu generation%s of checks written\n", sum.generations,
                   sum.generations == 1 ? "" : "s");
    }
    if (sum.history_error[0])
        fprintf(stderr, "snapsync: the ASC MHL history was not updated: %s\n", sum.history_error);
    if (sum.extra_error[0])
        fprintf(stderr, "snapsync: extra files not looked for: %s\n", sum.extra_error);
    verify_notify(cli->cfg, db, &sum, &scope, notify);
    int sig = atomic_load(&cancel_signal);
    if (sig)
        rc = 128 + sig;
    else if (sum.status != DB_VERIFY_CLEAN || sum.history_error[0])
        rc = EXIT_FAILED;
out:
    free(notify);
    json_object_put(problems);
    db_close(db);
    dest_free_all(dests, n);
    return rc;
}

static const struct command commands[] = {
    {"backup", cmd_backup, "backup PATH [--dry-run] [--json]", "back up a card or folder now"},
    {"status", cmd_status, "status [--json]", "current or last session, overall statistics"},
    {"sessions", cmd_sessions, "sessions [-n N] [--json]", "recent sessions"},
    {"config", cmd_config, "config [--template | --json]", "print the configuration or a template"},
    {"test-connection", cmd_test_connection, "test-connection [--json]", "check every destination"},
    {"verify", cmd_verify, "verify [--session N] [--dest NAME]",
     "re-read the copies, name what differs"},
    {"notify-test", cmd_notify_test, "notify-test [--json]", "send a sample notification"},
    {"start", cmd_start, "start", "run the service: back up every card inserted"},
    {"web", cmd_web, "web [--port N]", "serve the dashboard and JSON API"},
    {"report", cmd_report, "report SESSION [--format F] [-o F]",
     "one session's report: text, json or html"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: snapsync [--config FILE] COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-36s %s\n", commands[i].usage, commands[i].help);
    fprintf(out,
            "\noptions:\n"
            "  -c, --config FILE  configuration file (default: $SNAPSYNC_CONFIG, ./config.yaml,\n"
            "                     /etc/snapsync/config.yaml, else the built-in default)\n"
            "  -h, --help         this help; 'snapsync COMMAND --help' for a command\n"
            "  -V, --version      print the version\n");
}

int cli_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct cli cli = {0};
    int c;
    while ((c = getopt_long(argc, argv, "+c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            cli.config_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        case 'V':
            printf("snapsync %s\n", SNAPSYNC_VERSION);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[optind];
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(name, commands[i].name) != 0)
            continue;
        int rc = commands[i].run(&cli, argc - optind, argv + optind);
        log_set_scrubber(NULL, NULL);
        config_free(cli.cfg);
        return rc;
    }
    fprintf(stderr, "snapsync: unknown command '%s'\n", name);
    usage(stderr);
    return EXIT_USAGE;
}
