//! Replay a recorded stream through a detector, writing one detection index per line (the engine of `keel drift replay`).

use std::fmt;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::error::DriftError;
use crate::spec::DetectorSpec;
use crate::Detector;

/// Encoding of a replayed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Consecutive little-endian IEEE-754 binary64 values (`numpy.ndarray.tofile` on x86/ARM).
    #[default]
    F64Le,
    /// Text, one number per line; blank lines and lines starting with `#` are skipped.
    Csv,
}

impl FromStr for Format {
    type Err = DriftError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f64" | "f64le" | "f64-le" | "bin" => Ok(Format::F64Le),
            "csv" | "txt" | "text" => Ok(Format::Csv),
            other => Err(DriftError::BadSpec {
                spec: other.to_string(),
                reason: "unknown format (use f64 or csv)".to_string(),
            }),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::F64Le => "f64",
            Format::Csv => "csv",
        })
    }
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySummary {
    /// The canonical spec of the detector that ran.
    pub spec: String,
    /// Values fed to the detector.
    pub updates: u64,
    /// Detections raised.
    pub detections: u64,
    /// Index of the first detection, if any.
    pub first_detection: Option<u64>,
    /// Wall time of decoding, detecting and writing (measured with `Instant`).
    pub elapsed: Duration,
}

impl ReplaySummary {
    /// Updates per second over `elapsed` (0 when nothing was timed).
    pub fn updates_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.updates as f64 / s
        } else {
            0.0
        }
    }
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} updates, {} detections (first: {}), {:.3} s, {:.0} updates/s",
            self.spec,
            self.updates,
            self.detections,
            self.first_detection
                .map_or_else(|| "none".to_string(), |i| i.to_string()),
            self.elapsed.as_secs_f64(),
            self.updates_per_sec()
        )
    }
}

/// Feed every value of `input` (in `format`) through the detector described by `spec`,
/// writing the 0-based index of each value that raised a detection on its own line to `out`.
///
/// Errors: a bad spec, an undecodable value (with its line or byte offset), a value the
/// detector rejects (NaN, ±∞, out of its domain; with its index), or I/O failure.
pub fn replay(
    spec: &str,
    format: Format,
    input: impl Read,
    out: impl Write,
) -> Result<ReplaySummary, DriftError> {
    let parsed = DetectorSpec::parse(spec)?;
    let mut detector = parsed.build()?;
    replay_with(&mut detector, &parsed.to_string(), format, input, out)
}

/// [`replay`] with a detector the caller built (or resumed from saved state).
pub fn replay_with<D: Detector + ?Sized>(
    detector: &mut D,
    spec_label: &str,
    format: Format,
    input: impl Read,
    out: impl Write,
) -> Result<ReplaySummary, DriftError> {
    let start = Instant::now();
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut updates = 0u64;
    let mut detections = 0u64;
    let mut first = None;
    let mut feed = |x: f64| -> Result<(), DriftError> {
        let hit = detector.update(x).map_err(|e| match e {
            DriftError::NonFinite { .. } | DriftError::OutOfDomain { .. } => DriftError::Decode {
                location: format!("value {updates}"),
                reason: e.to_string(),
            },
            other => other,
        })?;
        if hit {
            writeln!(out, "{updates}")?;
            detections += 1;
            first.get_or_insert(updates);
        }
        updates += 1;
        Ok(())
    };
    match format {
        Format::F64Le => {
            let mut reader = BufReader::with_capacity(1 << 16, input);
            let mut carry = [0u8; 8];
            let mut carried = 0usize;
            let mut offset = 0u64;
            loop {
                let buf = reader.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                let n = buf.len();
                let mut rest = buf;
                if carried > 0 {
                    let take = (8 - carried).min(rest.len());
                    carry[carried..carried + take].copy_from_slice(&rest[..take]);
                    carried += take;
                    rest = &rest[take..];
                    if carried == 8 {
                        feed(f64::from_le_bytes(carry))?;
                        carried = 0;
                    }
                }
                let mut chunks = rest.chunks_exact(8);
                for c in &mut chunks {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    feed(f64::from_le_bytes(b))?;
                }
                let tail = chunks.remainder();
                carry[carried..carried + tail.len()].copy_from_slice(tail);
                carried += tail.len();
                offset += n as u64;
                reader.consume(n);
            }
            if carried > 0 {
                return Err(DriftError::Decode {
                    location: format!("byte {}", offset - carried as u64),
                    reason: format!("{carried} trailing bytes do not make a whole f64"),
                });
            }
        }
        Format::Csv => {
            let mut reader = BufReader::with_capacity(1 << 16, input);
            let mut line = String::new();
            let mut lineno = 0u64;
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    break;
                }
                lineno += 1;
                let t = line.trim();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                let x: f64 = t.parse().map_err(|_| DriftError::Decode {
                    location: format!("line {lineno}"),
                    reason: format!("`{t}` is not a number"),
                })?;
                feed(x)?;
            }
        }
    }
    out.flush()?;
    Ok(ReplaySummary {
        spec: spec_label.to_string(),
        updates,
        detections,
        first_detection: first,
        elapsed: start.elapsed(),
    })
}
