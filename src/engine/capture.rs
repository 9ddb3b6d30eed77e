//! Change capture: the log table, the trigger function and the triggers.
//!
//! From the moment the capture trigger commits, every INSERT, UPDATE and
//! DELETE on the table logs the key of each row it touches (the old and the
//! new key when an UPDATE changes the key) into `migrate.log_<oid>`, in the
//! writer's own transaction. Replay consumes log rows by deleting exactly the
//! rows it read, so rows of transactions that commit late are never skipped.
//!
//! The trigger is `ENABLE ALWAYS` (it fires under `session_replication_role =
//! replica` too). The function is SECURITY DEFINER, owned by the role that
//! started the migration (the table's owner), with a pinned search_path, so
//! writers need no privilege on the log. A statement-level BEFORE TRUNCATE
//! trigger with the same function refuses TRUNCATE during the migration.

use crate::error::Result;
use crate::pg::ident::{Ident, QualifiedName};
use crate::pg::spi;
use crate::plan::sqlgen;

/// What the TRUNCATE guard says the table is in the middle of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// A migration before its swap.
    Migration,
    /// A revertible migration's window after its swap.
    Window,
}

pub fn guard_trigger(oid: u32) -> Ident {
    Ident::new(format!("halo_truncate_guard_{oid}"))
}

/// Create the log table and the trigger function (no lock on the table).
pub fn create_log(
    oid: u32,
    table: &QualifiedName,
    log_columns: &str,
    key: &[String],
    guard: Guard,
) -> Result<()> {
    let log = sqlgen::log_table(oid);
    spi::exec(
        &format!("CREATE TABLE {log} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, {log_columns})"),
        &[],
    )?;
    spi::exec(
        &format!(
            "COMMENT ON TABLE {log} IS {}",
            sqlgen::literal(&format!("halo_migrate: changed keys of {table}"))
        ),
        &[],
    )?;
    // Writers fill the log in their own transactions: keep those rows out
    // of logical decoding, or a subscriber would be sent changes to a table
    // it does not have.
    let log_oid = crate::catalog::relation_oid(&log.to_string())?;
    crate::engine::storage::hide_from_decoding(log_oid, pgrx::pg_sys::Oid::from(oid));
    spi::exec(&function_sql(oid, table, key, guard), &[])?;
    Ok(())
}

/// The statements that install the triggers; they lock the table
/// (SHARE ROW EXCLUSIVE), so the caller runs them under lock_timeout.
pub fn trigger_sql(oid: u32, table: &QualifiedName) -> Vec<String> {
    let f = sqlgen::capture_function(oid);
    let t = sqlgen::capture_trigger(oid);
    let g = guard_trigger(oid);
    vec![
        format!("CREATE TRIGGER {t} AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {f}()"),
        format!("CREATE TRIGGER {g} BEFORE TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {f}()"),
        format!("ALTER TABLE {table} ENABLE ALWAYS TRIGGER {t}, ENABLE ALWAYS TRIGGER {g}"),
    ]
}

/// The statements that remove the triggers (they lock the table too).
pub fn drop_trigger_sql(oid: u32, table: &QualifiedName) -> Vec<String> {
    vec![
        format!(
            "DROP TRIGGER IF EXISTS {} ON {table}",
            sqlgen::capture_trigger(oid)
        ),
        format!("DROP TRIGGER IF EXISTS {} ON {table}", guard_trigger(oid)),
    ]
}

/// Remove everything a rewrite's capture and copy made: the triggers
/// (their lock taken with `lock_timeout_ms` and retried), the shadow (or a
/// revert window's kept table, which has its name), the log and the
/// function. Used by a failed or aborted migration and by a closing window.
pub fn remove(relid: pgrx::pg_sys::Oid, lock_timeout_ms: i32) -> Result<()> {
    let oid = relid.to_u32();
    if let Some(table) = crate::catalog::qualified_name(relid)? {
        crate::engine::locks::retry("remove the capture trigger", lock_timeout_ms, 100, || {
            for sql in drop_trigger_sql(oid, &table) {
                spi::exec(&sql, &[])?;
            }
            Ok(())
        })?;
    }
    spi::exec(
        &format!("DROP TABLE IF EXISTS {}", sqlgen::shadow_table(oid)),
        &[],
    )?;
    drop_log(oid)
}

/// Remove the log and the function (after the triggers are gone).
pub fn drop_log(oid: u32) -> Result<()> {
    spi::exec(
        &format!("DROP TABLE IF EXISTS {}", sqlgen::log_table(oid)),
        &[],
    )?;
    spi::exec(
        &format!(
            "DROP FUNCTION IF EXISTS {}()",
            sqlgen::capture_function(oid)
        ),
        &[],
    )
}

fn function_sql(oid: u32, table: &QualifiedName, key: &[String], guard: Guard) -> String {
    let log = sqlgen::log_table(oid);
    let cols: Vec<String> = (1..=key.len()).map(|i| format!("k{i}")).collect();
    let new: Vec<String> = key
        .iter()
        .map(|k| format!("NEW.{}", Ident::new(k)))
        .collect();
    let old: Vec<String> = key
        .iter()
        .map(|k| format!("OLD.{}", Ident::new(k)))
        .collect();
    let (cols, new, old) = (cols.join(", "), new.join(", "), old.join(", "));
    let (message, hint) = match guard {
        Guard::Migration => (
            format!("cannot truncate {table} while halo_migrate is migrating it"),
            "Finish the migration with migrate.finish(), or cancel it with migrate.abort(), first.",
        ),
        Guard::Window => (
            format!("cannot truncate {table} while its halo_migrate revert window is open"),
            "Take the migration back with migrate.revert(), or end the window with migrate.forget(), first.",
        ),
    };
    let (message, hint) = (sqlgen::literal(&message), sqlgen::literal(hint));
    format!(
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
         SET search_path = pg_catalog, pg_temp AS $halo$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION USING ERRCODE = 'object_in_use', MESSAGE = {message},
            HINT = {hint};
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO {log} ({cols}) VALUES ({new});
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND ({old}) IS DISTINCT FROM ({new})) THEN
        INSERT INTO {log} ({cols}) VALUES ({old});
    END IF;
    RETURN NULL;
END
$halo$",
        f = sqlgen::capture_function(oid)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_logs_old_and_new_keys() {
        let sql = function_sql(
            42,
            &QualifiedName::new("public", "Acc"),
            &["id".into(), "Region".into()],
            Guard::Migration,
        );
        assert!(sql.contains("INSERT INTO migrate.log_42 (k1, k2) VALUES (NEW.id, NEW.\"Region\")"));
        assert!(sql.contains("(OLD.id, OLD.\"Region\") IS DISTINCT FROM (NEW.id, NEW.\"Region\")"));
        assert!(sql.contains("SECURITY DEFINER"));
        assert!(sql.contains("'cannot truncate public.\"Acc\" while halo_migrate is migrating it'"));
    }
}
