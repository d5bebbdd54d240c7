//! A read-only handle on a database file opened through the wrapped VFS, for the snapshot
//! reader. Reading the database with `std::fs::File` would be wrong: closing any descriptor of a
//! file drops every POSIX lock this process holds on it, including the application's. The
//! default unix VFS shares descriptors per inode and defers such closes, so we go through it.

use super::methods::inner;
use rusqlite::ffi;
use std::ffi::{c_int, c_void, CString};
use std::io;
use std::path::Path;

pub struct RawFile {
    mem: Vec<u64>,
    name: *mut std::ffi::c_char,
}

// SAFETY: the handle is used by one thread at a time (it is moved, never shared), and the unix
// VFS's file objects may be used from any thread.
unsafe impl Send for RawFile {}

impl RawFile {
    fn file(&self) -> *mut ffi::sqlite3_file {
        self.mem.as_ptr() as *mut ffi::sqlite3_file
    }

    /// Opens a main database file for reading, without taking any lock.
    pub fn open_db_readonly(path: &Path) -> io::Result<RawFile> {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        unsafe {
            let vfs = &*inner();
            // A filename in SQLite's own format (with the zero bytes before it that URI lookups
            // expect), valid for as long as the file is open.
            let name = ffi::sqlite3_create_filename(
                c.as_ptr(),
                c"".as_ptr(),
                c"".as_ptr(),
                0,
                std::ptr::null_mut(),
            );
            if name.is_null() {
                return Err(io::Error::other("out of memory"));
            }
            let words = (vfs.szOsFile as usize).div_ceil(8);
            let raw = RawFile {
                mem: vec![0u64; words],
                name,
            };
            let mut out: c_int = 0;
            let flags = ffi::SQLITE_OPEN_READONLY | ffi::SQLITE_OPEN_MAIN_DB;
            let rc = (vfs.xOpen.unwrap())(inner(), name, raw.file(), flags, &mut out);
            if rc != ffi::SQLITE_OK {
                (*raw.file()).pMethods = std::ptr::null();
                return Err(io::Error::other(format!(
                    "cannot open {} (SQLite code {rc})",
                    path.display()
                )));
            }
            Ok(raw)
        }
    }

    /// Reads at `off`; a read past the end is short (returns fewer bytes, the rest zeroed).
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        unsafe {
            let f = self.file();
            let m = &*(*f).pMethods;
            let rc = (m.xRead.unwrap())(
                f,
                buf.as_mut_ptr() as *mut c_void,
                buf.len() as c_int,
                off as i64,
            );
            match rc {
                ffi::SQLITE_OK => Ok(buf.len()),
                ffi::SQLITE_IOERR_SHORT_READ => Ok(0),
                rc => Err(io::Error::other(format!(
                    "database read failed (SQLite code {rc})"
                ))),
            }
        }
    }
}

impl Drop for RawFile {
    fn drop(&mut self) {
        unsafe {
            let f = self.file();
            if !(*f).pMethods.is_null() {
                ((*(*f).pMethods).xClose.unwrap())(f);
            }
            ffi::sqlite3_free_filename(self.name);
        }
    }
}
