//! Views and policies on columns whose type the ALTER changes: saved,
//! dropped and created again around the swap's ALTER.
//!
//! PostgreSQL refuses to change the type of a column that a view or a
//! row-level security policy uses. Inside the swap transaction we do what a
//! DBA would do by hand: save every view on the altered columns (and every
//! view on those views, in dependency order) with its options, owner,
//! grants (table and column level) and comments, and every policy on them,
//! drop them, run the ALTER, and create them again from what was saved.
//! Definitions are read with `search_path = pg_catalog`, so every name in
//! them is schema-qualified.
//!
//! Invariant: recreated views get new OIDs, so [`check`] refuses — at
//! `start()` and again at the swap — anything that would notice: a
//! materialized view, a view with triggers or rules of its own, another
//! object that depends on such a view (a function body, a policy, a rule on
//! another table), or a view the migrating role could not drop and create.

use crate::error::{MigrateError, Result};
use crate::pg::ident::{Ident, QualifiedName};
use crate::pg::spi::{self, get, CATALOG_PATH};
use crate::plan::sqlgen::literal;
use pgrx::pg_sys::Oid;

/// One privilege, as `aclexplode` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub privilege: String,
    /// `None` for PUBLIC.
    pub grantee: Option<String>,
    pub column: Option<String>,
    pub grantable: bool,
}

/// A view, as needed to create it again exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewSpec {
    pub name: QualifiedName,
    pub definition: String,
    pub options: Vec<String>,
    pub owner: String,
    pub grants: Vec<Grant>,
    pub comment: Option<String>,
    pub column_comments: Vec<(String, String)>,
}

/// A row-level security policy, as needed to create it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySpec {
    pub name: String,
    pub permissive: bool,
    pub command: String,
    /// `None` for PUBLIC.
    pub roles: Vec<Option<String>>,
    pub using: Option<String>,
    pub with_check: Option<String>,
    pub comment: Option<String>,
}

/// What the swap takes off the table and puts back.
#[derive(Default)]
pub struct Saved {
    /// In creation order: every view after the views it reads.
    pub views: Vec<ViewSpec>,
    pub policies: Vec<PolicySpec>,
}

fn grantee_sql(g: &Option<String>) -> String {
    g.as_ref()
        .map_or("PUBLIC".to_string(), |r| Ident::new(r).to_string())
}

/// The statements that create `v` again and give it its owner.
pub fn create_view_sql(v: &ViewSpec) -> [String; 2] {
    let with = if v.options.is_empty() {
        String::new()
    } else {
        format!(" WITH ({})", v.options.join(", "))
    };
    let def = v.definition.trim().trim_end_matches(';');
    [
        format!("CREATE VIEW {}{with} AS {def}", v.name),
        format!("ALTER VIEW {} OWNER TO {}", v.name, Ident::new(&v.owner)),
    ]
}

/// The statements that give the recreated `v` its grants and comments.
pub fn grants_and_comments_sql(v: &ViewSpec) -> Vec<String> {
    let mut out = Vec::new();
    for g in &v.grants {
        let on = match &g.column {
            Some(c) => format!("{} ({})", g.privilege, Ident::new(c)),
            None => g.privilege.clone(),
        };
        out.push(format!(
            "GRANT {on} ON {} TO {}{}",
            v.name,
            grantee_sql(&g.grantee),
            if g.grantable {
                " WITH GRANT OPTION"
            } else {
                ""
            }
        ));
    }
    if let Some(c) = &v.comment {
        out.push(format!("COMMENT ON VIEW {} IS {}", v.name, literal(c)));
    }
    for (col, c) in &v.column_comments {
        out.push(format!(
            "COMMENT ON COLUMN {}.{} IS {}",
            v.name,
            Ident::new(col),
            literal(c)
        ));
    }
    out
}

/// The statements that create `p` on `table` again.
pub fn create_policy_sql(table: &QualifiedName, p: &PolicySpec) -> Vec<String> {
    let roles: Vec<String> = p.roles.iter().map(grantee_sql).collect();
    let mut sql = format!(
        "CREATE POLICY {} ON {table} AS {} FOR {} TO {}",
        Ident::new(&p.name),
        if p.permissive {
            "PERMISSIVE"
        } else {
            "RESTRICTIVE"
        },
        p.command,
        roles.join(", ")
    );
    if let Some(u) = &p.using {
        sql.push_str(&format!(" USING ({u})"));
    }
    if let Some(w) = &p.with_check {
        sql.push_str(&format!(" WITH CHECK ({w})"));
    }
    let mut out = vec![sql];
    if let Some(c) = &p.comment {
        out.push(format!(
            "COMMENT ON POLICY {} ON {table} IS {}",
            Ident::new(&p.name),
            literal(c)
        ));
    }
    out
}

