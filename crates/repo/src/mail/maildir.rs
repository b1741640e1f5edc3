//! Parsers of what a Maildir holds: file names (base name, `,S=`/`,W=`
//! fields, `:2,` flags), Dovecot's `dovecot-uidlist` and
//! `dovecot-keywords`, and a message's `Message-ID`. Every input here is
//! untrusted (it comes from a snapshot or from a live mail folder): each
//! parser returns an error or `None`, never panics.

use std::collections::BTreeSet;

/// A Maildir file name split at the info separator: `base:2,FLAGS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaildirName<'a> {
    /// Everything before `:` (what Dovecot's uidlist keys on).
    pub base: &'a [u8],
    /// System flags (upper-case letters: D F P R S T), sorted, unique.
    pub flags: Vec<u8>,
    /// Keyword letters a–z, sorted, unique.
    pub keywords: Vec<u8>,
    /// The info part was something other than `2,…` (kept as is).
    pub other_info: Option<&'a [u8]>,
}

impl<'a> MaildirName<'a> {
    pub fn parse(name: &'a [u8]) -> MaildirName<'a> {
        let (base, info) = match name.iter().position(|b| *b == b':') {
            Some(i) => (&name[..i], Some(&name[i + 1..])),
            None => (name, None),
        };
        let mut out = MaildirName {
            base,
            flags: Vec::new(),
            keywords: Vec::new(),
            other_info: None,
        };
        match info {
            Some(i) if i.starts_with(b"2,") => {
                let mut f = BTreeSet::new();
                let mut k = BTreeSet::new();
                for c in &i[2..] {
                    match c {
                        b'a'..=b'z' => {
                            k.insert(*c);
                        }
                        b'A'..=b'Z' => {
                            f.insert(*c);
                        }
                        _ => {}
                    }
                }
                out.flags = f.into_iter().collect();
                out.keywords = k.into_iter().collect();
            }
            Some(i) => out.other_info = Some(i),
            None => {}
        }
        out
    }

    /// The value of a `,X=value` field of the base name (`S` is the size
    /// in bytes, `W` the size with CRLF line ends).
    pub fn field(&self, key: u8) -> Option<u64> {
        let mut parts = self.base.split(|b| *b == b',');
        parts.next();
        for p in parts {
            if p.len() > 2 && p[0] == key && p[1] == b'=' {
                return std::str::from_utf8(&p[2..]).ok()?.parse().ok();
            }
        }
        None
    }
}

/// `dovecot-uidlist`: UIDVALIDITY, the next UID, and UID → base name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uidlist {
    pub version: u32,
    pub uidvalidity: u32,
    pub next_uid: u32,
    pub entries: Vec<(u32, Vec<u8>)>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn num(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Parses `dovecot-uidlist` (version 1 and 3). Entries keep their base
/// names (the part before `:`).
pub fn parse_uidlist(b: &[u8]) -> Result<Uidlist, ParseError> {
    let bad = |why: &str| ParseError(format!("dovecot-uidlist: {why}"));
    let mut lines = b.split(|c| *c == b'\n');
    let head = lines.next().ok_or_else(|| bad("empty"))?;
    let mut words = head.split(|c| *c == b' ').filter(|w| !w.is_empty());
    let version = words
        .next()
        .and_then(num)
        .ok_or_else(|| bad("no version"))?;
    let mut u = Uidlist {
        version,
        ..Default::default()
    };
    match version {
        1 => {
            u.uidvalidity = words
                .next()
                .and_then(num)
                .ok_or_else(|| bad("no UIDVALIDITY"))?;
            u.next_uid = words
                .next()
                .and_then(num)
                .ok_or_else(|| bad("no next UID"))?;
        }
        3 => {
            for w in words {
                match w[0] {
                    b'V' => u.uidvalidity = num(&w[1..]).ok_or_else(|| bad("bad V field"))?,
                    b'N' => u.next_uid = num(&w[1..]).ok_or_else(|| bad("bad N field"))?,
                    _ => {}
                }
            }
        }
        v => return Err(bad(&format!("unknown version {v}"))),
    }
    if u.uidvalidity == 0 {
        return Err(bad("no UIDVALIDITY"));
    }
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let sp = line.iter().position(|c| *c == b' ');
        let (uid, rest) = match sp {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => return Err(bad("a record without a file name")),
        };
        let uid = num(uid).ok_or_else(|| bad("a record with a bad UID"))?;
        let name = if version == 3 {
            // Extension fields, then ":filename".
            let i = rest
                .iter()
                .position(|c| *c == b':')
                .ok_or_else(|| bad("a record without ':'"))?;
            &rest[i + 1..]
        } else {
            rest
        };
        let base = MaildirName::parse(name).base.to_vec();
        if base.is_empty() {
            return Err(bad("a record with an empty file name"));
        }
        u.entries.push((uid, base));
    }
    Ok(u)
}

/// Parses `dovecot-keywords`: one `INDEX NAME` per line; index 0 is the
/// letter `a`. Returns the names by index (26 at most: a–z).
pub fn parse_keywords(b: &[u8]) -> Result<Vec<Option<String>>, ParseError> {
    let bad = |why: &str| ParseError(format!("dovecot-keywords: {why}"));
    let mut out: Vec<Option<String>> = Vec::new();
    for line in b.split(|c| *c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let i = line
            .iter()
            .position(|c| *c == b' ')
            .ok_or_else(|| bad("a line without a name"))?;
        let idx = num(&line[..i]).ok_or_else(|| bad("a bad index"))? as usize;
        let name = std::str::from_utf8(&line[i + 1..])
            .map_err(|_| bad("a name that is not UTF-8"))?
            .to_string();
        if name.is_empty() || name.contains(' ') {
            return Err(bad("an empty name or one with a space"));
        }
        if idx >= 26 {
            // Dovecot keeps no letter for it: ignored.
            continue;
        }
        if out.len() <= idx {
            out.resize(idx + 1, None);
        }
        out[idx] = Some(name);
    }
    Ok(out)
}

/// The letter a keyword name has in a folder's `dovecot-keywords`.
pub fn letter_of(keywords: &[Option<String>], name: &str) -> Option<u8> {
    keywords
        .iter()
        .position(|k| k.as_deref() == Some(name))
        .map(|i| b'a' + i as u8)
}

/// The `Message-ID` header's value (angle brackets kept, folding undone,
/// whitespace trimmed) from the header of `msg`; `None` without one.
pub fn message_id(msg: &[u8]) -> Option<Vec<u8>> {
    let mut value: Option<Vec<u8>> = None;
    for line in msg.split(|c| *c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break; // end of the header
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(v) = value.as_mut() {
                v.extend_from_slice(line);
            }
            continue;
        }
        if value.is_some() {
            break;
        }
        if line.len() >= 11 && line[..11].eq_ignore_ascii_case(b"message-id:") {
            value = Some(line[11..].to_vec());
        }
    }
    let v = value?;
    let v: Vec<u8> = v.into_iter().filter(|c| !c.is_ascii_whitespace()).collect();
    (!v.is_empty()).then_some(v)
}

