//! `dir:` in a database's entry, as Litestream 0.5 reads it: every SQLite database under a
//! directory whose file name matches `pattern` (`recursive: true`: in its subdirectories too)
//! is replicated, each to the entry's replica URL with its path under the directory appended
//! (`s3://bucket/tenants` + `eu/a.db` = `s3://bucket/tenants/eu/a.db`), so one entry covers a
//! directory of tenants. `watch: true` looks again while the watch runs and adds the databases
//! that appear.
//!
//! What must hold: a file is taken only if it starts with SQLite's header (never a `-wal` or
//! `-shm` file, nor walrust's own state in `DB-walrust/`), and each database found gets a
//! replica of its own, derived from its path alone: the same file finds the same replica on
//! every start.

use std::path::{Path, PathBuf};

/// What a `dir:` entry scans for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirScan {
    pub pattern: String,
    pub recursive: bool,
    pub watch: bool,
}

/// Whether `name` matches `pattern` as Go's `filepath.Match` reads one: `*` any run of
/// characters, `?` one, `[a-z]`/`[^a-z]` a class, `\` escapes the next.
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    glob(&p, &n)
}

fn glob(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| glob(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && glob(&p[1..], &n[1..]),
        Some('[') => match (n.first(), class(&p[1..])) {
            (Some(&c), Some((set, rest))) => set(c) && glob(rest, &n[1..]),
            _ => false,
        },
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && glob(&p[2..], &n[1..]),
        Some(&c) => n.first() == Some(&c) && glob(&p[1..], &n[1..]),
    }
}

type Class<'a> = (Box<dyn Fn(char) -> bool + 'a>, &'a [char]);

/// A class after its `[`: the test, and the pattern after its `]` (`None`: unterminated).
fn class(p: &[char]) -> Option<Class<'_>> {
    let (negated, body) = match p.first() {
        Some('^') => (true, &p[1..]),
        _ => (false, p),
    };
    let end = body.iter().skip(1).position(|&c| c == ']')? + 1;
    let end = if body.first() == Some(&']') {
        end
    } else {
        body.iter().position(|&c| c == ']')?
    };
    let items = &body[..end];
    let test = move |c: char| {
        let mut i = 0;
        let mut hit = false;
        while i < items.len() {
            if i + 2 < items.len() && items[i + 1] == '-' {
                hit |= (items[i]..=items[i + 2]).contains(&c);
                i += 3;
            } else {
                hit |= items[i] == c;
                i += 1;
            }
        }
        hit != negated
    };
    Some((Box::new(test), &body[end + 1..]))
}

/// The databases under `dir` that `scan` asks for, sorted.
pub fn find(dir: &Path, scan: &DirScan) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    walk(dir, scan, &mut found)?;
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, scan: &DirScan, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let (path, kind) = (entry.path(), entry.file_type()?);
        let name = entry.file_name().to_string_lossy().into_owned();
        if kind.is_dir() {
            // walrust's own state (`DB-walrust/`) holds no database to replicate.
            if scan.recursive && !name.ends_with("-walrust") {
                walk(&path, scan, found)?;
            }
        } else if kind.is_file() && matches(&scan.pattern, &name) && is_sqlite(&path) {
            found.push(path);
        }
    }
    Ok(())
}

/// Where `db` lies under `dir` if `scan` covers it (its name matches the pattern; directly
/// in `dir` unless recursive), whether it exists or not: the path its replica is named by.
/// Both paths are compared absolute, and through their real folders.
pub fn covers(dir: &Path, scan: &DirScan, db: &Path) -> Option<PathBuf> {
    let name = db.file_name()?.to_string_lossy().into_owned();
    if !matches(&scan.pattern, &name) {
        return None;
    }
    let real = |p: &Path| std::fs::canonicalize(p).ok();
    let folder = db.parent().filter(|p| !p.as_os_str().is_empty());
    let candidates = [
        std::path::absolute(dir)
            .ok()
            .zip(std::path::absolute(db).ok()),
        real(dir).zip(real(folder.unwrap_or(Path::new("."))).map(|f| f.join(&name))),
    ];
    let rel = candidates
        .into_iter()
        .flatten()
        .find_map(|(d, p)| p.strip_prefix(&d).ok().map(Path::to_path_buf))?;
    let nested = rel.components().count() > 1;
    let clean = rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    (clean && (scan.recursive || !nested)).then_some(rel)
}

