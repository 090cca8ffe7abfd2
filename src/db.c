/* SPDX-License-Identifier: MIT */
/*
 * The database: the only module that speaks SQL (docs/database.md describes the schema, the
 * states and the migration policy).
 *
 * A struct db is one SQLite connection in WAL mode with a busy timeout, so a backup can write
 * while the CLI or the web dashboard reads. The schema is versioned with PRAGMA user_version;
 * migrations[] holds one SQL step per version and db_open applies the missing ones in a single
 * transaction. Every query lives in stmt_sql[] and is prepared once per connection, on first
 * use, then reset and re-bound for each call: the fast path (db_file_done) runs thousands of
 * times per card and must not re-parse SQL. Errors from SQLite are mapped to negative errno
 * values in db_fail(), which also writes the human message with sqlite3_errmsg().
 */
#include "db.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define DB_BUSY_TIMEOUT_MS 10000
#define DB_DESTS_MAX 16   /* destinations per file_done/hash_backed_up query */
#define DB_LIST_MAX 10000 /* rows per list call */
#define DB_KEY_MAX 4096   /* rel_path, remote: longer is refused, never cut */
#define DB_TEXT_MAX 4096  /* free text (labels, errors, sources) is cut to this many bytes */
#define DB_DIR_MODE 0750
#define DB_FILE_MODE 0640

#ifndef SQLITE_DIRECTONLY
#define SQLITE_DIRECTONLY 0
#endif

/* ---- state names: what the TEXT columns hold ---- */

static const char *const file_state_names[] = {
    [DB_FILE_NEW] = "new",
    [DB_FILE_SCANNING] = "scanning",
    [DB_FILE_BACKING_UP] = "backing_up",
    [DB_FILE_VERIFYING] = "verifying",
    [DB_FILE_COMPLETED] = "completed",
    [DB_FILE_FAILED] = "failed",
};

static const char *const copy_state_names[] = {
    [DB_COPY_PENDING] = "pending",     [DB_COPY_COPYING] = "copying",
    [DB_COPY_VERIFYING] = "verifying", [DB_COPY_COMPLETED] = "completed",
    [DB_COPY_FAILED] = "failed",
};

static const char *const session_status_names[] = {
    [DB_SESSION_SCANNING] = "scanning",   [DB_SESSION_BACKING_UP] = "backing_up",
    [DB_SESSION_COMPLETED] = "completed", [DB_SESSION_PARTIAL] = "partial",
    [DB_SESSION_FAILED] = "failed",       [DB_SESSION_INTERRUPTED] = "interrupted",
    [DB_SESSION_EMPTY] = "empty",
};

static const char *const verify_result_names[] = {
    [DB_VERIFY_OK] = "ok",       [DB_VERIFY_MISSING] = "missing", [DB_VERIFY_CHANGED] = "changed",
    [DB_VERIFY_ERROR] = "error", [DB_VERIFY_EXTRA] = "extra",
};

static const char *const verify_status_names[] = {
    [DB_VERIFY_RUNNING] = "running",         [DB_VERIFY_CLEAN] = "clean",
    [DB_VERIFY_PROBLEMS] = "problems",       [DB_VERIFY_FAILED] = "failed",
    [DB_VERIFY_INTERRUPTED] = "interrupted", [DB_VERIFY_PAUSED] = "paused",
};

static const char *const outcome_names[] = {
    [DB_OUTCOME_COPIED] = "copied",
    [DB_OUTCOME_SKIPPED] = "skipped",
    [DB_OUTCOME_DUPLICATE] = "duplicate",
    [DB_OUTCOME_FAILED] = "failed",
};

static const char *name_of(const char *const *names, size_t n, int v)
{
    if (v < 0 || (size_t)v >= n)
        return "unknown";
    return names[v];
}

static int index_of(const char *const *names, size_t n, const char *s)
{
    if (!s)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0)
            return (int)i;
    return -1;
}

const char *db_file_state_to_string(enum db_file_state s)
{
    return name_of(file_state_names, ARRAY_SIZE(file_state_names), (int)s);
}

const char *db_copy_state_to_string(enum db_copy_state s)
{
    return name_of(copy_state_names, ARRAY_SIZE(copy_state_names), (int)s);
}

const char *db_session_status_to_string(enum db_session_status s)
{
    return name_of(session_status_names, ARRAY_SIZE(session_status_names), (int)s);
}

const char *db_outcome_to_string(enum db_outcome o)
{
    return name_of(outcome_names, ARRAY_SIZE(outcome_names), (int)o);
}

int db_session_status_from_string(const char *s, enum db_session_status *ret)
{
    int i = index_of(session_status_names, ARRAY_SIZE(session_status_names), s);
    if (i < 0 || !ret)
        return -EINVAL;
    *ret = (enum db_session_status)i;
    return 0;
}

/* Strings read back from the database that this build does not know (a newer build, or a hand
 * edit) map to the value that makes the engine redo work rather than skip it. */
static enum db_file_state file_state_parse(const char *s)
{
    int i = index_of(file_state_names, ARRAY_SIZE(file_state_names), s);
    return i < 0 ? DB_FILE_NEW : (enum db_file_state)i;
}

static enum db_copy_state copy_state_parse(const char *s)
{
    int i = index_of(copy_state_names, ARRAY_SIZE(copy_state_names), s);
    return i < 0 ? DB_COPY_PENDING : (enum db_copy_state)i;
}

static enum db_session_status session_status_parse(const char *s)
{
    enum db_session_status st;
    return db_session_status_from_string(s, &st) < 0 ? DB_SESSION_INTERRUPTED : st;
}

/* ---- schema ---- */

/* migrations[i] takes a database from user_version i to i + 1. Never edit a released step: add
 * one. Plain CREATE (no IF NOT EXISTS), so a step that ran twice would fail loudly. */
static const char *const migrations[] = {
    /* 0 -> 1: everything */
    "CREATE TABLE cards ("
    "  id INTEGER PRIMARY KEY,"
    "  uuid TEXT NOT NULL UNIQUE,"
    "  label TEXT NOT NULL DEFAULT '',"
    "  first_seen INTEGER NOT NULL,"
    "  last_seen INTEGER NOT NULL"
    ");"
    "CREATE TABLE sessions ("
    "  id INTEGER PRIMARY KEY,"
    "  card_id INTEGER REFERENCES cards(id) ON DELETE SET NULL,"
    "  source TEXT NOT NULL DEFAULT '',"
    "  started_at INTEGER NOT NULL,"
    "  ended_at INTEGER NOT NULL DEFAULT 0,"
    "  pid INTEGER NOT NULL DEFAULT 0,"
    "  status TEXT NOT NULL,"
    "  files_total INTEGER NOT NULL DEFAULT 0,"
    "  bytes_total INTEGER NOT NULL DEFAULT 0,"
    "  files_copied INTEGER NOT NULL DEFAULT 0,"
    "  files_skipped INTEGER NOT NULL DEFAULT 0,"
    "  files_duplicate INTEGER NOT NULL DEFAULT 0,"
    "  files_failed INTEGER NOT NULL DEFAULT 0,"
    "  bytes_copied INTEGER NOT NULL DEFAULT 0,"
    "  error TEXT"
    ");"
    "CREATE INDEX sessions_started ON sessions(started_at);"
    "CREATE TABLE files ("
    "  id INTEGER PRIMARY KEY,"
    "  card_id INTEGER NOT NULL REFERENCES cards(id) ON DELETE CASCADE,"
    "  rel_path TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  mtime_ns INTEGER NOT NULL,"
    "  md5 TEXT,"
    "  sha1 TEXT,"
    "  capture_time INTEGER NOT NULL DEFAULT 0,"
    "  kind TEXT NOT NULL DEFAULT 'unknown',"
    "  state TEXT NOT NULL DEFAULT 'new',"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT,"
    "  duplicate_of INTEGER REFERENCES files(id) ON DELETE SET NULL,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  UNIQUE (card_id, rel_path, size, mtime_ns)"
    ");"
    "CREATE INDEX files_md5 ON files(md5);"
    "CREATE INDEX files_sha1 ON files(sha1);"
    "CREATE INDEX files_state ON files(state, updated_at);"
    "CREATE TABLE copies ("
    "  file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,"
    "  dest TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  remote TEXT,"
    "  verified_at INTEGER NOT NULL DEFAULT 0,"
    "  error TEXT,"
    "  updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY (file_id, dest)"
    ") WITHOUT ROWID;"
    "CREATE TABLE session_files ("
    "  session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
    "  file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,"
    "  outcome TEXT NOT NULL,"
    "  PRIMARY KEY (session_id, file_id)"
    ") WITHOUT ROWID;"
    "CREATE INDEX session_files_file ON session_files(file_id);",
    /* 1 -> 2: the service records when it unmounted a card after its session */
    "ALTER TABLE sessions ADD COLUMN safe_to_remove INTEGER NOT NULL DEFAULT 0;",
    /* 2 -> 3: what the scan could not see: a count per session, the first ones named */
    "ALTER TABLE sessions ADD COLUMN scan_problems INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE session_problems ("
    "  id INTEGER PRIMARY KEY,"
    "  session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
    "  path TEXT NOT NULL,"
    "  error TEXT NOT NULL"
    ");"
    "CREATE INDEX session_problems_session ON session_problems(session_id, id);",
    /* 3 -> 4: the generation of the destination's ASC MHL history a copy is listed in (0: not
     * yet; history.h) */
    "ALTER TABLE copies ADD COLUMN mhl_generation INTEGER NOT NULL DEFAULT 0;",
    /* 4 -> 5: `snapsync verify`: its runs, what each found per copy, and per copy the last
     * check, so the copies checked longest ago come first */
    "CREATE TABLE verify_runs ("
    "  id INTEGER PRIMARY KEY,"
    "  started_at INTEGER NOT NULL,"
    "  ended_at INTEGER NOT NULL DEFAULT 0,"
    "  scope TEXT NOT NULL,"
    "  dest_filter TEXT NOT NULL DEFAULT '',"
    "  checked INTEGER NOT NULL DEFAULT 0,"
    "  ok INTEGER NOT NULL DEFAULT 0,"
    "  missing INTEGER NOT NULL DEFAULT 0,"
    "  changed INTEGER NOT NULL DEFAULT 0,"
    "  errors INTEGER NOT NULL DEFAULT 0,"
    "  status TEXT NOT NULL"
    ");"
    "CREATE TABLE verify_results ("
    "  run_id INTEGER NOT NULL REFERENCES verify_runs(id) ON DELETE CASCADE,"
    "  file_id INTEGER NOT NULL,"
    "  dest TEXT NOT NULL,"
    "  result TEXT NOT NULL,"
    "  detail TEXT,"
    "  checked_at INTEGER NOT NULL,"
    "  PRIMARY KEY (run_id, file_id, dest),"
    "  FOREIGN KEY (file_id, dest) REFERENCES copies(file_id, dest) ON DELETE CASCADE"
    ") WITHOUT ROWID;"
    "CREATE INDEX verify_results_copy ON verify_results(file_id, dest);"
    "ALTER TABLE copies ADD COLUMN checked_at INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE copies ADD COLUMN check_result TEXT;"
    "CREATE INDEX copies_checked ON copies(checked_at, file_id, dest);",
    /* 5 -> 6: the sidecars a file destination placed next to a copy (dest.h), for its ASC MHL
     * history; one file at a remote may be the sidecar of two copies (a RAW and a JPEG) */
    "CREATE TABLE sidecar_copies ("
    "  file_id INTEGER NOT NULL,"
    "  dest TEXT NOT NULL,"
    "  remote TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  mtime_ns INTEGER NOT NULL,"
    "  md5 TEXT NOT NULL,"
    "  sha1 TEXT NOT NULL,"
    "  mhl_generation INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (file_id, dest, remote),"
    "  FOREIGN KEY (file_id, dest) REFERENCES copies(file_id, dest) ON DELETE CASCADE"
    ") WITHOUT ROWID;"
    "CREATE INDEX sidecar_copies_remote ON sidecar_copies(dest, remote);",
    /* 6 -> 7: the notification outbox: each notification with the data its message is rebuilt
     * from, and its delivery per channel (pending until sent or given up) */
    "CREATE TABLE notifications ("
    "  id INTEGER PRIMARY KEY,"
    "  created_at INTEGER NOT NULL,"
    "  event TEXT NOT NULL,"
    "  session_id INTEGER REFERENCES sessions(id) ON DELETE SET NULL,"
    "  data TEXT NOT NULL"
    ");"
    "CREATE TABLE deliveries ("
    "  notification_id INTEGER NOT NULL REFERENCES notifications(id) ON DELETE CASCADE,"
    "  channel TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_at INTEGER NOT NULL,"
    "  last_error TEXT,"
    "  sent_at INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (notification_id, channel)"
    ") WITHOUT ROWID;"
    "CREATE INDEX deliveries_channel ON deliveries(channel, state, notification_id);"
    "CREATE INDEX deliveries_state ON deliveries(state, next_at);",
    /* 7 -> 8: a verification run's process (a killed run is not shown running for ever), the
     * files it found at a destination that the database does not know there, and the index
     * that looks a destination's file up by where it is */
    "ALTER TABLE verify_runs ADD COLUMN pid INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE verify_runs ADD COLUMN extra INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE verify_extras ("
    "  run_id INTEGER NOT NULL REFERENCES verify_runs(id) ON DELETE CASCADE,"
    "  dest TEXT NOT NULL,"
    "  remote TEXT NOT NULL,"
    "  PRIMARY KEY (run_id, dest, remote)"
    ") WITHOUT ROWID;"
    "CREATE INDEX copies_remote ON copies(dest, remote);",
    /* 8 -> 9: the XXH3-128 of a file (hasher.h), which file destinations verify their copies
     * with and the ASC MHL history lists as xxh128; NULL for files hashed before */
    "ALTER TABLE files ADD COLUMN xxh128 TEXT;",
};

_Static_assert(ARRAY_SIZE(migrations) == DB_SCHEMA_VERSION,
               "one migration step per schema version");

/* The tables every schema version since 1 holds; a file without them is not ours. */
#define DB_TABLES_SQL                                                                              \
    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "                         \
    "('cards', 'sessions', 'files', 'copies', 'session_files')"
#define DB_TABLES_COUNT 5

/* ---- the statement cache ---- */

enum stmt_id {
    STMT_CARD_UPSERT,
    STMT_SESSION_BEGIN,
    STMT_SESSION_UPDATE,
    STMT_SESSION_END,
    STMT_SESSION_STATUS,
    STMT_SESSION_FINISH,
    STMT_SESSION_FOUND,
    STMT_SESSION_COUNT,
    STMT_SESSION_LIST,
    STMT_SESSION_GET,
    STMT_SESSION_FILE_SET,
    STMT_FILE_DONE,
    STMT_FILE_SELECT,
    STMT_FILE_INSERT,
    STMT_FILE_SET_STATE,
    STMT_FILE_SET_META,
    STMT_FILE_SET_DUPLICATE,
    STMT_HASH_BACKED_UP,
    STMT_FILES_FAILED,
    STMT_COPY_SET,
    STMT_COPY_GET,
    STMT_SIDECAR_SET,
    STMT_STATS,
    STMT_SESSION_SAFE,
    STMT_MAX,
};

#define SESSION_COLUMNS                                                                            \
    "SELECT s.id, s.card_id, c.uuid, c.label, s.source, s.started_at, s.ended_at, s.pid, "         \
    "s.status, s.files_total, s.bytes_total, s.files_copied, s.files_skipped, "                    \
    "s.files_duplicate, s.files_failed, s.bytes_copied, s.error, s.safe_to_remove, "               \
    "s.scan_problems "                                                                             \
    "FROM sessions s LEFT JOIN cards c ON c.id = s.card_id "

#define FILE_COLUMNS                                                                               \
    "SELECT id, card_id, rel_path, size, mtime_ns, md5, sha1, capture_time, kind, state, "         \
    "attempts, last_error, duplicate_of, xxh128 FROM files "

/* DB_DESTS_MAX placeholders; unused ones stay NULL, which matches no row. */
#define DEST_LIST_5 "(?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
#define DEST_LIST_4 "(?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"

