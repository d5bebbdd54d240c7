//! Reading a database file without `std::fs::File`, which would be wrong: closing any
//! descriptor of a file drops every POSIX lock this process holds on it, including the
//! application's. `MainFile` borrows the handle a connection already has
//! (`SQLITE_FCNTL_FILE_POINTER`): the snapshot reads pages through its own reader connection,
//! so it opens no descriptor beyond that connection's.

use rusqlite::ffi;
use std::ffi::c_void;
use std::io;

/// The main database file of an open connection, read through that connection's own handle.
/// Borrowing the connection keeps the handle open, and the connection's thread is the only one
/// using either.
pub struct MainFile<'c> {
    file: *mut ffi::sqlite3_file,
    _conn: std::marker::PhantomData<&'c rusqlite::Connection>,
}

impl<'c> MainFile<'c> {
    pub fn of(conn: &'c rusqlite::Connection) -> io::Result<MainFile<'c>> {
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        // SAFETY: the connection is open for 'c; the file control writes one pointer, which
        // stays valid while the connection is open.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_FILE_POINTER,
                &mut file as *mut *mut ffi::sqlite3_file as *mut c_void,
            )
        };
        // SAFETY: checked non-null first; pMethods is set while the file is open.
        if rc != ffi::SQLITE_OK || file.is_null() || unsafe { (*file).pMethods.is_null() } {
            return Err(io::Error::other(format!(
                "cannot reach the database file of walrust's connection (SQLite code {rc})"
            )));
        }
        Ok(MainFile {
            file,
            _conn: std::marker::PhantomData,
        })
    }

    /// Reads at `off`; a read past the end is short (returns 0, the buffer zeroed).
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        // SAFETY: `file` is the open main file of the borrowed connection.
        unsafe { super::io::reader(self.file)(buf, off) }
    }
}
