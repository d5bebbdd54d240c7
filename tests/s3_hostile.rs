//! The S3 store against a hostile or broken server (`common/fake_s3.rs`): listings that never
//! end, answers that are slow, dribbled or never come, and 5xx / `SlowDown` answers. Each
//! hostile case ends with a clear error instead of hanging or growing memory; transient
//! errors are retried and then succeed. Also what walrust sends: the session token, signed,
//! and path-style addressing for an endpoint. No wall-clock assertion: each test asserts the
//! error it gets (the call returning at all is the point).

#[path = "common/fake_s3.rs"]
mod fake_s3;

use std::sync::Once;
use std::time::Duration;

use fake_s3::{FakeS3, Mode};
use walrust::store::s3::{MinRate, S3Options, S3Store};
use walrust::store::{ETag, FileKey, ReplicaUrl, Store, StoreError, Times};
use walrust::Txid;

const SESSION_TOKEN: &str = "walrust-test-session-token";

/// Credentials for every store of this test process (the environment is process-wide).
fn set_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "walrust-test-ak");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "walrust-test-sk-0123456789");
        std::env::set_var("AWS_SESSION_TOKEN", SESSION_TOKEN);
        for v in [
            "AWS_PROFILE",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_CA_BUNDLE",
            "http_proxy",
            "HTTP_PROXY",
            "ALL_PROXY",
            "all_proxy",
        ] {
            std::env::remove_var(v);
        }
    });
}

/// Short limits, so that each hostile case ends soon.
fn opts() -> S3Options {
    S3Options {
        connect_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        retries: 3,
        retry_base: Duration::from_millis(10),
        ..S3Options::default()
    }
}

fn store(server: &FakeS3, opts: S3Options) -> S3Store {
    set_env();
    let ReplicaUrl::S3(url) = ReplicaUrl::parse(&server.url("app")).unwrap() else {
        unreachable!()
    };
    S3Store::with_options(&url, opts).unwrap()
}

fn list(server: &FakeS3, opts: S3Options) -> Result<usize, StoreError> {
    store(server, opts)
        .list(None, Times::Listed)
        .map(|f| f.len())
}

/// The error's one line, checked to start as every user-facing message does.
fn message(e: &StoreError) -> String {
    let m = format!("walrust: {e}");
    assert!(!m.contains('\n'), "{m}");
    m
}

