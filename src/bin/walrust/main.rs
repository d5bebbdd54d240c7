//! `walrust`: restore, list, verify and compact a replica from the command line, and replicate
//! databases as a sidecar (`watch`) (SPEC section 7).
//!
//! One file per subcommand; this one parses the command line and maps failures to exit codes:
//! 0 success, 1 other error, 2 usage, 3 nothing to restore (no such replica, no snapshot),
//! 4 storage or network error, 5 integrity error.
//!
//! Must never call SQLite: the library's rusqlite is built as a loadable extension (function
//! pointers SQLite hands over when it loads the library), so nothing here links libsqlite3 and
//! the binary runs where no SQLite is installed. Only the library's store, restore and compact
//! modules are used.

mod compact;
mod exec;
mod heartbeat;
mod list;
mod metrics;
mod output;
mod restore;
mod status;
mod takeover;
mod verify;
mod waiting;
mod watch;

use std::process::ExitCode;

const USAGE: &str = "\
walrust: restore, inspect and maintain a walrust (Litestream 0.5 compatible) replica

Usage:
  walrust restore URL -o OUT [--txid N | --timestamp T] [options]
  walrust list URL
  walrust verify URL
  walrust compact URL [--dry-run] [--retention SPEC]
  walrust takeover DB [--replica URL]
  walrust status DB [--shadow-dir DIR]
  walrust watch DB... (--replica URL | --replica-root URL) [options]
  walrust help [COMMAND]    (or COMMAND --help)
  walrust --version

URL is s3://BUCKET/PREFIX[?endpoint=URL&region=R&force_path_style=true], file:///abs/dir or
/abs/dir. S3 credentials come from the standard AWS environment variables.

Exit codes: 0 success, 1 other error, 2 usage or a bad value (or restore's OUT exists),
3 nothing to restore (no such replica, no LTX files, or no snapshot), 4 storage or network
error, 5 integrity error.
";

/// Why a command failed: the message for stderr, the exit code, and whether the command line
/// itself was malformed (then a pointer to the usage follows the message; a bad value, an
/// existing output or a failed restore print their own message only, which says what to do).
pub struct Failure {
    pub code: u8,
    pub message: String,
    pub malformed: bool,
}

impl Failure {
    /// The command line does not parse: exit 2, with a pointer to the usage.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
            malformed: true,
        }
    }

    /// A value the user gave is not valid (a TXID, a time): exit 2, the message says why.
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(2, message)
    }

    pub fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code: code.clamp(1, 255) as u8,
            message: message.into(),
            malformed: false,
        }
    }

    /// A replica that does not open (bad URL, not a directory) is a storage error.
    pub fn store(e: walrust::store::StoreError) -> Failure {
        Failure::new(4, e.to_string())
    }

    /// The message as printed: one `walrust: ` prefix, whatever the error carried.
    pub fn line(&self) -> String {
        let m = self.message.trim_end();
        let mut rest = m;
        while let Some(r) = rest.strip_prefix("walrust: ") {
            rest = r;
        }
        format!("walrust: {rest}")
    }
}

/// A subcommand's arguments: positionals, `--flag` switches and `--option VALUE` pairs
/// (also `--option=VALUE`). `value_options` lists the options that take a value (with their
/// short aliases).
pub struct Args {
    pub positional: Vec<String>,
    pub options: Vec<(String, Option<String>)>,
}

impl Args {
    pub fn parse(
        args: &[String],
        value_options: &[&str],
        switches: &[&str],
    ) -> Result<Args, Failure> {
        let mut out = Args {
            positional: Vec::new(),
            options: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--" {
                out.positional.extend(it.by_ref().cloned());
                break;
            }
            if !a.starts_with('-') || a == "-" {
                out.positional.push(a.clone());
                continue;
            }
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (a.as_str(), None),
            };
            if value_options.contains(&name) {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| Failure::usage(format!("{name} needs a value")))?,
                };
                out.options.push((name.to_string(), Some(v)));
            } else if switches.contains(&name) && inline.is_none() {
                out.options.push((name.to_string(), None));
            } else {
                return Err(Failure::usage(format!("unknown option {a}")));
            }
        }
        Ok(out)
    }

    /// The value of the last of `names` given (aliases), if any.
    pub fn value(&self, names: &[&str]) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| names.contains(&n.as_str()))
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn has(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| n == name)
    }

    /// Exactly `n` positionals, named for the message.
    pub fn expect_positional(&self, names: &[&str]) -> Result<(), Failure> {
        if self.positional.len() != names.len() {
            return Err(Failure::usage(format!(
                "expected {} but got {} argument(s)",
                names.join(" "),
                self.positional.len()
            )));
        }
        Ok(())
    }
}

fn help_for(cmd: &str) -> Option<&'static str> {
    Some(match cmd {
        "restore" => restore::HELP,
        "list" => list::HELP,
        "verify" => verify::HELP,
        "compact" => compact::HELP,
        "takeover" => takeover::HELP,
        "watch" => watch::HELP,
        "status" => status::HELP,
        _ => return None,
    })
}

/// What follows a malformed command line: the command's usage line, or the list of commands.
fn usage_hint(cmd: Option<&str>) -> String {
    match cmd.and_then(help_for) {
        Some(help) => {
            let first = help.lines().next().unwrap_or_default();
            let cmd = cmd.unwrap_or_default();
            format!("{first}\nRun `walrust {cmd} --help` for the options.")
        }
        None => USAGE.to_string(),
    }
}

fn run(argv: &[String]) -> Result<(), Failure> {
    let Some(cmd) = argv.first() else {
        return Err(Failure::usage("a command is needed"));
    };
    let rest = &argv[1..];
    if let Some(help) = help_for(cmd) {
        if rest.iter().any(|a| a == "--help" || a == "-h") {
            return output::print(help);
        }
    }
    match cmd.as_str() {
        "restore" => restore::run(rest),
        "list" => list::run(rest),
        "verify" => verify::run(rest),
        "compact" => compact::run(rest),
        "takeover" => takeover::run(rest),
        "watch" => watch::run(rest),
        "status" => status::run(rest),
        "help" | "--help" | "-h" => match rest.first().map(|c| (c, help_for(c))) {
            None => output::print(USAGE),
            Some((_, Some(h))) => output::print(h),
            Some((c, None)) => Err(Failure::usage(format!("no command {c}"))),
        },
        "--version" | "-V" | "version" => {
            output::print(&format!("walrust {}\n", env!("CARGO_PKG_VERSION")))
        }
        other => Err(Failure::usage(format!("unknown command {other}"))),
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(&argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if f.code == 0 => ExitCode::SUCCESS,
        Err(f) => {
            if f.malformed {
                let cmd = argv.first().map(String::as_str);
                eprintln!("{}\n\n{}", f.line(), usage_hint(cmd));
            } else {
                eprintln!("{}", f.line());
            }
            ExitCode::from(f.code)
        }
    }
}
