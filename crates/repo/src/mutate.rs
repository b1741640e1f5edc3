//! Test support: the random damage the file-format tests put behind a
//! valid hash or checksum (flips, overwrites, insertions, deletions,
//! truncation), never touching byte 0.

/// Damages `b` in 1 to 4 places, choosing with `next(n)` (a value below `n`).
pub(crate) fn damage(b: &mut Vec<u8>, next: &mut impl FnMut(usize) -> usize) {
    for _ in 0..1 + next(4) {
        let at = 1 + next(b.len() - 1);
        match next(6) {
            0 => b[at] ^= 1 << next(8),
            1 => b[at] = 0xff,
            2 => b[at] = 0,
            3 => {
                b.remove(at);
            }
            4 => b.insert(at, next(256) as u8),
            _ => b.truncate(at),
        }
    }
}