/// Whether the file starts with SQLite's header.
fn is_sqlite(path: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 16];
    std::fs::File::open(path).is_ok_and(|f| f.read_exact_at(&mut head, 0).is_ok())
        && &head == b"SQLite format 3\0"
}

/// The replica of the database at `rel` under the directory: the entry's URL with `rel`
/// appended to its path (before any `?query`), as Litestream derives it.
pub fn replica_for(url: &str, rel: &Path) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let rel: Vec<String> = rel
        .components()
        .map(|c| super::replica::escape(&c.as_os_str().to_string_lossy(), b""))
        .collect();
    format!("{}/{}{query}", base.trim_end_matches('/'), rel.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_go_matches_them() {
        for (p, n, want) in [
            ("*.db", "a.db", true),
            ("*.db", "a.db-wal", false),
            ("*.db", ".db", true),
            ("*", "a.db-shm", true),
            ("a?.sqlite", "ab.sqlite", true),
            ("a?.sqlite", "a.sqlite", false),
            ("[a-c]*.db", "b1.db", true),
            ("[a-c]*.db", "d1.db", false),
            ("[^a-c]*.db", "d1.db", true),
            ("t\\*.db", "t*.db", true),
            ("t\\*.db", "tx.db", false),
            ("[a", "a", false),
        ] {
            assert_eq!(matches(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn each_database_gets_the_replica_of_its_path() {
        assert_eq!(
            replica_for("s3://b/tenants", Path::new("eu/a.db")),
            "s3://b/tenants/eu/a.db"
        );
        assert_eq!(
            replica_for("s3://b/t/?endpoint=http://h:9000", Path::new("a b.db")),
            "s3://b/t/a%20b.db?endpoint=http://h:9000"
        );
        assert_eq!(
            replica_for("file:///r", Path::new("x.db")),
            "file:///r/x.db"
        );
    }

    #[test]
    fn a_path_under_the_directory_is_covered_if_the_scan_would_take_it() {
        let mut scan = DirScan {
            pattern: "*.db".into(),
            recursive: false,
            watch: false,
        };
        let dir = Path::new("/nonexistent/t");
        let rel = |p: &str| covers(dir, &scan, Path::new(p));
        assert_eq!(rel("/nonexistent/t/a.db"), Some(PathBuf::from("a.db")));
        assert_eq!(rel("/nonexistent/t/a.txt"), None);
        assert_eq!(rel("/nonexistent/t/eu/b.db"), None);
        assert_eq!(rel("/nonexistent/u/a.db"), None);
        scan.recursive = true;
        let rel = |p: &str| covers(dir, &scan, Path::new(p));
        assert_eq!(
            rel("/nonexistent/t/eu/b.db"),
            Some(PathBuf::from("eu/b.db"))
        );
        assert_eq!(rel("/nonexistent/t/../u/b.db"), None);
    }

    #[test]
    fn only_sqlite_files_of_the_pattern_are_found() {
        let dir = std::env::temp_dir().join(format!("walrust-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("eu/x.db-walrust")).unwrap();
        let db = |p: &str| std::fs::write(dir.join(p), b"SQLite format 3\0rest").unwrap();
        db("a.db");
        db("eu/b.db");
        db("eu/x.db-walrust/c.db");
        db("a.txt");
        std::fs::write(dir.join("a.db-wal"), b"\x37\x7f\x06\x82").unwrap();
        std::fs::write(dir.join("empty.db"), b"").unwrap();
        let mut scan = DirScan {
            pattern: "*.db".into(),
            recursive: false,
            watch: false,
        };
        assert_eq!(find(&dir, &scan).unwrap(), vec![dir.join("a.db")]);
        scan.recursive = true;
        assert_eq!(
            find(&dir, &scan).unwrap(),
            vec![dir.join("a.db"), dir.join("eu/b.db")]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
