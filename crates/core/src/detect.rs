//! The arithmetic of anomaly detection (SPEC G8), with no I/O: byte
//! entropy, whether bytes open with an RFC 5322 header block, what counts as
//! a file name's extension, and a robust z-score (median and MAD). The
//! client's comparison with its previous snapshot lives in
//! `holdfast_repo::detect`; the vault's own signals in `holdfast_vault`.

/// A whole message above this many bits per byte is not mail: base64
/// carries 6 bits per character, text far less.
pub const ENTROPY_BITS: f64 = 7.5;
/// How much of a message is checked for a header block.
pub const HEADER_PREFIX: usize = 64 << 10;
/// Fewest runs a volume baseline needs.
pub const BASELINE_MIN_RUNS: usize = 7;
/// Most runs a baseline keeps.
pub const BASELINE_MAX_RUNS: usize = 30;
/// A run this many robust standard deviations above the median is an anomaly.
pub const Z_LIMIT: f64 = 3.0;

/// The client signals whose threshold the admin quorum may set (a
/// `SetThreshold` proposal names the signal's code, docs/format.md §13.3):
/// (code, default, floor). Higher always means fewer alarms. A count of
/// messages or files for 1 in_place, 2 entropy, 3 not_mail (at least this
/// many), 4 renames (at least this many in one folder), 5 new_extension
/// (more than this many), 6 deletions (at least this many messages); for
/// 8 volume the robust z-score limit in tenths (30 = z 3.0). 7 wipe has
/// none: an emptied or halved root is never ordinary.
pub const CLIENT_THRESHOLDS: [(u8, u32, u32); 7] = [
    (1, 1, 1),
    (2, 1, 1),
    (3, 1, 1),
    (4, 200, 20),
    (5, 20, 5),
    (6, 100, 20),
    (8, (Z_LIMIT * 10.0) as u32, 20),
];

/// A client signal's default threshold (see [`CLIENT_THRESHOLDS`]).
pub fn client_default(signal: u8) -> Option<u32> {
    CLIENT_THRESHOLDS
        .iter()
        .find(|t| t.0 == signal)
        .map(|t| t.1)
}

/// A client signal's floor (see [`CLIENT_THRESHOLDS`]).
pub fn client_floor(signal: u8) -> Option<u32> {
    CLIENT_THRESHOLDS
        .iter()
        .find(|t| t.0 == signal)
        .map(|t| t.2)
}

/// The thresholds one backup judges with: the defaults, or what the admin
/// quorum set in the log the client verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thresholds {
    values: [(u8, u32); 7],
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            values: CLIENT_THRESHOLDS.map(|(c, d, _)| (c, d)),
        }
    }
}

impl Thresholds {
    /// Each signal's value from `set` (the log's thresholds), or its
    /// default; a value under the floor (no fold accepts one) is the floor.
    pub fn from_fn(mut set: impl FnMut(u8) -> Option<u32>) -> Thresholds {
        Thresholds {
            values: CLIENT_THRESHOLDS.map(|(c, d, f)| (c, set(c).unwrap_or(d).max(f))),
        }
    }

    /// The threshold of signal `code` (0 for one without).
    pub fn get(&self, code: u8) -> u32 {
        self.values.iter().find(|v| v.0 == code).map_or(0, |v| v.1)
    }

    /// (code, value) pairs, ascending by code.
    pub fn list(&self) -> Vec<(u8, u32)> {
        self.values.to_vec()
    }

    /// True when every value is its default.
    pub fn is_default(&self) -> bool {
        *self == Thresholds::default()
    }

    /// The volume limit as a z-score.
    pub fn z_limit(&self) -> f64 {
        self.get(8) as f64 / 10.0
    }
}

/// Byte counts of a stream, fed piece by piece (four interleaved tables, so
/// runs of one byte value do not serialise on one counter).
#[derive(Clone)]
pub struct Histogram {
    counts: [[u64; 256]; 4],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: [[0; 256]; 4],
        }
    }
}

