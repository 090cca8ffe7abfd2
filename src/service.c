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
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "db.h"
#include "detector.h"
#include "engine.h"
#include "log.h"

#define SERVICE_JOBS_MAX 16 /* sessions at once; more cards wait for a rescan */

enum { SRC_SIGNAL = 1, SRC_DETECTOR, SRC_DONE, SRC_WATCHDOG };

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
    volatile sig_atomic_t cancel;
    atomic_bool finished;
    bool removed; /* the card went away during the session */
    bool unmounted;
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

static void *job_main(void *arg)
{
    struct job *j = arg;
    const struct config *cfg = j->conf->cfg;
    struct engine_options opt = {.cancel = &j->cancel};

    j->rc = engine_backup(cfg, j->card.mount_point, &opt, &j->report, &j->err);
    atomic_store(&j->finished, true);
    if (j->rc == 0 && j->report.status == DB_SESSION_COMPLETED && !j->cancel &&
        j->card.mounted_by_us && cfg->sd_card.unmount_when_done) {
        struct error err = {0};
        if (detector_unmount(j->card.mount_point, false, &err) == 0) {
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

/* ---- detector callbacks (loop thread) ---- */

static struct job *find_job(struct service *svc, const struct detector_card *c)
{
    for (struct job *j = svc->jobs; j; j = j->next)
        if (strcmp(j->card.mount_point, c->mount_point) == 0 ||
            (c->device[0] && strcmp(j->card.device, c->device) == 0))
            return j;
    return NULL;
}

static void on_card_added(const struct detector_card *card, void *userdata)
{
    struct service *svc = userdata;
    if (svc->stopping)
        return;
    if (find_job(svc, card)) {
        log_debug("card '%s' is already being backed up", card_name(card));
        return;
    }
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
    struct job *j = find_job(svc, card);
    if (!j || atomic_load(&j->finished) || j->cancel)
        return;
    j->removed = true;
    j->cancel = 1;
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
    while (done) {
        struct job *next = done->done_next;
        finish_job(svc, done);
        done = next;
    }
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
        j->cancel = 1;
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
    if (strcmp(cfg->service.log_level, svc->conf->cfg->service.log_level) != 0)
        log_warning("service.log_level applies from the next start");
    c->cfg = cfg;
    c->owned = true;
    c->refs = 1;
    conf_unref(svc->conf);
    svc->conf = c;
    log_info("configuration reloaded from '%s'", cfg->path ? cfg->path : "(built-in default)");
    if (svc->det) {
        r = detector_reconfigure(svc->det, cfg, &err);
        if (r < 0)
            log_error("%s", err.msg);
        if (detector_scan(svc->det) < 0)
            log_error("cannot look for cards: out of memory");
    }
    sd_notify(0, "READY=1");
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

static int setup(struct service *svc, struct error *err)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &mask, NULL) != 0)
        return error_set(err, -EINVAL, "cannot block signals");
    svc->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    svc->donefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    svc->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (svc->sigfd < 0 || svc->donefd < 0 || svc->epfd < 0)
        return error_set_errno(err, -errno, "cannot create the service's event sources");
    int r = epoll_add(svc->epfd, svc->sigfd, SRC_SIGNAL);
    if (r == 0)
        r = epoll_add(svc->epfd, svc->donefd, SRC_DONE);
    if (r < 0)
        return error_set_errno(err, r, "epoll");

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
    struct service svc = {
        .config_path = config_path, .epfd = -1, .sigfd = -1, .donefd = -1, .wdfd = -1};
    int r;
    pthread_mutex_init(&svc.lock, NULL);
    svc.conf = calloc(1, sizeof(*svc.conf));
    if (!svc.conf) {
        r = error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    svc.conf->cfg = (struct config *)cfg; /* borrowed: owned is false, so never freed here */
    svc.conf->refs = 1;

    r = setup(&svc, err);
    if (r < 0)
        goto out;
    if (svc.det && detector_scan(svc.det) < 0)
        log_error("cannot look for cards: out of memory");
    log_info("snapsync %s started", SNAPSYNC_VERSION);
    sd_notify(0, "READY=1");
    notify_status(&svc);

    while (!(svc.stopping && svc.n_jobs == 0)) {
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
            case SRC_WATCHDOG: {
                uint64_t ticks;
                if (read(svc.wdfd, &ticks, sizeof(ticks)) > 0)
                    sd_notify(0, "WATCHDOG=1");
                break;
            }
            }
        }
    }
    /* after an epoll failure, still wait for the workers: they use svc */
    for (struct job *j = svc.jobs; j; j = j->next)
        j->cancel = 1;
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
    detector_free(svc.det);
    if (svc.wdfd >= 0)
        close(svc.wdfd);
    if (svc.epfd >= 0)
        close(svc.epfd);
    if (svc.donefd >= 0)
        close(svc.donefd);
    if (svc.sigfd >= 0)
        close(svc.sigfd);
    conf_unref(svc.conf);
    pthread_mutex_destroy(&svc.lock);
    return r;
}