/// Views reading `columns` of `relid`, and views reading those, closest
/// first: (oid, schema, name, relkind).
fn dependent_views(relid: Oid, columns: &[String]) -> Result<Vec<(Oid, String, String, String)>> {
    spi::query(
        "WITH RECURSIVE deps(oid, depth) AS (
             SELECT r.ev_class, 1
               FROM pg_catalog.pg_depend d
               JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
               JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
              WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                AND d.refobjid = $1 AND r.ev_class <> $1 AND a.attname = ANY ($2)
             UNION ALL
             SELECT r.ev_class, deps.depth + 1
               FROM deps
               JOIN pg_catalog.pg_depend d ON d.refobjid = deps.oid
                AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
               JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
              WHERE r.ev_class <> deps.oid AND deps.depth < 100)
         SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text
           FROM deps JOIN pg_catalog.pg_class c ON c.oid = deps.oid
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          GROUP BY c.oid, n.nspname, c.relname, c.relkind
          ORDER BY max(deps.depth), c.oid",
        &[relid.into(), columns.to_vec().into()],
        |r| Ok((get(r, 1)?, get(r, 2)?, get(r, 3)?, get(r, 4)?)),
    )
}

fn refuse(what: String, hint: &str) -> MigrateError {
    MigrateError::not_supported("changing the type of a column under this view", what, hint)
}

/// Refuse, as PostgreSQL does, a type change of a column that a rule of
/// the table itself uses (with PostgreSQL's own words).
pub fn refuse_rules(relid: Oid, columns: &[String]) -> Result<()> {
    if columns.is_empty() {
        return Ok(());
    }
    let rule = spi::opt(
        "SELECT pg_catalog.pg_describe_object('pg_catalog.pg_rewrite'::pg_catalog.regclass, r.oid, 0),
                a.attname::text
           FROM pg_catalog.pg_depend d
           JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
           JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
          WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
            AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
            AND d.refobjid = $1 AND r.ev_class = $1 AND a.attname = ANY ($2)
          ORDER BY r.rulename LIMIT 1",
        &[relid.into(), columns.to_vec().into()],
        |r| Ok((get::<String>(r, 1)?, get::<String>(r, 2)?)),
    )?;
    match rule {
        Some((rule, column)) => Err(MigrateError::RuleUsesColumn { rule, column }),
        None => Ok(()),
    }
}

/// Refuse what recreating the views on `columns` could not keep intact
/// (a rule of the table itself on one of them was refused by `plan()`,
/// through [`refuse_rules`]).
pub fn check(relid: Oid, columns: &[String]) -> Result<()> {
    if columns.is_empty() {
        return Ok(());
    }
    check_views(&dependent_views(relid, columns)?)
}

fn check_views(views: &[(Oid, String, String, String)]) -> Result<()> {
    let oids: Vec<Oid> = views.iter().map(|v| v.0).collect();
    for (oid, schema, name, kind) in views {
        let view = QualifiedName::new(schema, name);
        if kind != "v" {
            return Err(refuse(
                format!("{view} is a materialized view (or not a view) reading an altered column."),
                "Drop it, migrate, and create it again.",
            ));
        }
        let problem = spi::text(
            "SELECT coalesce(
                 (SELECT 'it has trigger ' || pg_catalog.quote_ident(t.tgname) FROM pg_catalog.pg_trigger t
                   WHERE t.tgrelid = $1 LIMIT 1),
                 (SELECT 'it has rule ' || pg_catalog.quote_ident(r.rulename) FROM pg_catalog.pg_rewrite r
                   WHERE r.ev_class = $1 AND r.rulename <> '_RETURN' LIMIT 1),
                 (SELECT 'the migrating role cannot drop and create it (it is owned by '
                         || pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(c.relowner)) || ')'
                    FROM pg_catalog.pg_class c
                   WHERE c.oid = $1 AND NOT pg_catalog.pg_has_role(c.relowner, 'USAGE')),
                 (SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) || ' depends on it'
                    FROM pg_catalog.pg_depend d
                   WHERE d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = $1
                     AND d.deptype = 'n'
                     AND NOT (d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                              AND (SELECT r.ev_class FROM pg_catalog.pg_rewrite r WHERE r.oid = d.objid) = ANY ($2))
                   LIMIT 1))",
            &[(*oid).into(), oids.clone().into()],
        )?;
        if let Some(p) = problem {
            return Err(refuse(
                format!("View {view} reads an altered column, and {p}: it could not be recreated exactly."),
                "Drop what depends on it (or the view), migrate, and create it again.",
            ));
        }
    }
    Ok(())
}

