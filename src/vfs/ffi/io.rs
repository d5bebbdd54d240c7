//! The `sqlite3_io_methods` of every file opened through the `walrust` VFS. Each forwards to the
//! wrapped VFS's file, stored inline right after our header; the main database file and its
//! `-wal` file also call the safe hooks of their `Database`.

use super::{cstr, guard, sqlite_string, PANIC_RC};
use crate::database::{Database, LockGate, PragmaOutcome, Role, WalHandle};
use rusqlite::ffi;
use std::ffi::{c_char, c_int, c_void};

/// Our file object. SQLite allocates `szOsFile` bytes; the wrapped file lives at `INNER_OFFSET`.
#[repr(C)]
pub(super) struct WFile {
    pub base: ffi::sqlite3_file,
    pub role: *mut Role,
    pub inner: *mut ffi::sqlite3_file,
    /// The connection that owns this main database file (from `SQLITE_FCNTL_PDB`).
    pub conn: *mut ffi::sqlite3,
    /// walrust's WAL hook is installed on `conn`.
    pub hooked: bool,
}

pub(super) const INNER_OFFSET: usize = std::mem::size_of::<WFile>().next_multiple_of(16);

/// iVersion 3: shared memory (needed for WAL mode) and memory-mapped I/O are forwarded.
pub(super) static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

unsafe fn parts<'a>(
    f: *mut ffi::sqlite3_file,
) -> (
    &'a Role,
    *mut ffi::sqlite3_file,
    &'a ffi::sqlite3_io_methods,
) {
    unsafe {
        let w = &*(f as *mut WFile);
        (&*w.role, w.inner, &*(*w.inner).pMethods)
    }
}

/// A safe reader over the wrapped file, for hooks that need to look at the WAL or database.
pub(super) unsafe fn reader(
    inner: *mut ffi::sqlite3_file,
) -> impl FnMut(&mut [u8], u64) -> std::io::Result<usize> {
    move |buf: &mut [u8], off: u64| {
        let m = unsafe { &*(*inner).pMethods };
        let rc = unsafe {
            (m.xRead.unwrap())(
                inner,
                buf.as_mut_ptr() as *mut c_void,
                buf.len() as c_int,
                off as i64,
            )
        };
        match rc {
            ffi::SQLITE_OK => Ok(buf.len()),
            ffi::SQLITE_IOERR_SHORT_READ => Ok(0),
            rc => Err(std::io::Error::other(format!(
                "read of {} bytes at {off} failed (SQLite code {rc})",
                buf.len()
            ))),
        }
    }
}

unsafe extern "C" fn x_close(f: *mut ffi::sqlite3_file) -> c_int {
    guard(PANIC_RC, || unsafe {
        let w = &mut *(f as *mut WFile);
        let m = &*(*w.inner).pMethods;
        let rc = (m.xClose.unwrap())(w.inner);
        let role = Box::from_raw(w.role);
        w.role = std::ptr::null_mut();
        drop(role);
        rc
    })
}

unsafe extern "C" fn x_read(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    n: c_int,
    off: i64,
) -> c_int {
    unsafe {
        let (_, inner, m) = parts(f);
        (m.xRead.unwrap())(inner, buf, n, off)
    }
}

unsafe extern "C" fn x_write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    n: c_int,
    off: i64,
) -> c_int {
    guard(PANIC_RC, || unsafe {
        let (role, inner, m) = parts(f);
        let Role::Wal(db) = role else {
            return (m.xWrite.unwrap())(inner, buf, n, off);
        };
        let data = std::slice::from_raw_parts(buf as *const u8, n as usize);
        db.before_wal_write(off as u64, data, &mut reader(inner));
        let rc = (m.xWrite.unwrap())(inner, buf, n, off);
        if rc == ffi::SQLITE_OK {
            db.after_wal_write(WalHandle(f as usize), off as u64, data, &mut reader(inner));
        }
        rc
    })
}

unsafe extern "C" fn x_truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    guard(PANIC_RC, || unsafe {
        let (role, inner, m) = parts(f);
        if let Role::Wal(db) = role {
            db.before_wal_truncate(size as u64, &mut reader(inner));
        }
        (m.xTruncate.unwrap())(inner, size)
    })
}

