//! `walrust watch --config FILE`: Litestream's YAML configuration, read by a small strict
//! parser (no YAML crate):
//!
//! ```yaml
//! snapshot:                # Litestream 0.5's snapshot settings (`snapshot`), or a database's
//!   interval: 1h
//!   retention: 24h
//! dbs:
//!   - path: /path/to/app.db
//!     replicas:            # or `replica:` with one replica, as Litestream 0.5 allows
//!       - url: s3://bucket/app # or Litestream's fields (`replica`)
//!         sync-interval: 1s
//! ```
//!
//! Accepted: block mappings and sequences (space indentation), `#` comments, blank lines,
//! plain, 'single' and "double" quoted scalars, `$VAR` / `${VAR}` in values and `~/` at the
//! start of a path (as Litestream expands them). Its metrics address (`addr`) and heartbeat
//! (`heartbeat-url`, `heartbeat-interval`) are used; its settings of how it runs itself (logs,
//! checkpoint and compaction timers, S3 part size) are accepted and reported as unused
//! (`ignored`). Everything else (another key, flow `[..]`/`{..}`, anchors,
//! tags, block scalars, tabs, more than one replica for a database) is refused with one line
//! naming the line number: a setting walrust would silently ignore is worse than an error.
//!
//! What must hold: `parse` returns each database once, with exactly one replica URL, and one
//! notice for each setting it accepted without using.

mod dir;
mod duration;
pub mod heartbeat;
mod ignored;
mod replica;
mod snapshot;

pub use dir::{covers, find, replica_for, DirScan};
pub use snapshot::Snapshots;

use ignored::Level;

use std::path::{Path, PathBuf};

/// One database of the file, its replica's URL, its upload interval if the file sets one (a
/// replica's `sync-interval`), the access key pair for its replica if the file names one
/// (the replica's own, or the file's top-level one), what the file says of its snapshots, and
/// whether to restore it first when it is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbConfig {
    pub path: PathBuf,
    pub url: String,
    pub sync_interval_ms: Option<u64>,
    pub credentials: Option<KeyPair>,
    pub snapshots: Snapshots,
    /// `restore-if-db-not-exists: true`: restore the database from its replica first when it
    /// is missing.
    pub restore_if_missing: bool,
    /// `dir:` with `pattern:`: `path` is a directory whose databases are replicated, each to
    /// `url` with its path under the directory appended (`dir`).
    pub dir: Option<DirScan>,
}

/// The file's databases, its `exec:` command (the application the watch runs) if it has one,
/// and a line for each setting it holds that walrust does not use.
#[derive(Debug)]
pub struct Config {
    pub dbs: Vec<DbConfig>,
    pub exec: Option<String>,
    /// `addr`: where to serve metrics (`None`: nowhere, as when it is empty).
    pub addr: Option<String>,
    /// `heartbeat-url` and `heartbeat-interval`.
    pub heartbeat: Option<heartbeat::Heartbeat>,
    pub notices: Vec<String>,
}

/// `access-key-id` and `secret-access-key`. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({}, <secret>)", self.id)
    }
}

/// Reads and parses FILE; errors are one line naming it (and the line number).
pub fn load(file: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("walrust: cannot read {}: {e}", file.display()))?;
    parse(&text, &|v| std::env::var(v).ok()).map_err(|e| format!("walrust: {} {e}", file.display()))
}