/// The columns among `columns` that views, policies or the table's own
/// rules use, each with a list of those users.
pub fn users_of_dropped(relid: Oid, columns: &[String]) -> Result<Vec<(String, String)>> {
    if columns.is_empty() {
        return Ok(vec![]);
    }
    spi::query(
        "SELECT a.attname::text, pg_catalog.string_agg(DISTINCT dep, ', ') FROM (
             -- views, and the table's own rules (PostgreSQL refuses to drop
             -- a column either uses)
             SELECT CASE WHEN v.oid = $1 THEN 'rule ' || pg_catalog.quote_ident(r.rulename)
                         ELSE 'view ' || v.oid::pg_catalog.regclass::text END AS dep,
                    d.refobjid, d.refobjsubid
               FROM pg_catalog.pg_depend d
               JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
               JOIN pg_catalog.pg_class v ON v.oid = r.ev_class
              WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
             UNION ALL
             SELECT 'policy ' || pg_catalog.quote_ident(p.polname), d.refobjid, d.refobjsubid
               FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_policy p ON p.oid = d.objid
              WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass) x
           JOIN pg_catalog.pg_attribute a ON a.attrelid = x.refobjid AND a.attnum = x.refobjsubid
          WHERE x.refobjid = $1 AND a.attname = ANY ($2)
          GROUP BY a.attname, a.attnum ORDER BY pg_catalog.array_position($2, a.attname::text)",
        &[relid.into(), columns.to_vec().into()],
        |r| Ok((get::<String>(r, 1)?, get::<String>(r, 2)?)),
    )
}

/// Refuse dropping a column that views or policies use, as PostgreSQL does.
pub fn refuse_dropped(relid: Oid, users: &[(String, String)]) -> Result<()> {
    match users.first() {
        None => Ok(()),
        Some((column, users)) => Err(MigrateError::DependentObjects {
            column: column.clone(),
            table: crate::catalog::display_name(relid)?,
            users: users.clone(),
        }),
    }
}

/// Read everything needed to recreate the views and policies on `columns`.
pub fn save(relid: Oid, columns: &[String]) -> Result<Saved> {
    if columns.is_empty() {
        return Ok(Saved::default());
    }
    let views = dependent_views(relid, columns)?;
    check_views(&views)?;
    spi::with_search_path(CATALOG_PATH, || {
        let mut saved = Saved::default();
        for (oid, schema, name, _) in views {
            saved
                .views
                .push(read_view(oid, QualifiedName::new(schema, name))?);
        }
        saved.policies = read_policies(relid, columns)?;
        Ok(saved)
    })
}

fn read_view(oid: Oid, name: QualifiedName) -> Result<ViewSpec> {
    let (definition, options, owner, comment) = spi::query(
        "SELECT pg_catalog.pg_get_viewdef(c.oid), coalesce(c.reloptions, '{}'),
                pg_catalog.pg_get_userbyid(c.relowner)::text, pg_catalog.obj_description(c.oid, 'pg_class')
           FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[oid.into()],
        |r| Ok((get::<String>(r, 1)?, get::<Vec<String>>(r, 2)?, get::<String>(r, 3)?, r.get::<String>(4)?)),
    )?
    .remove(0);
    let grants = spi::query(
        "SELECT g.privilege_type::text, CASE WHEN g.grantee <> 0 THEN pg_catalog.pg_get_userbyid(g.grantee)::text END,
                NULL::text, g.is_grantable
           FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) g
          WHERE c.oid = $1 AND g.grantee <> c.relowner
         UNION ALL
         SELECT g.privilege_type::text, CASE WHEN g.grantee <> 0 THEN pg_catalog.pg_get_userbyid(g.grantee)::text END,
                a.attname::text, g.is_grantable
           FROM pg_catalog.pg_attribute a, pg_catalog.aclexplode(a.attacl) g
          WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
        &[oid.into()],
        |r| {
            Ok(Grant {
                privilege: get(r, 1)?,
                grantee: r.get(2)?,
                column: r.get(3)?,
                grantable: get(r, 4)?,
            })
        },
    )?;
    let column_comments = spi::query(
        "SELECT a.attname::text, d.description
           FROM pg_catalog.pg_attribute a
           JOIN pg_catalog.pg_description d
             ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid = a.attrelid AND d.objsubid = a.attnum
          WHERE a.attrelid = $1 AND a.attnum > 0
          ORDER BY a.attnum",
        &[oid.into()],
        |r| Ok((get(r, 1)?, get(r, 2)?)),
    )?;
    Ok(ViewSpec {
        name,
        definition,
        options,
        owner,
        grants,
        comment,
        column_comments,
    })
}

