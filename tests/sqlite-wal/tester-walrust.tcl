# Sourced at the end of SQLite's tester.tcl by tests/sqlite-wal/run.sh.
#
# SQLite's tests delete their database files and create new ones under the same names, again
# and again. With walrust, a database keeps its shadow directory (NAME-walrust) and its replica
# (WALRUST_REPLICA_ROOT/NAME) across such a delete, and a new database at that path then
# belongs to another history: walrust refuses to replicate it, and says so on standard error,
# which SQLite's multi-process tests read as a failure of the child. So deleting a database
# file here deletes its shadow directory and replica too, as a new database at a new URL would
# start with none. (A process that still had the old database open in walrust's registry then
# finds its shadow directory gone or behind, and says so; with the log off, as run.sh runs,
# that is silent. SQLite's own checks of the database are what decide a test.)
#
# A shadow directory is deleted again until it is gone: the process's own walrust may still
# write into it for an instant after the application closed the database (its uploader
# finishing), and a recursive delete that meets a file made meanwhile fails ("file already
# exists"). SQLite's harness names it itself when it deletes `test.db*` (db_restore).

proc walrust_delete_dir {dir} {
  for {set i 0} {$i < 200 && [file exists $dir]} {incr i} {
    catch { file delete -force -- $dir }
    if {[file exists $dir]} { after 10 }
  }
}

if {[info commands forcedelete_without_walrust] eq ""} {
  rename forcedelete forcedelete_without_walrust
  proc forcedelete {args} {
    set root ""
    if {[info exists ::env(WALRUST_REPLICA_ROOT)]} { set root $::env(WALRUST_REPLICA_ROOT) }
    set rest {}
    foreach f $args {
      if {![string match -* $f] && [string match *-walrust $f] && [file isdirectory $f]} {
        walrust_delete_dir $f
        continue
      }
      lappend rest $f
      if {[string match -* $f]} continue
      if {[file isdirectory "${f}-walrust"]} {
        walrust_delete_dir "${f}-walrust"
        if {$root ne ""} {
          catch { file delete -force -- [file join $root [file tail $f]] }
        }
      }
    }
    uplevel 1 [list forcedelete_without_walrust {*}$rest]
  }
}
