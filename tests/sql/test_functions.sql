-- The exact set of SQL functions walrust registers (SPEC 4). A new or renamed function is a
-- change to the product: change SPEC.md and this file together.
SELECT DISTINCT name FROM pragma_function_list WHERE name LIKE 'walrust%' ORDER BY 1;
-- walrust_files(url) is a table-valued function: an eponymous virtual table.
SELECT name FROM pragma_module_list WHERE name LIKE 'walrust%' ORDER BY 1;
-- Every function that acts or reaches outside the database is SQLITE_DIRECTONLY (0x80000),
-- as SQLite's own file functions are (SPEC 6). walrust_version and walrust_status only read.
SELECT DISTINCT name, (flags & 0x80000) != 0 AS directonly FROM pragma_function_list WHERE name LIKE 'walrust%' ORDER BY 1;
-- So a view or trigger, which a crafted database could carry, cannot call them.
CREATE VIEW v_sync AS SELECT walrust_sync();
SELECT * FROM v_sync;
CREATE VIEW v_restore AS SELECT walrust_restore('file:///nonexistent', '/nonexistent/out.db');
SELECT * FROM v_restore;
CREATE VIEW v_files AS SELECT * FROM walrust_files('file:///nonexistent');
SELECT * FROM v_files;
CREATE TABLE t(x);
CREATE TRIGGER t_snapshot AFTER INSERT ON t BEGIN SELECT walrust_snapshot(); END;
INSERT INTO t VALUES (1);
SELECT count(*) AS rows_in_t FROM t;
-- The read-only ones are allowed there.
CREATE VIEW v_version AS SELECT walrust_version() LIKE '0.%' AS is_0_x;
SELECT * FROM v_version;
