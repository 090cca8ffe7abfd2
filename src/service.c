/* SPDX-License-Identifier: MIT */
/*
 * The service loop (see service.h for the behaviour).
 *
 * Inside: `struct service` belongs to the loop thread. A `struct job` is one card's session: the
 * loop creates it and its thread, the thread runs engine_backup and the unmount, then pushes the
 * job onto a mutex-protected completion list and writes the eventfd; the loop joins the thread
 * and frees the job. The only fields both sides touch while the thread runs are `cancel` (set by
 * the loop, read by the engine) and `finished` (set by the thread before it unmounts, so that the
 * loop does not take its own unmount for a card pulled mid-backup).
 *
 * Configurations are reference-counted by the loop thread: a job keeps the one it started with,
 * so a SIGHUP never changes a running session.
 */
#include "service.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "cardmount.h"
#include "db.h"
#include "detector.h"
#include "engine.h"
#include "log.h"
#include "mqtt.h"
#include "notify_channel.h"
#include "notify_outbox.h"
#include "outage.h"
#include "scrub.h"
#include "status.h"
#include "web.h"

#define SERVICE_JOBS_MAX 16 /* sessions at once; more cards wait for a rescan */

#define SERVICE_IDLE_CARDS_MAX 16 /* cards left mounted after their session (retry, eject) */

/* The scrub (scrub.h) looks for copies due this long after the service started or the last
 * backup ended, between two slices of a pass, and after a pass or a failure. */
#define SCRUB_IDLE_S 5
#define SCRUB_BETWEEN_SLICES_S 5
#define SCRUB_RECHECK_S 3600

/* The outbox is looked at at least this often while notifications are configured: it picks up
 * what a one-off `snapsync backup` queued and could not deliver. */
#define NOTIFY_RECHECK_S 60

enum {
    SRC_SIGNAL = 1,
    SRC_DETECTOR,
    SRC_DONE,
    SRC_WATCHDOG,
    SRC_COMMAND,
    SRC_SCRUB,
    SRC_SCRUB_DONE,
    SRC_NOTIFY,
    SRC_NOTIFY_DONE
};

struct svc_config {
    struct config *cfg;
    bool owned; /* loaded on SIGHUP, freed with the last reference */
    int refs;
};

struct service;

struct job {
    struct service *svc;
    struct svc_config *conf;
    struct detector_card card;
    pthread_t thread;
    atomic_bool cancel; /* read by the session's workers */
    atomic_bool finished;
    bool removed; /* the card went away during the session */
    bool unmounted;
    bool eject; /* unmount when the session ends, whatever its result */
    int rc;
    struct error err;
    struct engine_report report;
    struct job *next;      /* running jobs (loop thread) */
    struct job *done_next; /* completion list (under svc->lock) */
};

struct service {
    const char *config_path;
    struct svc_config *conf;
    struct detector *det;
    int epfd, sigfd, donefd, wdfd;
    pthread_mutex_t lock;
    struct job *done; /* under lock */
    struct job *jobs;
    size_t n_jobs;
    bool stopping;
    /* Home Assistant and the dashboard; they keep the configuration they started with */
    struct svc_config *ui_conf;
    struct mqtt *mqtt;
    bool mqtt_removed;
    struct web *web;
    int cmdfd;             /* eventfd: a command from MQTT or the web is waiting */
    atomic_bool eject_req; /* commands, set by other threads, handled by the loop */
    atomic_bool retry_req;
    /* cards whose session ended with the card still mounted (loop thread) */
    struct detector_card idle[SERVICE_IDLE_CARDS_MAX];
    size_t n_idle;
    /* the scrub: one slice at a time in its own thread, started by the loop when no card is
     * being backed up; the thread owns the scrub_result fields until it writes scrub_donefd */
    int scrubfd;      /* timerfd: time to look for copies due */
    int scrub_donefd; /* eventfd: the slice's thread ended */
    bool scrub_running;
    pthread_t scrub_thread;
    atomic_bool scrub_cancel;
    bool scrub_paused; /* cancelled because a card went in: resumes when the backups end */
    struct svc_config *scrub_conf;
    struct db_verify_cursor scrub_cursor; /* where the pass is, between slices */
    int scrub_rc;
    struct error scrub_err;
    struct scrub_slice scrub_result;
    struct notify_outbox_problems *scrub_problems; /* the slice's first problems, or NULL */
    /* destinations down as the sessions see them, for destination_down (any thread) */
    struct outage *outage;
    /* the notification outbox: delivered in its own thread with its own db connection, started
     * by the loop when notifyfd fires; the thread owns the notify_result fields until it writes
     * notify_donefd */
    int notifyfd;      /* timerfd: time to deliver what is due */
    int notify_donefd; /* eventfd: the delivery's thread ended */
    bool notify_running;
    bool notify_again; /* the timer fired while a delivery ran: look again when it ends */
    pthread_t notify_thread;
    atomic_bool notify_cancel;
    struct svc_config *notify_conf;
    int notify_rc;
    struct error notify_err;
    struct outbox_result notify_result;
};

static void conf_unref(struct svc_config *c)
{
    if (!c || --c->refs > 0)
        return;
    if (c->owned)
        config_free(c->cfg);
    free(c);
}

static void notify_status(const struct service *svc)
{
    if (svc->stopping)
        sd_notifyf(0, "STATUS=Stopping: waiting for %zu session(s)", svc->n_jobs);
    else if (svc->n_jobs)
        sd_notifyf(0, "STATUS=Backing up %zu card(s)", svc->n_jobs);
    else
        sd_notify(0, "STATUS=Waiting for cards");
}

static const char *card_name(const struct detector_card *c)
{
    return c->label[0] ? c->label : c->uuid[0] ? c->uuid : c->mount_point;
}

/* ---- worker ---- */

