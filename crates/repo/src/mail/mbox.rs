//! mbox in RFC 4155's default format with mboxrd quoting: each message is
//! `From SENDER DATE` (asctime, UTC), the message with every line matching
//! `^>*From ` given one more `>`, and an empty line. Reading removes
//! exactly one `>` from such lines, so the round trip is exact for any
//! message that ends with a newline (one that does not gets one).

/// The `From ` separator line for a message received at `time_s`.
pub fn from_line(msg: &[u8], time_s: i64) -> Vec<u8> {
    let sender = return_path(msg).unwrap_or_else(|| b"MAILER-DAEMON".to_vec());
    let mut l = b"From ".to_vec();
    l.extend_from_slice(&sender);
    l.push(b' ');
    l.extend_from_slice(asctime(time_s).as_bytes());
    l.push(b'\n');
    l
}

/// Appends one message, quoted, to `out`.
pub fn write_message(out: &mut Vec<u8>, msg: &[u8], time_s: i64) {
    out.extend_from_slice(&from_line(msg, time_s));
    let mut rest = msg;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|c| *c == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        if is_from(line) {
            out.push(b'>');
        }
        out.extend_from_slice(line);
        rest = &rest[end..];
    }
    if !msg.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// `^>*From `.
fn is_from(line: &[u8]) -> bool {
    let q = line.iter().take_while(|c| **c == b'>').count();
    line[q..].starts_with(b"From ")
}

/// Splits an mboxrd file into its messages, unquoted.
pub fn parse(mbox: &[u8]) -> Vec<Vec<u8>> {
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    let mut cur: Option<Vec<u8>> = None;
    let mut rest = mbox;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|c| *c == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        rest = &rest[end..];
        if line.starts_with(b"From ") {
            if let Some(m) = cur.take() {
                msgs.push(finish(m));
            }
            cur = Some(Vec::new());
            continue;
        }
        let Some(m) = cur.as_mut() else {
            continue; // text before the first separator
        };
        if line.starts_with(b">") && is_from(line) {
            m.extend_from_slice(&line[1..]);
        } else {
            m.extend_from_slice(line);
        }
    }
    if let Some(m) = cur.take() {
        msgs.push(finish(m));
    }
    msgs
}

/// Drops the empty line that ends each message.
fn finish(mut m: Vec<u8>) -> Vec<u8> {
    if m.ends_with(b"\n\n") {
        m.pop();
    } else if m.ends_with(b"\r\n\r\n") {
        m.truncate(m.len() - 2);
    }
    m
}

/// The address of a `Return-Path:` header, without angle brackets.
fn return_path(msg: &[u8]) -> Option<Vec<u8>> {
    for line in msg.split(|c| *c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        if line.len() > 12 && line[..12].eq_ignore_ascii_case(b"return-path:") {
            let v: Vec<u8> = line[12..]
                .iter()
                .copied()
                .filter(|c| !c.is_ascii_whitespace() && *c != b'<' && *c != b'>')
                .collect();
            return (!v.is_empty()).then_some(v);
        }
    }
    None
}

/// `Mon Dec  7 17:14:02 2026` (UTC).
pub fn asctime(t: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = t.div_euclid(86_400);
    let sod = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {y}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (kept here so that this file
/// stands alone: the fuzz target compiles it in).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_from_lines() {
        let msgs: Vec<&[u8]> = vec![
            b"Subject: a\n\nFrom here\n>From there\n>>From far\nFrom\nFromage\n",
            b"Return-Path: <x@y.org>\nSubject: b\n\n From indented\n\n\nFrom \n",
            b"Subject: c\r\n\r\nFrom crlf\r\n>From q\r\n",
            b"Subject: d\n\n",
        ];
        let mut out = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            write_message(&mut out, m, 1_700_000_000 + i as i64);
        }
        let back = parse(&out);
        assert_eq!(back.len(), msgs.len());
        for (a, b) in msgs.iter().zip(&back) {
            assert_eq!(
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b),
                "round trip changed a message"
            );
        }
        // Quoting: exactly one more '>' on From lines, nothing else.
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("\n>From here\n>>From there\n>>>From far\nFrom\nFromage\n"));
        assert!(text.starts_with("From MAILER-DAEMON Tue Nov 14 22:13:20 2023\n"));
        assert!(text.contains("\nFrom x@y.org Tue Nov 14 22:13:21 2023\n"));
    }

    #[test]
    fn no_final_newline_gets_one() {
        let mut out = Vec::new();
        write_message(&mut out, b"Subject: e\n\nno newline", 0);
        assert_eq!(parse(&out), vec![b"Subject: e\n\nno newline\n".to_vec()]);
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
    }
}
