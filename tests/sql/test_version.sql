-- walrust_version() returns the version as text, "0.<minor>.<patch>..." before 1.0 (SPEC 4).
SELECT walrust_version() LIKE '0.%' AS is_0_x, typeof(walrust_version()) AS type;
-- Loading the extension again is harmless (SPEC 1): same functions, nothing registered twice.
.load @EXT@
SELECT count(DISTINCT name) AS functions FROM pragma_function_list WHERE name LIKE 'walrust%';
SELECT walrust_version() LIKE '0.%' AS still_0_x;
