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
           || ' owner ' || extowner::regrole || ' relocatable ' || extrelocatable
           || ' config ' || coalesce(extconfig::regclass[]::text, '-')
           || ' conditions ' || coalesce(extcondition::text, '-') AS fact
      FROM pg_extension WHERE extname = 'halo_migrate'
    UNION ALL
    SELECT 'member ' || pg_describe_object(classid, objid, 0) FROM member
    UNION ALL
    SELECT 'schema migrate owner ' || nspowner::regrole || ' acl ' || coalesce(nspacl::text, '-') || ' comment '
           || coalesce(obj_description(oid, 'pg_namespace'), '-')
      FROM pg_namespace WHERE nspname = 'migrate'
    -- relations: kind, options, row security, replica identity, grants, comment
    UNION ALL
    SELECT format('relation %s kind %s persistence %s owner %s options %s rls %s/%s identity %s acl %s comment %s',
                  r.oid::regclass, r.relkind, r.relpersistence, r.relowner::regrole, r.reloptions,
                  r.relrowsecurity, r.relforcerowsecurity, r.relreplident, r.relacl,
                  obj_description(r.oid, 'pg_class'))
      FROM rel r
    UNION ALL
    SELECT format('sequence %s type %s start %s increment %s min %s max %s cache %s cycle %s',
                  q.seqrelid::regclass, q.seqtypid::regtype, q.seqstart, q.seqincrement, q.seqmin,
                  q.seqmax, q.seqcache, q.seqcycle)
      FROM pg_sequence q JOIN pg_depend d ON d.objid = q.seqrelid AND d.classid = 'pg_class'::regclass
           AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
      JOIN rel r ON r.oid = d.refobjid
    UNION ALL
    SELECT format('initial privileges of %s: %s', pg_describe_object(i.classoid, i.objoid, i.objsubid),
                  i.initprivs)
      FROM pg_init_privs i JOIN member m ON m.classid = i.classoid AND m.objid = i.objoid
    UNION ALL
    SELECT format('column %s.%s #%s %s notnull %s default %s identity %s generated %s collation %s '
                  'statistics %s storage %s compression %s options %s acl %s comment %s',
                  a.attrelid::regclass, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
                  a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated,
                  a.attcollation, coalesce(a.attstattarget, -1), a.attstorage, a.attcompression,
                  -- (this machine's PostgreSQL stamps every attribute with a
                  -- pg_attver option of its own: not a fact of the extension)
                  (SELECT array_agg(o ORDER BY o) FROM unnest(a.attoptions) o WHERE o NOT LIKE 'pg\_attver=%'),
                  a.attacl, col_description(a.attrelid, a.attnum))
      FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    UNION ALL
    SELECT format('constraint %s.%s %s deferrable %s/%s comment %s', c.conrelid::regclass, c.conname,
                  pg_get_constraintdef(c.oid), c.condeferrable, c.condeferred,
                  obj_description(c.oid, 'pg_constraint'))
      FROM rel r JOIN pg_constraint c ON c.conrelid = r.oid
    UNION ALL
    SELECT format('index %s comment %s', pg_get_indexdef(i.indexrelid),
                  obj_description(i.indexrelid, 'pg_class'))
      FROM rel r JOIN pg_index i ON i.indrelid = r.oid
    UNION ALL
    SELECT format('policy %s %s %s %s roles %s using %s check %s comment %s', p.polrelid::regclass,
                  p.polname, p.polcmd, CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END,
                  p.polroles::regrole[], pg_get_expr(p.polqual, p.polrelid),
                  pg_get_expr(p.polwithcheck, p.polrelid), obj_description(p.oid, 'pg_policy'))
      FROM pg_policy p JOIN rel r ON r.oid = p.polrelid
    UNION ALL
    SELECT format('trigger %s.%s %s', t.tgrelid::regclass, t.tgname, pg_get_triggerdef(t.oid))
      FROM rel r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
    -- functions and procedures: their whole definition, grants and comment
    UNION ALL
    SELECT format('function %s owner %s acl %s comment %s definition %s', f.oid::regprocedure,
                  f.proowner::regrole, f.proacl, obj_description(f.oid, 'pg_proc'), pg_get_functiondef(f.oid))
      FROM fn f
    UNION ALL
    SELECT format('event trigger %s on %s tags %s calls %s enabled %s owner %s comment %s', e.evtname,
                  e.evtevent, e.evttags, e.evtfoid::regprocedure, e.evtenabled, e.evtowner::regrole,
                  obj_description(e.oid, 'pg_event_trigger'))
      FROM pg_event_trigger e JOIN member m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = e.oid
    UNION ALL
    SELECT format('type %s kind %s', t.oid::regtype, t.typtype)
      FROM pg_type t JOIN member m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
) facts
ORDER BY fact;
