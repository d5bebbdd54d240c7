//! Writing files: one PUT up to the part size, else a multipart upload of parts of the part
//! size. Either way each request's body streams from the local file (`FileBody`): memory
//! holds one small buffer, never the file or a part. A part is sent again after a transient
//! failure; a failed upload is aborted, best effort. The metadata (`litestream-timestamp`,
//! `walrust-sha256`) rides on the PUT or on the request that starts the multipart upload.

use std::fs::File;
use std::io;

use s3::command::{Command, Multipart};
use s3::serde_types::{CompleteMultipartUploadData, InitiateMultipartUploadResponse, Part};
use ureq::http::{HeaderMap, HeaderName, HeaderValue};

use super::http::{read_body, xml_field, FileBody};
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
        input: File,
        size: u64,
        meta: &WriteMeta,
        create_only: bool,
    ) -> Result<(), StoreError> {
        let mut headers = Self::meta_headers(meta);
        if create_only {
            headers.insert(
                HeaderName::from_static("if-none-match"),
                HeaderValue::from_static("*"),
            );
        }
        let body = FileBody::new(&input, 0, size).map_err(|e| StoreError::Io {
            what: what(),
            source: e,
        })?;
        let bucket = self.client.bucket();
        let cmd = Command::PutObject {
            content: &[],
            content_type: OCTET_STREAM,
            custom_headers: Some(headers),
            multipart: None,
        };
        let resp = self.client.send_file(what, &bucket, object, cmd, &body)?;
        self.expect_ok(what, resp).map(drop)
    }

    pub(super) fn put_multipart(
        &self,
        what: &dyn Fn() -> String,
        object: &str,
        input: File,
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
            let local = |e: io::Error| StoreError::Io {
                what: what(),
                source: e,
            };
            let mut parts = Vec::new();
            let mut sent = 0u64;
            while sent < size {
                // A file that shrank fails here ("ends at byte ..., before byte ...").
                let body =
                    FileBody::new(&input, sent, part_size.min(size - sent)).map_err(local)?;
                let number = parts.len() as u32 + 1;
                let etag = self.put_part(what, &base, object, &upload_id, number, &body)?;
                parts.push(Part {
                    part_number: number,
                    etag,
                });
                sent += body.size();
            }
            let now = input.metadata().map_err(local)?.len();
            if now != size {
                return Err(local(io::Error::other(format!(
                    "the local file changed size during the upload ({size} then {now} bytes)"
                ))));
            }
            let cmd = Command::CompleteMultipartUpload {
                upload_id: &upload_id,
                data: CompleteMultipartUploadData { parts },
            };
            let resp = self.client.send(what, &base, object, cmd)?;
            let resp = self.expect_ok(what, resp)?;
            // S3 may answer 200 and put the error in the body.
            let body =
                read_body(resp.body, XML_MAX).map_err(|e| self.client.body_error(what, e))?;
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
        body: &FileBody<'_>,
    ) -> Result<String, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let cmd = Command::PutObject {
                content: &[],
                content_type: OCTET_STREAM,
                custom_headers: None,
                multipart: Some(Multipart::new(number, upload_id)),
            };
            let r = self
                .client
                .send_file(what, bucket, object, cmd, body)
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