fn read_policies(relid: Oid, columns: &[String]) -> Result<Vec<PolicySpec>> {
    spi::query(
        "SELECT p.polname::text, p.polpermissive,
                CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                              WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                ARRAY(SELECT CASE WHEN r = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(r)::text END
                        FROM pg_catalog.unnest(p.polroles) r),
                pg_catalog.pg_get_expr(p.polqual, p.polrelid),
                pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid),
                pg_catalog.obj_description(p.oid, 'pg_policy')
           FROM pg_catalog.pg_policy p
          WHERE p.polrelid = $1
            AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                         WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objid = p.oid
                           AND d.refobjid = $1 AND a.attname = ANY ($2))
          ORDER BY p.polname",
        &[relid.into(), columns.to_vec().into()],
        |r| {
            Ok(PolicySpec {
                name: get(r, 1)?,
                permissive: get(r, 2)?,
                command: get(r, 3)?,
                roles: get::<Vec<Option<String>>>(r, 4)?,
                using: r.get(5)?,
                with_check: r.get(6)?,
                comment: r.get(7)?,
            })
        },
    )
}

/// Drop the saved views (dependents first) and policies.
pub fn drop_saved(table: &QualifiedName, s: &Saved) -> Result<()> {
    for v in s.views.iter().rev() {
        spi::exec(&format!("DROP VIEW {}", v.name), &[])?;
    }
    for p in &s.policies {
        spi::exec(
            &format!("DROP POLICY {} ON {table}", Ident::new(&p.name)),
            &[],
        )?;
    }
    Ok(())
}

/// Take back what a new view was granted on creation (default privileges):
/// it gets exactly the saved grants.
fn revoke_all(view: &QualifiedName) -> Result<()> {
    let grantees = spi::query(
        "SELECT DISTINCT CASE WHEN g.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(g.grantee)::text END
           FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) g
          WHERE c.oid = $1::pg_catalog.regclass AND g.grantee <> c.relowner",
        &[view.to_string().into()],
        |r| r.get::<String>(1).map_err(Into::into),
    )?;
    for g in grantees {
        spi::exec(
            &format!("REVOKE ALL ON {view} FROM {}", grantee_sql(&g)),
            &[],
        )?;
    }
    Ok(())
}

/// Create the saved views (in order) and policies again.
pub fn recreate(table: &QualifiedName, s: &Saved) -> Result<()> {
    spi::with_search_path(CATALOG_PATH, || {
        for v in &s.views {
            for sql in create_view_sql(v) {
                spi::exec(&sql, &[])?;
            }
            revoke_all(&v.name)?;
            for sql in grants_and_comments_sql(v) {
                spi::exec(&sql, &[])?;
            }
        }
        for p in &s.policies {
            for sql in create_policy_sql(table, p) {
                spi::exec(&sql, &[])?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_comes_back_with_options_owner_grants_and_comments() {
        let v = ViewSpec {
            name: QualifiedName::new("public", "Big View"),
            definition: " SELECT t.id\n   FROM public.t;".into(),
            options: vec!["security_barrier=true".into()],
            owner: "app".into(),
            grants: vec![
                Grant {
                    privilege: "SELECT".into(),
                    grantee: None,
                    column: None,
                    grantable: false,
                },
                Grant {
                    privilege: "UPDATE".into(),
                    grantee: Some("o'k".into()),
                    column: Some("id".into()),
                    grantable: true,
                },
            ],
            comment: Some("it's".into()),
            column_comments: vec![("id".into(), "key".into())],
        };
        assert_eq!(
            create_view_sql(&v),
            [
                "CREATE VIEW public.\"Big View\" WITH (security_barrier=true) AS SELECT t.id\n   FROM public.t",
                "ALTER VIEW public.\"Big View\" OWNER TO app",
            ]
        );
        assert_eq!(
            grants_and_comments_sql(&v),
            vec![
                "GRANT SELECT ON public.\"Big View\" TO PUBLIC",
                "GRANT UPDATE (id) ON public.\"Big View\" TO \"o'k\" WITH GRANT OPTION",
                "COMMENT ON VIEW public.\"Big View\" IS 'it''s'",
                "COMMENT ON COLUMN public.\"Big View\".id IS 'key'",
            ]
        );
    }

    #[test]
    fn a_policy_comes_back_with_its_roles_and_expressions() {
        let p = PolicySpec {
            name: "own rows".into(),
            permissive: false,
            command: "UPDATE".into(),
            roles: vec![None, Some("app".into())],
            using: Some("(owner = CURRENT_USER)".into()),
            with_check: Some("(v > 0)".into()),
            comment: None,
        };
        assert_eq!(
            create_policy_sql(&QualifiedName::new("s", "t"), &p),
            vec!["CREATE POLICY \"own rows\" ON s.t AS RESTRICTIVE FOR UPDATE TO PUBLIC, app USING ((owner = CURRENT_USER)) WITH CHECK ((v > 0))"]
        );
    }
}
