-- Joins a Citus cluster: run on the coordinator, in the application database, once that database exists with the
-- citus extension on every node (Citus creates no database on the workers: each node's copy is made beforehand).
--
--   psql -v coordinator=HOST:PORT -v workers=HOST:PORT,HOST:PORT -f deploy/citus/join.sql DATABASE_URL
--
-- docker-compose.yml's one-shot service citus-init runs it (profile citus); docs/citus-deploy.md runs it for a
-- cluster of your own. Safe to run again: a known coordinator is updated, a known worker is not added twice.
\set ON_ERROR_STOP on

SELECT citus_set_coordinator_host(split_part(:'coordinator', ':', 1), split_part(:'coordinator', ':', 2)::integer);

-- One statement per worker (\gexec), each in its own transaction as citus_add_node asks.
SELECT format('SELECT citus_add_node(%L, %s)', split_part(node, ':', 1), split_part(node, ':', 2)::integer)
  FROM unnest(string_to_array(:'workers', ',')) AS node
 WHERE NOT EXISTS (SELECT 1 FROM pg_dist_node d
                    WHERE d.nodename = split_part(node, ':', 1) AND d.nodeport = split_part(node, ':', 2)::integer)
\gexec

-- Every worker named is an active primary with the coordinator's Citus version, or this fails.
SELECT set_config('citus_join.workers', :'workers', false);
DO $$
DECLARE
    v_node    text;
    v_version text;
BEGIN
    FOREACH v_node IN ARRAY string_to_array(current_setting('citus_join.workers'), ',') LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_dist_node d
                        WHERE d.nodename = split_part(v_node, ':', 1)
                          AND d.nodeport = split_part(v_node, ':', 2)::integer
                          AND d.isactive AND d.noderole = 'primary' AND d.groupid <> 0) THEN
            RAISE EXCEPTION 'worker % is not an active primary of this coordinator', v_node;
        END IF;
    END LOOP;
    FOR v_node, v_version IN
        SELECT nodename || ':' || nodeport, result FROM run_command_on_workers(
            $q$SELECT extversion FROM pg_extension WHERE extname = 'citus'$q$) LOOP
        IF v_version IS DISTINCT FROM (SELECT extversion FROM pg_extension WHERE extname = 'citus') THEN
            RAISE EXCEPTION 'worker % has citus %, the coordinator %', v_node, v_version,
                (SELECT extversion FROM pg_extension WHERE extname = 'citus');
        END IF;
    END LOOP;
END
$$;

SELECT nodename, nodeport, groupid, noderole, isactive FROM pg_dist_node ORDER BY groupid, nodename, nodeport;
