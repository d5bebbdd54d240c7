//! `https` endpoints verify certificates: a server whose certificate comes from a private CA
//! is refused (with a message that names AWS_CA_BUNDLE), and accepted once AWS_CA_BUNDLE names
//! that CA. The server is Python's `http.server` behind `ssl`, answering every GET as S3 does
//! for a missing key; the CA and certificate are made by `openssl` for the test. One test in
//! its own binary, because it changes AWS_CA_BUNDLE, which is process-wide.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::s3::{set_test_env, Dir};
use walrust::store::{self, StoreError};

const SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b'<?xml version="1.0"?><Error><Code>NoSuchKey</Code><Message>no</Message></Error>'
        self.send_response(404)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A CA and a certificate for 127.0.0.1 signed by it; false if openssl is missing.
fn make_certs(dir: &Path) -> bool {
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=walrust test CA",
        ],
    ) && openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ) && openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    )
}

/// The Python server this test started, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn https_endpoints_verify_certificates_with_aws_ca_bundle() {
    set_test_env();
    let dir = Dir::new("tls");
    if !make_certs(dir.path()) {
        common::tools::cannot_run("openssl could not make the test certificates");
        return;
    }
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(SERVER)
        .arg(dir.path().join("leaf.pem"))
        .arg(dir.path().join("leaf.key"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _server = Server(child);
    let port: u16 = line.trim().parse().expect("the server printed its port");
    let url = format!("s3://bkt/app?endpoint=https://127.0.0.1:{port}&region=us-east-1");

    // The private CA is not in the system store: refused, and the message says what to do.
    let e = store::open(&url).unwrap().get_manifest().unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("AWS_CA_BUNDLE"), "{msg}");
    eprintln!("untrusted certificate: {msg}");

    // With the CA in AWS_CA_BUNDLE the request goes through (S3's "no such key": no manifest).
    std::env::set_var("AWS_CA_BUNDLE", dir.path().join("ca.pem"));
    let s = store::open(&url).unwrap();
    assert!(s.get_manifest().unwrap().is_none());

    // A bundle that cannot be read, or holds no certificate, is refused when the store opens.
    std::env::set_var("AWS_CA_BUNDLE", dir.path().join("missing.pem"));
    let e = store::open(&url).err().unwrap().to_string();
    assert!(
        e.contains("AWS_CA_BUNDLE") && e.contains("cannot be read"),
        "{e}"
    );
    std::env::set_var("AWS_CA_BUNDLE", dir.path().join("leaf.ext"));
    let e = store::open(&url).err().unwrap().to_string();
    assert!(e.contains("no PEM certificate"), "{e}");
    std::env::remove_var("AWS_CA_BUNDLE");
}