/// Parses the text of a config file; `env` looks up `$VAR`s.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
    let mut lines = tokenize(text)?;
    let Some(first) = lines.first() else {
        return Err("is empty: it needs a `dbs:` list".into());
    };
    if first.indent != 0 {
        return Err(format!(
            "line {}: the first key must not be indented",
            first.no
        ));
    }
    let mut i = 0;
    let top = node(&mut lines, &mut i, 0)?;
    if let Some(l) = lines.get(i) {
        return Err(format!("line {}: unexpected indentation", l.no));
    }
    let Node::Map(entries, _) = top else {
        return Err("line 1: expected `dbs:`".into());
    };
    let (mut dbs, mut defaults) = (None, replica::Defaults::default());
    let (mut snapshots, mut notices) = (Snapshots::default(), Vec::new());
    let (mut exec, mut addr) = (None, None);
    let mut heartbeat = heartbeat::Keys::default();
    for (key, value, no) in entries {
        match key.as_str() {
            "dbs" => dbs = Some(value),
            "exec" => exec = Some(scalar(value, no, env)?),
            // `addr: ""` is Litestream's way of serving nothing.
            "addr" if matches!(&value, Node::Scalar(s, _) if s.is_empty()) => addr = None,
            "addr" => addr = Some(scalar(value, no, env)?),
            "heartbeat-url" => heartbeat.url = Some((scalar(value, no, env)?, no)),
            "heartbeat-interval" => heartbeat.interval = Some((scalar(value, no, env)?, no)),
            "snapshot" => snapshots.read_block(value, no, env)?,
            "retention" => snapshots.read_removal(value, no, env)?,
            _ if defaults.take(&key, value, no, env)? => {}
            _ => notices.push(unused(&key, no, Level::Top, TOP_LEVEL)?),
        }
    }
    defaults.credentials()?;
    let (heartbeat, said) = heartbeat.read()?;
    notices.extend(said);
    let Some(Node::List(items, _)) = dbs else {
        return Err("needs `dbs:` with a list of `- path: ...` items".into());
    };
    let mut out: Vec<DbConfig> = Vec::new();
    for item in items {
        let db = database(item, env, &defaults, &mut notices)?;
        if out.iter().any(|d| d.path == db.path) {
            return Err(format!("names {} twice", db.path.display()));
        }
        out.push(DbConfig {
            snapshots: db.snapshots.over(snapshots),
            ..db
        });
    }
    if out.is_empty() {
        return Err("lists no database under `dbs:`".into());
    }
    Ok(Config {
        dbs: out,
        exec,
        addr,
        heartbeat,
        notices,
    })
}

/// The notice for a key walrust accepts without using at `level`; an error naming what is
/// `allowed` there for any other.
fn unused(key: &str, no: usize, level: Level, allowed: &str) -> Result<String, String> {
    match ignored::instead(key, level) {
        Some(why) => Ok(ignored::notice(key, no, why)),
        None => Err(unsupported(key, no, allowed)),
    }
}

fn unsupported(key: &str, no: usize, allowed: &str) -> String {
    format!("line {no}: `{key}` is not supported by walrust watch (only {allowed})")
}

/// The keys the file's top level may hold: `dbs`, and Litestream's defaults for every replica.
const TOP_LEVEL: &str = "dbs, exec, addr, heartbeat-url, heartbeat-interval, snapshot, retention, and bucket, endpoint, region, \
    force-path-style, sync-interval, access-key-id, secret-access-key for every replica";

fn database(
    item: Node,
    env: &dyn Fn(&str) -> Option<String>,
    defaults: &replica::Defaults,
    notices: &mut Vec<String>,
) -> Result<DbConfig, String> {
    let Node::Map(entries, at) = item else {
        return Err(format!("line {}: expected `- path: ...`", item.line()));
    };
    let (mut path, mut url, mut snapshots) = (None, None, Snapshots::default());
    let mut restore_if_missing = false;
    let (mut dir, mut pattern, mut recursive, mut watch) = (None, None, None, None);
    for (key, value, no) in entries {
        match key.as_str() {
            "path" => path = Some(scalar(value, no, env)?),
            "dir" => dir = Some(scalar(value, no, env)?),
            "pattern" => pattern = Some(scalar(value, no, env)?),
            "recursive" => recursive = Some((boolean(value, no, env)?, no)),
            "watch" => watch = Some((boolean(value, no, env)?, no)),
            "restore-if-db-not-exists" => restore_if_missing = boolean(value, no, env)?,
            "snapshot" => snapshots.read_block(value, no, env)?,
            "replica" => url = Some(replica::parse(value, no, env, defaults, notices)?),
            "replicas" => {
                let Node::List(items, _) = value else {
                    return Err(format!(
                        "line {no}: `replicas:` needs a list of `- url: ...`"
                    ));
                };
                if items.len() != 1 {
                    return Err(format!(
                        "line {no}: {} replicas; walrust replicates a database to exactly one",
                        items.len()
                    ));
                }
                let r = items.into_iter().next().unwrap();
                url = Some(replica::parse(r, no, env, defaults, notices)?);
            }
            _ => notices.push(unused(
                &key,
                no,
                Level::Db,
                "path, dir, pattern, recursive, watch, snapshot, replica, replicas",
            )?),
        }
    }
    let scan = dir_scan(at, &path, dir.is_some(), pattern, recursive, watch)?;
    let path = path.or(dir).ok_or(format!(
        "line {at}: this database has no `path:` (or `dir:`)"
    ))?;
    // `~/` is the home directory, as Litestream expands it.
    let path = match path.strip_prefix("~/") {
        Some(rest) => {
            let home = env("HOME").ok_or(format!("line {at}: `~/` with HOME not set"))?;
            format!("{}/{rest}", home.trim_end_matches('/'))
        }
        None => path,
    };
    let replica = url.ok_or(format!(
        "line {at}: {path} has no `replica:` or `replicas:`"
    ))?;
    Ok(DbConfig {
        path: PathBuf::from(path),
        url: replica.url,
        sync_interval_ms: replica.sync_interval_ms,
        credentials: replica.credentials,
        snapshots: replica.snapshots.over(snapshots),
        restore_if_missing,
        dir: scan,
    })
}