static const char *const stmt_sql[STMT_MAX] = {
    [STMT_CARD_UPSERT] = "INSERT INTO cards (uuid, label, first_seen, last_seen) "
                         "VALUES (?1, coalesce(?2, ''), ?3, ?3) "
                         "ON CONFLICT (uuid) DO UPDATE SET label = coalesce(?2, label), "
                         "last_seen = ?3 RETURNING id",
    [STMT_SESSION_BEGIN] = "INSERT INTO sessions (card_id, source, started_at, pid, status) "
                           "VALUES (?1, ?2, ?3, ?4, 'scanning') RETURNING id",
    [STMT_SESSION_UPDATE] = "UPDATE sessions SET status = ?2, files_total = ?3, bytes_total = ?4, "
                            "files_copied = ?5, files_skipped = ?6, files_duplicate = ?7, "
                            "files_failed = ?8, bytes_copied = ?9, scan_problems = ?10 "
                            "WHERE id = ?1",
    [STMT_SESSION_END] = "UPDATE sessions SET status = ?2, files_total = ?3, bytes_total = ?4, "
                         "files_copied = ?5, files_skipped = ?6, files_duplicate = ?7, "
                         "files_failed = ?8, bytes_copied = ?9, scan_problems = ?10, "
                         "ended_at = ?11, error = ?12 WHERE id = ?1",
    /* The same without the totals: a session whose files are recorded by db_file_record
     * counts in its row. ?3 to ?10 are the totals' slots, unused here. */
    [STMT_SESSION_STATUS] = "UPDATE sessions SET status = ?2 WHERE id = ?1",
    [STMT_SESSION_FINISH] = "UPDATE sessions SET status = ?2, ended_at = ?11, error = ?12 "
                            "WHERE id = ?1",
    [STMT_SESSION_FOUND] = "UPDATE sessions SET files_total = ?2, bytes_total = ?3 WHERE id = ?1",
    /* Counts outcome ?2 of file ?3 in session ?1, taking back the outcome it had there. */
    [STMT_SESSION_COUNT] =
        "UPDATE sessions SET "
        "files_copied = files_copied + (?2 = 'copied') - (o.old = 'copied'), "
        "files_skipped = files_skipped + (?2 = 'skipped') - (o.old = 'skipped'), "
        "files_duplicate = files_duplicate + (?2 = 'duplicate') - (o.old = 'duplicate'), "
        "files_failed = files_failed + (?2 = 'failed') - (o.old = 'failed'), "
        "bytes_copied = bytes_copied + o.size * ((?2 = 'copied') - (o.old = 'copied')) "
        "FROM (SELECT coalesce((SELECT outcome FROM session_files "
        "WHERE session_id = ?1 AND file_id = ?3), '') AS old, "
        "(SELECT size FROM files WHERE id = ?3) AS size) AS o "
        "WHERE sessions.id = ?1",
    [STMT_SESSION_LIST] = SESSION_COLUMNS "ORDER BY s.started_at DESC, s.id DESC LIMIT ?1",
    [STMT_SESSION_GET] = SESSION_COLUMNS "WHERE s.id = ?1",
    [STMT_SESSION_FILE_SET] = "INSERT INTO session_files (session_id, file_id, outcome) "
                              "VALUES (?1, ?2, ?3) "
                              "ON CONFLICT (session_id, file_id) DO UPDATE SET outcome = ?3",
    /* One lookup in the files unique index, then one primary-key probe in copies per name. */
    [STMT_FILE_DONE] = "SELECT count(*) FROM files f JOIN copies c ON c.file_id = f.id "
                       "WHERE f.card_id = ?1 AND f.rel_path = ?2 AND f.size = ?3 "
                       "AND f.mtime_ns = ?4 AND c.state = 'completed' AND c.dest IN " DEST_LIST_5,
    [STMT_FILE_SELECT] =
        FILE_COLUMNS "WHERE card_id = ?1 AND rel_path = ?2 AND size = ?3 AND mtime_ns = ?4",
    [STMT_FILE_INSERT] = "INSERT INTO files (card_id, rel_path, size, mtime_ns, state, "
                         "created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 'new', ?5, ?5) "
                         "ON CONFLICT DO NOTHING",
    [STMT_FILE_SET_STATE] = "UPDATE files SET state = ?2, last_error = ?3, "
                            "attempts = attempts + ?4, updated_at = ?5 WHERE id = ?1",
    /* a hash not computed this time (NULL) is kept when the MD5 is the same (the old value of
     * md5 on the right), else dropped */
    [STMT_FILE_SET_META] =
        "UPDATE files SET md5 = ?2, "
        "sha1 = CASE WHEN ?3 IS NOT NULL THEN ?3 WHEN md5 = ?2 THEN sha1 END, "
        "capture_time = ?4, kind = ?5, updated_at = ?6, "
        "xxh128 = CASE WHEN ?7 IS NOT NULL THEN ?7 WHEN md5 = ?2 THEN xxh128 END "
        "WHERE id = ?1",
    [STMT_FILE_SET_DUPLICATE] = "UPDATE files SET duplicate_of = ?2, state = 'completed', "
                                "last_error = NULL, updated_at = ?3 WHERE id = ?1",
    [STMT_HASH_BACKED_UP] = "SELECT f.id FROM files f JOIN copies c ON c.file_id = f.id "
                            "WHERE f.md5 = ?1 AND (f.sha1 = ?2 OR f.xxh128 = ?21) AND f.id <> ?3 "
                            "AND c.state = 'completed' AND c.dest IN " DEST_LIST_4 " "
                            "GROUP BY f.id HAVING count(*) = ?20 ORDER BY f.id LIMIT 1",
    [STMT_FILES_FAILED] =
        FILE_COLUMNS "WHERE state = 'failed' ORDER BY updated_at DESC, id DESC LIMIT ?1",
    [STMT_COPY_SET] = "INSERT INTO copies (file_id, dest, state, remote, verified_at, error, "
                      "updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
                      "ON CONFLICT (file_id, dest) DO UPDATE SET state = ?3, "
                      "remote = coalesce(?4, remote), verified_at = ?5, error = ?6, "
                      "updated_at = ?7, "
                      /* a copy made again (after a verification found it missing or changed)
                       * is a new copy: not yet checked, not yet in the ASC MHL history */
                      "checked_at = CASE WHEN state = 'completed' AND ?3 = 'completed' "
                      "  THEN checked_at ELSE 0 END, "
                      "check_result = CASE WHEN state = 'completed' AND ?3 = 'completed' "
                      "  THEN check_result END, "
                      "mhl_generation = CASE WHEN state = 'completed' AND ?3 = 'completed' "
                      "  THEN mhl_generation ELSE 0 END",
    [STMT_SIDECAR_SET] =
        "INSERT INTO sidecar_copies (file_id, dest, remote, size, mtime_ns, md5, sha1) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
        "ON CONFLICT (file_id, dest, remote) DO UPDATE SET size = ?4, mtime_ns = ?5, "
        "mhl_generation = CASE WHEN md5 = ?6 AND sha1 = ?7 AND size = ?4 THEN mhl_generation "
        "ELSE 0 END, md5 = ?6, sha1 = ?7",
    [STMT_COPY_GET] = "SELECT file_id, dest, state, remote, verified_at, error FROM copies "
                      "WHERE file_id = ?1 AND dest = ?2",
    [STMT_SESSION_SAFE] = "UPDATE sessions SET safe_to_remove = ?2 WHERE id = ?1",
    [STMT_STATS] = "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM cards), "
                   "(SELECT count(*) FROM files), "
                   "(SELECT count(*) FROM files WHERE state = 'completed'), "
                   "(SELECT count(*) FROM files WHERE state = 'failed'), "
                   "(SELECT count(*) FROM files WHERE duplicate_of IS NOT NULL), "
                   "(SELECT coalesce(sum(size), 0) FROM files "
                   " WHERE state = 'completed' AND duplicate_of IS NULL)",
};

struct db {
    sqlite3 *conn;
    enum db_mode mode;
    sqlite3_stmt *stmts[STMT_MAX];
    char path[PATH_MAX];
};

/* ---- errors ---- */

/* Maps an SQLite result code to a negative errno and writes "database '<path>': <what>:
 * <sqlite message>" (or the corrupt/busy wording) into err. */
static int db_fail(const struct db *db, int rc, struct error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int db_fail(const struct db *db, int rc, struct error *err, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);

    const char *msg = sqlite3_errstr(rc);
    if (db->conn && sqlite3_errcode(db->conn) != SQLITE_OK)
        msg = sqlite3_errmsg(db->conn);

    int code;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return error_set(err, -EBUSY,
                         "database '%s' is busy (locked by another connection for more than "
                         "%d s): %s: %s",
                         db->path, DB_BUSY_TIMEOUT_MS / 1000, what, msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return error_set(err, -EBADMSG,
                         "database '%s' is corrupt or not a SnapSync database (%s: %s)", db->path,
                         what, msg);
    case SQLITE_FULL:
        code = -ENOSPC;
        break;
    case SQLITE_READONLY:
        code = -EROFS;
        break;
    case SQLITE_CANTOPEN: {
        /* Never -ENOENT: callers take that for "no database yet", and a missing file is found
         * before SQLite opens it. The system errno is SQLite's last failed call, which may be a
         * probe of a side file, so it is only named in the message. */
        int sys = db->conn ? sqlite3_system_errno(db->conn) : 0;
        code = (sys == EACCES || sys == EPERM) ? -EACCES
               : sys == EISDIR                 ? -EISDIR
               : sys == EROFS                  ? -EROFS
                                               : -EIO;
        return error_set(err, code, "database '%s': %s: %s (%s)", db->path, what, msg,
                         sys ? strerror(sys) : "no system error");
    }
    case SQLITE_PERM:
    case SQLITE_AUTH:
        code = -EACCES;
        break;
    case SQLITE_NOMEM:
        code = -ENOMEM;
        break;
    case SQLITE_CONSTRAINT: /* a caller passed an id that does not exist, or a duplicate key */
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
        code = -EINVAL;
        break;
    case SQLITE_IOERR:
        code = rc == SQLITE_IOERR_NOMEM ? -ENOMEM : -EIO;
        break;
    default:
        code = -EIO;
        break;
    }
    return error_set(err, code, "database '%s': %s: %s", db->path, what, msg);
}

/* ---- small helpers ---- */

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* The bind helpers pass an earlier failure through, so a run of binds is checked once. */
static int bind_i64(sqlite3_stmt *st, int i, int64_t v, int rc)
{
    return rc != SQLITE_OK ? rc : sqlite3_bind_int64(st, i, v);
}

static int bind_str(sqlite3_stmt *st, int i, const char *s, int rc)
{
    if (rc != SQLITE_OK)
        return rc;
    if (!s)
        return sqlite3_bind_null(st, i);
    return sqlite3_bind_text(st, i, s, (int)strnlen(s, DB_TEXT_MAX), SQLITE_STATIC);
}

static void col_str(sqlite3_stmt *st, int i, char *buf, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(buf, size, "%s", t ? (const char *)t : "");
}

static int stmt_get(struct db *db, enum stmt_id id, sqlite3_stmt **ret, struct error *err)
{
    if (!db->stmts[id]) {
        int rc = sqlite3_prepare_v3(db->conn, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                    &db->stmts[id], NULL);
        if (rc != SQLITE_OK) {
            db->stmts[id] = NULL;
            return db_fail(db, rc, err, "cannot prepare query %d", (int)id);
        }
    }
    *ret = db->stmts[id];
    return 0;
}

/* Returns a cached statement to its idle state; a statement left stepping would pin a read
 * transaction and keep the WAL from being checkpointed. */
static void stmt_done(sqlite3_stmt *st)
{
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}

/* Steps a write statement to completion. Returns 0 or the mapped error. */
static int stmt_run(struct db *db, sqlite3_stmt *st, struct error *err, const char *what)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    if (rc != SQLITE_DONE)
        return db_fail(db, rc, err, "%s", what);
    return 0;
}

static int exec_sql(struct db *db, const char *sql, struct error *err, const char *what)
{
    int rc = sqlite3_exec(db->conn, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return db_fail(db, rc, err, "%s", what);
    return 0;
}

/* Runs a one-row, one-integer query such as a PRAGMA. */
static int query_int(struct db *db, const char *sql, int64_t *ret, struct error *err)
{
    sqlite3_stmt *st = NULL;
    int r;
    int rc = sqlite3_prepare_v2(db->conn, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        r = db_fail(db, rc, err, "cannot read '%s'", sql);
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        r = db_fail(db, rc == SQLITE_DONE ? SQLITE_ERROR : rc, err, "cannot read '%s'", sql);
        goto out;
    }
    *ret = sqlite3_column_int64(st, 0);
    r = 0;
out:
    sqlite3_finalize(st);
    return r;
}

static bool is_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

/* Copies a hex digest of exactly len digits, lower-cased, into out (len + 1 bytes). */
static int hash_normalize(const char *in, size_t len, char *out, const char *what,
                          struct error *err)
{
    if (!in || strnlen(in, len + 1) != len || !is_hex(in, len))
        return error_set(err, -EINVAL, "invalid %s '%.64s': want %zu hex digits", what,
                         in ? in : "(null)", len);
    for (size_t i = 0; i < len; i++)
        out[i] = (in[i] >= 'A' && in[i] <= 'F') ? (char)(in[i] - 'A' + 'a') : in[i];
    out[len] = '\0';
    return 0;
}

static int check_dests(const char *const *dests, size_t n, struct error *err)
{
    if (n == 0 || n > DB_DESTS_MAX || !dests)
        return error_set(err, -EINVAL, "need 1 to %d destinations, got %zu", DB_DESTS_MAX, n);
    for (size_t i = 0; i < n; i++)
        if (!dests[i] || !dests[i][0] || strlen(dests[i]) >= sizeof(((struct db_copy *)0)->dest))
            return error_set(err, -EINVAL, "destination name %zu is empty or too long", i);
    return 0;
}

/* Binds dests to the DB_DESTS_MAX placeholders starting at first; returns how many distinct
 * names there are, which is the count of completed copies that means "done everywhere". */
static int bind_dests(sqlite3_stmt *st, int first, const char *const *dests, size_t n,
                      int64_t *ret_distinct)
{
    int rc = SQLITE_OK;
    int64_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(dests[i], dests[j]) == 0;
        if (!seen)
            distinct++;
        rc = bind_str(st, first + (int)i, dests[i], rc);
    }
    *ret_distinct = distinct;
    return rc;
}

static int check_key(const struct db_file_key *key, struct error *err)
{
    if (!key || !key->rel_path || !key->rel_path[0] || key->card_id <= 0)
        return error_set(err, -EINVAL, "invalid file key");
    if (strnlen(key->rel_path, DB_KEY_MAX) >= DB_KEY_MAX)
        return error_set(err, -ENAMETOOLONG, "file path '%.64s...' is longer than %d bytes",
                         key->rel_path, DB_KEY_MAX - 1);
    return 0;
}

static int bind_key(sqlite3_stmt *st, const struct db_file_key *key)
{
    int rc = SQLITE_OK;
    rc = bind_i64(st, 1, key->card_id, rc);
    rc = bind_str(st, 2, key->rel_path, rc);
    rc = bind_i64(st, 3, key->size, rc);
    rc = bind_i64(st, 4, key->mtime_ns, rc);
    return rc;
}

/* ---- opening ---- */

/* Creates the parent folders of path (mode DB_DIR_MODE) and the file itself (DB_FILE_MODE),
 * so SQLite never creates it with its default 0644. An existing file keeps its mode. */
static int create_file(const char *path, struct error *err)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, DB_DIR_MODE) < 0 && errno != EEXIST)
            return error_set_errno(err, -errno, "cannot create folder '%s' for the database", buf);
        *p = '/';
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, DB_FILE_MODE);
    if (fd < 0)
        return error_set_errno(err, -errno, "cannot open database '%s'", path);
    close(fd);
    return 0;
}

/* Sessions this process began and has not ended: the service runs several at once, and one
 * starting must not take another for a leftover of a dead process that had our pid. */
#define DB_OWN_SESSIONS_MAX 64
static pthread_mutex_t own_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t own_sessions[DB_OWN_SESSIONS_MAX];

static void own_session_set(int64_t id, bool running)
{
    pthread_mutex_lock(&own_lock);
    for (size_t i = 0; i < DB_OWN_SESSIONS_MAX; i++) {
        if (running ? own_sessions[i] == 0 : own_sessions[i] == id) {
            own_sessions[i] = running ? id : 0;
            break;
        }
    }
    pthread_mutex_unlock(&own_lock);
}

static bool own_session_running(int64_t id)
{
    bool found = false;
    pthread_mutex_lock(&own_lock);
    for (size_t i = 0; i < DB_OWN_SESSIONS_MAX && !found; i++)
        found = own_sessions[i] == id;
    pthread_mutex_unlock(&own_lock);
    return found;
}

/* When process pid started, in seconds since the epoch (with its fraction): field 22 of
 * /proc/<pid>/stat is its start in clock ticks since boot, and CLOCK_BOOTTIME is the same clock,
 * so the start is now minus the time since then. -errno when the process cannot be read. */
static int process_started_at(pid_t pid, double *ret)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    int e = errno;
    close(fd);
    if (n <= 0)
        return n < 0 ? -e : -EIO;
    buf[n] = '\0';
    /* "pid (comm) state ppid ...": comm may hold spaces and parentheses, so fields are counted
     * from the last ')', which ends field 2. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -EBADMSG;
    p++;
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p + 1, ' ');
    }
    if (!p)
        return -EBADMSG;
    char *end = NULL;
    errno = 0;
    unsigned long long ticks = strtoull(p + 1, &end, 10);
    long hz = sysconf(_SC_CLK_TCK);
    if (errno || end == p + 1 || (*end != ' ' && *end != '\0') || hz <= 0)
        return -EBADMSG;
    struct timespec boot, real;
    clock_gettime(CLOCK_BOOTTIME, &boot);
    clock_gettime(CLOCK_REALTIME, &real);
    double since_boot = (double)ticks / (double)hz;
    double up = (double)boot.tv_sec + (double)boot.tv_nsec / 1e9;
    *ret = (double)real.tv_sec + (double)real.tv_nsec / 1e9 - (up - since_boot);
    return 0;
}

/* started_at is whole seconds, cut, taken after the process started: a process whose start
 * comes out later than this after started_at started after the session began. */
#define DB_START_SLACK_S 2.0

/* The process that ran session id (begun at started_at by pid) still runs it. */
static bool session_alive(int64_t pid, int64_t id, int64_t started_at)
{
    if (pid == (int64_t)getpid())
        return id > 0 && own_session_running(id);
    if (pid <= 0 || pid > INT_MAX)
        return false; /* kill(0 or -1, ...) would mean a process group or everyone */
    if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
        return false; /* EPERM: alive, not ours */
    /* The pid is taken, but a process that started after the session began (the pid reused,
     * typically after a reboot) cannot be the one that ran it. When its start cannot be read
     * (no /proc), the pid alone decides. */
    double start;
    if (process_started_at((pid_t)pid, &start) < 0)
        return true;
    return start <= (double)started_at + DB_START_SLACK_S;
}

/* The process that began verification run id at started_at still runs it: this process's own
 * runs are alive (it ends each one it begins); another process as session_alive decides. */
static bool verify_run_alive(int64_t pid, int64_t started_at)
{
    if (pid == (int64_t)getpid())
        return true;
    return pid != 0 && session_alive(pid, 0, started_at);
}

/* snapsync_verify_run_alive(pid, started_at): SQL's view of verify_run_alive. */
static void sql_verify_run_alive(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    sqlite3_result_int(
        ctx, verify_run_alive(sqlite3_value_int64(argv[0]), sqlite3_value_int64(argv[1])));
}

bool db_session_alive(const struct db_session *s)
{
    if (!s || (s->status != DB_SESSION_SCANNING && s->status != DB_SESSION_BACKING_UP))
        return false;
    return session_alive(s->pid, s->id, s->started_at);
}

/* snapsync_session_alive(pid, id, started_at): SQL's view of session_alive. */
static void sql_session_alive(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    sqlite3_result_int(ctx,
                       session_alive(sqlite3_value_int64(argv[0]), sqlite3_value_int64(argv[1]),
                                     sqlite3_value_int64(argv[2])));
}

