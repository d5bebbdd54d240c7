//! Failpoints: named places in the upload and commit protocols where a test can make the
//! process die at once, as `kill -9` would (SPEC 6: a kill at any step of an upload).
//!
//! Compiled in only with the `failpoints` feature (`make test` builds a second extension with
//! it); without it `hit` is an empty inline function. With it, `WALRUST_FAILPOINTS=a,b` names
//! the points that abort the process (`std::process::abort`: no destructor, no buffered write,
//! no exit handler runs), and `WALRUST_FAILPOINTS=name@N` aborts at the N-th hit.
//! `WALRUST_FAILPOINTS=name~MS` sleeps MS milliseconds there instead, at every hit: it widens a
//! window a race needs (another process's commit between two steps) so a test can hit it.
//! `WALRUST_FAILPOINTS=name!N` makes the N-th call of `fails(name)` return true: an I/O call
//! there fails as a failing disk would make it (`wal.sync`: the WAL's fsync).
//! Where the code asks `millis(name)`, `name~MS` sets a duration instead (`recovery.grace`:
//! how long walrust leaves the first read after an open to the application).

/// Dies here if the test asked for it (see the module doc).
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    static HITS: once_cell::sync::Lazy<std::sync::Mutex<std::collections::HashMap<String, u64>>> =
        once_cell::sync::Lazy::new(Default::default);
    let Ok(spec) = std::env::var("WALRUST_FAILPOINTS") else {
        return;
    };
    for item in spec.split(',').map(str::trim) {
        if let Some((point, ms)) = item.split_once('~') {
            if point == name {
                std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
            }
            continue;
        }
        let (point, nth) = match item.split_once('@') {
            Some((p, n)) => (p, n.parse().unwrap_or(1)),
            None => (item, 1),
        };
        if point != name {
            continue;
        }
        let mut hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
        let n = hits.entry(name.to_string()).or_insert(0);
        *n += 1;
        if *n == nth {
            eprintln!("walrust: failpoint {name} hit: aborting");
            std::process::abort();
        }
    }
}

/// True when the test asked this call to fail (see the module doc).
#[cfg(feature = "failpoints")]
pub fn fails(name: &str) -> bool {
    static CALLS: once_cell::sync::Lazy<std::sync::Mutex<std::collections::HashMap<String, u64>>> =
        once_cell::sync::Lazy::new(Default::default);
    let Ok(spec) = std::env::var("WALRUST_FAILPOINTS") else {
        return false;
    };
    for item in spec.split(',').map(str::trim) {
        let Some((point, nth)) = item.split_once('!') else {
            continue;
        };
        if point != name {
            continue;
        }
        let mut calls = CALLS.lock().unwrap_or_else(|e| e.into_inner());
        let n = calls.entry(name.to_string()).or_insert(0);
        *n += 1;
        if *n == nth.parse().unwrap_or(1) {
            eprintln!("walrust: failpoint {name}: this call fails");
            return true;
        }
    }
    false
}

/// The duration a test set for `name` (`name~MS`), if any (see the module doc).
#[cfg(feature = "failpoints")]
pub fn millis(name: &str) -> Option<u64> {
    let spec = std::env::var("WALRUST_FAILPOINTS").ok()?;
    spec.split(',')
        .filter_map(|item| item.trim().split_once('~'))
        .find(|(point, _)| *point == name)
        .and_then(|(_, ms)| ms.parse().ok())
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn millis(_name: &str) -> Option<u64> {
    None
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn fails(_name: &str) -> bool {
    false
}