/// A `dir:` entry's scan, as Litestream checks one: `path` or `dir`, a `pattern` with `dir`,
/// and `pattern`, `recursive`, `watch` only with it.
fn dir_scan(
    at: usize,
    path: &Option<String>,
    dir: bool,
    pattern: Option<String>,
    recursive: Option<(bool, usize)>,
    watch: Option<(bool, usize)>,
) -> Result<Option<DirScan>, String> {
    if path.is_some() && dir {
        return Err(format!(
            "line {at}: give a database `path:` or a directory `dir:`, not both"
        ));
    }
    if !dir {
        if let Some(no) = recursive.map(|r| r.1).or(watch.map(|w| w.1)) {
            return Err(format!("line {no}: `recursive` and `watch` go with `dir:`"));
        }
        if pattern.is_some() {
            return Err(format!("line {at}: `pattern` goes with `dir:`"));
        }
        return Ok(None);
    }
    let pattern = pattern.ok_or(format!(
        "line {at}: `dir:` needs a `pattern:` of file names, such as \"*.db\""
    ))?;
    Ok(Some(DirScan {
        pattern,
        recursive: recursive.is_some_and(|r| r.0),
        watch: watch.is_some_and(|w| w.0),
    }))
}

/// `true` or `false`, as YAML writes them.
fn boolean(value: Node, no: usize, env: &dyn Fn(&str) -> Option<String>) -> Result<bool, String> {
    match scalar(value, no, env)?.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("line {no}: `{other}` is not true or false")),
    }
}

fn scalar(value: Node, no: usize, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    match value {
        Node::Scalar(s, no) if !s.is_empty() => expand(&s, no, env),
        _ => Err(format!("line {no}: expected a value")),
    }
}

/// Expands `$VAR` and `${VAR}`; an unset variable is an error.
fn expand(s: &str, no: usize, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let (name, after) = if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or(format!("line {no}: `${{` without `}}`"))?;
            (&r[..end], &r[end + 1..])
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if name.is_empty() {
            return Err(format!("line {no}: `$` without a variable name"));
        }
        let v = env(name).ok_or(format!("line {no}: ${name} is not set"))?;
        out.push_str(&v);
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// A line with content: its number, indentation and text (comments and trailing spaces
/// are still there; `value` takes them off).
#[derive(Debug)]
struct Line {
    no: usize,
    indent: usize,
    text: String,
}

fn tokenize(text: &str) -> Result<Vec<Line>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        let body = raw.trim_start_matches(' ');
        let indent = raw.len() - body.len();
        if body.starts_with('\t') {
            return Err(format!(
                "line {no}: a tab in the indentation; indent with spaces"
            ));
        }
        let body = body.trim_end();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if body == "---" || body == "..." {
            return Err(format!("line {no}: one document only, without `---`"));
        }
        out.push(Line {
            no,
            indent,
            text: body.to_string(),
        });
    }
    Ok(out)
}