static int check_tables(struct db *db, struct error *err)
{
    int64_t n;
    int r = query_int(db, DB_TABLES_SQL, &n, err);
    if (r < 0)
        return r;
    if (n != DB_TABLES_COUNT)
        return error_set(err, -EBADMSG,
                         "database '%s' is corrupt or not a SnapSync database (tables missing)",
                         db->path);
    return 0;
}

/* A database with no schema version must be empty: SnapSync never writes into another
 * program's SQLite file. */
static int check_empty(struct db *db, struct error *err)
{
    int64_t objects;
    int r = query_int(db, "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'",
                      &objects, err);
    if (r < 0)
        return r;
    if (objects > 0)
        return error_set(err, -EBADMSG,
                         "database '%s' is corrupt or not a SnapSync database (it holds other "
                         "tables and no SnapSync schema version)",
                         db->path);
    return 0;
}

static int check_version(struct db *db, int64_t version, struct error *err)
{
    if (version > DB_SCHEMA_VERSION || version < 0)
        return error_set(err, -EPROTO,
                         "database '%s' has schema version %lld, created by a newer SnapSync "
                         "(this build knows version %d)",
                         db->path, (long long)version, DB_SCHEMA_VERSION);
    return 0;
}

/* Reads the schema version and checks that the file holds what that version says (no tables at
 * version 0, ours at any other), inside the caller's transaction so both are read from one
 * snapshot: a creator that commits in between cannot make an empty file look foreign. */
static int schema_check(struct db *db, int64_t *ret_version, struct error *err)
{
    int64_t version = 0;
    /* The first read of the file: this is where a text file or random bytes show up. */
    int r = query_int(db, "PRAGMA user_version", &version, err);
    if (r < 0)
        return r;
    r = check_version(db, version, err);
    if (r < 0)
        return r;
    r = version == 0 ? check_empty(db, err) : check_tables(db, err);
    if (r < 0)
        return r;
    *ret_version = version;
    return 0;
}

/* Ends the transaction begun by BEGIN ...: COMMIT when r is 0, else ROLLBACK. Returns r or
 * the COMMIT's error. */
static int tx_end(struct db *db, int r, struct error *err, const char *what)
{
    if (r == 0)
        r = exec_sql(db, "COMMIT", err, what);
    if (r < 0 && !sqlite3_get_autocommit(db->conn))
        sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
    return r;
}

/* The schema as a reader sees it, in one read transaction. Takes no write lock, so opening a
 * database that is already current never waits for a backup that is writing. */
static int schema_read(struct db *db, int64_t *ret_version, struct error *err)
{
    int r = exec_sql(db, "BEGIN DEFERRED", err, "cannot read the schema");
    if (r < 0)
        return r;
    return tx_end(db, schema_check(db, ret_version, err), err, "cannot read the schema");
}

/* Applies migrations[version..] under one write lock (BEGIN IMMEDIATE, which waits for other
 * writers within the busy timeout). Another process may be creating or migrating the same file,
 * so the version and the tables are read again once the lock is held, and the result is checked
 * before it commits. */
static int migrate(struct db *db, struct error *err)
{
    int64_t version;
    int r = exec_sql(db, "BEGIN IMMEDIATE", err, "cannot start the schema migration");
    if (r < 0)
        return r;
    r = schema_check(db, &version, err);
    for (int64_t v = version; r == 0 && v < DB_SCHEMA_VERSION; v++) {
        char sql[64];
        r = exec_sql(db, migrations[v], err, "cannot migrate the schema");
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %lld", (long long)(v + 1));
        if (r == 0)
            r = exec_sql(db, sql, err, "cannot migrate the schema");
        if (r == 0 && v + 1 == DB_SCHEMA_VERSION)
            r = check_tables(db, err);
    }
    return tx_end(db, r, err, "cannot commit the schema migration");
}

/* Monotonic milliseconds, for the deadline of lock retries. */
static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Switches the file to WAL. This cannot run inside a transaction, so it comes after the schema
 * is known to be ours (it rewrites the header) and takes its own exclusive lock; SQLite returns
 * SQLITE_BUSY from it without calling the busy handler when another connection holds a lock
 * (a concurrent creator migrating, or one reading the header), so it is retried here until the
 * busy timeout, backing off like SQLite's own busy handler: file locks have no notification to
 * wait on. Already WAL: one cheap query. */
static int wal_enable(struct db *db, struct error *err)
{
    sqlite3_stmt *st = NULL;
    int64_t deadline = mono_ms() + DB_BUSY_TIMEOUT_MS;
    int delay_ms = 1;
    int r, rc;

    rc = sqlite3_prepare_v2(db->conn, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    while (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            break;
        sqlite3_reset(st);
        if (mono_ms() + delay_ms > deadline)
            break;
        sqlite3_sleep(delay_ms);
        delay_ms = delay_ms < 50 ? delay_ms * 2 : 100;
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_ROW) {
        r = db_fail(db, rc, err, "cannot switch to WAL mode");
        goto out;
    }
    const unsigned char *mode = sqlite3_column_text(st, 0);
    if (!mode || strcmp((const char *)mode, "wal") != 0) {
        r = error_set(err, -EIO,
                      "database '%s': cannot switch to WAL mode (journal mode is '%s'); "
                      "is it on a filesystem without shared memory, such as NFS?",
                      db->path, mode ? (const char *)mode : "?");
        goto out;
    }
    r = 0;
out:
    sqlite3_finalize(st);
    return r;
}

/*
 * Checks the schema and, read-write, migrates it and switches to WAL. Safe against other
 * processes doing the same to the same new file at once: the check and the migration run under
 * one write lock, so exactly one creator writes the schema and the others find it done; nothing
 * writes before the file is known to be ours, so a foreign file is refused untouched.
 */
static int configure(struct db *db, struct error *err)
{
    int64_t version = 0;
    int r, rc;

    /* Per connection, and foreign_keys is a no-op inside a transaction: first. */
    r = exec_sql(db, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON", err,
                 "cannot set options");
    if (r < 0)
        return r;
    r = schema_read(db, &version, err);
    if (r < 0)
        return r;

    if (version < DB_SCHEMA_VERSION && db->mode != DB_READ_WRITE) {
        if (version == 0)
            return error_set(err, -EBADMSG,
                             "database '%s' is empty or not a SnapSync database (it has no "
                             "SnapSync schema; run SnapSync once to create it)",
                             db->path);
        return error_set(err, -EPROTO,
                         "database '%s' has schema version %lld from an older SnapSync; "
                         "open it read-write once to upgrade it to version %d",
                         db->path, (long long)version, DB_SCHEMA_VERSION);
    }
    if (version < DB_SCHEMA_VERSION) {
        r = migrate(db, err);
        if (r < 0)
            return r;
    }
    if (db->mode == DB_READ_WRITE) {
        r = wal_enable(db, err);
        if (r < 0)
            return r;
    }

    rc = sqlite3_create_function_v2(db->conn, "snapsync_session_alive", 3,
                                    SQLITE_UTF8 | SQLITE_DIRECTONLY, NULL, sql_session_alive, NULL,
                                    NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function_v2(db->conn, "snapsync_verify_run_alive", 2,
                                        SQLITE_UTF8 | SQLITE_DIRECTONLY, NULL, sql_verify_run_alive,
                                        NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return db_fail(db, rc, err, "cannot register functions");
    return 0;
}

/* Side files of a WAL database: path with "-wal" or "-shm" appended. */
static bool side_file(const char *path, const char *suffix, struct stat *ret)
{
    char buf[PATH_MAX + 8];
    snprintf(buf, sizeof(buf), "%s%s", path, suffix);
    return stat(buf, ret) == 0;
}

/* True when path's header says WAL (file format bytes 18 and 19 are 2). */
static bool header_is_wal(const char *path)
{
    unsigned char v[2] = {0, 0};
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return false;
    bool wal = pread(fd, v, sizeof(v), 18) == (ssize_t)sizeof(v) && v[0] == 2 && v[1] == 2;
    close(fd);
    return wal;
}

/* "file:<path, percent-encoded>?immutable=1" into buf (3 * PATH_MAX + 32 bytes). */
static void immutable_uri(const char *path, char *buf, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = (size_t)snprintf(buf, size, "file:");
    for (const unsigned char *p = (const unsigned char *)path; *p && n + 4 < size; p++) {
        bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || strchr("/._-~", *p);
        if (plain) {
            buf[n++] = (char)*p;
        } else {
            buf[n++] = '%';
            buf[n++] = hex[*p >> 4];
            buf[n++] = hex[*p & 15];
        }
    }
    snprintf(buf + n, size - n, "?immutable=1");
}

/*
 * How a read-only connection can open a WAL database whose folder it cannot write. SQLite needs
 * the -shm file next to the database; when no connection has the file open there is none, and
 * SQLite would fail with "unable to open database file" (and an errno from probing the missing
 * -shm, which once made a read-only filesystem look like a missing database). So:
 * - a -shm is there (a writer has it open, or stopped): SQLite reads it as it is;
 * - a read-only filesystem, no write-ahead log: nothing can change the file under us, so it is
 *   opened immutable (no locks, no -shm); *ret_immutable is set;
 * - a read-only filesystem with a write-ahead log but no -shm: the log cannot be read there, and
 *   reading without it would show old data: -EROFS;
 * - a folder this user may not write: -EACCES.
 */
static int ro_plan(const char *path, bool no_trace, bool *ret_immutable, struct error *err)
{
    char dir[PATH_MAX];
    struct stat st;

    *ret_immutable = false;
    if (side_file(path, "-shm", &st))
        return 0;
    /* DB_READ_NO_TRACE: nobody has it open and no log is left, so the file is all there is */
    if (no_trace && !(side_file(path, "-wal", &st) && st.st_size > 0)) {
        *ret_immutable = true;
        return 0;
    }
    if (!header_is_wal(path))
        return 0;
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    if (access(dir, W_OK) == 0)
        return 0; /* SQLite creates the -shm */
    int e = errno;
    if (e == EROFS) {
        if (side_file(path, "-wal", &st) && st.st_size > 0)
            return error_set(err, -EROFS,
                             "database '%s' is on a read-only filesystem with a write-ahead log "
                             "('%s-wal') but no '%s-shm': SQLite cannot read it there; mount it "
                             "read-write once, or copy the three files elsewhere",
                             path, path, path);
        *ret_immutable = true;
        return 0;
    }
    return error_set(err, e == EACCES || e == EPERM ? -EACCES : -e,
                     "cannot read database '%s': SQLite needs to create '%s-shm' next to it and "
                     "cannot write to '%s' (%s); run as the user that runs SnapSync",
                     path, path, dir, strerror(e));
}

int db_open(const char *path, enum db_mode mode, struct db **ret, struct error *err)
{
    struct db *db = NULL;
    struct stat stbuf;
    int r, rc;

    if (!path || !path[0] || !ret ||
        (mode != DB_READ_WRITE && mode != DB_READ_ONLY && mode != DB_READ_NO_TRACE))
        return error_set(err, -EINVAL, "no database path given");
    if (strnlen(path, PATH_MAX) >= PATH_MAX)
        return error_set(err, -ENAMETOOLONG, "database path '%.64s...' is too long", path);

    db = calloc(1, sizeof(*db));
    if (!db)
        return error_set_errno(err, -ENOMEM, "cannot open database '%s'", path);
    snprintf(db->path, sizeof(db->path), "%s", path);
    db->mode = mode;

    if (mode == DB_READ_WRITE) {
        r = create_file(path, err);
        if (r < 0)
            goto out;
    } else if (stat(path, &stbuf) < 0) {
        r = error_set_errno(err, -errno, "cannot open database '%s'", path);
        goto out;
    } else if (S_ISDIR(stbuf.st_mode)) {
        r = error_set_errno(err, -EISDIR, "cannot open database '%s'", path);
        goto out;
    }

    bool immutable = false;
    if (mode != DB_READ_WRITE) {
        r = ro_plan(path, mode == DB_READ_NO_TRACE, &immutable, err);
        if (r < 0)
            goto out;
    }
    int flags = (mode == DB_READ_WRITE ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY) |
                SQLITE_OPEN_NOMUTEX;
    char uri[3 * PATH_MAX + 32];
    if (immutable)
        immutable_uri(path, uri, sizeof(uri));
    rc = sqlite3_open_v2(immutable ? uri : path, &db->conn,
                         flags | (immutable ? SQLITE_OPEN_URI : 0), NULL);
    if (rc != SQLITE_OK) {
        r = db_fail(db, rc, err, "cannot open");
        goto out;
    }
    sqlite3_extended_result_codes(db->conn, 1);
    sqlite3_busy_timeout(db->conn, DB_BUSY_TIMEOUT_MS);

    r = configure(db, err);
    if (r < 0)
        goto out;

    *ret = db;
    db = NULL;
out:
    db_close(db);
    return r;
}

void db_close(struct db *db)
{
    if (!db)
        return;
    for (size_t i = 0; i < STMT_MAX; i++)
        sqlite3_finalize(db->stmts[i]);
    /* close_v2: whatever a bug left unfinalized, the connection still goes away. */
    sqlite3_close_v2(db->conn);
    free(db);
}

int db_transaction(struct db *db, int (*fn)(struct db *db, void *userdata), void *userdata,
                   struct error *err)
{
    if (!db || !fn)
        return error_set(err, -EINVAL, "invalid transaction");
    /* Inside a transaction already: a savepoint makes this one nest. */
    bool nested = !sqlite3_get_autocommit(db->conn);
    int r = exec_sql(db, nested ? "SAVEPOINT db_transaction" : "BEGIN IMMEDIATE", err,
                     "cannot start a transaction");
    if (r < 0)
        return r;

    r = fn(db, userdata);
    if (r >= 0) {
        int c = exec_sql(db, nested ? "RELEASE db_transaction" : "COMMIT", err,
                         "cannot commit a transaction");
        if (c == 0)
            return r;
        r = c;
    }
    /* SQLite may have rolled back already (SQLITE_FULL, some I/O errors). */
    if (!sqlite3_get_autocommit(db->conn))
        sqlite3_exec(db->conn,
                     nested ? "ROLLBACK TO db_transaction; RELEASE db_transaction" : "ROLLBACK",
                     NULL, NULL, NULL);
    return r;
}

/* ---- cards ---- */

int db_card_upsert(struct db *db, const char *uuid, const char *label, int64_t *ret_card_id,
                   struct error *err)
{
    sqlite3_stmt *st = NULL;
    int r, rc = SQLITE_OK;
    int64_t id = 0;

    if (!db || !uuid || !uuid[0])
        return error_set(err, -EINVAL, "card without a uuid");
    if (strnlen(uuid, DB_KEY_MAX) >= sizeof(((struct db_session *)0)->card_uuid))
        return error_set(err, -ENAMETOOLONG, "card uuid '%.64s...' is too long", uuid);
    r = stmt_get(db, STMT_CARD_UPSERT, &st, err);
    if (r < 0)
        return r;
    rc = bind_str(st, 1, uuid, rc);
    rc = bind_str(st, 2, label, rc);
    rc = bind_i64(st, 3, now_s(), rc);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        r = db_fail(db, rc, err, "cannot record card '%s'", uuid);
        goto out;
    }
    id = sqlite3_column_int64(st, 0);
    r = stmt_run(db, st, err, "cannot record card");
    if (r < 0)
        goto out;
    if (ret_card_id)
        *ret_card_id = id;
out:
    stmt_done(st);
    return r;
}

int db_card_find(struct db *db, const char *uuid, int64_t *ret_card_id, struct error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->conn, "SELECT id FROM cards WHERE uuid = ?1", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = bind_str(st, 1, uuid, rc);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int r;
    if (rc == SQLITE_ROW) {
        *ret_card_id = sqlite3_column_int64(st, 0);
        r = 0;
    } else if (rc == SQLITE_DONE) {
        r = error_set(err, -ENOENT, "card '%s' is not known", uuid);
    } else {
        r = db_fail(db, rc, err, "cannot look up card '%s'", uuid);
    }
    sqlite3_finalize(st);
    return r;
}

/* ---- sessions ---- */

static int bind_totals(sqlite3_stmt *st, const struct db_totals *t, int rc)
{
    rc = bind_i64(st, 3, t->files_total, rc);
    rc = bind_i64(st, 4, t->bytes_total, rc);
    rc = bind_i64(st, 5, t->files_copied, rc);
    rc = bind_i64(st, 6, t->files_skipped, rc);
    rc = bind_i64(st, 7, t->files_duplicate, rc);
    rc = bind_i64(st, 8, t->files_failed, rc);
    rc = bind_i64(st, 9, t->bytes_copied, rc);
    rc = bind_i64(st, 10, t->scan_problems, rc);
    return rc;
}

static void read_session(sqlite3_stmt *st, struct db_session *s)
{
    memset(s, 0, sizeof(*s));
    s->id = sqlite3_column_int64(st, 0);
    s->card_id = sqlite3_column_int64(st, 1);
    col_str(st, 2, s->card_uuid, sizeof(s->card_uuid));
    col_str(st, 3, s->card_label, sizeof(s->card_label));
    col_str(st, 4, s->source, sizeof(s->source));
    s->started_at = sqlite3_column_int64(st, 5);
    s->ended_at = sqlite3_column_int64(st, 6);
    s->pid = sqlite3_column_int64(st, 7);
    s->status = session_status_parse((const char *)sqlite3_column_text(st, 8));
    s->totals.files_total = sqlite3_column_int64(st, 9);
    s->totals.bytes_total = sqlite3_column_int64(st, 10);
    s->totals.files_copied = sqlite3_column_int64(st, 11);
    s->totals.files_skipped = sqlite3_column_int64(st, 12);
    s->totals.files_duplicate = sqlite3_column_int64(st, 13);
    s->totals.files_failed = sqlite3_column_int64(st, 14);
    s->totals.bytes_copied = sqlite3_column_int64(st, 15);
    col_str(st, 16, s->error, sizeof(s->error));
    s->safe_to_remove = sqlite3_column_int64(st, 17) != 0;
    s->totals.scan_problems = sqlite3_column_int64(st, 18);
}

struct begin_args {
    int64_t card_id;
    const char *source;
    int64_t id;
    struct error *err;
};

static int session_begin_tx(struct db *db, void *userdata)
{
    struct begin_args *a = userdata;
    sqlite3_stmt *st = NULL;
    int r, rc = SQLITE_OK;

    r = stmt_get(db, STMT_SESSION_BEGIN, &st, a->err);
    if (r < 0)
        return r;
    /* A session without a card (a plain folder) keeps card_id NULL. */
    rc = a->card_id > 0 ? bind_i64(st, 1, a->card_id, rc) : sqlite3_bind_null(st, 1);
    rc = bind_str(st, 2, a->source ? a->source : "", rc);
    rc = bind_i64(st, 3, now_s(), rc);
    rc = bind_i64(st, 4, (int64_t)getpid(), rc);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        r = db_fail(db, rc, a->err, "cannot start a session for card %lld", (long long)a->card_id);
        goto out;
    }
    int64_t id = sqlite3_column_int64(st, 0);
    r = stmt_run(db, st, a->err, "cannot start a session");
    if (r < 0)
        goto out;
    /* Before the row is committed: another thread of this process repairing stale rows (which
     * takes the write lock) then never sees our running row without knowing it is ours. */
    own_session_set(id, true);
    a->id = id;
out:
    stmt_done(st);
    return r;
}

int db_session_begin(struct db *db, int64_t card_id, const char *source, int64_t *ret_id,
                     struct error *err)
{
    struct begin_args a = {.card_id = card_id, .source = source, .err = err};

    if (!db)
        return error_set(err, -EINVAL, "no database");
    int r = db_transaction(db, session_begin_tx, &a, err);
    if (r < 0) {
        if (a.id > 0)
            own_session_set(a.id, false); /* the commit failed */
        return r;
    }
    if (ret_id)
        *ret_id = a.id;
    return 0;
}

/* Runs st, a bound UPDATE of session id (rc: the binds' result), and releases it. */
static int session_update_run(struct db *db, sqlite3_stmt *st, int rc, int64_t id,
                              struct error *err)
{
    int r;
    if (rc != SQLITE_OK) {
        r = db_fail(db, rc, err, "cannot update session %lld", (long long)id);
        goto out;
    }
    r = stmt_run(db, st, err, "cannot update a session");
    if (r < 0)
        goto out;
    if (sqlite3_changes(db->conn) == 0)
        r = error_set(err, -ENOENT, "no session %lld", (long long)id);
out:
    stmt_done(st);
    return r;
}

static int session_write(struct db *db, enum stmt_id which, int64_t id,
                         enum db_session_status status, const struct db_totals *totals,
                         const char *error, struct error *err)
{
    sqlite3_stmt *st = NULL;
    int r, rc = SQLITE_OK;

    if (!db || (unsigned)status >= ARRAY_SIZE(session_status_names))
        return error_set(err, -EINVAL, "invalid session update");
    if (!totals)
        which = which == STMT_SESSION_END ? STMT_SESSION_FINISH : STMT_SESSION_STATUS;
    r = stmt_get(db, which, &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, id, rc);
    rc = bind_str(st, 2, session_status_names[status], rc);
    if (totals)
        rc = bind_totals(st, totals, rc);
    if (which == STMT_SESSION_END || which == STMT_SESSION_FINISH) {
        rc = bind_i64(st, 11, now_s(), rc);
        rc = bind_str(st, 12, error, rc);
    }
    return session_update_run(db, st, rc, id, err);
}

int db_session_update(struct db *db, int64_t id, enum db_session_status status,
                      const struct db_totals *totals, struct error *err)
{
    return session_write(db, STMT_SESSION_UPDATE, id, status, totals, NULL, err);
}

int db_session_end(struct db *db, int64_t id, enum db_session_status status,
                   const struct db_totals *totals, const char *error, struct error *err)
{
    int r = session_write(db, STMT_SESSION_END, id, status, totals, error, err);
    if (r == 0)
        own_session_set(id, false);
    return r;
}

/* Runs which, an UPDATE of session id (?1) with ?2, ?3, ... = v[0 .. n-1]. */
static int session_set(struct db *db, enum stmt_id which, int64_t id, const int64_t *v, int n,
                       struct error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_OK;

    if (!db)
        return error_set(err, -EINVAL, "no database");
    int r = stmt_get(db, which, &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, id, rc);
    for (int i = 0; i < n; i++)
        rc = bind_i64(st, 2 + i, v[i], rc);
    return session_update_run(db, st, rc, id, err);
}

int db_session_set_found(struct db *db, int64_t id, int64_t files_total, int64_t bytes_total,
                         struct error *err)
{
    return session_set(db, STMT_SESSION_FOUND, id, (const int64_t[]){files_total, bytes_total}, 2,
                       err);
}

int db_session_set_safe_to_remove(struct db *db, int64_t id, bool safe, struct error *err)
{
    return session_set(db, STMT_SESSION_SAFE, id, (const int64_t[]){safe ? 1 : 0}, 1, err);
}

/* Runs sql, an ad-hoc write with ?1 = a and ?2 = b; *ret_changes (may be NULL): rows changed. */
static int adhoc_run(struct db *db, const char *sql, int64_t a, int64_t b, int64_t *ret_changes,
                     struct error *err, const char *what)
{
    sqlite3_stmt *st = NULL;
    int r;
    int rc = sqlite3_prepare_v2(db->conn, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = bind_i64(st, 1, a, rc);
    if (rc == SQLITE_OK && sqlite3_bind_parameter_count(st) >= 2)
        rc = bind_i64(st, 2, b, rc);
    if (rc != SQLITE_OK)
        r = db_fail(db, rc, err, "%s", what);
    else
        r = stmt_run(db, st, err, what);
    if (r == 0 && ret_changes)
        *ret_changes = sqlite3_changes(db->conn);
    sqlite3_finalize(st);
    return r;
}

/* A session still running: one whose card's files are in flight and must be left alone. */
#define RUNNING_SESSION_ON(card)                                                                   \
    "EXISTS (SELECT 1 FROM sessions s WHERE s.status IN ('scanning', 'backing_up') "               \
    "AND (s.card_id IS NULL OR s.card_id = " card "))"

struct repair_args {
    struct db_repair counts;
    struct error *err;
};

static int repair_tx(struct db *db, void *userdata)
{
    /* Sessions first: once the dead ones are interrupted, every session still running is
     * alive, and the files of its card (a session without a card could touch any) are its. */
    static const char *const sql[3] = {
        "UPDATE sessions SET status = 'interrupted', ended_at = ?1, "
        "error = coalesce(error, 'the process running this session stopped') "
        "WHERE status IN ('scanning', 'backing_up') "
        "AND NOT snapsync_session_alive(pid, id, started_at)",
        "UPDATE files SET state = 'new', last_error = 'interrupted', updated_at = ?1 "
        "WHERE state IN ('scanning', 'backing_up', 'verifying') "
        "AND NOT " RUNNING_SESSION_ON("files.card_id"),
        "UPDATE copies SET state = 'pending', error = NULL, verified_at = 0, updated_at = ?1 "
        "WHERE state IN ('copying', 'verifying') "
        "AND NOT " RUNNING_SESSION_ON("(SELECT card_id FROM files WHERE id = copies.file_id)"),
    };
    struct repair_args *a = userdata;
    int64_t *counts[3] = {&a->counts.sessions, &a->counts.files, &a->counts.copies};
    int64_t now = now_s();
    for (size_t i = 0; i < 3; i++) {
        int r = adhoc_run(db, sql[i], now, 0, counts[i], a->err, "cannot repair stale rows");
        if (r < 0)
            return r;
    }
    return 0;
}

int db_repair_stale(struct db *db, struct db_repair *ret, struct error *err)
{
    struct repair_args a = {.err = err};
    if (!db)
        return error_set(err, -EINVAL, "no database");
    int r = db_transaction(db, repair_tx, &a, err);
    if (r < 0)
        return r;
    if (ret)
        *ret = a.counts;
    return 0;
}

int db_sessions_interrupt_stale(struct db *db, int64_t *ret_count, struct error *err)
{
    struct db_repair rep = {0};
    int r = db_repair_stale(db, &rep, err);
    if (r == 0 && ret_count)
        *ret_count = rep.sessions;
    return r;
}

/* Collects up to limit rows of a list statement (bound already) into a growing array. */
static int collect_rows(struct db *db, sqlite3_stmt *st, int limit, size_t elem,
                        void (*read)(sqlite3_stmt *st, void *row), void **ret, size_t *ret_n,
                        struct error *err, const char *what)
{
    char *rows = NULL;
    size_t n = 0, cap = 0;
    int r, rc;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == (size_t)limit)
            break;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            if (ncap > (size_t)limit)
                ncap = (size_t)limit;
            char *p = realloc(rows, ncap * elem);
            if (!p) {
                r = error_set_errno(err, -ENOMEM, "%s", what);
                goto out;
            }
            rows = p;
            cap = ncap;
        }
        read(st, rows + n * elem);
        n++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        r = db_fail(db, rc, err, "%s", what);
        goto out;
    }
    *ret = rows;
    *ret_n = n;
    rows = NULL;
    r = 0;
