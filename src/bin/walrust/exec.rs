//! `walrust watch --exec CMD` (Litestream's `-exec` flag and `exec:` setting): the watch runs
//! the application as its child and lives as long as it does, the way a single-container
//! deployment runs `litestream replicate -exec "app"`. The command is split into words as
//! Litestream splits it (spaces, 'single' and "double" quotes, backslash escapes; no shell).
//!
//! What must hold: the application starts once every database is watched (or waited for); a
//! SIGINT or SIGTERM sent to the watch reaches the application, and the watch stops (uploading
//! what is pending) only once the application has exited; when the application exits on its
//! own, the watch stops the same way. The application starts with no signal blocked, and with
//! the environment the watch was given (never the access key the watch read from its config).

use std::ffi::OsString;
use std::process::{Child, Command, ExitStatus, Stdio};

use walrust::vfs::ffi::posix;

use crate::Failure;

/// The application the watch runs.
pub struct App {
    child: Child,
    /// The command's first word: what messages name (its arguments may hold secrets the
    /// config file expanded from the environment).
    program: String,
}

/// How the application ended.
pub enum Ended {
    /// On its own, with this status.
    Itself(ExitStatus),
    /// After the watch passed it the signal it received.
    Signalled(ExitStatus),
}

impl App {
    /// Starts `command` with `env`, the environment the watch was started with (not the one
    /// it set for itself: an access key read from the config file is the watch's, not the
    /// application's).
    pub fn start(command: &str, env: &[(OsString, OsString)]) -> Result<App, Failure> {
        let words = split(command).map_err(|e| Failure::invalid(format!("exec: {e}")))?;
        let Some((program, args)) = words.split_first() else {
            return Err(Failure::invalid("exec: the command is empty"));
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        posix::unblock_termination_signals_in(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| Failure::new(1, format!("cannot run {program}: {e}")))?;
        walrust::log::info(&format!("running {program} (process {})", child.id()));
        Ok(App {
            child,
            program: program.clone(),
        })
    }

    /// Waits for SIGINT or SIGTERM, or for the application to exit. A signal is passed on to
    /// the application, which is then waited for. Returns the signal's number, if one came.
    pub fn wait(&mut self) -> (Option<i32>, Ended) {
        loop {
            let sig = posix::wait_for_termination();
            if sig == posix::CHILD_ENDED {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return (None, Ended::Itself(status));
                }
                continue;
            }
            walrust::log::info(&format!(
                "signal {sig}: passing it to {}, then waiting for it to exit",
                self.program
            ));
            if let Err(e) = posix::send_signal(self.child.id(), sig) {
                walrust::log::warn(&format!("cannot signal {}: {e}", self.program));
            }
            let status = loop {
                match self.child.wait() {
                    Ok(s) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // Not ours to wait for any more: it is gone.
                    Err(_) => break ExitStatus::default(),
                }
            };
            return (Some(sig), Ended::Signalled(status));
        }
    }

    /// The watch's failure for how the application ended, if it failed: exit code 1 (other
    /// error, SPEC section 7, as Litestream exits), the message giving the application's own
    /// status (a signal that killed it as 128 + its number, as shells say it). Ending on the
    /// signal the watch passed on is no failure.
    pub fn failure(&self, ended: &Ended) -> Option<Failure> {
        use std::os::unix::process::ExitStatusExt;
        let (status, passed_on) = match ended {
            Ended::Itself(s) => (s, false),
            Ended::Signalled(s) => (s, true),
        };
        if status.success() || (passed_on && status.signal().is_some()) {
            return None;
        }
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(1);
        Some(Failure::new(
            1,
            format!("{} exited with status {code}", self.program),
        ))
    }
}

/// Splits a command line into words as Litestream's shellwords does: runs of spaces and tabs
/// separate words; 'single quotes' keep everything; "double quotes" keep everything but `\"`
/// and `\\`; a backslash outside quotes keeps the next character.
pub fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let (mut word, mut in_word) = (String::new(), false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("a ' without its closing '".to_string()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\')) => word.push(e),
                            Some(e) => {
                                word.push('\\');
                                word.push(e);
                            }
                            None => break,
                        },
                        Some(c) => word.push(c),
                        None => return Err("a \" without its closing \"".to_string()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(e) = chars.next() {
                    word.push(e);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn a_command_is_split_into_words_as_litestream_splits_it() {
        let w = |s: &str| split(s).unwrap();
        assert_eq!(w("myapp serve"), ["myapp", "serve"]);
        assert_eq!(w("  myapp   --port 8080 "), ["myapp", "--port", "8080"]);
        assert_eq!(
            w("sh -c 'exec app \"$PORT\"'"),
            ["sh", "-c", "exec app \"$PORT\""]
        );
        assert_eq!(
            w(r#"app "two words" a\ b "q\"x""#),
            ["app", "two words", "a b", "q\"x"]
        );
        assert_eq!(w("app ''"), ["app", ""]);
        assert!(w("").is_empty());
        assert!(split("app 'open").is_err());
        assert!(split("app \"open").is_err());
    }
}