#[test]
fn a_listing_that_loops_on_its_tokens_stops_with_an_error() {
    let server = FakeS3::start(Mode::Tokens {
        cycle: 3,
        keys_per_page: 1,
    });
    let e = list(&server, opts()).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    let m = message(&e);
    assert!(m.contains("answered a listing that never ends"), "{m}");
    assert!(
        m.contains("continuation token it had given before (page 4)"),
        "{m}"
    );
    assert!(m.contains("listing the replica in s3://bkt/app"), "{m}");
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn a_runaway_listing_stops_at_the_key_limit() {
    let server = FakeS3::start(Mode::Tokens {
        cycle: 0,
        keys_per_page: 100,
    });
    let limited = S3Options {
        max_list_keys: 1000,
        ..opts()
    };
    let e = list(&server, limited).unwrap_err();
    let m = message(&e);
    assert!(
        m.contains("listed 1000 keys and says there are more"),
        "{m}"
    );
    assert!(m.contains("limit of 1000 keys"), "{m}");
    assert_eq!(server.requests().len(), 10);
}

#[test]
fn endless_empty_pages_stop_with_an_error() {
    let server = FakeS3::start(Mode::Tokens {
        cycle: 0,
        keys_per_page: 0,
    });
    let m = message(&list(&server, opts()).unwrap_err());
    assert!(m.contains("truncated pages in a row without a key"), "{m}");
}

#[test]
fn a_server_that_never_answers_fails_the_request() {
    let server = FakeS3::start(Mode::Never);
    let e = list(&server, opts()).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    let m = message(&e);
    assert!(m.contains("may be hung or overloaded"), "{m}");
    assert!(m.contains(&format!("127.0.0.1:{}", server.port)), "{m}");
}

#[test]
fn a_slow_answer_past_the_response_timeout_fails_the_request() {
    let server = FakeS3::start(Mode::Slow(Duration::from_secs(30)));
    let e = store(&server, opts()).get_manifest().unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    let m = message(&e);
    assert!(m.contains("waiting for the response"), "{m}");
}

#[test]
fn a_dribbled_answer_fails_at_the_request_timeout() {
    // One byte every 100 ms never trips the 500 ms per-read timeout; the total one stops it.
    let server = FakeS3::start(Mode::Dribble(Duration::from_millis(100)));
    let e = list(&server, opts()).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    let m = message(&e);
    assert!(m.contains("listing the replica in s3://bkt/app"), "{m}");
    assert!(m.contains("the request took longer than 2 s in all"), "{m}");
}

#[test]
fn an_endless_answer_is_cut_at_its_size_limit() {
    // 64 MiB for a listing page: walrust reads at most 32 MiB of an answer it holds in memory.
    let server = FakeS3::start(Mode::Huge(64 << 20));
    let e = list(&server, opts()).unwrap_err();
    let m = message(&e);
    assert!(
        m.contains("the answer is larger than the 33554432 bytes walrust reads"),
        "{m}"
    );
}

#[test]
fn a_trickling_download_fails_at_its_minimum_rate() {
    // 10 bytes/s never trips the per-read timeout; the download's rate floor stops it.
    let server = FakeS3::start(Mode::Dribble(Duration::from_millis(100)));
    let slow_floor = S3Options {
        min_read_rate: MinRate {
            bytes_per_sec: 1000,
            grace: Duration::from_secs(1),
        },
        ..opts()
    };
    let one = Txid::new(1).unwrap();
    let key = FileKey::new(0, one, one).unwrap();
    let mut reader = store(&server, slow_floor).read(&key, None).unwrap();
    let e = std::io::copy(&mut reader, &mut std::io::sink()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(e.to_string().contains("slower than 1000 bytes/s"), "{e}");
}

#[test]
fn slow_down_answers_are_retried_and_then_succeed() {
    let server = FakeS3::start(Mode::FailThenOk {
        times: 3,
        status: 503,
        code: "SlowDown",
    });
    assert_eq!(list(&server, opts()).unwrap(), 0);
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn server_errors_are_retried_for_writes_too() {
    let server = FakeS3::start(Mode::FailThenOk {
        times: 2,
        status: 500,
        code: "InternalError",
    });
    let etag = store(&server, opts()).put_manifest(b"{}", None).unwrap();
    assert_eq!(etag, ETag("\"fake-etag\"".into()));
    let puts: Vec<_> = server.requests();
    assert_eq!(puts.len(), 3);
    assert!(puts.iter().all(|r| r.method == "PUT"));
}

#[test]
fn a_server_that_stays_throttled_gives_a_clear_error_after_the_retries() {
    let server = FakeS3::start(Mode::FailThenOk {
        times: usize::MAX,
        status: 503,
        code: "SlowDown",
    });
    let e = list(&server, opts()).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    let m = message(&e);
    assert!(m.contains("answered HTTP 503 SlowDown: try later"), "{m}");
    assert_eq!(server.requests().len(), 4, "1 attempt + 3 retries");
}

#[test]
fn the_session_token_is_sent_signed_and_addressing_is_path_style() {
    let server = FakeS3::start(Mode::Ok);
    store(&server, opts()).put_manifest(b"{}", None).unwrap();
    let req = &server.requests()[0];
    assert_eq!(req.header("x-amz-security-token"), Some(SESSION_TOKEN));
    let auth = req.header("authorization").unwrap();
    let signed = auth.split("SignedHeaders=").nth(1).unwrap();
    assert!(
        signed
            .split([';', ','])
            .any(|h| h == "x-amz-security-token"),
        "{auth}"
    );
    // An endpoint means path-style: the bucket is the first path segment.
    assert_eq!(req.target, "/bkt/app/manifest.json");
    assert_eq!(
        req.header("host"),
        Some(format!("127.0.0.1:{}", server.port).as_str())
    );
}

/// `walrust list` and `walrust restore` against a server whose listing never ends: exit 4
/// (storage error) with the reason, instead of looping and growing.
#[test]
fn the_cli_stops_on_a_looping_listing_with_exit_4() {
    let server = FakeS3::start(Mode::Tokens {
        cycle: 2,
        keys_per_page: 1000,
    });
    let out_dir = std::env::temp_dir().join(format!("walrust-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("out.db");
    for args in [
        vec!["list".to_string(), server.url("app")],
        vec![
            "restore".to_string(),
            server.url("app"),
            "-o".to_string(),
            out.display().to_string(),
        ],
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_walrust"))
            .args(&args)
            .env("AWS_ACCESS_KEY_ID", "walrust-test-ak")
            .env("AWS_SECRET_ACCESS_KEY", "walrust-test-sk-0123456789")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {err}");
        assert!(err.starts_with("walrust: "), "{err}");
        assert!(err.contains("the listing loops"), "{err}");
        assert!(!out.exists());
    }
    std::fs::remove_dir_all(&out_dir).unwrap();
}
