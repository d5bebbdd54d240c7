//! The `walrust` VFS object: registration, `xOpen`/`xDelete`, and plain forwarding of every other
//! VFS method to the VFS it wraps (the process's default VFS when walrust was loaded).

use super::io::{WFile, INNER_OFFSET, IO_METHODS};
use super::{cstr, guard, PANIC_RC};
use crate::database::{self, Role};
use once_cell::sync::OnceCell;
use rusqlite::ffi;
use std::ffi::{c_char, c_int, c_void};

struct Registered {
    inner: *mut ffi::sqlite3_vfs,
}
// SAFETY: both VFS objects live for the life of the process and SQLite's VFS methods are
// thread-safe (the wrapped VFS is the default one, used by every thread already).
unsafe impl Send for Registered {}
unsafe impl Sync for Registered {}

static REGISTERED: OnceCell<Registered> = OnceCell::new();

pub(super) fn inner() -> *mut ffi::sqlite3_vfs {
    REGISTERED.get().expect("walrust VFS registered").inner
}

pub(super) const VFS_NAME: &[u8] = b"walrust\0";

/// Registers the `walrust` VFS as the default, wrapping the current default. Idempotent; a
/// later call makes it the default again if it no longer is (`sqlite3_shutdown` and
/// `sqlite3_initialize` make the OS's VFS the default again).
pub(super) fn register() -> Result<(), String> {
    register_once()?;
    // SAFETY: registered VFS structs live for the life of the process.
    unsafe {
        let ours = ffi::sqlite3_vfs_find(VFS_NAME.as_ptr() as *const c_char);
        if !ours.is_null() && ffi::sqlite3_vfs_find(std::ptr::null()) != ours {
            let rc = ffi::sqlite3_vfs_register(ours, 1);
            if rc != ffi::SQLITE_OK {
                return Err(format!("walrust: sqlite3_vfs_register failed ({rc})"));
            }
        }
    }
    Ok(())
}

fn register_once() -> Result<(), String> {
    REGISTERED
        .get_or_try_init(|| unsafe {
            let existing = ffi::sqlite3_vfs_find(VFS_NAME.as_ptr() as *const c_char);
            if !existing.is_null() {
                // Loaded before by another copy of the library: use its registration as is.
                let inner = (*existing).pAppData as *mut ffi::sqlite3_vfs;
                return Ok(Registered { inner });
            }
            let inner = ffi::sqlite3_vfs_find(std::ptr::null());
            if inner.is_null() {
                return Err("walrust: no default VFS to wrap".to_string());
            }
            let ours = Box::leak(Box::new(vfs_struct(&*inner)));
            let rc = ffi::sqlite3_vfs_register(ours, 1);
            if rc != ffi::SQLITE_OK {
                return Err(format!("walrust: sqlite3_vfs_register failed ({rc})"));
            }
            Ok(Registered { inner })
        })
        .map(|_| ())
}

fn vfs_struct(inner: &ffi::sqlite3_vfs) -> ffi::sqlite3_vfs {
    ffi::sqlite3_vfs {
        iVersion: inner.iVersion.min(3),
        szOsFile: (INNER_OFFSET + inner.szOsFile as usize) as c_int,
        mxPathname: inner.mxPathname,
        pNext: std::ptr::null_mut(),
        zName: VFS_NAME.as_ptr() as *const c_char,
        pAppData: inner as *const _ as *mut c_void,
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: Some(x_dl_open),
        xDlError: Some(x_dl_error),
        xDlSym: Some(x_dl_sym),
        xDlClose: Some(x_dl_close),
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: inner.xCurrentTimeInt64.map(|_| x_current_time_int64 as _),
        xSetSystemCall: inner.xSetSystemCall.map(|_| x_set_system_call as _),
        xGetSystemCall: inner.xGetSystemCall.map(|_| x_get_system_call as _),
        xNextSystemCall: inner.xNextSystemCall.map(|_| x_next_system_call as _),
    }
}