unsafe extern "C" fn x_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    guard(PANIC_RC, || unsafe {
        let (role, inner, m) = parts(f);
        let rc = match role {
            Role::Wal(_) if crate::failpoint::fails("wal.sync") => ffi::SQLITE_IOERR_FSYNC,
            _ => (m.xSync.unwrap())(inner, flags),
        };
        if let Role::Wal(db) = role {
            db.wal_synced(WalHandle(f as usize), rc == ffi::SQLITE_OK);
        }
        rc
    })
}

unsafe extern "C" fn x_file_size(f: *mut ffi::sqlite3_file, out: *mut i64) -> c_int {
    unsafe {
        let (_, inner, m) = parts(f);
        (m.xFileSize.unwrap())(inner, out)
    }
}

unsafe extern "C" fn x_lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(PANIC_RC, || unsafe {
        let (role, inner, m) = parts(f);
        // An application connection wants the database to itself (leaving WAL mode, or its
        // last close checkpointing and deleting the WAL): walrust's own connections let go.
        if let (Role::Main(db, Some(_)), ffi::SQLITE_LOCK_EXCLUSIVE) = (role, level) {
            db.before_exclusive_lock();
        }
        (m.xLock.unwrap())(inner, level)
    })
}

unsafe extern "C" fn x_unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    unsafe {
        let (_, inner, m) = parts(f);
        (m.xUnlock.unwrap())(inner, level)
    }
}

unsafe extern "C" fn x_check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    unsafe {
        let (_, inner, m) = parts(f);
        (m.xCheckReservedLock.unwrap())(inner, out)
    }
}

unsafe extern "C" fn x_file_control(
    f: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    guard(PANIC_RC, || unsafe {
        let (role, inner, m) = parts(f);
        if let (Role::Main(..), ffi::SQLITE_FCNTL_PDB) = (role, op) {
            (*(f as *mut WFile)).conn = *(arg as *mut *mut ffi::sqlite3);
        }
        if let (Role::Main(db, _), ffi::SQLITE_FCNTL_PRAGMA) = (role, op) {
            let args = arg as *mut *mut c_char;
            let name = cstr(*args.add(1)).unwrap_or("");
            let value = cstr(*args.add(2));
            match db.pragma(name, value, &mut reader(inner)) {
                PragmaOutcome::NotOurs => {}
                PragmaOutcome::Value(None) => return ffi::SQLITE_OK,
                PragmaOutcome::Value(Some(v)) => {
                    *args = sqlite_string(&v);
                    return ffi::SQLITE_OK;
                }
                PragmaOutcome::Error(msg) => {
                    *args = sqlite_string(&msg);
                    return ffi::SQLITE_ERROR;
                }
            }
        }
        (m.xFileControl.unwrap())(inner, op, arg)
    })
}

unsafe extern "C" fn x_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (_, inner, m) = parts(f);
        (m.xSectorSize.unwrap())(inner)
    }
}

unsafe extern "C" fn x_device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (_, inner, m) = parts(f);
        (m.xDeviceCharacteristics.unwrap())(inner)
    }
}

unsafe extern "C" fn x_shm_map(
    f: *mut ffi::sqlite3_file,
    pg: c_int,
    sz: c_int,
    extend: c_int,
    pp: *mut *mut c_void,
) -> c_int {
    unsafe {
        let (_, inner, m) = parts(f);
        match (m.iVersion >= 2, m.xShmMap) {
            (true, Some(x)) => x(inner, pg, sz, extend, pp),
            _ => ffi::SQLITE_IOERR,
        }
    }
}