out:
    free(rows);
    return r;
}

static void read_session_row(sqlite3_stmt *st, void *row)
{
    read_session(st, row);
}

/* The newest rows of a list statement whose one parameter is the limit (1..DB_LIST_MAX), each
 * read by read into an array of elem-sized rows; what names the list in messages. */
static int list_newest(struct db *db, enum stmt_id id, int limit, size_t elem,
                       void (*read)(sqlite3_stmt *st, void *row), const char *what, void **ret,
                       size_t *ret_n, struct error *err)
{
    sqlite3_stmt *st = NULL;
    void *rows = NULL;
    size_t n = 0;
    int r;

    if (!db || !ret || !ret_n || limit < 1 || limit > DB_LIST_MAX)
        return error_set(err, -EINVAL, "%s: the limit must be 1 to %d", what, DB_LIST_MAX);
    r = stmt_get(db, id, &st, err);
    if (r < 0)
        return r;
    int rc = bind_i64(st, 1, limit, SQLITE_OK);
    if (rc != SQLITE_OK) {
        r = db_fail(db, rc, err, "cannot list %s", what);
        goto out;
    }
    char msg[64];
    snprintf(msg, sizeof(msg), "cannot list %s", what);
    r = collect_rows(db, st, limit, elem, read, &rows, &n, err, msg);
    if (r < 0)
        goto out;
    *ret = rows;
    *ret_n = n;
out:
    stmt_done(st);
    return r;
}

int db_sessions_list(struct db *db, int limit, struct db_session **ret, size_t *ret_n,
                     struct error *err)
{
    void *rows = NULL;
    int r = list_newest(db, STMT_SESSION_LIST, limit, sizeof(struct db_session), read_session_row,
                        "sessions", &rows, ret_n, err);
    if (r == 0)
        *ret = rows;
    return r;
}

int db_session_get(struct db *db, int64_t id, struct db_session *ret, struct error *err)
{
    sqlite3_stmt *st = NULL;
    int r, rc;

    if (!db || !ret)
        return error_set(err, -EINVAL, "invalid session query");
    r = stmt_get(db, STMT_SESSION_GET, &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, id, SQLITE_OK);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        read_session(st, ret);
        r = 0;
    } else if (rc == SQLITE_DONE) {
        r = error_set(err, -ENOENT, "no session %lld", (long long)id);
    } else {
        r = db_fail(db, rc, err, "cannot read session %lld", (long long)id);
    }
    stmt_done(st);
    return r;
}

int db_session_file_set(struct db *db, int64_t session_id, int64_t file_id, enum db_outcome o,
                        struct error *err)
{
    sqlite3_stmt *st = NULL;
    int r, rc = SQLITE_OK;

    if (!db || (unsigned)o >= ARRAY_SIZE(outcome_names))
        return error_set(err, -EINVAL, "invalid session outcome");
    r = stmt_get(db, STMT_SESSION_FILE_SET, &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, session_id, rc);
    rc = bind_i64(st, 2, file_id, rc);
    rc = bind_str(st, 3, outcome_names[o], rc);
    if (rc != SQLITE_OK) {
        r = db_fail(db, rc, err, "cannot record a session outcome");
        goto out;
    }
    r = stmt_run(db, st, err, "cannot record a session outcome");
out:
    stmt_done(st);
    return r;
}

static int adhoc_prepare(struct db *db, const char *sql, sqlite3_stmt **ret, struct error *err);

/* The rows of sql (?1 = id, ?2 = limit) read by read into an array of at most limit elem-sized
 * rows; what ("the copies of file") names them in messages. */
static int list_by_id(struct db *db, const char *sql, int64_t id, int limit, size_t elem,
                      void (*read)(sqlite3_stmt *st, void *row), const char *what, void **ret,
                      size_t *ret_n, struct error *err)
{
    sqlite3_stmt *st = NULL;
    void *rows = NULL;
    size_t n = 0;
    int r, rc = SQLITE_OK;
    char msg[64];

    r = adhoc_prepare(db, sql, &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, id, rc);
    rc = bind_i64(st, 2, limit, rc);
    if (rc != SQLITE_OK) {
        r = db_fail(db, rc, err, "cannot list %s %lld", what, (long long)id);
        goto out;
    }
    snprintf(msg, sizeof(msg), "cannot list %s %lld", what, (long long)id);
    r = collect_rows(db, st, limit, elem, read, &rows, &n, err, msg);
    if (r < 0)
        goto out;
    *ret = rows;
    *ret_n = n;
out:
    sqlite3_finalize(st);
    return r;
}

int db_session_problem_add(struct db *db, int64_t session_id, const char *path, const char *error,
                           struct error *err)
{
    sqlite3_stmt *st = NULL;
    int r, rc = SQLITE_OK;

    if (!db || !path || !error)
        return error_set(err, -EINVAL, "invalid session problem");
    /* the count and the insert in one statement: nothing can slip in between */
    r = adhoc_prepare(db,
                      "INSERT INTO session_problems (session_id, path, error) SELECT ?1, ?2, ?3 "
                      "WHERE (SELECT count(*) FROM session_problems WHERE session_id = ?1) < ?4",
                      &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, session_id, rc);
    rc = bind_str(st, 2, path, rc);
    rc = bind_str(st, 3, error, rc);
    rc = bind_i64(st, 4, DB_PROBLEMS_MAX, rc);
    if (rc != SQLITE_OK) {
        r = db_fail(db, rc, err, "cannot record a problem of session %lld", (long long)session_id);
        goto out;
    }
    r = stmt_run(db, st, err, "cannot record a problem of a session");
out:
    sqlite3_finalize(st);
    return r;
}

static void read_problem_row(sqlite3_stmt *st, void *row)
{
    struct db_problem *p = row;
    col_str(st, 0, p->path, sizeof(p->path));
    col_str(st, 1, p->error, sizeof(p->error));
}

int db_session_problems(struct db *db, int64_t session_id, struct db_problem **ret, size_t *ret_n,
                        struct error *err)
{
    if (!db || !ret || !ret_n)
        return error_set(err, -EINVAL, "invalid session problems query");
    void *rows = NULL;
    int r = list_by_id(db,
                       "SELECT path, error FROM session_problems WHERE session_id = ?1 "
                       "ORDER BY id LIMIT ?2",
                       session_id, DB_PROBLEMS_MAX, sizeof(struct db_problem), read_problem_row,
                       "the problems of session", &rows, ret_n, err);
    if (r == 0)
        *ret = rows;
    return r;
}

/* ---- files ---- */

static void read_file(sqlite3_stmt *st, struct db_file *f)
{
    memset(f, 0, sizeof(*f));
    f->id = sqlite3_column_int64(st, 0);
    f->card_id = sqlite3_column_int64(st, 1);
    col_str(st, 2, f->rel_path, sizeof(f->rel_path));
    f->size = sqlite3_column_int64(st, 3);
    f->mtime_ns = sqlite3_column_int64(st, 4);
    col_str(st, 5, f->md5, sizeof(f->md5));
    col_str(st, 6, f->sha1, sizeof(f->sha1));
    f->capture_time = sqlite3_column_int64(st, 7);
    col_str(st, 8, f->kind, sizeof(f->kind));
    f->state = file_state_parse((const char *)sqlite3_column_text(st, 9));
    f->attempts = sqlite3_column_int(st, 10);
    col_str(st, 11, f->last_error, sizeof(f->last_error));
    f->duplicate_of = sqlite3_column_int64(st, 12);
    col_str(st, 13, f->xxh128, sizeof(f->xxh128));
}

static void read_file_row(sqlite3_stmt *st, void *row)
{
    read_file(st, row);
}

int db_file_done(struct db *db, const struct db_file_key *key, const char *const *dests, size_t n,
                 bool *ret_done, struct error *err)
{
    sqlite3_stmt *st = NULL;
    int64_t want = 0;
    int r, rc;

    if (!db || !ret_done)
        return error_set(err, -EINVAL, "invalid file query");
    r = check_key(key, err);
    if (r < 0)
        return r;
    r = check_dests(dests, n, err);
    if (r < 0)
        return r;
    r = stmt_get(db, STMT_FILE_DONE, &st, err);
    if (r < 0)
        return r;
    rc = bind_key(st, key);
    if (rc == SQLITE_OK)
        rc = bind_dests(st, 5, dests, n, &want);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        r = db_fail(db, rc, err, "cannot look up '%s'", key->rel_path);
        goto out;
    }
    *ret_done = sqlite3_column_int64(st, 0) == want;
out:
    stmt_done(st);
    return r;
}

int db_file_get_or_create(struct db *db, const struct db_file_key *key, int64_t *ret_id,
                          struct db_file *ret_file, struct error *err)
{
    sqlite3_stmt *sel = NULL, *ins = NULL;
    int r, rc;

    if (!db)
        return error_set(err, -EINVAL, "no database");
    r = check_key(key, err);
    if (r < 0)
        return r;
    r = stmt_get(db, STMT_FILE_SELECT, &sel, err);
    if (r < 0)
        return r;
    r = stmt_get(db, STMT_FILE_INSERT, &ins, err);
    if (r < 0)
        return r;

