//! Reads one page stored as an LZ4 *frame* (v3 page frames without the size flag, written by
//! Go `ltx` v0.5.0/v0.5.1, i.e. Litestream 0.5.0–0.5.15). Built on the block decoder, so it
//! needs no frame support from `lz4_flex`.
//!
//! Frame: magic `04 22 4D 18`, FLG, BD, optional content size (8) and dictionary ID (4), a
//! header checksum byte, then blocks (u32 LE size, high bit = stored uncompressed; an optional
//! 4-byte block checksum), a zero end mark, and an optional 4-byte content checksum. The xxHash
//! checksums are skipped, not verified: the LTX file checksum covers the decompressed page.

use std::io::Read;

use super::Error;

pub(crate) const LZ4_FRAME_MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];

const FLG_VERSION_MASK: u8 = 0b1100_0000;
const FLG_VERSION_01: u8 = 0b0100_0000;
const FLG_BLOCK_CHECKSUM: u8 = 1 << 4;
const FLG_CONTENT_SIZE: u8 = 1 << 3;
const FLG_CONTENT_CHECKSUM: u8 = 1 << 2;
const FLG_DICT_ID: u8 = 1 << 0;

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<(), Error> {
    r.read_exact(buf).map_err(super::truncated)
}

fn read_u32_le(r: &mut impl Read) -> Result<u32, Error> {
    let mut b = [0u8; 4];
    read_full(r, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn skip(r: &mut impl Read, n: usize) -> Result<(), Error> {
    let mut b = [0u8; 12];
    read_full(r, &mut b[..n])
}

/// Decodes exactly one LZ4 frame from `r` into `out`, which it must fill exactly. `scratch` is
/// reused for compressed blocks; blocks larger than an incompressible `out` are rejected, so
/// memory stays bounded by the page size.
pub(crate) fn read_frame(
    r: &mut impl Read,
    out: &mut [u8],
    scratch: &mut Vec<u8>,
) -> Result<(), Error> {
    let bad = |m: &str| Error::Invalid(format!("legacy LZ4 page frame: {m}"));
    let mut magic = [0u8; 4];
    read_full(r, &mut magic)?;
    if magic != LZ4_FRAME_MAGIC {
        return Err(bad("bad magic"));
    }
    let mut desc = [0u8; 2];
    read_full(r, &mut desc)?;
    let flg = desc[0];
    if flg & FLG_VERSION_MASK != FLG_VERSION_01 {
        return Err(bad("unsupported version"));
    }
    let extra = if flg & FLG_CONTENT_SIZE != 0 { 8 } else { 0 }
        + if flg & FLG_DICT_ID != 0 { 4 } else { 0 };
    skip(r, extra + 1)?; // content size, dictionary ID, header checksum
    let max_block = lz4_flex::block::get_maximum_output_size(out.len()).max(out.len());

    let mut filled = 0usize;
    loop {
        let word = read_u32_le(r)?;
        if word == 0 {
            break;
        }
        let stored = word & 0x8000_0000 != 0;
        let len = (word & 0x7fff_ffff) as usize;
        if len > max_block {
            return Err(bad("block larger than a page"));
        }
        scratch.resize(len, 0);
        read_full(r, scratch)?;
        if stored {
            let dst = out
                .get_mut(filled..filled + len)
                .ok_or_else(|| bad("more data than a page"))?;
            dst.copy_from_slice(scratch);
            filled += len;
        } else {
            // Linked blocks may refer back to earlier output of the same frame.
            let (dict, dst) = out.split_at_mut(filled);
            let n = lz4_flex::block::decompress_into_with_dict(scratch, dst, dict)
                .map_err(|e| bad(&e.to_string()))?;
            filled += n;
        }
        if flg & FLG_BLOCK_CHECKSUM != 0 {
            skip(r, 4)?;
        }
    }
    if flg & FLG_CONTENT_CHECKSUM != 0 {
        skip(r, 4)?;
    }
    if filled != out.len() {
        return Err(bad(&format!(
            "decompressed to {filled} bytes, expected {}",
            out.len()
        )));
    }
    Ok(())
}

/// Writes `data` as a one-block LZ4 frame with a (dummy) content checksum, the shape Go's
/// `pierrec/lz4` writer produces. For tests of the legacy reader only.
#[cfg(test)]
pub(crate) fn write_frame(data: &[u8]) -> Vec<u8> {
    let mut out = LZ4_FRAME_MAGIC.to_vec();
    out.push(FLG_VERSION_01 | (1 << 5) | FLG_CONTENT_CHECKSUM); // independent blocks
    out.push(0x70); // 4 MiB max block
    out.push(0); // header checksum (not checked)
    let block = lz4_flex::block::compress(data);
    out.extend_from_slice(&(block.len() as u32).to_le_bytes());
    out.extend_from_slice(&block);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_compressed_and_a_stored_frame() {
        let page: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let framed = write_frame(&page);
        let mut out = vec![0u8; 4096];
        let mut scratch = Vec::new();
        let mut r = &framed[..];
        read_frame(&mut r, &mut out, &mut scratch).unwrap();
        assert_eq!(out, page);
        assert!(r.is_empty());

        let mut stored = LZ4_FRAME_MAGIC.to_vec();
        stored.extend_from_slice(&[FLG_VERSION_01 | (1 << 5), 0x40, 0]);
        stored.extend_from_slice(&(0x8000_0000u32 | 512).to_le_bytes());
        stored.extend_from_slice(&[9u8; 512]);
        stored.extend_from_slice(&0u32.to_le_bytes());
        let mut out = vec![0u8; 512];
        read_frame(&mut &stored[..], &mut out, &mut scratch).unwrap();
        assert_eq!(out, vec![9u8; 512]);
    }

    #[test]
    fn rejects_short_and_garbled_frames() {
        let page = vec![1u8; 1024];
        let framed = write_frame(&page);
        let mut out = vec![0u8; 2048];
        let mut scratch = Vec::new();
        read_frame(&mut &framed[..], &mut out, &mut scratch).unwrap_err();
        let mut out = vec![0u8; 1024];
        read_frame(&mut &framed[..framed.len() - 6], &mut out, &mut scratch).unwrap_err();
        let mut bad = framed.clone();
        bad[0] = 0;
        read_frame(&mut &bad[..], &mut out, &mut scratch).unwrap_err();
    }
}
