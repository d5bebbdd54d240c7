//! A real S3 server for tests: s3s-fs (SigV4-checking, objects on disk) on a free port of
//! 127.0.0.1, in a temp directory, killed on drop. A bucket is a subdirectory of its data dir.
//!
//! The binary comes from `WALRUST_S3S_FS`, else `s3s-fs` on PATH, else `~/.cargo/bin/s3s-fs`
//! (`cargo install --locked --features binary s3s-fs@0.14.1`; scripts/setup-test-env.sh
//! installs it). Without it the tests fail, or skip with `WALRUST_ALLOW_SKIP=1` (tools.rs).
//!
//! Credentials reach `S3Store` through the environment, which is process-wide, so every
//! server of a test process shares `ACCESS_KEY`/`SECRET_KEY` and `S3Server::start` sets them
//! once. A test that needs the store to hold the wrong secret starts a server with another
//! one (`start_with_keys`).
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "walrust-test-ak";
pub const SECRET_KEY: &str = "walrust-test-sk-0123456789";
pub const REGION: &str = "us-east-1";

/// Sets the AWS environment the stores of this test process read.
pub fn set_test_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_REGION", REGION);
        std::env::set_var("RUST_S3_SKIP_LOCATION_CONSTRAINT", "true");
        for v in [
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "AWS_PROFILE",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_CA_BUNDLE",
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "all_proxy",
        ] {
            std::env::remove_var(v);
        }
    });
}

pub fn s3s_fs_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WALRUST_S3S_FS") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("s3s-fs");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    Some(cargo_home.join("bin/s3s-fs")).filter(|p| p.is_file())
}

/// A temp dir removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Dir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "walrust-s3-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct S3Server {
    bin: PathBuf,
    child: Option<Child>,
    pub port: u16,
    pub dir: Dir,
    pub access_key: String,
    pub secret_key: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl S3Server {
    /// A server with the test process's credentials. Panics if s3s-fs is not installed;
    /// `None` only if it is not and `WALRUST_ALLOW_SKIP=1` (the caller returns: a skip).
    pub fn start() -> Option<S3Server> {
        S3Server::start_with_keys(ACCESS_KEY, SECRET_KEY)
    }

    pub fn start_with_keys(access_key: &str, secret_key: &str) -> Option<S3Server> {
        set_test_env();
        let Some(bin) = s3s_fs_binary() else {
            super::tools::cannot_run(
                "s3s-fs is not installed (scripts/setup-test-env.sh, or cargo install --locked \
                 --features binary s3s-fs@0.14.1, or set WALRUST_S3S_FS)",
            );
            return None;
        };
        let dir = Dir::new("server");
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let mut s = S3Server {
            bin,
            child: None,
            port: 0,
            dir,
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        };
        for _ in 0..5 {
            s.port = free_port();
            if s.spawn() {
                return Some(s);
            }
        }
        panic!(
            "s3s-fs did not come up; its log:\n{}",
            std::fs::read_to_string(s.dir.path().join("log")).unwrap_or_default()
        );
    }

    /// Starts the process on `self.port`; false if it did not come up (port taken).
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("log"))
            .unwrap();
        let mut child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.access_key])
            .args(["--secret-key", &self.secret_key])
            .arg(self.dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Creates a bucket (a folder of the data dir).
    pub fn bucket(&self, name: &str) -> &S3Server {
        std::fs::create_dir_all(self.data().join(name)).unwrap();
        self
    }

    /// The replica URL of `bucket/prefix` on this server.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        let path = if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        };
        format!(
            "s3://{bucket}{path}?endpoint={}&region={REGION}",
            self.endpoint()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the server; its data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "s3s-fs did not restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Freezes the process (SIGSTOP): connections are accepted by the kernel and never
    /// answered, as with a hung server.
    pub fn pause(&self) {
        assert!(signal(self.pid(), "STOP"), "kill -STOP {}", self.pid());
    }

    pub fn resume(&self) {
        assert!(signal(self.pid(), "CONT"), "kill -CONT {}", self.pid());
    }

    /// The most bytes any one connection to the server holds that the server has not read
    /// (`rx_queue` of its side in /proc/net/tcp). With the server frozen (`pause`), this is
    /// how far a client got into sending a request: an event a test can wait for.
    pub fn unread_bytes(&self) -> u64 {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let local = format!("0100007F:{:04X}", self.port);
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                // sl local rem st tx_queue:rx_queue ...; 01 is ESTABLISHED.
                (f.len() > 4 && f[1] == local && f[3] == "01")
                    .then(|| u64::from_str_radix(f[4].split(':').nth(1)?, 16).ok())
                    .flatten()
            })
            .max()
            .unwrap_or(0)
    }
}

/// Waits for `event` to become true, polling; panics (naming `what`) only after two minutes,
/// a limit that stops a hung test and asserts nothing about how long anything takes.
pub fn wait_for(what: &str, mut event: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !event() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends a signal to the server process (by its id, which this helper started).
fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), "CONT"); // a paused process would not die of SIGKILL any later
        }
        self.stop();
    }
}

/// Peak resident memory of this process so far, in bytes (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak (`VmHWM`) to the current RSS, where the kernel allows it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
