//! Writing files: one PUT up to the part size, else a multipart upload that reads the local
//! file one part at a time into one reused buffer (memory holds a part, never the file). A
//! part is sent again after a transient failure; a failed upload is aborted, best effort.
//! The metadata (`litestream-timestamp`, `walrust-sha256`) rides on the PUT or on the request
//! that starts the multipart upload.

use std::fs::File;
use std::io::{self, Read};

use s3::command::{Command, Multipart};
use s3::serde_types::{CompleteMultipartUploadData, InitiateMultipartUploadResponse, Part};
use ureq::http::{HeaderMap, HeaderName, HeaderValue};

use super::http::{read_body, xml_field};
use super::{
    format_go_rfc3339_nano, S3Store, MAX_PARTS, META_SHA256, META_TIMESTAMP, OCTET_STREAM,
    PART_ATTEMPTS, XML_MAX,
};
use crate::store::{StoreError, WriteMeta};

impl S3Store {
    fn meta_headers(meta: &WriteMeta) -> HeaderMap {
        let mut h = HeaderMap::new();
        let ts = format_go_rfc3339_nano(meta.timestamp_ms);
        let pairs = [
            (META_TIMESTAMP, ts.as_str()),
            (META_SHA256, meta.sha256.as_str()),
        ];
        for (k, v) in pairs {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(format!("x-amz-meta-{k}").as_bytes()),
                HeaderValue::from_str(v),
            ) {
                h.insert(name, value);
            }
        }
        h
    }

    pub(super) fn put_small(
        &self,
        what: &dyn Fn() -> String,
        object: &str,
        mut input: File,
        size: u64,
        meta: &WriteMeta,
    ) -> Result<(), StoreError> {
        let mut buf = Vec::with_capacity(size as usize);
        input.read_to_end(&mut buf).map_err(|e| StoreError::Io {
            what: what(),
            source: e,
        })?;
        let bucket = self.client.bucket();
        let cmd = Command::PutObject {
            content: &buf,
            content_type: OCTET_STREAM,
            custom_headers: Some(Self::meta_headers(meta)),
            multipart: None,
        };
        let resp = self.client.send(what, &bucket, object, cmd)?;
        self.expect_ok(what, resp).map(drop)
    }

    pub(super) fn put_multipart(
        &self,
        what: &dyn Fn() -> String,
        object: &str,
        mut input: File,
        size: u64,
        meta: &WriteMeta,
    ) -> Result<(), StoreError> {
        let part_size = (self.client.options().part_size as u64).max(size.div_ceil(MAX_PARTS));
        // The metadata goes on the initiating request; rust-s3 leaves `x-amz-meta-*` extra
        // headers off the part and completion requests.
        let base = self.client.bucket();
        let with_meta = base
            .with_extra_headers(Self::meta_headers(meta))
            .map_err(|e| StoreError::Invalid {
                what: what(),
                why: format!("cannot set the object metadata ({e})"),
            })?;
        let resp = self.client.send(
            what,
            &with_meta,
            object,
            Command::InitiateMultipartUpload {
                content_type: OCTET_STREAM,
            },
        )?;
        let resp = self.expect_ok(what, resp)?;
        let (init, _): (InitiateMultipartUploadResponse, _) = self.read_xml(what, resp)?;
        let upload_id = init.upload_id;

        let result = (|| {
            let mut buf = vec![0u8; part_size as usize];
            let mut parts = Vec::new();
            let mut sent = 0u64;
            while sent < size {
                let n = read_full(&mut input, &mut buf).map_err(|e| StoreError::Io {
                    what: what(),
                    source: e,
                })?;
                if n == 0 {
                    break; // the file shrank: the completion's size check below says so
                }
                let number = parts.len() as u32 + 1;
                let etag = self.put_part(what, &base, object, &upload_id, number, &buf[..n])?;
                parts.push(Part {
                    part_number: number,
                    etag,
                });
                sent += n as u64;
            }
            if sent != size {
                return Err(StoreError::Io {
                    what: what(),
                    source: io::Error::other(format!(
                        "the local file changed size during the upload ({size} then {sent} \
                         bytes)"
                    )),
                });
            }
            let cmd = Command::CompleteMultipartUpload {
                upload_id: &upload_id,
                data: CompleteMultipartUploadData { parts },
            };
            let resp = self.client.send(what, &base, object, cmd)?;
            let resp = self.expect_ok(what, resp)?;
            // S3 may answer 200 and put the error in the body.
            let body = read_body(resp.body, XML_MAX).map_err(|e| StoreError::Unavailable {
                what: what(),
                why: format!("reading the answer of {}: {e}", self.endpoint()),
            })?;
            let text = String::from_utf8_lossy(&body);
            if text.contains("<Error>") {
                let code = xml_field(&text, "Code").unwrap_or_default();
                return Err(StoreError::Unavailable {
                    what: what(),
                    why: format!(
                        "{} failed to complete the multipart upload ({code})",
                        self.endpoint()
                    ),
                });
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = self.client.send(
                what,
                &base,
                object,
                Command::AbortMultipartUpload {
                    upload_id: &upload_id,
                },
            );
        }
        result
    }

    /// Sends one part, again after a transient failure (a part is safe to repeat).
    fn put_part(
        &self,
        what: &dyn Fn() -> String,
        bucket: &s3::Bucket,
        object: &str,
        upload_id: &str,
        number: u32,
        bytes: &[u8],
    ) -> Result<String, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let cmd = Command::PutObject {
                content: bytes,
                content_type: OCTET_STREAM,
                custom_headers: None,
                multipart: Some(Multipart::new(number, upload_id)),
            };
            let r = self
                .client
                .send(what, bucket, object, cmd)
                .and_then(|resp| self.expect_ok(what, resp));
            match r {
                Ok(resp) => {
                    return resp.header("etag").map(str::to_string).ok_or_else(|| {
                        StoreError::Invalid {
                            what: what(),
                            why: format!("{} gave no ETag for part {number}", self.endpoint()),
                        }
                    })
                }
                Err(StoreError::Unavailable { .. }) if attempt < PART_ATTEMPTS => {
                    std::thread::sleep(std::time::Duration::from_millis(250 << attempt));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