    /* Look first: on a re-run nearly every file exists, and a read takes no write lock. */
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = bind_key(sel, key);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(sel);
        if (rc == SQLITE_ROW) {
            if (ret_id)
                *ret_id = sqlite3_column_int64(sel, 0);
            if (ret_file)
                read_file(sel, ret_file);
            r = 0;
            goto out;
        }
        if (rc != SQLITE_DONE) {
            r = db_fail(db, rc, err, "cannot look up '%s'", key->rel_path);
            goto out;
        }
        stmt_done(sel);
        if (attempt > 0)
            break;
        /* ON CONFLICT DO NOTHING: another connection may insert the same key in between. */
        rc = bind_key(ins, key);
        rc = bind_i64(ins, 5, now_s(), rc);
        if (rc != SQLITE_OK) {
            r = db_fail(db, rc, err, "cannot record '%s'", key->rel_path);
            goto out;
        }
        r = stmt_run(db, ins, err, "cannot record a file");
        stmt_done(ins);
        if (r < 0)
            goto out;
    }
    r = error_set(err, -EIO, "database '%s': file '%s' vanished right after it was recorded",
                  db->path, key->rel_path);
out:
    stmt_done(sel);
    stmt_done(ins);
    return r;
}

/* Runs one of the UPDATE statements on files whose ?1 is the file id and reports -ENOENT when
 * no row matched. */
static int file_update_run(struct db *db, sqlite3_stmt *st, int64_t file_id, int rc,
                           struct error *err)
{
    if (rc != SQLITE_OK)
        return db_fail(db, rc, err, "cannot update file %lld", (long long)file_id);
    int r = stmt_run(db, st, err, "cannot update a file");
    if (r < 0)
        return r;
    if (sqlite3_changes(db->conn) == 0)
        return error_set(err, -ENOENT, "no file %lld", (long long)file_id);
    return 0;
}

int db_file_set_state(struct db *db, int64_t file_id, enum db_file_state state, const char *error,
                      struct error *err)
{
    sqlite3_stmt *st = NULL;
    int r, rc = SQLITE_OK;

    if (!db || (unsigned)state >= ARRAY_SIZE(file_state_names))
        return error_set(err, -EINVAL, "invalid file state");
    r = stmt_get(db, STMT_FILE_SET_STATE, &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, file_id, rc);
    rc = bind_str(st, 2, file_state_names[state], rc);
    rc = bind_str(st, 3, error, rc);
    rc = bind_i64(st, 4, state == DB_FILE_SCANNING ? 1 : 0, rc);
    rc = bind_i64(st, 5, now_s(), rc);
    r = file_update_run(db, st, file_id, rc, err);
    stmt_done(st);
    return r;
}

int db_file_set_meta(struct db *db, int64_t file_id, const char *md5, const char *sha1,
                     const char *xxh128, int64_t capture_time, const char *kind, struct error *err)
{
    sqlite3_stmt *st = NULL;
    char md5_lc[33], sha1_lc[41], xxh_lc[33];
    int r, rc = SQLITE_OK;

    if (!db)
        return error_set(err, -EINVAL, "no database");
    r = hash_normalize(md5, 32, md5_lc, "MD5", err);
    if (r < 0)
        return r;
    if (sha1 && (r = hash_normalize(sha1, 40, sha1_lc, "SHA-1", err)) < 0)
        return r;
    if (xxh128 && (r = hash_normalize(xxh128, 32, xxh_lc, "XXH3-128", err)) < 0)
        return r;
    if (!kind)
        kind = "unknown";
    if (!kind[0] || strlen(kind) >= sizeof(((struct db_file *)0)->kind))
        return error_set(err, -EINVAL, "invalid file kind '%.32s'", kind);
    r = stmt_get(db, STMT_FILE_SET_META, &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, file_id, rc);
    rc = bind_str(st, 2, md5_lc, rc);
    rc = sha1 ? bind_str(st, 3, sha1_lc, rc) : rc; /* unbound: NULL */
    rc = bind_i64(st, 4, capture_time, rc);
    rc = bind_str(st, 5, kind, rc);
    rc = bind_i64(st, 6, now_s(), rc);
    rc = xxh128 ? bind_str(st, 7, xxh_lc, rc) : rc; /* unbound: NULL */
    r = file_update_run(db, st, file_id, rc, err);
    stmt_done(st);
    return r;
}

int db_file_set_duplicate(struct db *db, int64_t file_id, int64_t original_id, struct error *err)
{
    sqlite3_stmt *st = NULL;
    int r, rc = SQLITE_OK;

    if (!db || original_id <= 0 || original_id == file_id)
        return error_set(err, -EINVAL, "file %lld cannot be a duplicate of %lld",
                         (long long)file_id, (long long)original_id);
    r = stmt_get(db, STMT_FILE_SET_DUPLICATE, &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, file_id, rc);
    rc = bind_i64(st, 2, original_id, rc);
    rc = bind_i64(st, 3, now_s(), rc);
    r = file_update_run(db, st, file_id, rc, err);
    stmt_done(st);
    return r;
}

int db_hash_backed_up(struct db *db, const char *md5, const char *sha1, const char *xxh128,
                      int64_t exclude_id, const char *const *dests, size_t n, int64_t *ret_file_id,
                      struct error *err)
{
    sqlite3_stmt *st = NULL;
    char md5_lc[33], sha1_lc[41], xxh_lc[33];
    int64_t want = 0;
    int r, rc = SQLITE_OK;

    if (!db || !ret_file_id || (!sha1 && !xxh128))
        return error_set(err, -EINVAL, "invalid duplicate query");
    r = hash_normalize(md5, 32, md5_lc, "MD5", err);
    if (r < 0)
        return r;
    if (sha1 && (r = hash_normalize(sha1, 40, sha1_lc, "SHA-1", err)) < 0)
        return r;
    if (xxh128 && (r = hash_normalize(xxh128, 32, xxh_lc, "XXH3-128", err)) < 0)
        return r;
    r = check_dests(dests, n, err);
    if (r < 0)
        return r;
    r = stmt_get(db, STMT_HASH_BACKED_UP, &st, err);
    if (r < 0)
        return r;
    rc = bind_str(st, 1, md5_lc, rc);
    rc = sha1 ? bind_str(st, 2, sha1_lc, rc) : rc; /* unbound: NULL, which matches no row */
    rc = bind_i64(st, 3, exclude_id, rc);
    if (rc == SQLITE_OK)
        rc = bind_dests(st, 4, dests, n, &want);
    rc = bind_i64(st, 20, rc == SQLITE_OK ? want : 0, rc);
    rc = xxh128 ? bind_str(st, 21, xxh_lc, rc) : rc;
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *ret_file_id = sqlite3_column_int64(st, 0);
    } else if (rc == SQLITE_DONE) {
        *ret_file_id = 0;
    } else {
        r = db_fail(db, rc, err, "cannot look up hash %s", md5_lc);
        goto out;
    }
    r = 0;
out:
    stmt_done(st);
    return r;
}

int db_files_failed(struct db *db, int limit, struct db_file **ret, size_t *ret_n,
                    struct error *err)
{
    void *rows = NULL;
    int r = list_newest(db, STMT_FILES_FAILED, limit, sizeof(struct db_file), read_file_row,
                        "failed files", &rows, ret_n, err);
    if (r == 0)
        *ret = rows;
    return r;
}

/* ---- copies ---- */

int db_copy_set(struct db *db, int64_t file_id, const char *dest, enum db_copy_state state,
                const char *remote, const char *error, struct error *err)
{
    sqlite3_stmt *st = NULL;
    int r, rc = SQLITE_OK;

    if (!db || (unsigned)state >= ARRAY_SIZE(copy_state_names))
        return error_set(err, -EINVAL, "invalid copy state");
    r = check_dests(&dest, 1, err);
    if (r < 0)
        return r;
    if (remote && strnlen(remote, DB_KEY_MAX) >= DB_KEY_MAX)
        return error_set(err, -ENAMETOOLONG, "remote path '%.64s...' is longer than %d bytes",
                         remote, DB_KEY_MAX - 1);
    r = stmt_get(db, STMT_COPY_SET, &st, err);
    if (r < 0)
        return r;
    int64_t now = now_s();
    rc = bind_i64(st, 1, file_id, rc);
    rc = bind_str(st, 2, dest, rc);
    rc = bind_str(st, 3, copy_state_names[state], rc);
    rc = bind_str(st, 4, remote, rc);
    rc = bind_i64(st, 5, state == DB_COPY_COMPLETED ? now : 0, rc);
    rc = bind_str(st, 6, error, rc);
    rc = bind_i64(st, 7, now, rc);
    if (rc != SQLITE_OK) {
        r = db_fail(db, rc, err, "cannot record the copy of file %lld at '%s'", (long long)file_id,
                    dest);
        goto out;
    }
    r = stmt_run(db, st, err, "cannot record a copy");
out:
    stmt_done(st);
    return r;
}

int db_copy_get(struct db *db, int64_t file_id, const char *dest, struct db_copy *ret,
                struct error *err)
{
    sqlite3_stmt *st = NULL;
    int r, rc = SQLITE_OK;

    if (!db || !ret)
        return error_set(err, -EINVAL, "invalid copy query");
    r = check_dests(&dest, 1, err);
    if (r < 0)
        return r;
    r = stmt_get(db, STMT_COPY_GET, &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, file_id, rc);
    rc = bind_str(st, 2, dest, rc);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        memset(ret, 0, sizeof(*ret));
        ret->file_id = sqlite3_column_int64(st, 0);
        col_str(st, 1, ret->dest, sizeof(ret->dest));
        ret->state = copy_state_parse((const char *)sqlite3_column_text(st, 2));
        col_str(st, 3, ret->remote, sizeof(ret->remote));
        ret->verified_at = sqlite3_column_int64(st, 4);
        col_str(st, 5, ret->error, sizeof(ret->error));
        r = 0;
    } else if (rc == SQLITE_DONE) {
        r = error_set(err, -ENOENT, "no copy of file %lld at '%s'", (long long)file_id, dest);
    } else {
        r = db_fail(db, rc, err, "cannot read the copy of file %lld at '%s'", (long long)file_id,
                    dest);
    }
    stmt_done(st);
    return r;
}

/* ---- one file's outcome ---- */

static int check_record(int64_t session_id, const struct db_file_record *rec, struct error *err)
{
    if (!rec || rec->file_id <= 0 || session_id < 0 ||
        (unsigned)rec->state >= ARRAY_SIZE(file_state_names) ||
        rec->n_copies > DB_RECORD_COPIES_MAX ||
        (session_id > 0 && (unsigned)rec->outcome >= ARRAY_SIZE(outcome_names)))
        return error_set(err, -EINVAL, "invalid outcome record for file %lld",
                         rec ? (long long)rec->file_id : 0LL);
    if (rec->duplicate_of < 0 || rec->duplicate_of == rec->file_id ||
        (rec->duplicate_of > 0 && rec->state != DB_FILE_COMPLETED))
        return error_set(err, -EINVAL,
                         "file %lld: a duplicate must be of another file and completed",
                         (long long)rec->file_id);
    for (size_t i = 0; i < rec->n_copies; i++) {
        const struct db_record_copy *c = &rec->copies[i];
        int r = check_dests(&c->dest, 1, err);
        if (r < 0)
            return r;
        if ((unsigned)c->state >= ARRAY_SIZE(copy_state_names))
            return error_set(err, -EINVAL, "file %lld: invalid copy state for '%s'",
                             (long long)rec->file_id, c->dest);
        if (c->remote && strnlen(c->remote, DB_KEY_MAX) >= DB_KEY_MAX)
            return error_set(err, -ENAMETOOLONG, "remote path '%.64s...' is longer than %d bytes",
                             c->remote, DB_KEY_MAX - 1);
    }
    if (rec->n_sidecars > DB_RECORD_SIDECARS_MAX || (rec->n_sidecars && !rec->sidecars))
        return error_set(err, -EINVAL, "file %lld: too many sidecars", (long long)rec->file_id);
    for (size_t k = 0; k < rec->n_sidecars; k++) {
        const struct db_sidecar *sc = &rec->sidecars[k];
        bool copied = false;
        for (size_t i = 0; sc->dest && i < rec->n_copies; i++)
            copied = copied || (rec->copies[i].state == DB_COPY_COMPLETED &&
                                strcmp(rec->copies[i].dest, sc->dest) == 0);
        if (!copied || !sc->remote || !sc->remote[0] || !sc->md5 || !sc->md5[0] || !sc->sha1 ||
            !sc->sha1[0] || sc->size < 0)
            return error_set(err, -EINVAL, "file %lld: an invalid sidecar",
                             (long long)rec->file_id);
        if (strnlen(sc->remote, DB_KEY_MAX) >= DB_KEY_MAX)
            return error_set(err, -ENAMETOOLONG, "remote path '%.64s...' is longer than %d bytes",
                             sc->remote, DB_KEY_MAX - 1);
    }
    return 0;
}

/* Stores one sidecar of the copy of file_id at sc->dest (db_file_record). */
static int sidecar_set(struct db *db, int64_t file_id, const struct db_sidecar *sc,
                       struct error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_OK;
    int r = stmt_get(db, STMT_SIDECAR_SET, &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, file_id, rc);
    rc = bind_str(st, 2, sc->dest, rc);
    rc = bind_str(st, 3, sc->remote, rc);
    rc = bind_i64(st, 4, sc->size, rc);
    rc = bind_i64(st, 5, sc->mtime_ns, rc);
    rc = bind_str(st, 6, sc->md5, rc);
    rc = bind_str(st, 7, sc->sha1, rc);
    if (rc != SQLITE_OK)
        r = db_fail(db, rc, err, "cannot record the sidecar '%s'", sc->remote);
    else
        r = stmt_run(db, st, err, "cannot record a sidecar");
    stmt_done(st);
    return r;
}

struct record_args {
    int64_t session_id;
    const struct db_file_record *rec;
    struct error *err;
};

/* Counts the outcome in the session's row (before session_files changes: the old outcome is
 * read from there). */
static int session_count(struct db *db, int64_t session_id, int64_t file_id, enum db_outcome o,
                         struct error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_OK;
    int r = stmt_get(db, STMT_SESSION_COUNT, &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, session_id, rc);
    rc = bind_str(st, 2, outcome_names[o], rc);
    rc = bind_i64(st, 3, file_id, rc);
    return session_update_run(db, st, rc, session_id, err);
}

static int record_tx(struct db *db, void *userdata)
{
    struct record_args *a = userdata;
    const struct db_file_record *rec = a->rec;
    int r;

    if (rec->duplicate_of > 0)
        r = db_file_set_duplicate(db, rec->file_id, rec->duplicate_of, a->err);
    else
        r = db_file_set_state(db, rec->file_id, rec->state, rec->last_error, a->err);
    for (size_t i = 0; r == 0 && i < rec->n_copies; i++) {
        const struct db_record_copy *c = &rec->copies[i];
        r = db_copy_set(db, rec->file_id, c->dest, c->state, c->remote, c->error, a->err);
    }
    for (size_t k = 0; r == 0 && k < rec->n_sidecars; k++)
        r = sidecar_set(db, rec->file_id, &rec->sidecars[k], a->err);
    if (r == 0 && a->session_id > 0)
        r = session_count(db, a->session_id, rec->file_id, rec->outcome, a->err);
    if (r == 0 && a->session_id > 0)
        r = db_session_file_set(db, a->session_id, rec->file_id, rec->outcome, a->err);
    return r;
}

int db_file_record(struct db *db, int64_t session_id, const struct db_file_record *rec,
                   struct error *err)
{
    if (!db)
        return error_set(err, -EINVAL, "no database");
    int r = check_record(session_id, rec, err);
    if (r < 0)
        return r;
    struct record_args a = {.session_id = session_id, .rec = rec, .err = err};
    r = db_transaction(db, record_tx, &a, err);
    if (r < 0)
        error_prefix(err, "file %lld not recorded", (long long)rec->file_id);
    return r;
}

/* ---- statistics ---- */

int db_stats_get(struct db *db, struct db_stats *ret, struct error *err)
{
    sqlite3_stmt *st = NULL;
    int r, rc;

    if (!db || !ret)
        return error_set(err, -EINVAL, "invalid statistics query");
    r = stmt_get(db, STMT_STATS, &st, err);
    if (r < 0)
        return r;
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        r = db_fail(db, rc, err, "cannot read statistics");
        goto out;
    }
    memset(ret, 0, sizeof(*ret));
    ret->sessions = sqlite3_column_int64(st, 0);
    ret->cards = sqlite3_column_int64(st, 1);
    ret->files = sqlite3_column_int64(st, 2);
    ret->files_completed = sqlite3_column_int64(st, 3);
    ret->files_failed = sqlite3_column_int64(st, 4);
    ret->files_duplicate = sqlite3_column_int64(st, 5);
    ret->bytes_completed = sqlite3_column_int64(st, 6);
out:
    stmt_done(st);
    return r;
}

/* ---- the web dashboard's queries ----
 * The dashboard asks these a few times a second at most; each statement is prepared for the call
 * and finalized after it, so its SQL stays next to the function and the connection's cache of
 * hot statements keeps its size. */

#define DB_PAGE_MAX 1000 /* rows per db_session_files call */

static int adhoc_prepare(struct db *db, const char *sql, sqlite3_stmt **ret, struct error *err)
{
    int rc = sqlite3_prepare_v2(db->conn, sql, -1, ret, NULL);
    if (rc != SQLITE_OK) {
        *ret = NULL;
        return db_fail(db, rc, err, "cannot prepare a dashboard query");
    }
    return 0;
}

static void read_dest_stats_row(sqlite3_stmt *st, void *row)
{
    struct db_dest_stats *d = row;
    memset(d, 0, sizeof(*d));
    col_str(st, 0, d->dest, sizeof(d->dest));
    d->completed = sqlite3_column_int64(st, 1);
    d->failed = sqlite3_column_int64(st, 2);
    d->pending = sqlite3_column_int64(st, 3);
    d->bytes_completed = sqlite3_column_int64(st, 4);
    col_str(st, 5, d->last_error, sizeof(d->last_error));
}

/* scope: more conditions on c2, the copy whose error is the destination's last one */
#define DEST_STATS_COLUMNS(scope)                                                                  \
    "SELECT c.dest, "                                                                              \
    "sum(c.state = 'completed'), sum(c.state = 'failed'), "                                        \
    "sum(c.state IN ('pending', 'copying', 'verifying')), "                                        \
    "coalesce(sum(CASE WHEN c.state = 'completed' THEN f.size END), 0), "                          \
    "(SELECT c2.error FROM copies c2 WHERE c2.dest = c.dest AND c2.state = 'failed' " scope        \
    " ORDER BY c2.updated_at DESC LIMIT 1) "