static void mark_safe(const struct config *cfg, int64_t session_id)
{
    struct db *db = NULL;
    struct error err = {0};
    int r = db_open(cfg->service.database_path, DB_READ_WRITE, &db, &err);
    if (r == 0)
        r = db_session_set_safe_to_remove(db, session_id, true, &err);
    if (r < 0)
        log_warning("session %" PRId64 ": cannot record that the card is safe to remove: %s",
                    session_id, err.msg);
    db_close(db);
}

/* Engine progress of one session, to Home Assistant and the dashboard (job thread). With two
 * cards at once, both report to the one device: the latest report wins. */
static void job_progress(const struct engine_progress *p, void *userdata)
{
    struct job *j = userdata;
    /* each destination up, or down with a reason (one not yet prepared has none: unknown) */
    for (size_t i = 0; i < p->n_dests; i++)
        if (p->dests[i].usable || p->dests[i].problem[0])
            outage_observe(j->svc->outage, p->dests[i].id, p->dests[i].usable, p->dests[i].problem,
                           time(NULL));
    if (!j->svc->mqtt && !j->svc->web)
        return;
    bool final = status_progress_is_final(p);
    struct status_live st;
    status_live_from_progress(p, final, &st);
    if (!final)
        st.card_present = true;
    mqtt_publish_state(j->svc->mqtt, &st, final || p->status == DB_SESSION_SCANNING);
    if (j->svc->web)
        web_set_live_state(j->svc->web, &st);
}

static void *job_main(void *arg)
{
    struct job *j = arg;
    const struct config *cfg = j->conf->cfg;
    struct engine_options opt = {
        .cancel = &j->cancel,
        .on_progress = job_progress,
        .userdata = j,
    };

    j->rc = engine_backup(cfg, j->card.mount_point, &opt, &j->report, &j->err);
    atomic_store(&j->finished, true);
    /* Only a card with nothing left uncopied may be called safe to remove: every file backed up
     * (completed) or none to back up (empty). Partial, failed and interrupted stay mounted. */
    bool nothing_left = engine_status_nothing_left(j->report.status);
    if (j->rc == 0 && nothing_left && !atomic_load(&j->cancel) && j->card.mounted_by_us &&
        cfg->sd_card.unmount_when_done) {
        struct error err = {0};
        if (cardmount_unmount(j->card.mount_point, false, &err) == 0) {
            j->unmounted = true;
            mark_safe(cfg, j->report.session_id);
        } else {
            log_warning("%s", err.msg);
        }
    }

    struct service *svc = j->svc;
    pthread_mutex_lock(&svc->lock);
    j->done_next = svc->done;
    svc->done = j;
    pthread_mutex_unlock(&svc->lock);
    uint64_t one = 1;
    if (write(svc->donefd, &one, sizeof(one)) < 0)
        log_error("cannot wake the service loop: %s", strerror(errno));
    return NULL;
}

/* ---- the scrub ---- */

/* The verification state (the last run, the copies with problems) to Home Assistant: after a
 * scrub slice, and after a backup, which may have made a lost copy again. Loop thread. */
static void publish_verification(struct service *svc)
{
    if (!svc->mqtt || svc->mqtt_removed)
        return;
    struct db *db = NULL;
    struct error err = {0};
    struct status_verification *v = calloc(1, sizeof(*v));
    int r = v ? status_db_open(svc->conf->cfg, &db, &err) : error_set(&err, -ENOMEM, "no memory");
    if (r == 0)
        r = status_verification_get(db, v, &err);
    if (r == 0)
        mqtt_publish_verification(svc->mqtt, v);
    else if (r != -ENOENT)
        log_warning("cannot read the verification state for Home Assistant: %s", err.msg);
    db_close(db);
    free(v);
}

/* Looks for copies due in seconds (loop thread); nothing when the scrub is off. */
static void scrub_arm(struct service *svc, int seconds)
{
    if (svc->scrubfd < 0)
        return;
    bool on = svc->conf->cfg->backup.verify_interval_days > 0;
    struct itimerspec its = {.it_value = {on ? seconds : 0, on && seconds == 0 ? 1 : 0}};
    if (timerfd_settime(svc->scrubfd, 0, &its, NULL) < 0)
        log_warning("scrub: cannot set its timer: %s", strerror(errno));
}

static void notify_scrub(struct service *svc);

/* Scrub thread; userdata the slice's problems for its notification (may be NULL). */
static void on_scrub_problem(const struct verify_problem *p, void *userdata)
{
    if (userdata)
        notify_outbox_problem_add(userdata, p);
    log_warning("scrub: %s: %s %s (card file %s): %s", db_verify_result_to_string(p->result),
                p->dest_label, p->remote, p->rel_path, p->detail);
}

static void *scrub_main(void *arg)
{
    struct service *svc = arg;
    pthread_setname_np(pthread_self(), "snapsync-scrub");
    svc->scrub_rc =
        scrub_slice(svc->scrub_conf->cfg, time(NULL), &svc->scrub_cancel, &svc->scrub_cursor,
                    on_scrub_problem, svc->scrub_problems, &svc->scrub_result, &svc->scrub_err);
    uint64_t one = 1;
    if (write(svc->scrub_donefd, &one, sizeof(one)) < 0)
        log_error("cannot wake the service loop: %s", strerror(errno));
    return NULL;
}

/* The timer fired: a slice starts unless a card is being backed up (the end of the last backup
 * arms the timer again), the service stops, or one runs. Loop thread. */
