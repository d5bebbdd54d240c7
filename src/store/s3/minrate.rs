//! A streamed download that slows to a trickle fails instead of holding its reader forever:
//! the per-read inactivity timeout resets at every byte, so a server sending one byte every
//! few seconds would otherwise never time out. After a grace period, the average rate since
//! the first read must stay above a floor.

use std::io::{self, Read};
use std::time::{Duration, Instant};

/// The slowest a download may be: after `grace`, `bytes_per_sec` for each further second
/// (`0`: no floor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MinRate {
    pub bytes_per_sec: u64,
    pub grace: Duration,
}

pub struct MinRateReader<R> {
    inner: R,
    rate: MinRate,
    start: Option<Instant>,
    read: u64,
}

impl<R: Read> MinRateReader<R> {
    pub fn new(inner: R, rate: MinRate) -> MinRateReader<R> {
        MinRateReader {
            inner,
            rate,
            start: None,
            read: 0,
        }
    }

    fn check(&self, start: Instant) -> io::Result<()> {
        let elapsed = start.elapsed();
        let Some(late) = elapsed.checked_sub(self.rate.grace) else {
            return Ok(());
        };
        // The grace is free: after it, every second must bring its share.
        let floor = self.rate.bytes_per_sec as u128 * late.as_millis() / 1000;
        if (self.read as u128) < floor {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the download is slower than {} bytes/s ({} bytes in {:.0} s); the server \
                     may be overloaded or hostile",
                    self.rate.bytes_per_sec,
                    self.read,
                    elapsed.as_secs_f64()
                ),
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for MinRateReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let start = *self.start.get_or_insert_with(Instant::now);
        self.check(start)?;
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_enough_reader_passes_and_a_trickle_fails_after_the_grace() {
        let data = vec![7u8; 100_000];
        let fast = MinRate {
            bytes_per_sec: 1,
            grace: Duration::ZERO,
        };
        let mut out = Vec::new();
        MinRateReader::new(&data[..], fast)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);

        let impossible = MinRate {
            bytes_per_sec: u64::MAX / 4,
            grace: Duration::ZERO,
        };
        let mut r = MinRateReader::new(&data[..], impossible);
        let mut buf = [0u8; 10];
        assert_eq!(
            r.read(&mut buf).unwrap(),
            10,
            "the first read starts the clock"
        );
        std::thread::sleep(Duration::from_millis(5));
        let e = r.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("slower than"), "{e}");
    }
}
