//! Settings (`halo_migrate.*`), with typed accessors. Registered in `_PG_init`.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(100);

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
}

/// halo_migrate.lock_timeout, in milliseconds.
pub fn lock_timeout_ms() -> i32 {
    LOCK_TIMEOUT_MS.get()
}