static void scrub_start(struct service *svc)
{
    uint64_t ticks;
    if (read(svc->scrubfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
        log_warning("scrub timer: %s", strerror(errno));
    if (svc->stopping || svc->n_jobs > 0 || svc->scrub_running ||
        svc->conf->cfg->backup.verify_interval_days <= 0)
        return;
    svc->scrub_conf = svc->conf;
    svc->scrub_conf->refs++;
    atomic_store(&svc->scrub_cancel, false);
    svc->scrub_paused = false;
    memset(&svc->scrub_err, 0, sizeof(svc->scrub_err));
    free(svc->scrub_problems); /* NULL (no notification) when out of memory */
    svc->scrub_problems = calloc(1, sizeof(*svc->scrub_problems));
    int r = pthread_create(&svc->scrub_thread, NULL, scrub_main, svc);
    if (r != 0) {
        log_error("scrub: cannot start its thread: %s", strerror(r));
        conf_unref(svc->scrub_conf);
        svc->scrub_conf = NULL;
        scrub_arm(svc, SCRUB_RECHECK_S);
        return;
    }
    svc->scrub_running = true;
}

/* A card went in, or the service stops: the slice ends at its next chunk (what it checked is
 * recorded) and, for a card, the scrub goes on when the backups are done. */
static void scrub_pause(struct service *svc, const char *why)
{
    if (!svc->scrub_running || atomic_exchange(&svc->scrub_cancel, true))
        return;
    svc->scrub_paused = true;
    log_info("scrub: paused (%s); it goes on when no card is being backed up", why);
}

/* The slice's thread ended (loop thread): what it found, and when to look again. */
static void scrub_done(struct service *svc)
{
    uint64_t n;
    if (read(svc->scrub_donefd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        log_warning("eventfd: %s", strerror(errno));
    if (!svc->scrub_running)
        return;
    pthread_join(svc->scrub_thread, NULL);
    svc->scrub_running = false;
    conf_unref(svc->scrub_conf);
    svc->scrub_conf = NULL;
    const struct scrub_slice *res = &svc->scrub_result;
    const struct verify_summary *sum = &res->sum;
    const struct db_verify_counts *k = &sum->counts;
    int next = SCRUB_RECHECK_S;
    if (svc->scrub_rc < 0) {
        log_error("scrub: %s; trying again in %d minutes", svc->scrub_err.msg,
                  SCRUB_RECHECK_S / 60);
    } else if (res->nothing_due) {
        log_debug("scrub: no copy is due");
        memset(&svc->scrub_cursor, 0, sizeof(svc->scrub_cursor));
    } else {
        log_msg(sum->status == DB_VERIFY_PROBLEMS ? LOG_LEVEL_WARNING : LOG_LEVEL_INFO,
                "scrub: verification run %" PRId64 " %s: %" PRId64 " copies checked, %" PRId64
                " ok, %" PRId64 " missing, %" PRId64 " changed, %" PRId64 " could not be checked",
                sum->run_id, db_verify_status_to_string(sum->status), k->checked, k->ok, k->missing,
                k->changed, k->errors);
        if (sum->history_error[0])
            log_warning("scrub: the ASC MHL history was not updated: %s", sum->history_error);
        if (sum->complete)
            memset(&svc->scrub_cursor, 0, sizeof(svc->scrub_cursor)); /* the next pass */
        else if (k->checked > k->errors)
            next = SCRUB_BETWEEN_SLICES_S; /* more are due: the next slice soon */
        /* else nothing could be checked (a destination down): not again before long */
    }
    if (svc->scrub_rc == 0 && !res->nothing_due) {
        publish_verification(svc);
        notify_scrub(svc);
    }
    if (svc->stopping || (svc->scrub_paused && svc->n_jobs > 0))
        return; /* the end of the last backup arms the timer */
    scrub_arm(svc, svc->scrub_paused ? SCRUB_IDLE_S : next); /* cut for a card: on when idle */
}

/* ---- notifications ---- */

static bool notify_on(const struct service *svc)
{
    return notify_channel_count(svc->conf->cfg) > 0;
}

/* Delivers what is due in seconds (0: at once); nothing when no channel is configured. Loop
 * thread. */
static void notify_arm(struct service *svc, int64_t seconds)
{
    if (svc->notifyfd < 0)
        return;
    bool on = notify_on(svc) && !svc->stopping;
    if (seconds < 0)
        seconds = 0;
    struct itimerspec its = {.it_value = {on ? (time_t)seconds : 0, on && seconds == 0 ? 1 : 0}};
    if (timerfd_settime(svc->notifyfd, 0, &its, NULL) < 0)
        log_warning("notifications: cannot set their timer: %s", strerror(errno));
}

static void *notify_main(void *arg)
{
    struct service *svc = arg;
    pthread_setname_np(pthread_self(), "snapsync-notify");
    const struct config *cfg = svc->notify_conf->cfg;
    struct db *db = NULL;
    svc->notify_rc = db_open(cfg->service.database_path, DB_READ_WRITE, &db, &svc->notify_err);
    if (svc->notify_rc == 0)
        svc->notify_rc = notify_outbox_deliver(cfg, db, time(NULL), &svc->notify_cancel,
                                               &svc->notify_result, &svc->notify_err);
    db_close(db);
    uint64_t one = 1;
    if (write(svc->notify_donefd, &one, sizeof(one)) < 0)
        log_error("cannot wake the service loop: %s", strerror(errno));
    return NULL;
}

static int64_t outage_threshold(const struct service *svc)
{
    return (int64_t)svc->conf->cfg->notify.destination_down_minutes * 60;
}

/* Queues destination_down for each destination down longer than destination_down_minutes
 * (once per outage) and the back-up note of each told one seen up since. Loop thread. */
static void notify_outages(struct service *svc)
{
    const struct config *cfg = svc->conf->cfg;
    struct outage_event ev;
    struct db *db = NULL;
    struct error err = {0};
    char name[NOTIFY_LABEL_MAX];
    while (outage_take(svc->outage, time(NULL), outage_threshold(svc), &ev) == 1) {
        notify_outbox_dest_name(cfg, ev.id, name, sizeof(name));
        if (ev.back_up)
            log_info("destination %s is back up after %" PRId64 " min", name, ev.minutes);
        else
            log_warning("destination %s down for %" PRId64 " min: %s", name, ev.minutes, ev.reason);
        struct notify_session s = {
            .kind = NOTIFY_KIND_DEST_DOWN,
            .down = {.dest = name,
                     .reason = ev.reason,
                     .since = ev.since,
                     .minutes = ev.minutes,
                     .back_up = ev.back_up},
        };
        int r = db ? 0 : db_open(cfg->service.database_path, DB_READ_WRITE, &db, &err);
        if (r == 0)
            r = notify_outbox_queue(cfg, db, &s, 0, time(NULL), NULL, &err);
        if (r < 0)
            log_warning("the notification that destination %s is %s is not queued: %s", name,
                        ev.back_up ? "back up" : "down", err.msg);
    }
    db_close(db);
}

/* The timer fired: a delivery starts unless one runs or the service stops. Loop thread. */
static void notify_start(struct service *svc)
{
    uint64_t ticks;
    if (read(svc->notifyfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
        log_warning("notification timer: %s", strerror(errno));
    if (!svc->stopping && notify_on(svc))
        notify_outages(svc);
    if (svc->notify_running) {
        svc->notify_again = true;
        return;
    }
    if (svc->stopping || !notify_on(svc))
        return;
    svc->notify_conf = svc->conf;
    svc->notify_conf->refs++;
    atomic_store(&svc->notify_cancel, false);
    svc->notify_again = false;
    memset(&svc->notify_err, 0, sizeof(svc->notify_err));
    memset(&svc->notify_result, 0, sizeof(svc->notify_result));
    int r = pthread_create(&svc->notify_thread, NULL, notify_main, svc);
    if (r != 0) {
        log_error("notifications: cannot start their thread: %s", strerror(r));
        conf_unref(svc->notify_conf);
        svc->notify_conf = NULL;
        notify_arm(svc, NOTIFY_RECHECK_S);
        return;
    }
    svc->notify_running = true;
}

/* The delivery's thread ended (loop thread): when to look again. */
static void notify_done(struct service *svc)
{
    uint64_t n;
    if (read(svc->notify_donefd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        log_warning("eventfd: %s", strerror(errno));
    if (!svc->notify_running)
        return;
    pthread_join(svc->notify_thread, NULL);
    svc->notify_running = false;
    conf_unref(svc->notify_conf);
    svc->notify_conf = NULL;
    if (svc->notify_rc < 0 && svc->notify_rc != -ECANCELED)
        log_error("notifications: %s", svc->notify_err.msg);
    if (svc->stopping)
        return;
    int64_t wait = NOTIFY_RECHECK_S;
    int64_t due = svc->notify_result.next_due;
    if (svc->notify_rc == 0 && due > 0 && due - (int64_t)time(NULL) < wait)
        wait = due - (int64_t)time(NULL);
    int64_t down = outage_next_due(svc->outage, time(NULL), outage_threshold(svc));
    if (down > 0 && down - (int64_t)time(NULL) < wait)
        wait = down - (int64_t)time(NULL);
    if (wait < 1)
        wait = 1; /* what is due now waits a second: never a busy loop */
    if (svc->notify_again)
        wait = 0; /* queued while this delivery ran */
    notify_arm(svc, wait);
}

/* At start and after a reload: the deliveries of channels no longer configured are given up,
 * then what is due is delivered at once. Loop thread. */
static void notify_configured(struct service *svc)
{
    struct db *db = NULL;
    struct error err = {0};
    int64_t count = 0;
    struct notify_outbox_channels *chs = malloc(sizeof(*chs));
    if (chs) {
        notify_outbox_channels(svc->conf->cfg, chs);
        if (chs->n_skipped)
            log_warning("notifications: %zu channel(s) left out; %s", chs->n_skipped, chs->skipped);
        free(chs);
    }
    int r = db_open(svc->conf->cfg->service.database_path, DB_READ_WRITE, &db, &err);
    if (r == 0)
        r = notify_outbox_forget_others(svc->conf->cfg, db, &count, &err);
    db_close(db);
    if (r < 0)
        log_warning("notifications: %s", err.msg);
    else if (count > 0)
        log_warning("notifications: %" PRId64 " pending deliveries given up: their channel is no "
                    "longer configured",
                    count);
    notify_arm(svc, 0);
}

/* Whether the card of a finished job may be pulled: nothing left uncopied, and unmounted unless
 * someone else mounted it. */
static bool job_safe_to_remove(const struct job *j)
{
    return engine_status_nothing_left(j->report.status) && (j->unmounted || !j->card.mounted_by_us);
}

/* A session ended: its notification is queued (a quick write) and delivered soon. A failure is
 * logged and changes nothing else. Loop thread. */
static void notify_session(struct service *svc, const struct job *j)
{
    if (!notify_on(svc) || j->report.session_id <= 0)
        return;
    const struct config *cfg = svc->conf->cfg; /* the channels deliveries will use */
    bool safe = job_safe_to_remove(j);
    struct db *db = NULL;
    struct error err = {0};
    bool queued = false;
    int r = db_open(cfg->service.database_path, DB_READ_WRITE, &db, &err);
    if (r == 0)
        r = notify_outbox_queue_report(cfg, db, &j->report, safe ? 1 : 0, time(NULL), &queued,
                                       &err);
    db_close(db);
    if (r < 0)
        log_warning("card '%s': the notification of session %" PRId64 " is not queued: %s",
                    card_name(&j->card), j->report.session_id, err.msg);
    else if (queued)
        notify_arm(svc, 0);
}

/* The scrub slice's verify_problem notification, when it found a copy missing or changed or an
 * extra file: queued like a session's. Loop thread, after the slice's thread ended. */
static void notify_scrub(struct service *svc)
{
    if (!notify_on(svc))
        return;
    const struct config *cfg = svc->conf->cfg;
    const struct verify_summary *sum = &svc->scrub_result.sum;
    struct db *db = NULL;
    struct error err = {0};
    bool queued = false;
    int r = db_open(cfg->service.database_path, DB_READ_WRITE, &db, &err);
    if (r == 0)
        r = notify_outbox_queue_verify(cfg, db, sum, SCRUB_SCOPE, svc->scrub_problems, time(NULL),
                                       &queued, &err);
    db_close(db);
    if (r < 0)
        log_warning("scrub: the notification of verification run %" PRId64 " is not queued: %s",
                    sum->run_id, err.msg);
    else if (queued)
        notify_arm(svc, 0);
}

/* ---- detector callbacks (loop thread) ---- */

static struct job *find_job(struct service *svc, const struct detector_card *c)
{
    for (struct job *j = svc->jobs; j; j = j->next)
        if (strcmp(j->card.mount_point, c->mount_point) == 0 ||
            (c->device[0] && strcmp(j->card.device, c->device) == 0))
            return j;
    return NULL;
}

/* Forgets an idle card (it went away, or a session starts on it again). */
static void idle_forget(struct service *svc, const struct detector_card *c)
{
    for (size_t i = 0; i < svc->n_idle; i++)
        if (strcmp(svc->idle[i].mount_point, c->mount_point) == 0 ||
            (c->device[0] && strcmp(svc->idle[i].device, c->device) == 0)) {
            svc->idle[i] = svc->idle[--svc->n_idle];
            return;
        }
}

static void on_card_added(const struct detector_card *card, void *userdata)
{
    struct service *svc = userdata;
    if (svc->stopping)
        return;
    idle_forget(svc, card);
    if (find_job(svc, card)) {
        log_debug("card '%s' is already being backed up", card_name(card));
        return;
    }
    scrub_pause(svc, "a card went in");
    if (svc->n_jobs >= SERVICE_JOBS_MAX) {
        log_warning("%d backups running: card '%s' is not backed up now", SERVICE_JOBS_MAX,
                    card_name(card));
        return;
    }
    struct job *j = calloc(1, sizeof(*j));
    if (!j) {
        log_error("out of memory: card '%s' is not backed up", card_name(card));
        return;
    }
    j->svc = svc;
    j->conf = svc->conf;
    j->card = *card;
    atomic_init(&j->finished, false);
    int r = pthread_create(&j->thread, NULL, job_main, j);
    if (r != 0) {
        log_error("cannot start a backup of card '%s': %s", card_name(card), strerror(r));
        free(j);
        return;
    }
    svc->conf->refs++;
    j->next = svc->jobs;
    svc->jobs = j;
    svc->n_jobs++;
    log_info("backing up card '%s' from '%s'", card_name(card), card->mount_point);
    notify_status(svc);
}

static void on_card_removed(const struct detector_card *card, void *userdata)
{
    struct service *svc = userdata;
    idle_forget(svc, card);
    struct job *j = find_job(svc, card);
    if (!j || atomic_load(&j->finished) || atomic_load(&j->cancel))
        return;
    j->removed = true;
    atomic_store(&j->cancel, true);
    log_warning("card '%s' went away during its backup: stopping; inserting it again resumes",
                card_name(card));
}

/* ---- loop ---- */

static void finish_job(struct service *svc, struct job *j)
{
    pthread_join(j->thread, NULL);
    for (struct job **p = &svc->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    svc->n_jobs--;
    const char *name = card_name(&j->card);
    if (j->eject && !j->unmounted && !j->removed) {
        struct error err = {0};
        if (j->card.mounted_by_us && cardmount_unmount(j->card.mount_point, true, &err) == 0) {
            j->unmounted = true;
            log_info("card '%s' ejected: safe to remove", name);
        } else if (!j->card.mounted_by_us) {
            log_warning("card '%s' was mounted by someone else: unmount it there", name);
        } else {
            log_warning("%s", err.msg);
        }
    }
    if (!j->unmounted && !j->removed && svc->n_idle < SERVICE_IDLE_CARDS_MAX)
        svc->idle[svc->n_idle++] = j->card; /* still mounted: retry and eject can reach it */
    if (j->rc < 0) {
        log_error("card '%s': %s", name, j->err.msg);
    } else {
        const struct db_totals *t = &j->report.totals;
        log_info("card '%s': session %" PRId64 " %s: %" PRId64 " copied, %" PRId64
                 " already backed up, %" PRId64 " duplicates, %" PRId64 " failed%s",
                 name, j->report.session_id, db_session_status_to_string(j->report.status),
                 t->files_copied, t->files_skipped, t->files_duplicate, t->files_failed,
                 j->unmounted ? "; unmounted, safe to remove" : "");
        if (j->removed)
            log_info("card '%s': insert it again to finish the backup", name);
    }
    if (j->rc == 0 && !svc->mqtt_removed)
        mqtt_publish_session(svc->mqtt, &j->report, job_safe_to_remove(j));
    notify_session(svc, j);
    conf_unref(j->conf);
    free(j);
}

static void drain_done(struct service *svc)
{
    uint64_t n;
    if (read(svc->donefd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        log_warning("eventfd: %s", strerror(errno));
    pthread_mutex_lock(&svc->lock);
    struct job *done = svc->done;
    svc->done = NULL;
    pthread_mutex_unlock(&svc->lock);
    bool done_any = done != NULL;
    while (done) {
        struct job *next = done->done_next;
        finish_job(svc, done);
        done = next;
    }
    if (done_any)
        publish_verification(svc);
    if (svc->n_jobs == 0 && !svc->stopping && !svc->scrub_running)
        scrub_arm(svc, SCRUB_IDLE_S);
    notify_status(svc);
}

static void stop(struct service *svc, int sig)
{
    if (!svc->stopping)
        log_info("%s: stopping%s", strsignal(sig),
                 svc->n_jobs ? "; running sessions are interrupted and can resume" : "");
    svc->stopping = true;
    sd_notify(0, "STOPPING=1");
    for (struct job *j = svc->jobs; j; j = j->next)
        atomic_store(&j->cancel, true);
    if (svc->scrub_running)
        atomic_store(&svc->scrub_cancel, true);
    if (svc->notify_running)
        atomic_store(&svc->notify_cancel, true); /* the channel timeouts bound a send under way */
    notify_status(svc);
}

static void reload(struct service *svc)
{
    struct config *cfg = NULL;
    struct error err = {0};
    sd_notify(0, "RELOADING=1");
    int r = config_load(svc->config_path, &cfg, &err);
    if (r < 0) {
        log_error("reloading the configuration failed, keeping the running one: %s", err.msg);
        sd_notify(0, "READY=1");
        return;
    }
    struct svc_config *c = calloc(1, sizeof(*c));
    if (!c) {
        config_free(cfg);
        log_error("reloading the configuration failed: out of memory");
        sd_notify(0, "READY=1");
        return;
    }
    for (size_t i = 0; i < cfg->n_warnings; i++)
        log_warning("%s", cfg->warnings[i]);
    enum log_level level;
    if (strcmp(cfg->service.log_level, svc->conf->cfg->service.log_level) != 0 &&
        log_level_from_string(cfg->service.log_level, &level) == 0) {
        log_set_level(level);
        log_info("log level is now %s", cfg->service.log_level);
    }
    c->cfg = cfg;
    c->owned = true;
    c->refs = 1;
    /* swapped before the old configuration can be freed (conf_unref) */
    log_set_scrubber(config_scrub_log_line, cfg);
    conf_unref(svc->conf);
    svc->conf = c;
    log_info("configuration reloaded from '%s'", cfg->path ? cfg->path : "(built-in default)");
    if (svc->mqtt && !cfg->mqtt.enabled && !svc->mqtt_removed) {
        /* turned off: take the device out of Home Assistant rather than leave it stale; the
         * client itself goes at exit, since running sessions still hold it */
        mqtt_remove_device(svc->mqtt);
        svc->mqtt_removed = true;
        log_info("mqtt: disabled; the SnapSync device was removed from Home Assistant");
    }
    if (svc->det) {
        r = detector_reconfigure(svc->det, cfg, &err);
        if (r < 0)
            log_error("%s", err.msg);
        if (detector_scan(svc->det) < 0)
            log_error("cannot look for cards: out of memory");
    }
    if (!svc->scrub_running && svc->n_jobs == 0)
        scrub_arm(svc, SCRUB_IDLE_S); /* turned on, off, or another interval */
    notify_configured(svc);
    sd_notify(0, "READY=1");
}

/* ---- commands from Home Assistant and the dashboard ---- */

static void post_command(struct service *svc, atomic_bool *flag)
{
    atomic_store(flag, true);
    uint64_t one = 1;
    if (write(svc->cmdfd, &one, sizeof(one)) < 0)
        log_error("cannot wake the service loop: %s", strerror(errno));
}

static void on_mqtt_command(enum mqtt_command cmd, void *userdata)
{
    struct service *svc = userdata;
    post_command(svc, cmd == MQTT_COMMAND_EJECT ? &svc->eject_req : &svc->retry_req);
}

static int on_web_eject(void *userdata, struct error *err)
{
    (void)err;
    struct service *svc = userdata;
    post_command(svc, &svc->eject_req);
    return 0;
}

static void on_web_retried(void *userdata)
{
    struct service *svc = userdata;
    post_command(svc, &svc->retry_req);
}

/* Eject: running sessions stop (resumable) and their cards are unmounted when they end; idle
 * cards that SnapSync mounted are unmounted now. */
static void eject(struct service *svc)
{
    log_info("eject requested");
    for (struct job *j = svc->jobs; j; j = j->next) {
        j->eject = true;
        atomic_store(&j->cancel, true);
    }
    for (size_t i = 0; i < svc->n_idle;) {
        struct detector_card *c = &svc->idle[i];
        struct error err = {0};
        if (!c->mounted_by_us) {
            log_warning("card '%s' was mounted by someone else: unmount it there", card_name(c));
            i++;
            continue;
        }
        if (cardmount_unmount(c->mount_point, true, &err) == 0)
            log_info("card '%s' ejected: safe to remove", card_name(c));
        else
            log_warning("%s", err.msg);
        svc->idle[i] = svc->idle[--svc->n_idle];
    }
}

/* Retry: the files marked for retry (web) or all failed ones (Home Assistant's button) are
 * picked up by a new session on every card still mounted. */
static void retry(struct service *svc, bool mark_all_failed)
{
    if (mark_all_failed) {
        struct db *db = NULL;
        struct error err = {0};
        struct db_file *failed = NULL;
        size_t n = 0;
        int r = db_open(svc->conf->cfg->service.database_path, DB_READ_WRITE, &db, &err);
        if (r == 0)
            r = db_files_failed(db, 10000, &failed, &n, &err);
        for (size_t i = 0; r == 0 && i < n; i++)
            r = db_file_retry(db, failed[i].id, NULL, &err);
        if (r < 0)
            log_error("retry: %s", err.msg);
        else
            log_info("retry: %zu failed file(s) marked", n);
        free(failed);
        db_close(db);
    }
    struct detector_card cards[SERVICE_IDLE_CARDS_MAX];
    size_t n = svc->n_idle;
    memcpy(cards, svc->idle, n * sizeof(cards[0]));
    for (size_t i = 0; i < n; i++)
        on_card_added(&cards[i], svc);
    if (n == 0)
        log_info("retry: no card is in; the files are retried when their card is inserted");
}

static void handle_command(struct service *svc)
{
    uint64_t n;
    if (read(svc->cmdfd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        log_warning("eventfd: %s", strerror(errno));
    if (atomic_exchange(&svc->eject_req, false))
        eject(svc);
    if (atomic_exchange(&svc->retry_req, false) && !svc->stopping)
        retry(svc, true);
}

static int handle_signal(struct service *svc)
{
    struct signalfd_siginfo si;
    ssize_t n = read(svc->sigfd, &si, sizeof(si));
    if (n != sizeof(si))
        return 0;
    if (si.ssi_signo == SIGHUP && !svc->stopping)
        reload(svc);
    else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
        stop(svc, (int)si.ssi_signo);
    return 0;
}

static int epoll_add(int epfd, int fd, uint32_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = tag};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/*
 * In a child forked by a library (libmount runs /sbin/mount.<type> helpers, whose FUSE daemons
 * outlive the mount): undo what the service set for itself, the blocked signals it reads from
 * its signalfd and the ignored SIGPIPE, which exec would otherwise pass on. Only
 * async-signal-safe calls.
 */
static void child_after_fork(void)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, child_after_fork);
}

/* What a previous run left behind when it died (sessions shown as running, files and copies
 * stuck in flight) is repaired before any card is handled: no session of ours runs yet, so
 * only another live process's sessions, and their cards' files, are left alone. A database
 * that cannot be opened is not fatal here: each session reports it. */
static void repair_database(const struct config *cfg)
{
    struct db *db = NULL;
    struct error err = {0};
    struct db_repair rep = {0};
    int r = db_open(cfg->service.database_path, DB_READ_WRITE, &db, &err);
    if (r == 0)
        r = db_repair_stale(db, &rep, &err);
    db_close(db);
    if (r < 0)
        log_error("cannot repair what a stopped process left in the database: %s", err.msg);
    else
        log_info("database checked: %" PRId64 " session(s) of a stopped process marked "
                 "interrupted; %" PRId64 " file(s) and %" PRId64 " copy record(s) left in flight "
                 "reset to be done again",
                 rep.sessions, rep.files, rep.copies);
}

static int setup(struct service *svc, struct error *err)
{
    pthread_once(&atfork_once, register_atfork);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &mask, NULL) != 0)
        return error_set(err, -EINVAL, "cannot block signals");
    svc->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    svc->donefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    svc->cmdfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    svc->epfd = epoll_create1(EPOLL_CLOEXEC);
    svc->scrubfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    svc->scrub_donefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    svc->notifyfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    svc->notify_donefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (svc->sigfd < 0 || svc->donefd < 0 || svc->cmdfd < 0 || svc->epfd < 0 || svc->scrubfd < 0 ||
        svc->scrub_donefd < 0 || svc->notifyfd < 0 || svc->notify_donefd < 0)
        return error_set_errno(err, -errno, "cannot create the service's event sources");
    int r = epoll_add(svc->epfd, svc->sigfd, SRC_SIGNAL);
    if (r == 0)
        r = epoll_add(svc->epfd, svc->donefd, SRC_DONE);
    if (r == 0)
        r = epoll_add(svc->epfd, svc->cmdfd, SRC_COMMAND);
    if (r == 0)
        r = epoll_add(svc->epfd, svc->scrubfd, SRC_SCRUB);
    if (r == 0)
        r = epoll_add(svc->epfd, svc->scrub_donefd, SRC_SCRUB_DONE);
    if (r == 0)
        r = epoll_add(svc->epfd, svc->notifyfd, SRC_NOTIFY);
    if (r == 0)
        r = epoll_add(svc->epfd, svc->notify_donefd, SRC_NOTIFY_DONE);
    if (r < 0)
        return error_set_errno(err, r, "epoll");

    /* the dashboard and Home Assistant keep the configuration they start with */
    const struct config *cfg = svc->conf->cfg;
    repair_database(cfg);
    svc->ui_conf = svc->conf;
    svc->ui_conf->refs++;
    struct web_actions actions = {
        .eject = on_web_eject, .retried = on_web_retried, .userdata = svc};
    r = web_new(cfg, -1, &actions, &svc->web, err);
    if (r == 0)
        r = web_start(svc->web, err);
    if (r < 0) {
        /* the backups matter more than the dashboard: go on without it */
        log_error("web dashboard not available: %s", err->msg);
        web_free(svc->web);
        svc->web = NULL;
    } else {
        log_info("dashboard on port %d", web_port(svc->web));
    }
    if (cfg->mqtt.enabled) {
        char url[128];
        const char *bind = cfg->service.web_ui_bind;
        snprintf(url, sizeof(url), "http://%s:%d/",
                 !bind || !bind[0] || strcmp(bind, "0.0.0.0") == 0 || strcmp(bind, "::") == 0
                     ? "localhost"
                     : bind,
                 cfg->service.web_ui_port);
        struct mqtt_handler h = {.on_command = on_mqtt_command, .userdata = svc};
        struct error merr = {0};
        if (mqtt_new(cfg, svc->web ? url : NULL, &h, &svc->mqtt, &merr) < 0 ||
            mqtt_start(svc->mqtt, &merr) < 0) {
            log_error("Home Assistant (MQTT) not available: %s", merr.msg);
            mqtt_free(svc->mqtt);
            svc->mqtt = NULL;
        } else {
            struct status_live idle = {.status = "idle"};
            mqtt_publish_state(svc->mqtt, &idle, true);
        }
    }

    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        svc->wdfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        uint64_t half = usec / 2;
        struct itimerspec its = {
            .it_interval = {(time_t)(half / 1000000), (long)(half % 1000000) * 1000},
            .it_value = {0, 1},
        };
        if (svc->wdfd < 0 || timerfd_settime(svc->wdfd, 0, &its, NULL) < 0 ||
            (r = epoll_add(svc->epfd, svc->wdfd, SRC_WATCHDOG)) < 0)
            return error_set_errno(err, -errno, "cannot set up the watchdog timer");
    }

    if (!svc->conf->cfg->sd_card.auto_detect) {
        log_warning("sd_card.auto_detect is false: not watching for cards");
        return 0;
    }
    struct detector_callbacks cb = {
        .card_added = on_card_added,
        .card_removed = on_card_removed,
        .userdata = svc,
    };
    r = detector_new(svc->conf->cfg, &cb, &svc->det, err);
    if (r < 0)
        return r;
    r = epoll_add(svc->epfd, detector_fd(svc->det), SRC_DETECTOR);
    if (r < 0)
        return error_set_errno(err, r, "epoll");
    log_info("watching for cards (%s events, mounts under %s), mounting them under '%s'",
             detector_source(svc->det),
             svc->conf->cfg->sd_card.n_mount_points ? svc->conf->cfg->sd_card.mount_points[0]
                                                    : "nothing",
             svc->conf->cfg->sd_card.mount_base);
    return 0;
}

int service_run(const char *config_path, const struct config *cfg, struct error *err)
{
    struct service svc = {.config_path = config_path,
                          .epfd = -1,
                          .sigfd = -1,
                          .donefd = -1,
                          .wdfd = -1,
                          .cmdfd = -1,
                          .scrubfd = -1,
                          .scrub_donefd = -1,
                          .notifyfd = -1,
                          .notify_donefd = -1};
    int r;
    pthread_mutex_init(&svc.lock, NULL);
    svc.conf = calloc(1, sizeof(*svc.conf));
    if (!svc.conf) {
        r = error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    svc.conf->cfg = (struct config *)cfg; /* borrowed: owned is false, so never freed here */
    svc.conf->refs = 1;
    /* the log scrubs the secrets of the running configuration (swapped on SIGHUP) */
    log_set_scrubber(config_scrub_log_line, svc.conf->cfg);

    r = outage_new(&svc.outage, err);
    if (r == 0)
        r = setup(&svc, err);
    if (r < 0)
        goto out;
    if (svc.det && detector_scan(svc.det) < 0)
        log_error("cannot look for cards: out of memory");
    log_info("snapsync %s started", SNAPSYNC_VERSION);
    if (cfg->backup.verify_interval_days > 0) {
        log_info("scrub: copies made and last checked more than %d days ago are checked again "
                 "while no card is being backed up",
                 cfg->backup.verify_interval_days);
        scrub_arm(&svc, SCRUB_IDLE_S);
    }
    notify_configured(&svc);
    sd_notify(0, "READY=1");
    notify_status(&svc);

    while (!(svc.stopping && svc.n_jobs == 0 && !svc.scrub_running && !svc.notify_running)) {
        struct epoll_event evs[8];
        int n = epoll_wait(svc.epfd, evs, 8, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = error_set_errno(err, -errno, "epoll_wait");
            break;
        }
        for (int i = 0; i < n; i++) {
            switch (evs[i].data.u32) {
            case SRC_SIGNAL:
                handle_signal(&svc);
                break;
            case SRC_DETECTOR:
                if (detector_process(svc.det) < 0)
                    log_error("card detection: out of memory");
                break;
            case SRC_DONE:
                drain_done(&svc);
                break;
            case SRC_COMMAND:
                handle_command(&svc);
                break;
            case SRC_SCRUB:
                scrub_start(&svc);
                break;
            case SRC_SCRUB_DONE:
                scrub_done(&svc);
                break;
            case SRC_NOTIFY:
                notify_start(&svc);
                break;
            case SRC_NOTIFY_DONE:
                notify_done(&svc);
                break;
            case SRC_WATCHDOG: {
                uint64_t ticks;
                if (read(svc.wdfd, &ticks, sizeof(ticks)) > 0)
                    sd_notify(0, "WATCHDOG=1");
                break;
            }
            }
        }
    }
    /* after an epoll failure, still wait for the workers and the scrub: they use svc */
    for (struct job *j = svc.jobs; j; j = j->next)
        atomic_store(&j->cancel, true);
    if (svc.scrub_running) {
        atomic_store(&svc.scrub_cancel, true);
        pthread_join(svc.scrub_thread, NULL);
        conf_unref(svc.scrub_conf);
    }
    if (svc.notify_running) {
        atomic_store(&svc.notify_cancel, true);
        pthread_join(svc.notify_thread, NULL);
        conf_unref(svc.notify_conf);
    }
    while (svc.jobs) {
        struct job *j = svc.jobs;
        pthread_join(j->thread, NULL);
        pthread_mutex_lock(&svc.lock);
        svc.done = NULL;
        pthread_mutex_unlock(&svc.lock);
        svc.jobs = j->next;
        conf_unref(j->conf);
        free(j);
    }
    if (svc.det)
        detector_unmount_all(svc.det);
    if (r == 0)
        log_info("stopped");
out:
    web_free(svc.web);
    mqtt_free(svc.mqtt); /* publishes the last state and "offline" */
    conf_unref(svc.ui_conf);
    detector_free(svc.det);
    if (svc.cmdfd >= 0)
        close(svc.cmdfd);
    if (svc.scrubfd >= 0)
        close(svc.scrubfd);
    if (svc.scrub_donefd >= 0)
        close(svc.scrub_donefd);
    free(svc.scrub_problems); /* the scrub's thread is joined by now */
    outage_free(svc.outage);  /* and the sessions' */
    if (svc.notifyfd >= 0)
        close(svc.notifyfd);
    if (svc.notify_donefd >= 0)
        close(svc.notify_donefd);
    if (svc.wdfd >= 0)
        close(svc.wdfd);
    if (svc.epfd >= 0)
        close(svc.epfd);
    if (svc.donefd >= 0)
        close(svc.donefd);
    if (svc.sigfd >= 0)
        close(svc.sigfd);
    /* back to the caller's configuration, which outlives us, before a reloaded one is freed */
    log_set_scrubber(config_scrub_log_line, (void *)cfg);
    conf_unref(svc.conf);
    pthread_mutex_destroy(&svc.lock);
    return r;
}