/// Escapes a host name for a Maildir file name (`/` and `:` are not
/// allowed there).
pub fn host_part(host: &str) -> String {
    host.replace('/', "\\057").replace(':', "\\072")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_flags() {
        let n = MaildirName::parse(b"1600000000.M1P2.mx1,S=1234,W=1260:2,SRba");
        assert_eq!(n.base, b"1600000000.M1P2.mx1,S=1234,W=1260");
        assert_eq!(n.flags, b"RS");
        assert_eq!(n.keywords, b"ab");
        assert_eq!(n.field(b'S'), Some(1234));
        assert_eq!(n.field(b'W'), Some(1260));
        let n = MaildirName::parse(b"plain");
        assert_eq!(
            (n.base, n.flags.len(), n.field(b'S')),
            (&b"plain"[..], 0, None)
        );
    }

    #[test]
    fn uidlist_v3_and_v1() {
        let u = parse_uidlist(
            b"3 V1700000000 N5 G3085f01b7f11094c501100008c4a11c1\n1 :a.mx:2,S\n3 W123 :c.mx,S=5\n",
        )
        .unwrap();
        assert_eq!((u.uidvalidity, u.next_uid), (1700000000, 5));
        assert_eq!(
            u.entries,
            vec![(1, b"a.mx".to_vec()), (3, b"c.mx,S=5".to_vec())]
        );
        let u = parse_uidlist(b"1 42 7\n5 b.mx:2,\n").unwrap();
        assert_eq!((u.uidvalidity, u.next_uid, u.entries.len()), (42, 7, 1));
        assert!(parse_uidlist(b"").is_err());
        assert!(parse_uidlist(b"3 V1 N2\nx :a\n").is_err());
        assert!(parse_uidlist(b"9 V1\n").is_err());
        assert!(parse_uidlist(b"3 N2\n").is_err());
    }

    #[test]
    fn keywords() {
        let k = parse_keywords(b"0 $Forwarded\n2 Junk\n1 $label1\n").unwrap();
        assert_eq!(letter_of(&k, "Junk"), Some(b'c'));
        assert_eq!(letter_of(&k, "$Forwarded"), Some(b'a'));
        assert_eq!(letter_of(&k, "nope"), None);
        assert!(parse_keywords(b"x y\n").is_err());
        assert!(parse_keywords(b"0\n").is_err());
        assert_eq!(parse_keywords(b"99 far\n").unwrap().len(), 0);
    }

    #[test]
    fn message_ids() {
        assert_eq!(
            message_id(b"Subject: x\nMessage-ID:\n <a@b>\nFrom: y\n\nbody"),
            Some(b"<a@b>".to_vec())
        );
        assert_eq!(
            message_id(b"message-id: <c@d>\r\n\r\n"),
            Some(b"<c@d>".to_vec())
        );
        assert_eq!(message_id(b"Subject: x\n\nMessage-ID: <no@body>\n"), None);
    }
}
