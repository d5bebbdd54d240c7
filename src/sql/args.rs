//! Reading SQL function arguments with messages that name the function and the argument:
//! `walrust: walrust_sync: timeout_ms (argument 2) must be an integer ..., not text 'x'`.

use super::err;
use rusqlite::functions::Context;
use rusqlite::types::ValueRef;

/// What a value is, for a message: `text 'x'`, `a BLOB`, `the real 1.5`.
fn describe(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(n) => format!("the integer {n}"),
        ValueRef::Real(r) => format!("the real {r}"),
        ValueRef::Text(t) => format!("text '{}'", String::from_utf8_lossy(t)),
        ValueRef::Blob(_) => "a BLOB".into(),
    }
}

/// Argument `i` (0-based) of `func`, called `name` in messages; `None` when absent or NULL.
pub(super) fn text(
    ctx: &Context<'_>,
    i: usize,
    func: &str,
    name: &str,
) -> rusqlite::Result<Option<String>> {
    if ctx.len() <= i {
        return Ok(None);
    }
    match ctx.get_raw(i) {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map(|s| Some(s.to_string()))
            .map_err(|_| err(format!("{func}: {name} (argument {}) is not UTF-8", i + 1))),
        v => Err(err(format!(
            "{func}: {name} (argument {}) must be text, not {}",
            i + 1,
            describe(v)
        ))),
    }
}

/// A required text argument.
pub(super) fn required_text(
    ctx: &Context<'_>,
    i: usize,
    func: &str,
    name: &str,
) -> rusqlite::Result<String> {
    text(ctx, i, func, name)?.ok_or_else(|| {
        err(format!(
            "{func}: {name} (argument {}) is required and must be text",
            i + 1
        ))
    })
}

/// An integer argument that is 0 or more (a timeout in milliseconds); `None` when absent or
/// NULL. Text holding a decimal integer is accepted, as SQLite's own functions do.
pub(super) fn non_negative(
    ctx: &Context<'_>,
    i: usize,
    func: &str,
    name: &str,
) -> rusqlite::Result<Option<i64>> {
    if ctx.len() <= i {
        return Ok(None);
    }
    let v = ctx.get_raw(i);
    let n = match v {
        ValueRef::Null => return Ok(None),
        ValueRef::Integer(n) => Some(n),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.trim().parse().ok()),
        _ => None,
    };
    match n {
        Some(n) if n >= 0 => Ok(Some(n)),
        _ => Err(err(format!(
            "{func}: {name} (argument {}) must be an integer, 0 or more, not {}",
            i + 1,
            describe(v)
        ))),
    }
}