unsafe fn iv() -> &'static ffi::sqlite3_vfs {
    unsafe { &*inner() }
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    guard(PANIC_RC, || unsafe {
        let w = file as *mut WFile;
        (*w).base.pMethods = std::ptr::null();
        let inner_file = (file as *mut u8).add(INNER_OFFSET) as *mut ffi::sqlite3_file;
        (*inner_file).pMethods = std::ptr::null();
        let rc = (iv().xOpen.unwrap())(inner(), name, inner_file, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            if !(*inner_file).pMethods.is_null() {
                ((*(*inner_file).pMethods).xClose.unwrap())(inner_file);
            }
            return rc;
        }
        let path = cstr(name);
        let role = if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
            let uri = |key: &str| -> Option<String> {
                let k = std::ffi::CString::new(key).ok()?;
                cstr(ffi::sqlite3_uri_parameter(name, k.as_ptr())).map(str::to_string)
            };
            path.map_or(Role::Other, |p| {
                database::open_main(p, &uri, &mut super::io::reader(inner_file))
            })
        } else if flags & ffi::SQLITE_OPEN_WAL != 0 {
            path.map_or(Role::Other, database::open_wal)
        } else {
            Role::Other
        };
        (*w).inner = inner_file;
        (*w).conn = std::ptr::null_mut();
        (*w).hooked = false;
        (*w).role = Box::into_raw(Box::new(role));
        (*w).base.pMethods = &IO_METHODS;
        if let Role::Wal(db) = &*(*w).role {
            db.wal_opened(&mut super::io::reader(inner_file));
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_delete(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    guard(PANIC_RC, || unsafe {
        if let Some(path) = cstr(name) {
            database::before_delete(path);
        }
        (iv().xDelete.unwrap())(inner(), name, sync_dir)
    })
}

unsafe extern "C" fn x_access(
    _v: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    unsafe { (iv().xAccess.unwrap())(inner(), name, flags, out) }
}

unsafe extern "C" fn x_full_pathname(
    _v: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    unsafe { (iv().xFullPathname.unwrap())(inner(), name, n, out) }
}

unsafe extern "C" fn x_dl_open(_v: *mut ffi::sqlite3_vfs, name: *const c_char) -> *mut c_void {
    unsafe { (iv().xDlOpen.unwrap())(inner(), name) }
}

unsafe extern "C" fn x_dl_error(_v: *mut ffi::sqlite3_vfs, n: c_int, msg: *mut c_char) {
    unsafe { (iv().xDlError.unwrap())(inner(), n, msg) }
}

type DlSym = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char);

unsafe extern "C" fn x_dl_sym(
    _v: *mut ffi::sqlite3_vfs,
    h: *mut c_void,
    sym: *const c_char,
) -> Option<DlSym> {
    unsafe { (iv().xDlSym.unwrap())(inner(), h, sym) }
}

unsafe extern "C" fn x_dl_close(_v: *mut ffi::sqlite3_vfs, h: *mut c_void) {
    unsafe { (iv().xDlClose.unwrap())(inner(), h) }
}

unsafe extern "C" fn x_randomness(_v: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    unsafe { (iv().xRandomness.unwrap())(inner(), n, out) }
}

unsafe extern "C" fn x_sleep(_v: *mut ffi::sqlite3_vfs, us: c_int) -> c_int {
    unsafe { (iv().xSleep.unwrap())(inner(), us) }
}

unsafe extern "C" fn x_current_time(_v: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    unsafe { (iv().xCurrentTime.unwrap())(inner(), out) }
}

unsafe extern "C" fn x_get_last_error(
    _v: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    unsafe { (iv().xGetLastError.unwrap())(inner(), n, out) }
}

unsafe extern "C" fn x_current_time_int64(
    _v: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    unsafe { (iv().xCurrentTimeInt64.unwrap())(inner(), out) }
}

unsafe extern "C" fn x_set_system_call(
    _v: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    f: ffi::sqlite3_syscall_ptr,
) -> c_int {
    unsafe { (iv().xSetSystemCall.unwrap())(inner(), name, f) }
}

unsafe extern "C" fn x_get_system_call(
    _v: *mut ffi::sqlite3_vfs,
    name: *const c_char,
) -> ffi::sqlite3_syscall_ptr {
    unsafe { (iv().xGetSystemCall.unwrap())(inner(), name) }
}

unsafe extern "C" fn x_next_system_call(
    _v: *mut ffi::sqlite3_vfs,
    name: *const c_char,
) -> *const c_char {
    unsafe { (iv().xNextSystemCall.unwrap())(inner(), name) }
}