int db_dest_stats(struct db *db, int64_t session_id, struct db_dest_stats **ret, size_t *ret_n,
                  struct error *err)
{
    static const char *const sql_all =
        DEST_STATS_COLUMNS("") "FROM copies c JOIN files f ON f.id = c.file_id "
                               "GROUP BY c.dest ORDER BY c.dest LIMIT ?1";
    static const char *const sql_session = DEST_STATS_COLUMNS(
        "AND c2.file_id IN (SELECT file_id FROM session_files "
        "WHERE session_id = ?2)") "FROM session_files sf JOIN copies c ON c.file_id = sf.file_id "
                                  "JOIN files f ON f.id = sf.file_id WHERE sf.session_id = ?2 "
                                  "GROUP BY c.dest ORDER BY c.dest LIMIT ?1";
    sqlite3_stmt *st = NULL;
    void *rows = NULL;
    size_t n = 0;
    int r, rc = SQLITE_OK;

    if (!db || !ret || !ret_n || session_id < 0)
        return error_set(err, -EINVAL, "invalid destination statistics query");
    r = adhoc_prepare(db, session_id ? sql_session : sql_all, &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, DB_DEST_STATS_MAX, rc);
    if (session_id)
        rc = bind_i64(st, 2, session_id, rc);
    if (rc != SQLITE_OK) {
        r = db_fail(db, rc, err, "cannot read destination statistics");
        goto out;
    }
    r = collect_rows(db, st, DB_DEST_STATS_MAX, sizeof(struct db_dest_stats), read_dest_stats_row,
                     &rows, &n, err, "cannot read destination statistics");
    if (r < 0)
        goto out;
    *ret = rows;
    *ret_n = n;
out:
    sqlite3_finalize(st);
    return r;
}

int db_session_done(struct db *db, int64_t session_id, int64_t *ret_files, int64_t *ret_bytes,
                    struct error *err)
{
    sqlite3_stmt *st = NULL;
    int r, rc;

    if (!db || !ret_files || !ret_bytes)
        return error_set(err, -EINVAL, "invalid session progress query");
    r = adhoc_prepare(db,
                      "SELECT count(*), coalesce(sum(f.size), 0) FROM session_files sf "
                      "JOIN files f ON f.id = sf.file_id WHERE sf.session_id = ?1",
                      &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, session_id, SQLITE_OK);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        r = db_fail(db, rc, err, "cannot read the progress of session %lld", (long long)session_id);
        goto out;
    }
    *ret_files = sqlite3_column_int64(st, 0);
    *ret_bytes = sqlite3_column_int64(st, 1);
out:
    sqlite3_finalize(st);
    return r;
}

/* Steps a one-row file query (bound already) into ret; -ENOENT with what when no row. */
static int file_query_one(struct db *db, sqlite3_stmt *st, int rc, struct db_file *ret,
                          struct error *err, const char *what)
{
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        read_file(st, ret);
        return 0;
    }
    if (rc == SQLITE_DONE)
        return error_set(err, -ENOENT, "%s", what);
    return db_fail(db, rc, err, "%s", what);
}

int db_file_find(struct db *db, const struct db_file_key *key, struct db_file *ret,
                 struct error *err)
{
    sqlite3_stmt *st = NULL;
    if (!db || !ret)
        return error_set(err, -EINVAL, "invalid file query");
    int r = check_key(key, err);
    if (r == 0)
        r = stmt_get(db, STMT_FILE_SELECT, &st, err);
    if (r < 0)
        return r;
    r = file_query_one(db, st, bind_key(st, key), ret, err, "no such file");
    stmt_done(st);
    return r;
}

int db_card_current_file(struct db *db, int64_t card_id, struct db_file *ret, struct error *err)
{
    sqlite3_stmt *st = NULL;
    int r;

    if (!db || !ret)
        return error_set(err, -EINVAL, "invalid current file query");
    /* files_state (state, updated_at) serves each of the three states */
    r = adhoc_prepare(db,
                      FILE_COLUMNS "WHERE state IN ('scanning', 'backing_up', 'verifying') "
                                   "AND card_id = ?1 ORDER BY updated_at DESC, id DESC LIMIT 1",
                      &st, err);
    if (r < 0)
        return r;
    r = file_query_one(db, st, bind_i64(st, 1, card_id, SQLITE_OK), ret, err,
                       "no file is being backed up");
    sqlite3_finalize(st);
    return r;
}

int db_file_get(struct db *db, int64_t id, struct db_file *ret, struct error *err)
{
    sqlite3_stmt *st = NULL;
    char what[64];
    int r;

    if (!db || !ret)
        return error_set(err, -EINVAL, "invalid file query");
    r = adhoc_prepare(db, FILE_COLUMNS "WHERE id = ?1", &st, err);
    if (r < 0)
        return r;
    snprintf(what, sizeof(what), "no file %lld", (long long)id);
    r = file_query_one(db, st, bind_i64(st, 1, id, SQLITE_OK), ret, err, what);
    sqlite3_finalize(st);
    return r;
}

static void read_session_file_row(sqlite3_stmt *st, void *row)
{
    struct db_session_file *sf = row;
    read_file(st, &sf->file);
    int o = index_of(outcome_names, ARRAY_SIZE(outcome_names),
                     (const char *)sqlite3_column_text(st, 14));
    sf->outcome = o < 0 ? DB_OUTCOME_FAILED : (enum db_outcome)o;
}

int db_session_files(struct db *db, int64_t session_id, int64_t offset, int limit,
                     struct db_session_file **ret, size_t *ret_n, int64_t *ret_total,
                     struct error *err)
{
    sqlite3_stmt *st = NULL;
    void *rows = NULL;
    size_t n = 0;
    int r, rc = SQLITE_OK;

    if (!db || !ret || !ret_n || offset < 0 || limit < 1 || limit > DB_PAGE_MAX)
        return error_set(err, -EINVAL, "file page: offset must be 0 or more, limit 1 to %d",
                         DB_PAGE_MAX);
    if (ret_total) {
        int64_t bytes;
        r = db_session_done(db, session_id, ret_total, &bytes, err);
        if (r < 0)
            return r;
    }
    r = adhoc_prepare(db,
                      "SELECT f.id, f.card_id, f.rel_path, f.size, f.mtime_ns, f.md5, f.sha1, "
                      "f.capture_time, f.kind, f.state, f.attempts, f.last_error, "
                      "f.duplicate_of, f.xxh128, sf.outcome FROM session_files sf "
                      "JOIN files f ON f.id = sf.file_id WHERE sf.session_id = ?1 "
                      "ORDER BY f.rel_path, f.id LIMIT ?2 OFFSET ?3",
                      &st, err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, session_id, rc);
    rc = bind_i64(st, 2, limit, rc);
    rc = bind_i64(st, 3, offset, rc);
    if (rc != SQLITE_OK) {
        r = db_fail(db, rc, err, "cannot list the files of session %lld", (long long)session_id);
        goto out;
    }
    r = collect_rows(db, st, limit, sizeof(struct db_session_file), read_session_file_row, &rows,
                     &n, err, "cannot list the files of a session");
    if (r < 0)
        goto out;
    *ret = rows;
    *ret_n = n;
out:
    sqlite3_finalize(st);
    return r;
}

static void read_copy_row(sqlite3_stmt *st, void *row)
{
    struct db_copy *c = row;
    memset(c, 0, sizeof(*c));
    c->file_id = sqlite3_column_int64(st, 0);
    col_str(st, 1, c->dest, sizeof(c->dest));
    c->state = copy_state_parse((const char *)sqlite3_column_text(st, 2));
    col_str(st, 3, c->remote, sizeof(c->remote));
    c->verified_at = sqlite3_column_int64(st, 4);
    col_str(st, 5, c->error, sizeof(c->error));
}

int db_file_copies(struct db *db, int64_t file_id, struct db_copy **ret, size_t *ret_n,
                   struct error *err)
{
    if (!db || !ret || !ret_n)
        return error_set(err, -EINVAL, "invalid copies query");
    void *rows = NULL;
    int r = list_by_id(db,
                       "SELECT file_id, dest, state, remote, verified_at, error FROM copies "
                       "WHERE file_id = ?1 ORDER BY dest LIMIT ?2",
                       file_id, DB_DEST_STATS_MAX, sizeof(struct db_copy), read_copy_row,
                       "the copies of file", &rows, ret_n, err);
    if (r == 0)
        *ret = rows;
    return r;
}

struct retry_args {
    bool session; /* id is a session id, else a file id */
    int64_t id;
    int64_t count; /* files marked */
    struct error *err;
};

static int retry_tx(struct db *db, void *userdata)
{
    /* The copies first: the files' failed state still tells which ones to take. */
    static const char *const file_sql[2] = {
        "UPDATE copies SET state = 'pending', error = NULL, verified_at = 0, updated_at = ?2 "
        "WHERE state = 'failed' AND file_id = ?1 "
        "AND (SELECT state FROM files WHERE id = ?1) = 'failed'",
        "UPDATE files SET state = 'new', last_error = NULL, updated_at = ?2 "
        "WHERE id = ?1 AND state = 'failed'",
    };
    static const char *const session_sql[2] = {
        "UPDATE copies SET state = 'pending', error = NULL, verified_at = 0, updated_at = ?2 "
        "WHERE state = 'failed' AND file_id IN (SELECT sf.file_id FROM session_files sf "
        "JOIN files f ON f.id = sf.file_id WHERE sf.session_id = ?1 AND sf.outcome = 'failed' "
        "AND f.state = 'failed')",
        "UPDATE files SET state = 'new', last_error = NULL, updated_at = ?2 "
        "WHERE state = 'failed' AND id IN (SELECT file_id FROM session_files "
        "WHERE session_id = ?1 AND outcome = 'failed')",
    };
    struct retry_args *a = userdata;
    const char *const *sql = a->session ? session_sql : file_sql;
    int r = adhoc_run(db, sql[0], a->id, now_s(), NULL, a->err, "cannot mark files for retry");
    if (r < 0)
        return r;
    return adhoc_run(db, sql[1], a->id, now_s(), &a->count, a->err, "cannot mark files for retry");
}

static int mark_retry(struct db *db, bool session, int64_t id, int64_t *ret_count,
                      struct error *err)
{
    struct retry_args a = {.session = session, .id = id, .err = err};
    int r;

    if (!db)
        return error_set(err, -EINVAL, "no database");
    if (session) {
        struct db_session s;
        r = db_session_get(db, id, &s, err);
    } else {
        struct db_file f;
        r = db_file_get(db, id, &f, err);
    }
    if (r < 0)
        return r;
    r = db_transaction(db, retry_tx, &a, err);
    if (r < 0)
        return r;
    if (ret_count)
        *ret_count = a.count;
    return 0;
}

int db_file_retry(struct db *db, int64_t file_id, int64_t *ret_count, struct error *err)
{
    return mark_retry(db, false, file_id, ret_count, err);
}

int db_session_retry(struct db *db, int64_t session_id, int64_t *ret_count, struct error *err)
{
    return mark_retry(db, true, session_id, ret_count, err);
}

/* ---- the ASC MHL history (history.h) ---- */

/* Walks the rows of sql (?1 = dest; the columns of struct db_unsealed in order) through fn. */
static int walk_unsealed(struct db *db, const char *sql, const char *dest,
                         int (*fn)(const struct db_unsealed *u, void *arg), void *arg,
                         const char *what, struct error *err)
{
    sqlite3_stmt *st = NULL;
    int r = adhoc_prepare(db, sql, &st, err);
    if (r < 0)
        return r;
    int rc = bind_str(st, 1, dest, SQLITE_OK);
    if (rc != SQLITE_OK) {
        r = db_fail(db, rc, err, "cannot list the %s of %s", what, dest);
        goto out;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct db_unsealed u;
        u.file_id = sqlite3_column_int64(st, 0);
        col_str(st, 1, u.remote, sizeof(u.remote));
        u.verified_at = sqlite3_column_int64(st, 2);
        u.size = sqlite3_column_int64(st, 3);
        u.mtime_ns = sqlite3_column_int64(st, 4);
        col_str(st, 5, u.md5, sizeof(u.md5));
        col_str(st, 6, u.sha1, sizeof(u.sha1));
        u.listed_before = sqlite3_column_int(st, 7) != 0;
        col_str(st, 8, u.xxh128, sizeof(u.xxh128));
        r = fn(&u, arg);
        if (r < 0)
            goto out;
    }
    if (rc != SQLITE_DONE)
        r = db_fail(db, rc, err, "cannot list the %s of %s", what, dest);
out:
    sqlite3_finalize(st);
    return r;
}

int db_copies_unsealed(struct db *db, const char *dest,
                       int (*fn)(const struct db_unsealed *u, void *arg), void *arg,
                       struct error *err)
{
    /* completed copies not yet listed; a copy whose remote an earlier copy already listed (the
     * same content found in place) is no new file of the history */
    static const char sql[] =
        "SELECT c.file_id, c.remote, c.verified_at, f.size, f.mtime_ns, f.md5, f.sha1, "
        "  EXISTS (SELECT 1 FROM copies o WHERE o.dest = c.dest AND o.remote = c.remote "
        "          AND o.mhl_generation > 0), f.xxh128 "
        "FROM copies c JOIN files f ON f.id = c.file_id "
        "WHERE c.dest = ?1 AND c.state = 'completed' AND c.mhl_generation = 0 "
        "  AND c.remote IS NOT NULL AND f.md5 IS NOT NULL "
        "ORDER BY c.remote";
    return walk_unsealed(db, sql, dest, fn, arg, "copies", err);
}

int db_sidecars_unsealed(struct db *db, const char *dest,
                         int (*fn)(const struct db_unsealed *u, void *arg), void *arg,
                         struct error *err)
{
    /* one row per remote (the bare columns are those of the group's min(file_id) row);
     * listed_before: a generation lists that remote already */
    static const char sql[] =
        "SELECT min(s.file_id), s.remote, c.verified_at, s.size, s.mtime_ns, s.md5, s.sha1, "
        "  EXISTS (SELECT 1 FROM sidecar_copies o WHERE o.dest = s.dest AND o.remote = s.remote "
        "          AND o.mhl_generation > 0), NULL "
        "FROM sidecar_copies s JOIN copies c ON c.file_id = s.file_id AND c.dest = s.dest "
        "WHERE s.dest = ?1 AND s.mhl_generation = 0 AND c.state = 'completed' "
        "GROUP BY s.remote ORDER BY s.remote";
    return walk_unsealed(db, sql, dest, fn, arg, "sidecars", err);
}

static int seal_one(struct db *db, sqlite3_stmt *st, const char *dest, int64_t file_id,
                    int64_t generation, struct error *err)
{
    int rc = bind_i64(st, 1, generation, SQLITE_OK);
    rc = bind_str(st, 2, dest, rc);
    rc = bind_i64(st, 3, file_id, rc);
    if (rc != SQLITE_OK)
        return db_fail(db, rc, err, "cannot record the ASC MHL generation");
    int r = stmt_run(db, st, err, "cannot record the ASC MHL generation");
    sqlite3_reset(st);
    return r;
}

struct seal_args {
    const char *dest;
    const int64_t *file_ids;
    size_t n;
    int64_t generation;
    struct error *err;
};

static int seal_all(struct db *db, void *userdata)
{
    struct seal_args *a = userdata;
    sqlite3_stmt *st = NULL;
    int r = adhoc_prepare(
        db, "UPDATE copies SET mhl_generation = ?1 WHERE dest = ?2 AND file_id = ?3", &st, a->err);
    for (size_t i = 0; r == 0 && i < a->n; i++)
        r = seal_one(db, st, a->dest, a->file_ids[i], a->generation, a->err);
    sqlite3_finalize(st);
    return r;
}

int db_copies_seal(struct db *db, const char *dest, const int64_t *file_ids, size_t n,
                   int64_t generation, struct error *err)
{
    return db_history_seal(db, dest, file_ids, n, NULL, 0, generation, err);
}

struct history_seal_args {
    struct seal_args copies;
    const char *const *remotes;
    size_t n_remotes;
};