impl Histogram {
    pub fn add(&mut self, data: &[u8]) {
        let mut it = data.chunks_exact(4);
        for q in &mut it {
            self.counts[0][q[0] as usize] += 1;
            self.counts[1][q[1] as usize] += 1;
            self.counts[2][q[2] as usize] += 1;
            self.counts[3][q[3] as usize] += 1;
        }
        for &b in it.remainder() {
            self.counts[0][b as usize] += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Shannon entropy in bits per byte (0 for no data; at most 8, and at
    /// most log2 of the length).
    pub fn entropy(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        let n = total as f64;
        let mut h = 0.0;
        for b in 0..256 {
            let c: u64 = self.counts.iter().map(|t| t[b]).sum();
            if c > 0 {
                let p = c as f64 / n;
                h -= p * p.log2();
            }
        }
        h
    }
}

/// Entropy of one buffer, in bits per byte.
pub fn entropy(data: &[u8]) -> f64 {
    let mut h = Histogram::default();
    h.add(data);
    h.entropy()
}

/// True if `data` (the start of a message; `whole` when it is all of it)
/// opens with an RFC 5322 header block: one or more fields `name: value`
/// (name of printable ASCII without `:`; folded lines start with a space or
/// tab), up to an empty line or the end. An mbox `From ` envelope line may
/// come first. A NUL in the header block, a line that is neither a field
/// nor a continuation, or no field at all, is not mail. Only the first
/// [`HEADER_PREFIX`] bytes are looked at; a last line cut short is not
/// judged.
pub fn is_header_block(data: &[u8], whole: bool) -> bool {
    let cut = !whole || data.len() > HEADER_PREFIX;
    let data = &data[..data.len().min(HEADER_PREFIX)];
    let mut fields = 0usize;
    let mut lines = data.split(|&b| b == b'\n').peekable();
    let mut first = true;
    while let Some(line) = lines.next() {
        if lines.peek().is_none() && cut {
            break;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.contains(&0) {
            return false;
        }
        let ok = if first && line.starts_with(b"From ") {
            true
        } else if line[0] == b' ' || line[0] == b'\t' {
            fields > 0
        } else {
            match line.iter().position(|&b| b == b':') {
                Some(i) if (1..=76).contains(&i) => {
                    fields += 1;
                    line[..i].iter().all(|&b| (33..=126).contains(&b))
                }
                _ => false,
            }
        };
        if !ok {
            return false;
        }
        first = false;
    }
    fields > 0
}

/// The extension of a file name, as ransomware changes it: the text after
/// the last `.`, 1 to 16 ASCII letters, digits, `_` or `-`, with at least
/// one letter. A Maildir name (`time.unique.host[,S=…][:2,FLAGS]`) has an
/// extension only after its info part (`…:2,S.locked`), or after a fourth
/// dot-separated part when it has no info (`…host.locked` in `new/`).
pub fn extension(name: &[u8]) -> Option<&[u8]> {
    let base = match name.iter().rposition(|&b| b == b':') {
        Some(i) => &name[i..],
        None => {
            let parts = name.split(|&b| b == b'.').count();
            let maildir = name
                .split(|&b| b == b'.')
                .next()
                .is_some_and(|t| !t.is_empty() && t.iter().all(u8::is_ascii_digit));
            if maildir && parts < 4 {
                return None;
            }
            name
        }
    };
    let dot = base.iter().rposition(|&b| b == b'.')?;
    let ext = &base[dot + 1..];
    (!ext.is_empty()
        && ext.len() <= 16
        && ext
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && ext.iter().any(u8::is_ascii_alphabetic)
        && dot > 0)
        .then_some(ext)
}

/// Median of `v` (sorted in place); None when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Robust z-score of `x` against `history` (median and MAD, scaled by
/// 1.4826 so it estimates a standard deviation for normal data), with the
/// spread floored at `floor` (a history of identical runs has MAD 0; one
/// file more must not be infinitely anomalous). None with fewer than
/// [`BASELINE_MIN_RUNS`] runs.
pub fn robust_z(history: &[f64], x: f64, floor: f64) -> Option<f64> {
    if history.len() < BASELINE_MIN_RUNS {
        return None;
    }
    let mut h = history.to_vec();
    let med = median(&mut h)?;
    let mut dev: Vec<f64> = history.iter().map(|v| (v - med).abs()).collect();
    let mad = median(&mut dev)?;
    let sigma = (1.4826 * mad).max(floor).max(f64::MIN_POSITIVE);
    Some((x - med) / sigma)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_known_distributions() {
        assert_eq!(entropy(b""), 0.0);
        assert_eq!(entropy(&[7u8; 1000]), 0.0);
        // Two values equally often: exactly one bit.
        let two: Vec<u8> = (0..1000).map(|i| (i % 2) as u8).collect();
        assert!((entropy(&two) - 1.0).abs() < 1e-12);
        // Every byte value equally often: exactly eight bits.
        let all: Vec<u8> = (0..256 * 40).map(|i| i as u8).collect();
        assert!((entropy(&all) - 8.0).abs() < 1e-12);
        // Fed in pieces (odd sizes, across the 4-way tables) = whole.
        let mut h = Histogram::default();
        for piece in all.chunks(7) {
            h.add(piece);
        }
        assert_eq!(h.total(), all.len() as u64);
        assert!((h.entropy() - 8.0).abs() < 1e-12);
        // Base64 of random bytes stays near 6 bits, under the limit;
        // random bytes are above it.
        let mut x = 0x9e3779b97f4a7c15u64;
        let mut rnd = Vec::new();
        for _ in 0..8192 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            rnd.push((x >> 24) as u8);
        }
        assert!(entropy(&rnd) > ENTROPY_BITS);
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b64: Vec<u8> = rnd.iter().map(|b| B64[(b & 63) as usize]).collect();
        let e = entropy(&b64);
        assert!(e > 5.9 && e <= 6.0, "{e}");
    }

    fn is_header_block_t(d: &[u8]) -> bool {
        is_header_block(d, true)
    }

    #[test]
    fn header_blocks() {
        assert!(is_header_block_t(b"From: a@b\nTo: c@d\nSubject: x\n\nbody"));
        assert!(is_header_block_t(b"From: a@b\r\nSubject: x\r\n\r\nbody"));
        assert!(is_header_block_t(
            b"Return-Path: <a@b>\nReceived: from x\n\tby y\nSubject: s\n\n"
        ));
        assert!(is_header_block_t(
            b"From a@b Mon Jan 1 00:00:00 2026\nFrom: a@b\n\nhi"
        ));
        // Headers only, no body.
        assert!(is_header_block_t(b"From: a@b\nSubject: x\n"));
        assert!(is_header_block_t(b"Subject: x"));
        // Not mail.
        assert!(!is_header_block_t(b""));
        assert!(!is_header_block_t(b"\nFrom: a@b\n"));
        assert!(!is_header_block_t(b"hello world\n"));
        assert!(!is_header_block_t(b" folded: first\n"));
        assert!(!is_header_block_t(b"From: a@b\nbad line\n\n"));
        assert!(!is_header_block_t(b"From: a\0b\n\n"));
        assert!(!is_header_block_t(b"Bad Name: x\n\n"));
        assert!(!is_header_block_t(b":x\n\n"));
        assert!(!is_header_block_t(&[0x8f, 0x12, 0x3a, 0x00, b'\n']));
        // A header block longer than the prefix: judged on what is seen.
        let mut long = b"From: a@b\n".to_vec();
        while long.len() < HEADER_PREFIX + 100 {
            long.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
        }
        assert!(is_header_block_t(&long));
        // The first chunk of a larger file: its last line is not judged.
        assert!(is_header_block(b"From: a@b\nSubj", false));
        assert!(!is_header_block(b"From: a@b\nSubj", true));
    }

    #[test]
    fn random_bytes_are_not_mail() {
        let mut x = 0x2545F4914F6CDD1Du64;
        let mut misses = 0;
        for _ in 0..2000 {
            let mut v = Vec::new();
            for _ in 0..512 {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                v.push((x.wrapping_mul(0x2545F4914F6CDD1D) >> 56) as u8);
            }
            if is_header_block_t(&v) {
                misses += 1;
            }
        }
        assert_eq!(misses, 0);
    }

    #[test]
    fn extensions() {
        assert_eq!(extension(b"report.pdf"), Some(&b"pdf"[..]));
        assert_eq!(extension(b"report.pdf.locked"), Some(&b"locked"[..]));
        assert_eq!(extension(b"noext"), None);
        assert_eq!(extension(b".hidden"), None);
        assert_eq!(extension(b"a.123"), None);
        assert_eq!(extension(b"a.toolongextensionxyz"), None);
        // Maildir names: flags, sizes and the host are not extensions.
        assert_eq!(extension(b"1600000000.M12P34.mx1,S=2345:2,S"), None);
        assert_eq!(extension(b"1600000000.M12P34.mx1,S=2345:2,RS"), None);
        assert_eq!(extension(b"1600000000.M12P34.mx1"), None);
        assert_eq!(extension(b"1600000000.M12P34.mx1:2,"), None);
        // … but what ransomware appends is.
        assert_eq!(
            extension(b"1600000000.M12P34.mx1,S=2345:2,S.locked"),
            Some(&b"locked"[..])
        );
        assert_eq!(
            extension(b"1600000000.M12P34.mx1.encrypted"),
            Some(&b"encrypted"[..])
        );
    }

    #[test]
    fn robust_z_scores() {
        let h = [10.0, 12.0, 11.0, 9.0, 10.0, 13.0, 10.0];
        // median 10, |dev| = 0 2 1 1 0 3 0 → MAD 1, sigma 1.4826.
        let z = robust_z(&h, 20.0, 0.0).unwrap();
        assert!((z - 10.0 / 1.4826).abs() < 1e-9, "{z}");
        assert!(robust_z(&h, 12.0, 0.0).unwrap() < Z_LIMIT);
        // Six runs are not a baseline.
        assert_eq!(robust_z(&h[..6], 1000.0, 0.0), None);
        // An outlier in the history moves neither median nor MAD much.
        let mut spiky = h.to_vec();
        spiky.push(5000.0);
        assert!(robust_z(&spiky, 12.0, 0.0).unwrap() < Z_LIMIT);
        assert!(robust_z(&spiky, 40.0, 0.0).unwrap() > Z_LIMIT);
        // Identical runs: MAD 0, the floor keeps one more file ordinary.
        let flat = [100.0; 10];
        assert!(robust_z(&flat, 101.0, 10.0).unwrap() < Z_LIMIT);
        assert!(robust_z(&flat, 131.0, 10.0).unwrap() > Z_LIMIT);
        let mut even = vec![1.0, 2.0, 3.0, 4.0];
        assert_eq!(median(&mut even), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
