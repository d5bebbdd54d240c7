/*
** Compiled into SQLite's own test program, testfixture, as SQLITE_EXTRA_INIT: when
** WALRUST_TESTFIXTURE_EXT names the built extension, every sqlite3_initialize() of every
** testfixture process (the children that crash tests and multi-process tests start too) loads
** walrust before anything else runs. SQLite's test harness calls sqlite3_shutdown() and
** sqlite3_initialize() at its start and in some tests, which forget auto-extensions and make
** the OS's VFS the default again; loading walrust again after each makes its VFS the default
** and its auto-extension installed once more. walrust asks SQLite to keep it loaded, so the
** connection used to load it is closed at once. A load that fails stops the process: no test
** runs without walrust by mistake.
*/
#include "sqlite3.h"
#include <stdio.h>
#include <stdlib.h>

int walrust_testfixture_init(const char *unused){
  const char *ext = getenv("WALRUST_TESTFIXTURE_EXT");
  sqlite3 *db = 0;
  char *err = 0;
  int rc;
  (void)unused;
  if( ext==0 || ext[0]==0 ) return SQLITE_OK;
  rc = sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE, 0);
  if( rc==SQLITE_OK ) rc = sqlite3_enable_load_extension(db, 1);
  if( rc==SQLITE_OK ) rc = sqlite3_load_extension(db, ext, 0, &err);
  if( rc!=SQLITE_OK ){
    fprintf(stderr, "walrust_testfixture_init: cannot load %s: %s\n", ext,
            err ? err : sqlite3_errstr(rc));
    exit(70);
  }
  sqlite3_close(db);
  return SQLITE_OK;
}
