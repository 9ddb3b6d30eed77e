//! Settings (`halo_migrate.*`), with typed accessors. Registered in `_PG_init`.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(100);
static BATCH_ROWS: GucSetting<i32> = GucSetting::<i32>::new(20_000);
static BATCH_PAUSE_MS: GucSetting<i32> = GucSetting::<i32>::new(0);
static TARGET_BATCH_MS: GucSetting<i32> = GucSetting::<i32>::new(0);
static MAX_REPLICA_LAG_MS: GucSetting<i32> = GucSetting::<i32>::new(0);
static AUTO_RESUME: GucSetting<bool> = GucSetting::<bool>::new(true);
static BULK_COPY: GucSetting<bool> = GucSetting::<bool>::new(true);
static SNAPSHOT_SAFE_SWAP: GucSetting<bool> = GucSetting::<bool>::new(true);
static VERIFY: GucSetting<bool> = GucSetting::<bool>::new(false);
static REVERTIBLE: GucSetting<bool> = GucSetting::<bool>::new(false);
static REVERT_WINDOW_S: GucSetting<i32> = GucSetting::<i32>::new(86_400);
static JOBS: GucSetting<i32> = GucSetting::<i32>::new(2);

pub fn init() {
    GucRegistry::define_int_guc(
        c"halo_migrate.lock_timeout",
        c"Longest wait for a lock on the table being migrated.",
        c"Every lock halo_migrate takes on the table (and the probe's lock in plan()) gives up after \
          this long and is retried with back-off, so application statements never queue behind it for longer.",
        &LOCK_TIMEOUT_MS,
        1,
        60_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"halo_migrate.batch_rows",
        c"Rows per copy batch, and log rows per replay batch, when start() is not given batch_rows.",
        c"Each batch is one short transaction.",
        &BATCH_ROWS,
        1,
        10_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"halo_migrate.batch_pause",
        c"Pause after each copy batch of a new migration.",
        c"Gives the server room between batches; change a running migration with migrate.throttle().",
        &BATCH_PAUSE_MS,
        0,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"halo_migrate.target_batch_time",
        c"Adapt the batch size of a new migration so that a copy batch takes this long (0: fixed size).",
        c"After each batch, batch_rows is scaled by target / actual duration, by at most 2x per batch.",
        &TARGET_BATCH_MS,
        0,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"halo_migrate.max_replica_lag",
        c"Hold a new migration's copy while a standby's replay lag exceeds this (0: off).",
        c"Read from pg_stat_replication.replay_lag, which needs the privileges of pg_read_all_stats.",
        &MAX_REPLICA_LAG_MS,
        0,
        86_400_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_bool_guc(
        c"halo_migrate.auto_resume",
        c"Resume interrupted background migrations when the server starts.",
        c"Read at server start; needs halo_migrate in shared_preload_libraries. Without it, interrupted migrations wait for migrate.resume().",
        &AUTO_RESUME,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"halo_migrate.bulk_copy",
        c"Copy batches with multi-row heap inserts, as COPY FROM does.",
        c"Off: each copy batch runs as a plain INSERT ... SELECT (one heap insert and WAL record per row). \
          The rows, checks and errors are the same either way; the setting is there to compare the two.",
        &BULK_COPY,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"halo_migrate.snapshot_safe_swap",
        c"A new migration's swap waits for transactions whose snapshots predate it.",
        c"On: the swap does not commit while another session holds a snapshot taken before it (a REPEATABLE READ \
          transaction, a cursor, a long statement), which would otherwise read the new table wrongly, as after \
          PostgreSQL's own rewriting ALTER TABLE. Off: PostgreSQL's behaviour. start(snapshot_safe => ...) overrides it.",
        &SNAPSHOT_SAFE_SWAP,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"halo_migrate.verify",
        c"A new rewrite verifies its new table against the table before the swap.",
        c"On: once the copy has caught up, the worker compares the new table with the ALTER applied to the table, \
          key range by key range, repairs what differs, and swaps only after a pass that found no difference. \
          start(verify => ...) overrides it.",
        &VERIFY,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"halo_migrate.revertible",
        c"A new rewrite keeps the table's old storage after its swap, so that migrate.revert() can take it back.",
        c"On: the swap keeps the old rows and indexes in a kept table and keeps logging changed keys, for \
          halo_migrate.revert_window; migrate.forget() ends the window early. start(revertible => ...) overrides it.",
        &REVERTIBLE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"halo_migrate.revert_window",
        c"How long a revertible migration stays revertible after its swap.",
        c"After this, the worker (or migrate.step()) drops the kept table and the capture trigger. \
          start(revert_window => ...) overrides it.",
        &REVERT_WINDOW_S,
        1,
        31_536_000,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"halo_migrate.jobs",
        c"Background workers that copy a partitioned table's partitions at once.",
        c"A rewrite of a partitioned table copies, indexes and replays its partitions in this many \
          workers (the migration's own and jobs - 1 helpers), largest partition first. start(jobs => ...) \
          overrides it.",
        &JOBS,
        1,
        64,
        GucContext::Userset,
        GucFlags::default(),
    );
    // No other halo_migrate.* name can be set: a typo is an error rather
    // than a silently ignored placeholder, and no session can invent an
    // internal switch.
    // SAFETY: called once from _PG_init, in the postmaster or a backend
    // loading the library; the name is a NUL-terminated static string.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"halo_migrate".as_ptr()) };
}

/// halo_migrate.snapshot_safe_swap.
pub fn snapshot_safe_swap() -> bool {
    SNAPSHOT_SAFE_SWAP.get()
}

/// halo_migrate.verify.
pub fn verify() -> bool {
    VERIFY.get()
}

/// halo_migrate.revertible.
pub fn revertible() -> bool {
    REVERTIBLE.get()
}

/// halo_migrate.revert_window, in seconds.
pub fn revert_window_s() -> i32 {
    REVERT_WINDOW_S.get()
}

/// halo_migrate.batch_rows.
pub fn batch_rows() -> i32 {
    BATCH_ROWS.get()
}

/// halo_migrate.lock_timeout, in milliseconds.
pub fn lock_timeout_ms() -> i32 {
    LOCK_TIMEOUT_MS.get()
}

/// halo_migrate.batch_pause, in milliseconds.
pub fn batch_pause_ms() -> i32 {
    BATCH_PAUSE_MS.get()
}

/// halo_migrate.target_batch_time, in milliseconds (0: off).
pub fn target_batch_ms() -> i32 {
    TARGET_BATCH_MS.get()
}

/// halo_migrate.max_replica_lag, in milliseconds (0: off).
pub fn max_replica_lag_ms() -> i32 {
    MAX_REPLICA_LAG_MS.get()
}

/// halo_migrate.auto_resume.
pub fn auto_resume() -> bool {
    AUTO_RESUME.get()
}

/// halo_migrate.bulk_copy.
pub fn bulk_copy() -> bool {
    BULK_COPY.get()
}

/// halo_migrate.jobs.
pub fn jobs() -> i32 {
    JOBS.get()
}