static int history_seal_tx(struct db *db, void *userdata)
{
    struct history_seal_args *a = userdata;
    struct error *err = a->copies.err;
    int r = seal_all(db, &a->copies);
    if (r < 0 || a->n_remotes == 0)
        return r;
    sqlite3_stmt *st = NULL;
    r = adhoc_prepare(db,
                      "UPDATE sidecar_copies SET mhl_generation = ?1 "
                      "WHERE dest = ?2 AND remote = ?3 AND mhl_generation = 0",
                      &st, err);
    for (size_t i = 0; r == 0 && i < a->n_remotes; i++) {
        int rc = bind_i64(st, 1, a->copies.generation, SQLITE_OK);
        rc = bind_str(st, 2, a->copies.dest, rc);
        rc = bind_str(st, 3, a->remotes[i], rc);
        r = rc != SQLITE_OK ? db_fail(db, rc, err, "cannot record the ASC MHL generation")
                            : stmt_run(db, st, err, "cannot record the ASC MHL generation");
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return r;
}

int db_history_seal(struct db *db, const char *dest, const int64_t *file_ids, size_t n,
                    const char *const *sidecar_remotes, size_t n_sidecars, int64_t generation,
                    struct error *err)
{
    if (generation <= 0)
        return error_set(err, -EINVAL, "an ASC MHL generation is numbered from 1");
    struct history_seal_args a = {
        .copies = {dest, file_ids, n, generation, err},
        .remotes = sidecar_remotes,
        .n_remotes = n_sidecars,
    };
    return db_transaction(db, history_seal_tx, &a, err);
}

/* ---- the per-session report (report.h) ---- */

int db_session_report_rows(struct db *db, int64_t session_id,
                           int (*fn)(const struct db_report_row *row, void *arg), void *arg,
                           struct error *err)
{
    /* the columns of read_file (FILE_COLUMNS'), the outcome, then the copy (NULL columns without
     * one) */
    static const char sql[] =
        "SELECT f.id, f.card_id, f.rel_path, f.size, f.mtime_ns, f.md5, f.sha1, "
        "f.capture_time, f.kind, f.state, f.attempts, f.last_error, f.duplicate_of, f.xxh128, "
        "sf.outcome, c.dest, c.state, c.remote, c.verified_at, c.error, c.mhl_generation "
        "FROM session_files sf JOIN files f ON f.id = sf.file_id "
        "LEFT JOIN copies c ON c.file_id = f.id "
        "WHERE sf.session_id = ?1 ORDER BY f.rel_path, f.id, c.dest";
    sqlite3_stmt *st = NULL;
    struct db_report_row *row = NULL;
    int r, rc;

    if (!db || !fn)
        return error_set(err, -EINVAL, "invalid report query");
    row = malloc(sizeof(*row)); /* ~7 KB: not on the caller's stack */
    if (!row)
        return error_set(err, -ENOMEM, "out of memory");
    r = adhoc_prepare(db, sql, &st, err);
    if (r < 0)
        goto out;
    rc = bind_i64(st, 1, session_id, SQLITE_OK);
    if (rc != SQLITE_OK) {
        r = db_fail(db, rc, err, "cannot list the files of session %lld", (long long)session_id);
        goto out;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        read_session_file_row(st, &row->sf);
        memset(&row->copy, 0, sizeof(row->copy));
        row->has_copy = sqlite3_column_type(st, 15) != SQLITE_NULL;
        row->mhl_generation = 0;
        if (row->has_copy) {
            row->copy.file_id = row->sf.file.id;
            col_str(st, 15, row->copy.dest, sizeof(row->copy.dest));
            row->copy.state = copy_state_parse((const char *)sqlite3_column_text(st, 16));
            col_str(st, 17, row->copy.remote, sizeof(row->copy.remote));
            row->copy.verified_at = sqlite3_column_int64(st, 18);
            col_str(st, 19, row->copy.error, sizeof(row->copy.error));
            row->mhl_generation = sqlite3_column_int64(st, 20);
        }
        r = fn(row, arg);
        if (r < 0)
            goto out;
    }
    if (rc != SQLITE_DONE)
        r = db_fail(db, rc, err, "cannot list the files of session %lld", (long long)session_id);
out:
    sqlite3_finalize(st);
    free(row);
    return r;
}

/* ---- verification runs ---- */

const char *db_verify_result_to_string(enum db_verify_result r)
{
    return name_of(verify_result_names, ARRAY_SIZE(verify_result_names), (int)r);
}

const char *db_verify_status_to_string(enum db_verify_status s)
{
    return name_of(verify_status_names, ARRAY_SIZE(verify_status_names), (int)s);
}

int db_verify_run_begin(struct db *db, const char *scope, const char *dest_filter, int64_t *ret_id,
                        struct error *err)
{
    if (!db || !scope)
        return error_set(err, -EINVAL, "invalid verification run");
    /* runs whose process is gone (killed, a power cut) stop being shown running */
    int r = exec_sql(db,
                     "UPDATE verify_runs SET status = 'interrupted', ended_at = started_at "
                     "WHERE status = 'running' AND NOT snapsync_verify_run_alive(pid, started_at)",
                     err, "cannot mark stale verification runs");
    if (r < 0)
        return r;
    sqlite3_stmt *st = NULL;
    r = adhoc_prepare(db,
                      "INSERT INTO verify_runs (started_at, scope, dest_filter, status, pid) "
                      "VALUES (?1, ?2, ?3, 'running', ?4)",
                      &st, err);
    if (r < 0)
        return r;
    int rc = bind_i64(st, 1, now_s(), SQLITE_OK);
    rc = bind_str(st, 2, scope, rc);
    rc = bind_str(st, 3, dest_filter ? dest_filter : "", rc);
    rc = bind_i64(st, 4, (int64_t)getpid(), rc);
    if (rc != SQLITE_OK)
        r = db_fail(db, rc, err, "cannot start a verification run");
    else
        r = stmt_run(db, st, err, "cannot start a verification run");
    if (r == 0)
        *ret_id = sqlite3_last_insert_rowid(db->conn);
    sqlite3_finalize(st);
    return r;
}

int db_verify_run_end(struct db *db, int64_t id, const struct db_verify_counts *c,
                      enum db_verify_status status, struct error *err)
{
    if (!db || !c || (unsigned)status >= ARRAY_SIZE(verify_status_names) || c->checked < 0 ||
        c->ok < 0 || c->missing < 0 || c->changed < 0 || c->errors < 0 || c->extra < 0)
        return error_set(err, -EINVAL, "invalid verification run end");
    sqlite3_stmt *st = NULL;
    int r = adhoc_prepare(db,
                          "UPDATE verify_runs SET ended_at = ?2, checked = ?3, ok = ?4, "
                          "missing = ?5, changed = ?6, errors = ?7, status = ?8, extra = ?9 "
                          "WHERE id = ?1",
                          &st, err);
    if (r < 0)
        return r;
    int rc = bind_i64(st, 1, id, SQLITE_OK);
    rc = bind_i64(st, 2, now_s(), rc);
    rc = bind_i64(st, 3, c->checked, rc);
    rc = bind_i64(st, 4, c->ok, rc);
    rc = bind_i64(st, 5, c->missing, rc);
    rc = bind_i64(st, 6, c->changed, rc);
    rc = bind_i64(st, 7, c->errors, rc);
    rc = bind_str(st, 8, verify_status_names[status], rc);
    rc = bind_i64(st, 9, c->extra, rc);
    if (rc != SQLITE_OK)
        r = db_fail(db, rc, err, "cannot end verification run %lld", (long long)id);
    else
        r = stmt_run(db, st, err, "cannot end a verification run");
    if (r == 0 && sqlite3_changes(db->conn) == 0)
        r = error_set(err, -ENOENT, "no verification run %lld", (long long)id);
    sqlite3_finalize(st);
    return r;
}

int db_verify_copies_page(struct db *db, const struct db_verify_filter *f,
                          struct db_verify_cursor *cursor, struct db_verify_copy *ret, size_t max,
                          size_t *ret_n, struct error *err)
{
    static const char sql[] =
        "SELECT c.file_id, c.dest, c.remote, f.rel_path, f.size, f.mtime_ns, f.md5, f.sha1, "
        "  c.checked_at, c.mhl_generation, f.xxh128 "
        "FROM copies c JOIN files f ON f.id = c.file_id "
        "WHERE (c.state = 'completed' OR (c.state = 'failed' AND c.check_result IN "
        "  ('missing', 'changed'))) AND c.remote IS NOT NULL AND f.md5 IS NOT NULL "
        "  AND c.checked_at < ?1 "
        "  AND (?2 = 0 OR (c.checked_at, c.file_id, c.dest) > (?3, ?4, ?5)) "
        "  AND (?6 IS NULL OR c.dest = ?6) "
        "  AND (?7 = 0 OR c.verified_at >= ?7) "
        "  AND (?8 = 0 OR EXISTS (SELECT 1 FROM session_files sf "
        "                         WHERE sf.session_id = ?8 AND sf.file_id = c.file_id)) "
        "  AND NOT EXISTS (SELECT 1 FROM verify_results r "
        "                  WHERE r.run_id = ?10 AND r.file_id = c.file_id AND r.dest = c.dest) "
        "  AND (?11 = 0 OR c.verified_at < ?11) "
        "ORDER BY c.checked_at, c.file_id, c.dest LIMIT ?9";
    if (!db || !f || !cursor || !ret || !ret_n || max < 1 || max > DB_VERIFY_PAGE_MAX)
        return error_set(err, -EINVAL, "invalid verification page");
    sqlite3_stmt *st = NULL;
    int r = adhoc_prepare(db, sql, &st, err);
    if (r < 0)
        return r;
    int rc = bind_i64(st, 1, f->checked_before, SQLITE_OK);
    rc = bind_i64(st, 2, cursor->started, rc);
    rc = bind_i64(st, 3, cursor->checked_at, rc);
    rc = bind_i64(st, 4, cursor->file_id, rc);
    rc = bind_str(st, 5, cursor->dest, rc);
    rc = bind_str(st, 6, f->dest, rc);
    rc = bind_i64(st, 7, f->since, rc);
    rc = bind_i64(st, 8, f->session_id, rc);
    rc = bind_i64(st, 9, (int64_t)max, rc);
    rc = bind_i64(st, 10, f->run_id, rc);
    rc = bind_i64(st, 11, f->made_before, rc);
    if (rc != SQLITE_OK) {
        r = db_fail(db, rc, err, "cannot list the copies to verify");
        goto out;
    }
    size_t n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < max) {
        struct db_verify_copy *v = &ret[n++];
        v->file_id = sqlite3_column_int64(st, 0);
        col_str(st, 1, v->dest, sizeof(v->dest));
        col_str(st, 2, v->remote, sizeof(v->remote));
        col_str(st, 3, v->rel_path, sizeof(v->rel_path));
        v->size = sqlite3_column_int64(st, 4);
        v->mtime_ns = sqlite3_column_int64(st, 5);
        col_str(st, 6, v->md5, sizeof(v->md5));
        col_str(st, 7, v->sha1, sizeof(v->sha1));
        col_str(st, 10, v->xxh128, sizeof(v->xxh128));
        v->checked_at = sqlite3_column_int64(st, 8);
        v->mhl_generation = sqlite3_column_int64(st, 9);
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        r = db_fail(db, rc, err, "cannot list the copies to verify");
        goto out;
    }
    if (n > 0) {
        const struct db_verify_copy *last = &ret[n - 1];
        cursor->started = true;
        cursor->checked_at = last->checked_at;
        cursor->file_id = last->file_id;
        snprintf(cursor->dest, sizeof(cursor->dest), "%s", last->dest);
    }
    *ret_n = n;
out:
    sqlite3_finalize(st);
    return r;
}

struct verify_result_args {
    int64_t run_id, file_id, at;
    const char *dest, *detail;
    enum db_verify_result result;
    bool fail_lost;
    struct error *err;
};

static int verify_result_tx(struct db *db, void *userdata)
{
    struct verify_result_args *a = userdata;
    sqlite3_stmt *st = NULL;
    const char *name = verify_result_names[a->result];
    int r = adhoc_prepare(db,
                          "INSERT OR REPLACE INTO verify_results "
                          "(run_id, file_id, dest, result, detail, checked_at) "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                          &st, a->err);
    if (r < 0)
        return r;
    int rc = bind_i64(st, 1, a->run_id, SQLITE_OK);
    rc = bind_i64(st, 2, a->file_id, rc);
    rc = bind_str(st, 3, a->dest, rc);
    rc = bind_str(st, 4, name, rc);
    rc = bind_str(st, 5, a->detail, rc);
    rc = bind_i64(st, 6, a->at, rc);
    if (rc != SQLITE_OK)
        r = db_fail(db, rc, a->err, "cannot record a verification result");
    else
        r = stmt_run(db, st, a->err, "cannot record a verification result");
    sqlite3_finalize(st);
    st = NULL;
    if (r == -EINVAL) /* a foreign key: no such run or copy */
        return error_set(a->err, -ENOENT, "no verification run %lld or copy of file %lld at %s",
                         (long long)a->run_id, (long long)a->file_id, a->dest);
    if (r < 0 || a->result == DB_VERIFY_ERROR)
        return r;
    /* a copy found missing or changed is no copy any more: failed, so that the next backup
     * of a card that still has the file (or of any file with that content) makes it again */
    r = adhoc_prepare(db,
                      "UPDATE copies SET checked_at = ?3, check_result = ?4, "
                      "  state = CASE WHEN ?7 AND ?4 IN ('missing', 'changed') THEN 'failed' "
                      "    WHEN state = 'failed' AND check_result IN ('missing', 'changed') "
                      "    THEN 'completed' ELSE state END, "
                      "  error = CASE WHEN ?7 AND ?4 IN ('missing', 'changed') "
                      "    THEN 'verification run ' || ?5 || ' found it ' || ?4 || "
                      "      coalesce(': ' || ?6, '') "
                      "    WHEN state = 'failed' AND check_result IN ('missing', 'changed') "
                      "    THEN NULL ELSE error END "
                      "WHERE file_id = ?1 AND dest = ?2",
                      &st, a->err);
    if (r < 0)
        return r;
    rc = bind_i64(st, 1, a->file_id, SQLITE_OK);
    rc = bind_str(st, 2, a->dest, rc);
    rc = bind_i64(st, 3, a->at, rc);
    rc = bind_str(st, 4, name, rc);
    rc = bind_i64(st, 5, a->run_id, rc);
    rc = bind_str(st, 6, a->detail, rc);
    rc = bind_i64(st, 7, a->fail_lost, rc);
    if (rc != SQLITE_OK)
        r = db_fail(db, rc, a->err, "cannot record a verification result");
    else
        r = stmt_run(db, st, a->err, "cannot record a verification result");
    sqlite3_finalize(st);
    return r;
}

int db_verify_result_add(struct db *db, int64_t run_id, int64_t file_id, const char *dest,
                         enum db_verify_result result, const char *detail, int64_t at,
                         bool fail_lost, struct error *err)
{
    if (!db || !dest || !*dest || strlen(dest) >= 256 ||
        (unsigned)result >= ARRAY_SIZE(verify_result_names) || result == DB_VERIFY_EXTRA)
        return error_set(err, -EINVAL, "invalid verification result");
    struct verify_result_args a = {run_id, file_id, at, dest, detail, result, fail_lost, err};
    return db_transaction(db, verify_result_tx, &a, err);
}

int db_verify_run_last(struct db *db, struct db_verify_run *ret, struct error *err)
{
    if (!db || !ret)
        return error_set(err, -EINVAL, "invalid verification run query");
    sqlite3_stmt *st = NULL;
    int r = adhoc_prepare(db,
                          "SELECT id, started_at, ended_at, scope, dest_filter, checked, ok, "
                          "  missing, changed, errors, status, extra, "
                          "  status = 'running' AND NOT snapsync_verify_run_alive(pid, started_at) "
                          "FROM verify_runs ORDER BY id DESC LIMIT 1",
                          &st, err);
    if (r < 0)
        return r;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        memset(ret, 0, sizeof(*ret));
        ret->id = sqlite3_column_int64(st, 0);
        ret->started_at = sqlite3_column_int64(st, 1);
        ret->ended_at = sqlite3_column_int64(st, 2);
        col_str(st, 3, ret->scope, sizeof(ret->scope));
        col_str(st, 4, ret->dest_filter, sizeof(ret->dest_filter));
        ret->counts.checked = sqlite3_column_int64(st, 5);
        ret->counts.ok = sqlite3_column_int64(st, 6);
        ret->counts.missing = sqlite3_column_int64(st, 7);
        ret->counts.changed = sqlite3_column_int64(st, 8);
        ret->counts.errors = sqlite3_column_int64(st, 9);
        int s = index_of(verify_status_names, ARRAY_SIZE(verify_status_names),
                         (const char *)sqlite3_column_text(st, 10));
        /* a status this build does not know: the run did not end as one it knows */
        ret->status = s < 0 ? DB_VERIFY_FAILED : (enum db_verify_status)s;
        ret->counts.extra = sqlite3_column_int64(st, 11);
        if (sqlite3_column_int(st, 12))
            ret->status = DB_VERIFY_INTERRUPTED; /* its process is gone */
    } else if (rc == SQLITE_DONE) {
        r = error_set(err, -ENOENT, "no verification has run yet");
    } else {
        r = db_fail(db, rc, err, "cannot read the last verification run");
    }
    sqlite3_finalize(st);
    return r;
}

int db_remote_known(struct db *db, const char *dest, const char *remote, bool *ret,
                    struct error *err)
{
    if (!db || !dest || !remote || !ret)
        return error_set(err, -EINVAL, "invalid destination file query");
    sqlite3_stmt *st = NULL;
    int r = adhoc_prepare(db,
                          "SELECT EXISTS (SELECT 1 FROM copies WHERE dest = ?1 AND remote = ?2) "
                          "  OR EXISTS (SELECT 1 FROM sidecar_copies WHERE dest = ?1 "
                          "    AND remote = ?2)",
                          &st, err);
    if (r < 0)
        return r;
    int rc = bind_str(st, 1, dest, SQLITE_OK);
    rc = bind_str(st, 2, remote, rc);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *ret = sqlite3_column_int(st, 0) != 0;
    else
        r = db_fail(db, rc, err, "cannot look up a file of %s", dest);
    sqlite3_finalize(st);
    return r;
}

int db_verify_extra_add(struct db *db, int64_t run_id, const char *dest, const char *remote,
                        struct error *err)
{
    if (!db || !dest || !remote)
        return error_set(err, -EINVAL, "invalid extra file");
    sqlite3_stmt *st = NULL;
    int r = adhoc_prepare(db,
                          "INSERT OR IGNORE INTO verify_extras (run_id, dest, remote) "
                          "SELECT ?1, ?2, ?3 WHERE (SELECT count(*) FROM verify_extras "
                          "  WHERE run_id = ?1) < ?4",
                          &st, err);
    if (r < 0)
        return r;
    int rc = bind_i64(st, 1, run_id, SQLITE_OK);
    rc = bind_str(st, 2, dest, rc);
    rc = bind_str(st, 3, remote, rc);
    rc = bind_i64(st, 4, DB_VERIFY_EXTRAS_MAX, rc);
    if (rc != SQLITE_OK)
        r = db_fail(db, rc, err, "cannot record an extra file");
    else
        r = stmt_run(db, st, err, "cannot record an extra file");
    sqlite3_finalize(st);
    return r;
}

/* The open problems (db.h): a copy whose last verdict is missing or changed (completed, or
 * failed by that verdict), not made again since; its detail is that of the run's result that
 * set the verdict. */
#define VERIFY_OPEN_WHERE                                                                          \
    "WHERE c.check_result IN ('missing', 'changed') AND c.state IN ('completed', 'failed') "       \
    "  AND c.checked_at >= c.verified_at "

