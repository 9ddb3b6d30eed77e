-- Every fact about halo_migrate's own objects in this database, one per
-- line, sorted: what an updated extension must share with a fresh one
-- (scripts/upgrade-test.sh diffs the two). Only the extension's members are
-- described, never the shadows, logs and functions migrations create.
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'halo_migrate'),
member AS (
    SELECT d.classid, d.objid
      FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
rel AS (SELECT c.* FROM pg_class c JOIN member m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid),
fn AS (SELECT p.* FROM pg_proc p JOIN member m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid)
SELECT fact FROM (
    SELECT 'extension ' || extversion || ' schema ' || extnamespace::regnamespace
           || ' relocatable ' || extrelocatable || ' config ' || coalesce(
               (SELECT string_agg(c::regclass::text, ',' ORDER BY c::regclass::text)
                  FROM unnest(extconfig) c), '-') AS fact
      FROM pg_extension WHERE extname = 'halo_migrate'
    UNION ALL
    SELECT 'member ' || pg_describe_object(classid, objid, 0) FROM member
    UNION ALL
    SELECT 'schema migrate acl ' || coalesce(nspacl::text, '-') || ' comment '
           || coalesce(obj_description(oid, 'pg_namespace'), '-')
      FROM pg_namespace WHERE nspname = 'migrate'
    -- relations: kind, options, row security, replica identity, grants, comment
    UNION ALL
    SELECT format('relation %s kind %s persistence %s options %s rls %s/%s identity %s acl %s comment %s',
                  r.oid::regclass, r.relkind, r.relpersistence, r.reloptions, r.relrowsecurity,
                  r.relforcerowsecurity, r.relreplident, r.relacl,
                  obj_description(r.oid, 'pg_class'))
      FROM rel r
    UNION ALL
    SELECT format('column %s.%s #%s %s notnull %s default %s identity %s generated %s collation %s acl %s comment %s',
                  a.attrelid::regclass, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
                  a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated,
                  a.attcollation, a.attacl, col_description(a.attrelid, a.attnum))
      FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    UNION ALL
    SELECT format('constraint %s.%s %s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid))
      FROM rel r JOIN pg_constraint c ON c.conrelid = r.oid
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
      FROM rel r JOIN pg_index i ON i.indrelid = r.oid
    UNION ALL
    SELECT format('policy %s.%s %s %s roles %s using %s check %s', p.schemaname, p.tablename,
                  p.policyname, p.cmd, p.roles, p.qual, p.with_check)
      FROM pg_policies p JOIN rel r ON r.relname = p.tablename AND r.relnamespace::regnamespace::text = p.schemaname
    UNION ALL
    SELECT format('trigger %s.%s %s', t.tgrelid::regclass, t.tgname, pg_get_triggerdef(t.oid))
      FROM rel r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
    -- functions and procedures: their whole definition, grants and comment
    UNION ALL
    SELECT format('function %s acl %s comment %s definition %s', f.oid::regprocedure, f.proacl,
                  obj_description(f.oid, 'pg_proc'), pg_get_functiondef(f.oid))
      FROM fn f
    UNION ALL
    SELECT format('event trigger %s on %s tags %s calls %s enabled %s', e.evtname, e.evtevent,
                  e.evttags, e.evtfoid::regprocedure, e.evtenabled)
      FROM pg_event_trigger e JOIN member m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = e.oid
    UNION ALL
    SELECT format('type %s kind %s', t.oid::regtype, t.typtype)
      FROM pg_type t JOIN member m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
) facts
ORDER BY fact;