unsafe extern "C" fn x_shm_lock(
    f: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    guard(PANIC_RC, || unsafe {
        let (role, inner, m) = parts(f);
        let Some(x) = m.xShmLock.filter(|_| m.iVersion >= 2) else {
            return ffi::SQLITE_IOERR;
        };
        // Slot 0 is SQLite's WAL write lock, slot 1 its checkpointer lock.
        let write_lock = offset == 0 && flags & ffi::SQLITE_SHM_EXCLUSIVE != 0;
        let gated = offset <= 1 && n == 1 && flags & ffi::SQLITE_SHM_EXCLUSIVE != 0;
        if let (Role::Main(db, _), true) = (role, write_lock && flags & ffi::SQLITE_SHM_UNLOCK != 0)
        {
            db.write_lock_releasing();
        }
        let lock_request = flags & ffi::SQLITE_SHM_LOCK != 0;
        let gate = |db: &'static Database| match offset {
            0 => db.writer_gate(),
            _ => db.checkpointer_gate(),
        };
        let rc = match role {
            Role::Main(db, None) if gated && lock_request => {
                // One of walrust's own connections: announced first, so that an application
                // connection it makes busy knows to wait (`LockGate`).
                gate(db).asking();
                let rc = x(inner, offset, n, flags);
                if rc == ffi::SQLITE_OK {
                    gate(db).took();
                    if offset == 1 {
                        // Tests widen the checkpoint thread's hold here.
                        crate::failpoint::hit("checkpoint.internal");
                    }
                } else {
                    gate(db).in_vain();
                }
                rc
            }
            Role::Main(db, Some(_)) if gated && lock_request => {
                waiting_out_walrust(gate(db), || x(inner, offset, n, flags))
            }
            _ => x(inner, offset, n, flags),
        };
        if let (Role::Main(db, None), true) = (role, gated && !lock_request) {
            gate(db).released();
        }
        let recovering = (1..=2).contains(&offset) && offset + n == 3;
        if let (Role::Main(_, None), true, ffi::SQLITE_OK) = (role, recovering, rc) {
            if flags & ffi::SQLITE_SHM_LOCK != 0 && flags & ffi::SQLITE_SHM_EXCLUSIVE != 0 {
                // One of walrust's own connections recovers the WAL index (SQLite locks the
                // slots below the read locks for that, the write lock already held): tests
                // widen the window here.
                crate::failpoint::hit("recovery.internal");
            }
        }
        // Slots 3 to 7 are SQLite's WAL read locks: a connection holds one only once the WAL
        // index is valid (recovered, if it had to be).
        let read_lock = (3..=7).contains(&offset) && flags & ffi::SQLITE_SHM_LOCK != 0;
        if let (Role::Main(db, Some(_)), true, ffi::SQLITE_OK) = (role, read_lock, rc) {
            db.app_read_index();
        }
        let taken = write_lock && flags & ffi::SQLITE_SHM_LOCK != 0 && rc == ffi::SQLITE_OK;
        if let (Role::Main(db, app), true) = (role, taken) {
            db.write_lock_taken(app.is_some());
            let w = &mut *(f as *mut WFile);
            if !w.hooked && !w.conn.is_null() && db.replication().is_some() {
                // SQLite installs its own automatic-checkpoint hook after extensions run at
                // open, so ours goes in at the connection's first write.
                super::entry::install_wal_hook_raw(w.conn);
                w.hooked = true;
            }
        }
        rc
    })
}

/// An application connection asks for the WAL write lock or the checkpointer lock: if one of
/// walrust's own connections in this process has it, waits for it to let go and asks again
/// (`LockGate`), so that walrust never makes a writer without a busy timeout fail with
/// "database is locked", nor an application's checkpoint report busy.
fn waiting_out_walrust(gate: &LockGate, mut ask: impl FnMut() -> c_int) -> c_int {
    let mut rc = ffi::SQLITE_OK;
    gate.ask(|| {
        rc = ask();
        rc == ffi::SQLITE_BUSY
    });
    rc
}

unsafe extern "C" fn x_shm_barrier(f: *mut ffi::sqlite3_file) {
    unsafe {
        let (_, inner, m) = parts(f);
        if let (true, Some(x)) = (m.iVersion >= 2, m.xShmBarrier) {
            x(inner)
        }
    }
}

unsafe extern "C" fn x_shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    unsafe {
        let (_, inner, m) = parts(f);
        match (m.iVersion >= 2, m.xShmUnmap) {
            (true, Some(x)) => x(inner, delete),
            _ => ffi::SQLITE_OK,
        }
    }
}

unsafe extern "C" fn x_fetch(
    f: *mut ffi::sqlite3_file,
    off: i64,
    n: c_int,
    pp: *mut *mut c_void,
) -> c_int {
    unsafe {
        let (_, inner, m) = parts(f);
        match (m.iVersion >= 3, m.xFetch) {
            (true, Some(x)) => x(inner, off, n, pp),
            _ => {
                *pp = std::ptr::null_mut();
                ffi::SQLITE_OK
            }
        }
    }
}

unsafe extern "C" fn x_unfetch(f: *mut ffi::sqlite3_file, off: i64, p: *mut c_void) -> c_int {
    unsafe {
        let (_, inner, m) = parts(f);
        match (m.iVersion >= 3, m.xUnfetch) {
            (true, Some(x)) => x(inner, off, p),
            _ => ffi::SQLITE_OK,
        }
    }
}