static void read_verify_open_row(sqlite3_stmt *st, void *row)
{
    struct db_verify_open *o = row;
    o->file_id = sqlite3_column_int64(st, 0);
    col_str(st, 1, o->dest, sizeof(o->dest));
    col_str(st, 2, o->remote, sizeof(o->remote));
    col_str(st, 3, o->rel_path, sizeof(o->rel_path));
    int res = index_of(verify_result_names, ARRAY_SIZE(verify_result_names),
                       (const char *)sqlite3_column_text(st, 4));
    o->result = res < 0 ? DB_VERIFY_CHANGED : (enum db_verify_result)res;
    col_str(st, 5, o->detail, sizeof(o->detail));
    o->checked_at = sqlite3_column_int64(st, 6);
}

static int verify_open_read(struct db *db, int64_t offset, int limit, struct db_verify_open **ret,
                            size_t *ret_n, int64_t *ret_total, struct error *err)
{
    static const char count_sql[] = "SELECT count(*) FROM copies c " VERIFY_OPEN_WHERE;
    static const char list_sql[] =
        "SELECT c.file_id, c.dest, c.remote, f.rel_path, c.check_result, "
        "  (SELECT r.detail FROM verify_results r WHERE r.file_id = c.file_id "
        "     AND r.dest = c.dest AND r.checked_at = c.checked_at AND r.result = c.check_result "
        "   ORDER BY r.run_id DESC LIMIT 1), c.checked_at "
        "FROM copies c JOIN files f ON f.id = c.file_id " VERIFY_OPEN_WHERE
        "ORDER BY c.checked_at DESC, c.file_id, c.dest LIMIT ?1 OFFSET ?2";
    sqlite3_stmt *st = NULL;
    void *rows = NULL;
    size_t n = 0;
    int r = adhoc_prepare(db, count_sql, &st, err);
    if (r < 0)
        return r;
    int rc = sqlite3_step(st);
    int64_t total = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    st = NULL;
    if (rc != SQLITE_ROW)
        return db_fail(db, rc, err, "cannot count the copies with problems");
    if (limit > 0) {
        r = adhoc_prepare(db, list_sql, &st, err);
        if (r < 0)
            return r;
        rc = bind_i64(st, 1, limit, SQLITE_OK);
        rc = bind_i64(st, 2, offset, rc);
        if (rc != SQLITE_OK)
            r = db_fail(db, rc, err, "cannot list the copies with problems");
        else
            r = collect_rows(db, st, limit, sizeof(struct db_verify_open), read_verify_open_row,
                             &rows, &n, err, "cannot list the copies with problems");
        sqlite3_finalize(st);
        if (r < 0)
            return r;
    }
    *ret = rows;
    *ret_n = n;
    *ret_total = total;
    return 0;
}

int db_verify_open_list(struct db *db, int64_t offset, int limit, struct db_verify_open **ret,
                        size_t *ret_n, int64_t *ret_total, struct error *err)
{
    if (!db || !ret_n || !ret_total || offset < 0 || limit < 0 || limit > DB_VERIFY_OPEN_MAX ||
        (limit > 0 && !ret))
        return error_set(err, -EINVAL, "invalid list of copies with problems");
    /* the count and the page from one snapshot, so the total matches the page */
    bool own_tx = sqlite3_get_autocommit(db->conn) != 0;
    int r =
        own_tx ? exec_sql(db, "BEGIN DEFERRED", err, "cannot list the copies with problems") : 0;
    if (r < 0)
        return r;
    struct db_verify_open *rows = NULL;
    size_t n = 0;
    int64_t total = 0;
    r = verify_open_read(db, offset, limit, &rows, &n, &total, err);
    if (own_tx)
        r = tx_end(db, r, err, "cannot list the copies with problems");
    if (r < 0) {
        free(rows);
        return r;
    }
    if (ret)
        *ret = rows;
    *ret_n = n;
    *ret_total = total;
    return r;
}

/* ---- the notification outbox ---- */

#define DB_DELIVERIES_MAX 1000 /* rows per deliveries call */

static const char *const delivery_state_names[] = {
    [DB_DELIVERY_PENDING] = "pending",
    [DB_DELIVERY_SENT] = "sent",
    [DB_DELIVERY_FAILED] = "failed",
};

const char *db_delivery_state_to_string(enum db_delivery_state s)
{
    return name_of(delivery_state_names, ARRAY_SIZE(delivery_state_names), (int)s);
}

static bool channel_ok(const char *c)
{
    return c && *c && strlen(c) < DB_CHANNEL_MAX;
}

struct notification_args {
    int64_t created_at, session_id;
    const char *event, *data;
    const char *const *channels;
    size_t n;
    int64_t id;
    struct error *err;
};

static int notification_tx(struct db *db, void *userdata)
{
    struct notification_args *a = userdata;
    sqlite3_stmt *st = NULL;
    int r = adhoc_prepare(db,
                          "INSERT INTO notifications (created_at, event, session_id, data) "
                          "VALUES (?1, ?2, nullif(?3, 0), ?4) RETURNING id",
                          &st, a->err);
    if (r < 0)
        return r;
    int rc = bind_i64(st, 1, a->created_at, SQLITE_OK);
    rc = bind_str(st, 2, a->event, rc);
    rc = bind_i64(st, 3, a->session_id, rc);
    /* not bind_str: the data is not free text cut to DB_TEXT_MAX */
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 4, a->data, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        a->id = sqlite3_column_int64(st, 0);
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE)
        r = db_fail(db, rc, a->err, "cannot queue a notification");
    sqlite3_finalize(st);
    st = NULL;
    if (r < 0)
        return r;
    r = adhoc_prepare(db,
                      "INSERT INTO deliveries (notification_id, channel, state, next_at) "
                      "VALUES (?1, ?2, 'pending', ?3)",
                      &st, a->err);
    if (r < 0)
        return r;
    for (size_t i = 0; i < a->n && r == 0; i++) {
        rc = bind_i64(st, 1, a->id, SQLITE_OK);
        rc = bind_str(st, 2, a->channels[i], rc);
        rc = bind_i64(st, 3, a->created_at, rc);
        if (rc != SQLITE_OK)
            r = db_fail(db, rc, a->err, "cannot queue a notification");
        else
            r = stmt_run(db, st, a->err, "cannot queue a notification's delivery");
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return r;
}

int db_notification_add(struct db *db, int64_t created_at, const char *event, int64_t session_id,
                        const char *data, const char *const *channels, size_t n, int64_t *ret_id,
                        struct error *err)
{
    if (!db || !event || !*event || strlen(event) >= 32 || !data || !channels || n < 1 ||
        n > DB_CHANNELS_MAX || session_id < 0)
        return error_set(err, -EINVAL, "invalid notification");
    if (strnlen(data, DB_NOTIFY_DATA_MAX + 1) > DB_NOTIFY_DATA_MAX)
        return error_set(err, -EMSGSIZE, "a notification's data is larger than %d bytes",
                         DB_NOTIFY_DATA_MAX);
    for (size_t i = 0; i < n; i++)
        if (!channel_ok(channels[i]))
            return error_set(err, -EINVAL, "invalid notification channel");
    struct notification_args a = {created_at, session_id, event, data, channels, n, 0, err};
    int r = db_transaction(db, notification_tx, &a, err);
    if (r == 0 && ret_id)
        *ret_id = a.id;
    return r;
}

void db_deliveries_free(struct db_delivery *rows, size_t n)
{
    for (size_t i = 0; rows && i < n; i++)
        free(rows[i].data);
    free(rows);
}

#define DELIVERY_COLUMNS                                                                           \
    "SELECT d.notification_id, d.channel, n.event, coalesce(n.session_id, 0), n.created_at, "      \
    "d.state, d.attempts, d.next_at, d.sent_at, d.last_error "

static void read_delivery(sqlite3_stmt *st, struct db_delivery *d)
{
    memset(d, 0, sizeof(*d));
    d->notification_id = sqlite3_column_int64(st, 0);
    col_str(st, 1, d->channel, sizeof(d->channel));
    col_str(st, 2, d->event, sizeof(d->event));
    d->session_id = sqlite3_column_int64(st, 3);
    d->created_at = sqlite3_column_int64(st, 4);
    const char *state = (const char *)sqlite3_column_text(st, 5);
    int i = state ? index_of(delivery_state_names, ARRAY_SIZE(delivery_state_names), state) : -1;
    d->state = i < 0 ? DB_DELIVERY_FAILED : (enum db_delivery_state)i;
    d->attempts = sqlite3_column_int64(st, 6);
    d->next_at = sqlite3_column_int64(st, 7);
    d->sent_at = sqlite3_column_int64(st, 8);
    col_str(st, 9, d->last_error, sizeof(d->last_error));
}

/* Reads up to limit delivery rows of st (bound already); with_data: column 10 is the data. */
static int deliveries_collect(struct db *db, sqlite3_stmt *st, int limit, bool with_data,
                              struct db_delivery **ret, size_t *ret_n, struct error *err)
{
    struct db_delivery *rows = calloc((size_t)limit, sizeof(*rows));
    size_t n = 0;
    int r = 0, rc;
    if (!rows)
        return error_set(err, -ENOMEM, "cannot list notifications: out of memory");
    while (n < (size_t)limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        read_delivery(st, &rows[n]);
        n++;
        if (with_data) {
            const char *t = (const char *)sqlite3_column_text(st, 10);
            if (!(rows[n - 1].data = strdup(t ? t : "{}"))) {
                r = error_set(err, -ENOMEM, "cannot list notifications: out of memory");
                goto out;
            }
        }
    }
    if (n < (size_t)limit && rc != SQLITE_DONE) {
        r = db_fail(db, rc, err, "cannot list notifications");
        goto out;
    }
    if (n == 0) {
        free(rows);
        rows = NULL;
    }
    *ret = rows;
    *ret_n = n;
    rows = NULL;
out:
    db_deliveries_free(rows, n);
    return r;
}

static int deliveries_list(struct db *db, const char *sql, const char *channel, int limit,
                           bool with_data, struct db_delivery **ret, size_t *ret_n,
                           struct error *err)
{
    if (!db || !ret || !ret_n || limit < 1 || limit > DB_DELIVERIES_MAX)
        return error_set(err, -EINVAL, "notifications: the limit must be 1 to %d",
                         DB_DELIVERIES_MAX);
    sqlite3_stmt *st = NULL;
    int r = adhoc_prepare(db, sql, &st, err);
    if (r < 0)
        return r;
    int rc = bind_i64(st, 1, limit, SQLITE_OK);
    if (channel)
        rc = bind_str(st, 2, channel, rc);
    if (rc != SQLITE_OK)
        r = db_fail(db, rc, err, "cannot list notifications");
    else
        r = deliveries_collect(db, st, limit, with_data, ret, ret_n, err);
    sqlite3_finalize(st);
    return r;
}

int db_deliveries_pending(struct db *db, const char *channel, int limit, struct db_delivery **ret,
                          size_t *ret_n, struct error *err)
{
    if (!channel_ok(channel))
        return error_set(err, -EINVAL, "invalid notification channel");
    return deliveries_list(db,
                           DELIVERY_COLUMNS ", n.data FROM deliveries d "
                                            "JOIN notifications n ON n.id = d.notification_id "
                                            "WHERE d.channel = ?2 AND d.state = 'pending' "
                                            "ORDER BY d.notification_id LIMIT ?1",
                           channel, limit, true, ret, ret_n, err);
}

int db_deliveries_failed(struct db *db, int limit, struct db_delivery **ret, size_t *ret_n,
                         struct error *err)
{
    return deliveries_list(db,
                           DELIVERY_COLUMNS "FROM deliveries d "
                                            "JOIN notifications n ON n.id = d.notification_id "
                                            "WHERE d.state = 'failed' "
                                            "ORDER BY d.notification_id DESC, d.channel LIMIT ?1",
                           NULL, limit, false, ret, ret_n, err);
}

int db_delivery_channel(struct db *db, const char *channel, int64_t *ret_pending,
                        int64_t *ret_next_at, int64_t *ret_last_sent, struct error *err)
{
    if (!db || !channel_ok(channel))
        return error_set(err, -EINVAL, "invalid notification channel");
    sqlite3_stmt *st = NULL;
    int r = adhoc_prepare(db,
                          "SELECT (SELECT count(*) FROM deliveries "
                          "        WHERE channel = ?1 AND state = 'pending'), "
                          "  (SELECT coalesce(min(next_at), 0) FROM deliveries "
                          "   WHERE channel = ?1 AND state = 'pending'), "
                          "  (SELECT coalesce(max(sent_at), 0) FROM deliveries "
                          "   WHERE channel = ?1 AND state = 'sent')",
                          &st, err);
    if (r < 0)
        return r;
    int rc = bind_str(st, 1, channel, SQLITE_OK);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        r = db_fail(db, rc, err, "cannot read the notifications of '%s'", channel);
        goto out;
    }
    if (ret_pending)
        *ret_pending = sqlite3_column_int64(st, 0);
    if (ret_next_at)
        *ret_next_at = sqlite3_column_int64(st, 1);
    if (ret_last_sent)
        *ret_last_sent = sqlite3_column_int64(st, 2);
out:
    sqlite3_finalize(st);
    return r;
}

struct mark_args {
    const char *channel;
    const struct db_delivery_mark *marks;
    size_t n;
    int64_t at;
    struct error *err;
};

static int mark_tx(struct db *db, void *userdata)
{
    struct mark_args *a = userdata;
    sqlite3_stmt *st = NULL;
    int r = adhoc_prepare(db,
                          "UPDATE deliveries SET attempts = attempts + 1, state = ?3, "
                          "  next_at = ?4, last_error = ?5, "
                          "  sent_at = CASE WHEN ?3 = 'sent' THEN ?6 ELSE sent_at END "
                          "WHERE notification_id = ?1 AND channel = ?2",
                          &st, a->err);
    for (size_t i = 0; i < a->n && r == 0; i++) {
        const struct db_delivery_mark *m = &a->marks[i];
        int rc = bind_i64(st, 1, m->notification_id, SQLITE_OK);
        rc = bind_str(st, 2, a->channel, rc);
        rc = bind_str(st, 3, delivery_state_names[m->state], rc);
        rc = bind_i64(st, 4, m->next_at, rc);
        rc = bind_str(st, 5, m->last_error, rc);
        rc = bind_i64(st, 6, a->at, rc);
        if (rc != SQLITE_OK)
            r = db_fail(db, rc, a->err, "cannot mark a notification");
        else
            r = stmt_run(db, st, a->err, "cannot mark a notification");
        if (r == 0 && sqlite3_changes(db->conn) != 1)
            r = error_set(a->err, -ENOENT, "no delivery of notification %lld to '%s'",
                          (long long)m->notification_id, a->channel);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return r;
}

int db_deliveries_mark(struct db *db, const char *channel, const struct db_delivery_mark *marks,
                       size_t n, int64_t at, struct error *err)
{
    if (!db || !channel_ok(channel) || !marks || n < 1 || n > DB_DELIVERIES_MAX)
        return error_set(err, -EINVAL, "invalid notification marks");
    for (size_t i = 0; i < n; i++)
        if ((unsigned)marks[i].state >= ARRAY_SIZE(delivery_state_names))
            return error_set(err, -EINVAL, "invalid delivery state %d", (int)marks[i].state);
    struct mark_args a = {channel, marks, n, at, err};
    return db_transaction(db, mark_tx, &a, err);
}

int db_deliveries_pending_count(struct db *db, int64_t *ret, struct error *err)
{
    if (!db || !ret)
        return error_set(err, -EINVAL, "invalid notification count");
    return query_int(db, "SELECT count(*) FROM deliveries WHERE state = 'pending'", ret, err);
}

int db_deliveries_abandon(struct db *db, const char *const *keep, size_t n, const char *error,
                          int64_t *ret_count, struct error *err)
{
    if (!db || (n && !keep) || n > DB_CHANNELS_MAX || !error)
        return error_set(err, -EINVAL, "invalid notification channels");
    for (size_t i = 0; i < n; i++)
        if (!channel_ok(keep[i]))
            return error_set(err, -EINVAL, "invalid notification channel");
    sqlite3_stmt *st = NULL;
    /* DB_CHANNELS_MAX placeholders; unused ones repeat a key (a NULL in NOT IN matches
     * nothing), or hold "" that no channel is when none is kept */
    int r = adhoc_prepare(db,
                          "UPDATE deliveries SET state = 'failed', last_error = ?1 "
                          "WHERE state = 'pending' AND channel NOT IN (?2, ?3, ?4, ?5, ?6, ?7, "
                          "?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                          &st, err);
    if (r < 0)
        return r;
    int rc = bind_str(st, 1, error, SQLITE_OK);
    for (int i = 0; i < DB_CHANNELS_MAX; i++)
        rc = bind_str(st, 2 + i, n ? keep[(size_t)i < n ? (size_t)i : 0] : "", rc);
    if (rc != SQLITE_OK)
        r = db_fail(db, rc, err, "cannot give up notifications");
    else
        r = stmt_run(db, st, err, "cannot give up notifications");
    if (r == 0 && ret_count)
        *ret_count = sqlite3_changes(db->conn);
    sqlite3_finalize(st);
    return r;
}

struct hold_args {
    const char *channel;
    const int64_t *ids;
    size_t n;
    int64_t until;
    struct error *err;
};

static int hold_tx(struct db *db, void *userdata)
{
    struct hold_args *a = userdata;
    sqlite3_stmt *st = NULL;
    int r = adhoc_prepare(db,
                          "UPDATE deliveries SET next_at = ?3 "
                          "WHERE notification_id = ?1 AND channel = ?2 AND state = 'pending'",
                          &st, a->err);
    for (size_t i = 0; i < a->n && r == 0; i++) {
        int rc = bind_i64(st, 1, a->ids[i], SQLITE_OK);
        rc = bind_str(st, 2, a->channel, rc);
        rc = bind_i64(st, 3, a->until, rc);
        if (rc != SQLITE_OK)
            r = db_fail(db, rc, a->err, "cannot claim a notification");
        else
            r = stmt_run(db, st, a->err, "cannot claim a notification");
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return r;
}

int db_deliveries_hold(struct db *db, const char *channel, const int64_t *ids, size_t n,
                       int64_t until, struct error *err)
{
    if (!db || !channel_ok(channel) || !ids || n < 1 || n > DB_DELIVERIES_MAX)
        return error_set(err, -EINVAL, "invalid notification claim");
    struct hold_args a = {channel, ids, n, until, err};
    return db_transaction(db, hold_tx, &a, err);
}
