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

# db_save and db_restore (faultsim_save and faultsim_restore too: they call these) copy
# test.db* aside and back: the database, its WAL, its -shm and walrust's shadow directory
# test.db-walrust. The replica is saved and restored with them, so that a restored database
# finds the replica as it was when its files were saved, as a machine restored from a backup
# of all three would. Without it, every process that opens the restored files finds a replica
# ahead of its shadow log and starts the replica over with a snapshot, whose read transaction
# then runs beside the test's own connection. walcrash3.test's second part assumes its crashing
# process has one connection: with a reader that began before its checkpoint, the writer cannot
# restart the WAL and appends after frames written under SQLite's powersafe-overwrite default
# (not padded to a sector), and the crash VFS, which simulates a device without it, trashes
# the 4096-byte sector around them; a database written without walrust fails the same way
# (tests/sqlite-wal/README.md).
proc walrust_replica_copy {from to} {
  if {![info exists ::env(WALRUST_REPLICA_ROOT)]} return
  set root $::env(WALRUST_REPLICA_ROOT)
  catch { file delete -force -- [file join $root $to] }
  if {[file exists [file join $root $from]]} {
    file copy -force -- [file join $root $from] [file join $root $to]
  }
}
if {[info commands db_save_without_walrust] eq ""} {
  rename db_save db_save_without_walrust
  rename db_restore db_restore_without_walrust
  proc db_save {} {
    # Commits that follow each other closely wait in memory to be appended to the shadow log
    # together (a group); a copy taken meanwhile holds a log that lacks them, and the process
    # that opens the restored copy catches them up from the WAL through a connection of
    # walrust's own. That connection's read transaction, as any reader beside the crashing
    # connection, keeps it from restarting the WAL (see above). walrust_sync() appends the
    # group first (an error when `db` does not replicate is ignored).
    catch { db eval {SELECT walrust_sync()} }
    db_save_without_walrust
    walrust_replica_copy test.db sv_test.db
  }
  proc db_restore {} {
    db_restore_without_walrust
    walrust_replica_copy sv_test.db test.db
  }
}