#[derive(Debug)]
enum Node {
    Scalar(String, usize),
    Map(Vec<(String, Node, usize)>, usize),
    List(Vec<Node>, usize),
    /// A key with nothing after it and nothing indented under it.
    Null(usize),
}

impl Node {
    fn line(&self) -> usize {
        match self {
            Node::Scalar(_, n) | Node::Map(_, n) | Node::List(_, n) | Node::Null(n) => *n,
        }
    }
}

fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// `key: rest` when the line starts with a plain key.
fn split_key(text: &str) -> Option<(&str, &str)> {
    let end = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))?;
    let (key, rest) = text.split_at(end);
    let rest = rest.strip_prefix(':')?;
    (!key.is_empty() && (rest.is_empty() || rest.starts_with(' ')))
        .then(|| (key, rest.trim_start()))
}

/// The block that starts at line `i` with indentation `indent`.
fn node(lines: &mut [Line], i: &mut usize, indent: usize) -> Result<Node, String> {
    let l = &lines[*i];
    if is_item(&l.text) {
        list(lines, i, indent)
    } else if split_key(&l.text).is_some() {
        map(lines, i, indent)
    } else {
        let n = l.no;
        *i += 1;
        Ok(Node::Scalar(value(&lines[*i - 1].text, n)?, n))
    }
}

fn map(lines: &mut [Line], i: &mut usize, indent: usize) -> Result<Node, String> {
    let start = lines[*i].no;
    let mut entries: Vec<(String, Node, usize)> = Vec::new();
    while *i < lines.len() && lines[*i].indent == indent && !is_item(&lines[*i].text) {
        let no = lines[*i].no;
        let text = lines[*i].text.clone();
        let (key, rest) = split_key(&text).ok_or(format!("line {no}: expected `key: value`"))?;
        if entries.iter().any(|(k, _, _)| k == key) {
            return Err(format!("line {no}: `{key}` appears twice"));
        }
        *i += 1;
        let child = if !rest.is_empty() && !rest.starts_with('#') {
            Node::Scalar(value(rest, no)?, no)
        } else {
            match lines.get(*i) {
                Some(n) if n.indent > indent => {
                    let ind = n.indent;
                    node(lines, i, ind)?
                }
                // YAML lets a list under a key start at the key's own indentation.
                Some(n) if n.indent == indent && is_item(&n.text) => list(lines, i, indent)?,
                _ => Node::Null(no),
            }
        };
        entries.push((key.to_string(), child, no));
    }
    end_of_block(lines, *i, indent)?;
    Ok(Node::Map(entries, start))
}

fn list(lines: &mut [Line], i: &mut usize, indent: usize) -> Result<Node, String> {
    let start = lines[*i].no;
    let mut items = Vec::new();
    while *i < lines.len() && lines[*i].indent == indent && is_item(&lines[*i].text) {
        let no = lines[*i].no;
        let after = &lines[*i].text[1..];
        let rest = after.trim_start();
        if rest.is_empty() || rest.starts_with('#') {
            *i += 1;
            match lines.get(*i) {
                Some(n) if n.indent > indent => {
                    let ind = n.indent;
                    items.push(node(lines, i, ind)?);
                }
                _ => items.push(Node::Null(no)),
            }
            continue;
        }
        // `- key: value`: the item's block starts on this line, at the key's column.
        let col = indent + 1 + (after.len() - rest.len());
        lines[*i] = Line {
            no,
            indent: col,
            text: rest.to_string(),
        };
        items.push(node(lines, i, col)?);
    }
    end_of_block(lines, *i, indent)?;
    Ok(Node::List(items, start))
}

/// After a block at `indent`, the next line must go back out (or the file end).
fn end_of_block(lines: &[Line], i: usize, indent: usize) -> Result<(), String> {
    match lines.get(i) {
        Some(l) if l.indent > indent => Err(format!("line {}: unexpected indentation", l.no)),
        Some(l) if l.indent == indent => Err(format!(
            "line {}: a list item and a `key:` mixed at the same indentation",
            l.no
        )),
        _ => Ok(()),
    }
}

