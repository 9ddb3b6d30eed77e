//! Settings (`halo_migrate.*`), with typed accessors. Registered in `_PG_init`.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(100);
static BATCH_ROWS: GucSetting<i32> = GucSetting::<i32>::new(20_000);
static SWAPPING: GucSetting<bool> = GucSetting::<bool>::new(false);

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
    GucRegistry::define_bool_guc(
        c"halo_migrate.swapping",
        c"Set by halo_migrate during a swap (internal).",
        c"Lets the migration's own DDL past the event trigger that refuses DDL on a table being migrated.",
        &SWAPPING,
        GucContext::Userset,
        GucFlags::NO_SHOW_ALL,
    );
}

/// halo_migrate.batch_rows.
pub fn batch_rows() -> i32 {
    BATCH_ROWS.get()
}

/// halo_migrate.lock_timeout, in milliseconds.
pub fn lock_timeout_ms() -> i32 {
    LOCK_TIMEOUT_MS.get()
}