/// A scalar: plain (up to a ` #` comment) or quoted; flow collections, anchors, aliases,
/// tags and block scalars are refused.
fn value(text: &str, no: usize) -> Result<String, String> {
    let text = text.trim();
    let mut chars = text.chars();
    match chars.next() {
        Some('"') => quoted(&text[1..], '"', no),
        Some('\'') => quoted(&text[1..], '\'', no),
        Some(c) if "[]{}&*!|>%@`,".contains(c) => Err(format!(
            "line {no}: `{c}` starts YAML this reader does not support (flow collections, anchors, tags, block scalars); write a plain or quoted value"
        )),
        _ => {
            let plain = match text.find(" #") {
                Some(at) => text[..at].trim_end(),
                None => text,
            };
            if split_key(plain).is_some() || plain.contains(": ") {
                return Err(format!(
                    "line {no}: a `key: value` where a value was expected (quote it if it is one value)"
                ));
            }
            Ok(plain.to_string())
        }
    }
}

fn quoted(body: &str, q: char, no: usize) -> Result<String, String> {
    let mut out = String::new();
    let mut it = body.char_indices();
    while let Some((at, c)) = it.next() {
        if c == q {
            if q == '\'' && body[at + 1..].starts_with('\'') {
                it.next();
                out.push('\'');
                continue;
            }
            let tail = body[at + 1..].trim_start();
            if !(tail.is_empty() || tail.starts_with('#')) {
                return Err(format!("line {no}: text after the closing quote"));
            }
            return Ok(out);
        }
        if c == '\\' && q == '"' {
            match it.next().map(|(_, e)| e) {
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some('/') => out.push('/'),
                Some('t') => out.push('\t'),
                Some(e) => return Err(format!("line {no}: the escape \\{e} is not supported")),
                None => break,
            }
            continue;
        }
        out.push(c);
    }
    Err(format!("line {no}: a quoted value without its closing {q}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &str) -> Option<String> {
        match v {
            "BUCKET" => Some("mybkt".into()),
            "HOME" => Some("/home/me/".into()),
            _ => None,
        }
    }

    fn ok(text: &str) -> Vec<DbConfig> {
        parse(text, &env)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .dbs
    }

    fn err(text: &str) -> String {
        parse(text, &env).expect_err(text)
    }

    fn db(path: &str, url: &str) -> DbConfig {
        DbConfig {
            path: PathBuf::from(path),
            url: url.to_string(),
            sync_interval_ms: None,
            credentials: None,
            snapshots: Snapshots::default(),
            restore_if_missing: false,
            dir: None,
        }
    }

    #[test]
    fn litestream_forms_parse() {
        let text = "\
# walrust watch --config
dbs:
  - path: /data/app.db   # the app
    replicas:
      - url: s3://bucket/app

  - path: \"/data/two words.db\"
    replica:
      url: 's3://${BUCKET}/it''s'
";
        assert_eq!(
            ok(text),
            vec![
                db("/data/app.db", "s3://bucket/app"),
                db("/data/two words.db", "s3://mybkt/it's"),
            ]
        );
        let flush = "dbs:\n- path: /data/c.db\n  replicas:\n  - url: \"file:///tmp/c\"\n";
        assert_eq!(ok(flush), vec![db("/data/c.db", "file:///tmp/c")]);
        let compact = "dbs:\n- path: a.db\n  replica:\n    url: file:///r/$BUCKET/a\n";
        assert_eq!(ok(compact), vec![db("a.db", "file:///r/mybkt/a")]);
        let home = "dbs:\n  - path: ~/app.db\n    replica:\n      url: s3://b/a\n";
        assert_eq!(ok(home), vec![db("/home/me/app.db", "s3://b/a")]);
    }

    #[test]
    fn litestream_replica_fields_make_the_url() {
        let s3 = "\
dbs:
  - path: /data/app.db
    replicas:
      - type: s3
        bucket: $BUCKET
        path: backups/app db
        endpoint: http://127.0.0.1:9000
        region: us-east-1
        force-path-style: true
        sync-interval: 250ms
";
        assert_eq!(
            ok(s3),
            vec![DbConfig {
                sync_interval_ms: Some(250),
                ..db(
                    "/data/app.db",
                    "s3://mybkt/backups/app%20db?endpoint=http://127.0.0.1:9000&region=us-east-1&force_path_style=true",
                )
            }]
        );
        let file = "dbs:\n  - path: a.db\n    replica:\n      type: file\n      path: /r/a b\n";
        assert_eq!(ok(file), vec![db("a.db", "file:///r/a%20b")]);
        let url_and_options =
            "dbs:\n  - path: a.db\n    replica:\n      url: s3://bkt/a\n      region: eu-west-1\n      sync-interval: 1m\n";
        assert_eq!(
            ok(url_and_options),
            vec![DbConfig {
                sync_interval_ms: Some(60_000),
                ..db("a.db", "s3://bkt/a?region=eu-west-1")
            }]
        );
    }

    #[test]
    fn access_keys_of_the_file_or_of_a_replica() {
        let text = "\
access-key-id: GLOBAL
secret-access-key: ${BUCKET}
dbs:
  - path: /a.db
    replica:
      url: s3://bkt/a
  - path: /b.db
    replica:
      url: s3://bkt/b
      access-key-id: OWN
      secret-access-key: own-secret
";
        let dbs = ok(text);
        let pair = |id: &str, secret: &str| {
            Some(KeyPair {
                id: id.into(),
                secret: secret.into(),
            })
        };
        assert_eq!(dbs[0].credentials, pair("GLOBAL", "mybkt"));
        assert_eq!(dbs[1].credentials, pair("OWN", "own-secret"));
        assert!(!format!("{dbs:?}").contains("own-secret"));
    }

    #[test]
    fn the_top_level_sets_defaults_for_every_replica() {
        let text = "\
bucket: shared
endpoint: http://127.0.0.1:9000
region: auto
sync-interval: 2s
dbs:
  - path: /a.db
    replica:
      type: s3
      path: a
  - path: /b.db
    replica:
      url: s3://other/b?region=eu-west-1
      sync-interval: 5s
  - path: /c.db
    replica:
      type: file
      path: /r/c
";
        let with = |path: &str, url: &str, ms| DbConfig {
            sync_interval_ms: Some(ms),
            ..db(path, url)
        };
        assert_eq!(
            ok(text),
            vec![
                with(
                    "/a.db",
                    "s3://shared/a?endpoint=http://127.0.0.1:9000&region=auto",
                    2000
                ),
                with(
                    "/b.db",
                    "s3://other/b?endpoint=http://127.0.0.1:9000&region=eu-west-1",
                    5000
                ),
                with("/c.db", "file:///r/c", 2000),
            ]
        );
    }

    #[test]
    fn snapshot_settings_of_the_file_a_database_or_a_replica() {
        let text = "\
snapshot:
  interval: 24h
  retention: 168h
dbs:
  - path: /a.db
    replica:
      url: s3://b/a
  - path: /b.db
    snapshot:
      interval: 1h
    replica:
      url: s3://b/b
  - path: /c.db
    snapshot:
      retention: 90m
    replica:
      url: s3://b/c
      snapshot-interval: 10m
      retention: 72h
";
        let snaps = |interval_s, hours| Snapshots {
            interval_s: Some(interval_s),
            retention_hours: Some(hours),
            removal: None,
        };
        let got: Vec<Snapshots> = ok(text).into_iter().map(|d| d.snapshots).collect();
        assert_eq!(
            got,
            vec![snaps(86_400, 168), snaps(3600, 168), snaps(600, 72)]
        );

        let off = "retention:\n  enabled: false\ndbs:\n  - path: /a.db\n    replica:\n      url: s3://b/a\n";
        let got = ok(off)[0].snapshots;
        assert_eq!(got.removal, Some(false));
        assert!(got.names_removal());
        assert!(
            !ok("dbs:\n  - path: /a.db\n    replica:\n      url: s3://b/a\n")[0]
                .snapshots
                .names_removal()
        );
    }

    #[test]
    fn the_file_may_name_the_application_to_run() {
        let text = "exec: myapp --port \"$BUCKET\"\ndbs:\n  - path: /a.db\n    replica:\n      url: s3://b/a\n";
        let config = parse(text, &env).unwrap();
        assert_eq!(config.exec.as_deref(), Some("myapp --port \"mybkt\""));
    }

    #[test]
    fn a_database_may_be_restored_first_when_missing() {
        let text = "dbs:\n  - path: /a.db\n    restore-if-db-not-exists: true\n    replica:\n      url: s3://b/a\n  - path: /b.db\n    replica:\n      url: s3://b/b\n";
        let got: Vec<bool> = ok(text).iter().map(|d| d.restore_if_missing).collect();
        assert_eq!(got, [true, false]);
    }

    #[test]
    fn litestreams_settings_of_how_it_runs_are_reported_unused() {
        let text = "\
addr: \":9090\"
logging:
  level: debug
levels:
  - interval: 5m
part-size: 10MB
dbs:
  - path: /a.db
    monitor-interval: 1s
    checkpoint-interval: 1m
    replica:
      url: s3://b/a
      validation-interval: 6h
      retention-check-interval: 1h
";
        let config = parse(text, &env).unwrap();
        assert_eq!(config.dbs, vec![db("/a.db", "s3://b/a")]);
        assert_eq!(config.addr.as_deref(), Some(":9090"));
        let lines: Vec<&str> = config
            .notices
            .iter()
            .map(|n| n.split_once(':').unwrap().0)
            .collect();
        assert_eq!(
            lines,
            ["line 2", "line 4", "line 6", "line 9", "line 10", "line 13", "line 14"]
        );
        assert!(config.notices[0].starts_with(
            "line 2: `logging` is Litestream's own and not used: walrust watch writes one line"
        ));
        assert!(config.notices.iter().all(|n| !n.contains('\n')));
    }

    #[test]
    fn a_dir_entry_is_read_as_litestream_reads_it() {
        let env = |_: &str| None;
        let text = "dbs:\n  - dir: /data/tenants\n    pattern: \"*.db\"\n    recursive: true\n    watch: true\n    replica:\n      url: s3://b/t\n";
        let dbs = parse(text, &env).unwrap().dbs;
        assert_eq!(
            dbs,
            vec![DbConfig {
                dir: Some(DirScan {
                    pattern: "*.db".into(),
                    recursive: true,
                    watch: true
                }),
                ..db("/data/tenants", "s3://b/t")
            }]
        );
    }

    #[test]
    fn an_empty_metrics_address_serves_none() {
        let text = "addr: \"\"\ndbs:\n  - path: /a.db\n    replica:\n      url: s3://b/a\n";
        assert_eq!(parse(text, &env).unwrap().addr, None);
    }

    #[test]
    fn everything_else_is_refused_with_its_line() {
        let two =
            "dbs:\n  - path: a.db\n    replicas:\n      - url: s3://b/a\n      - url: s3://c/a\n";
        assert!(err(two).contains("line 3: 2 replicas"), "{}", err(two));
        let cases = [
            ("dbs:\n  - path: a.db\n    restore-if-db-not-exists: yes\n    replica:\n      url: x\n", "line 3: `yes` is not true or false"),
            ("dbs:\n  - dir: /data\n    replica:\n      url: s3://b/t\n", "line 2: `dir:` needs a `pattern:`"),
            ("dbs:\n  - dir: /data\n    path: /a.db\n    pattern: \"*.db\"\n", "line 2: give a database `path:` or a directory `dir:`"),
            ("dbs:\n  - path: /a.db\n    watch: true\n    replica:\n      url: x\n", "line 3: `recursive` and `watch` go with `dir:`"),
            ("dbs:\n  - path: /a.db\n    pattern: \"*.db\"\n    replica:\n      url: x\n", "line 2: `pattern` goes with `dir:`"),
            ("dbs:\n  - dir: /data\n    pattern: \"*.db\"\n    recursive: maybe\n", "line 4: `maybe` is not true or false"),
            ("dbs:\n  - path: a.db\n    replica:\n      url: s3://b/a\n      age:\n        recipients:\n          - age1x\n", "line 5: `age` is not supported"),
            ("dbs:\n  - path: a.db\n    replica:\n      url: s3://b/a\n      sse-kms-key-id: k\n", "line 5: `sse-kms-key-id` is not supported"),
            ("storage-class: GLACIER\ndbs:\n  - path: a.db\n", "line 1: `storage-class` is not supported"),
            ("skip-verify: true\ndbs:\n  - path: a.db\n", "line 1: `skip-verify` is not supported"),
            ("snapshot:\n  interval: 1h\n  every: 2h\ndbs:\n  - path: a.db\n", "line 3: `every` is not a snapshot setting"),
            ("snapshot:\n  retention: 0s\ndbs:\n  - path: a.db\n", "line 2: retention `0s`"),
            ("snapshot: 1h\ndbs:\n  - path: a.db\n", "line 1: `snapshot:` needs `interval:`"),
            ("retention: 24h\ndbs:\n  - path: a.db\n", "line 1: `retention:` here needs `enabled: true`"),
            ("retention:\n  enabled: no\ndbs:\n  - path: a.db\n", "line 2: `no` is not true or false"),
            ("dbs:\n  - path: a.db\n    replica:\n      type: sftp\n      host: h\n", "line 5: `host` is not supported"),
            ("dbs:\n  - path: a.db\n    replica:\n      type: sftp\n", "line 4: walrust replicates to `s3` or `file`, not `sftp`"),
            ("dbs:\n  - path: a.db\n    replica:\n      type: s3\n      path: a\n", "line 4: an s3 replica needs `bucket:`"),
            ("dbs:\n  - path: a.db\n    replica:\n      type: file\n", "line 4: a file replica needs `path:`"),
            ("dbs:\n  - path: a.db\n    replica:\n      type: file\n      path: /r\n      region: x\n", "line 6: `region` is for an s3 replica"),
            ("dbs:\n  - path: a.db\n    replica:\n      url: s3://b/a\n      bucket: c\n", "line 5: the bucket and path are part of the `url:`"),
            ("dbs:\n  - path: a.db\n    replica:\n      url: s3://b/a\n      type: s3\n", "line 4: give the replica as `url:` or as `type:`"),
            ("dbs:\n  - path: a.db\n    replica:\n      url: s3://bkt/a?region=x\n      region: y\n", "line 4: "),
            ("dbs:\n  - path: a.db\n    replica:\n      type: s3\n      bucket: B!\n", "line 4: "),
            ("dbs:\n  - path: a.db\n    replica:\n      url: s3://b/a\n      sync-interval: 1d\n", "line 5: sync-interval `1d`"),
            ("dbs:\n  - path: a.db\n    replica:\n      url: s3://b/a\n      access-key-id: K\n", "line 5: `access-key-id` without `secret-access-key`"),
            ("secret-access-key: K\ndbs:\n  - path: a.db\n    replica:\n      url: s3://b/a\n", "line 1: `secret-access-key` without `access-key-id`"),
            ("exec:\ndbs:\n  - path: a.db\n", "line 1: expected a value"),
            ("dbs:\n  - path: a.db\n", "line 2: a.db has no `replica:`"),
            ("dbs:\n  - replica:\n      url: x\n", "line 2: this database has no `path:` (or `dir:`)"),
            ("dbs: [a, b]\n", "line 1: `[` starts YAML"),
            ("dbs:\n  - path: &a a.db\n", "line 2: `&` starts YAML"),
            ("dbs:\n\t- path: a.db\n", "line 2: a tab"),
            ("dbs:\n  - path: \"a.db\n", "line 2: a quoted value without"),
            ("dbs:\n  - path: a.db\n      url: x\n", "line 3: unexpected indentation"),
            ("dbs:\n  - path: a.db\n    path: b.db\n", "line 3: `path` appears twice"),
            ("dbs:\n  - path: a.db\n    replica:\n      url: s3://$NOPE/a\n", "line 4: $NOPE is not set"),
            ("dbs:\n  - path: a.db\n    replica:\n      url: x\n  - path: a.db\n    replica:\n      url: y\n", "names a.db twice"),
            ("dbs:\n  - path: a.db\n    replica: s3://b/a\n", "line 3: a replica needs `url: ...`"),
            ("", "is empty"),
            ("dbs:\n", "needs `dbs:` with a list"),
            ("dbs:\n  - path: a: b\n", "line 2: a `key: value` where a value"),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "{text:?}: {got:?} lacks {want:?}");
            assert!(!got.contains('\n'));
        }
    }
}
