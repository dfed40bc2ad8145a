//! Pure content digesting: bytes in, normalized text and SHA-256 out.
//!
//! Text is normalized before hashing: CRLF and a lone CR both become LF, as the
//! contract's `content_hash` requires. A file is *text* when it is valid UTF-8
//! and holds no NUL byte; anything else is *binary*, hashed over its raw bytes
//! and stored without text. Two entry points give identical results:
//! [`digest_bytes`] for a file read whole, and [`StreamDigester`] for files read
//! in chunks (over the size limit), which carries a CR split from its LF across
//! a chunk boundary. No I/O, no database.

use sha2::{Digest as _, Sha256};

/// The result of digesting one file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Lowercase hex SHA-256: of the normalized text, or of the raw bytes when binary.
    pub hash: String,
    /// The normalized text; `None` for binary files and for files only hashed.
    pub text: Option<String>,
    /// Bytes on disk (before normalization).
    pub size: u64,
    /// Lines of the normalized text (see [`line_count`]); `None` for binary.
    pub line_count: Option<i64>,
    /// False when the bytes are not valid UTF-8 or contain NUL.
    pub is_text: bool,
}

/// Number of lines as an editor shows them: only `\n` ends a line, and a last
/// line without a newline still counts. U+2028, U+0085 and friends are
/// ordinary characters here (Python's `splitlines` disagrees; that was a bug
/// of the old tracker).
pub fn line_count(text: &str) -> i64 {
    let newlines = memchr::memchr_iter(b'\n', text.as_bytes()).count();
    let partial = usize::from(!text.is_empty() && !text.ends_with('\n'));
    // A count of lines in memory always fits in i64.
    i64::try_from(newlines + partial).unwrap_or(i64::MAX)
}

/// True when `bytes` would be stored as text.
fn is_text(bytes: &[u8]) -> bool {
    memchr::memchr(0, bytes).is_none() && std::str::from_utf8(bytes).is_ok()
}

/// Replaces CRLF and lone CR with LF. Returns the input unchanged (no copy)
/// when it holds no CR, which is the common case.
pub fn normalize(bytes: Vec<u8>) -> Vec<u8> {
    if memchr::memchr(b'\r', &bytes).is_none() {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut pending_cr = false;
    push_normalized(&bytes, &mut pending_cr, &mut |part| {
        out.extend_from_slice(part)
    });
    if pending_cr {
        out.push(b'\n');
    }
    out
}

/// Feeds the normalized form of `chunk` to `emit`, given whether the previous
/// chunk ended in a CR whose LF (if any) may start this one.
fn push_normalized(chunk: &[u8], pending_cr: &mut bool, emit: &mut dyn FnMut(&[u8])) {
    let mut start = 0;
    if *pending_cr {
        if chunk.is_empty() {
            return;
        }
        emit(b"\n");
        *pending_cr = false;
        if chunk[0] == b'\n' {
            start = 1;
        }
    }
    while let Some(offset) = memchr::memchr(b'\r', &chunk[start..]) {
        let cr = start + offset;
        emit(&chunk[start..cr]);
        if cr + 1 == chunk.len() {
            // The LF that may follow is in the next chunk.
            *pending_cr = true;
            return;
        }
        emit(b"\n");
        start = if chunk[cr + 1] == b'\n' {
            cr + 2
        } else {
            cr + 1
        };
    }
    emit(&chunk[start..]);
}

/// A stable id unique to one change, for `file_changes.content_hash` (UNIQUE
/// in the backend's schema): 64 lowercase hex digits, like the backend's
/// own. The first 20 are the digits of `stamp` (the change's timestamp,
/// `YYYYMMDDHHMMSSffffff`, strictly increasing per write, which is what
/// makes the id unique: a repeated change, a revert and its redo, gets a
/// stamp of its own), the other 44 are `tag` ([`change_tag`], computed by
/// the worker, off the writer's path). Ids sort by time, so a new one lands
/// at the end of the UNIQUE index: a random id dirtied a page of that index
/// per change in every commit.
pub fn change_id(stamp: &str, tag: &str) -> String {
    const TIME_DIGITS: usize = 20;
    let mut id: String = stamp
        .bytes()
        .filter(u8::is_ascii_digit)
        .take(TIME_DIGITS)
        .map(char::from)
        .collect();
    while id.len() < TIME_DIGITS {
        id.push('0');
    }
    id.push_str(tag.get(..CHANGE_TAG_LEN).unwrap_or(tag));
    id
}

/// Hex digits of a [`change_tag`].
pub const CHANGE_TAG_LEN: usize = 44;

/// The start (44 hex digits) of the SHA-256 of what a change is about: the
/// path, the change kind, the old and new content hashes, and `salt` (empty
/// for the engine's own changes; a row id when ids are given to old rows
/// that may share a stamp). The backend hashes the first four only, so
/// with the stamp digits in front these ids stay apart from the backend's.
pub fn change_tag(
    path: &str,
    kind: &str,
    old: Option<&str>,
    new: Option<&str>,
    salt: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [path, kind, old.unwrap_or(""), new.unwrap_or(""), salt] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let mut tag = hex::encode(h.finalize());
    tag.truncate(CHANGE_TAG_LEN);
    tag
}

/// Digests a file read whole.
pub fn digest_bytes(raw: Vec<u8>) -> Digest {
    let size = raw.len() as u64;
    if !is_text(&raw) {
        return Digest {
            hash: hex::encode(Sha256::digest(&raw)),
            text: None,
            size,
            line_count: None,
            is_text: false,
        };
    }
    let normalized = normalize(raw);
    let hash = hex::encode(Sha256::digest(&normalized));
    // Normalization only touches ASCII CR/LF, so valid UTF-8 stays valid.
    let text = String::from_utf8(normalized).unwrap_or_default();
    Digest {
        hash,
        line_count: Some(line_count(&text)),
        text: Some(text),
        size,
        is_text: true,
    }
}

/// Digests a file fed in chunks of any size, without keeping its text.
///
/// Computes the raw and the normalized hash at once, since whether the file is
/// text is known only at the end.
pub struct StreamDigester {
    raw: Sha256,
    normalized: Sha256,
    pending_cr: bool,
    /// Up to three bytes of a UTF-8 sequence cut by the chunk boundary.
    utf8_carry: Vec<u8>,
    text: bool,
    size: u64,
    newlines: usize,
    last_byte: Option<u8>,
}

impl Default for StreamDigester {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDigester {
    /// A digester that has seen no bytes.
    pub fn new() -> Self {
        StreamDigester {
            raw: Sha256::new(),
            normalized: Sha256::new(),
            pending_cr: false,
            utf8_carry: Vec::new(),
            text: true,
            size: 0,
            newlines: 0,
            last_byte: None,
        }
    }

    /// Feeds the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        self.size += chunk.len() as u64;
        self.raw.update(chunk);
        if self.text {
            self.check_text(chunk);
        }
        let normalized = &mut self.normalized;
        let newlines = &mut self.newlines;
        let last = &mut self.last_byte;
        push_normalized(chunk, &mut self.pending_cr, &mut |part| {
            if let Some(&b) = part.last() {
                normalized.update(part);
                *newlines += memchr::memchr_iter(b'\n', part).count();
                *last = Some(b);
            }
        });
    }

    fn check_text(&mut self, chunk: &[u8]) {
        if memchr::memchr(0, chunk).is_some() {
            self.text = false;
            return;
        }
        let joined;
        let bytes = if self.utf8_carry.is_empty() {
            chunk
        } else {
            joined = [self.utf8_carry.as_slice(), chunk].concat();
            &joined
        };
        match std::str::from_utf8(bytes) {
            Ok(_) => self.utf8_carry.clear(),
            Err(e) if e.error_len().is_none() => {
                self.utf8_carry = bytes[e.valid_up_to()..].to_vec();
            }
            Err(_) => self.text = false,
        }
    }

    /// Finishes: the same [`Digest`] as [`digest_bytes`] gives for the whole
    /// input, except that `text` is never kept.
    pub fn finish(mut self) -> Digest {
        if self.pending_cr {
            self.normalized.update(b"\n");
            self.newlines += 1;
            self.last_byte = Some(b'\n');
        }
        let is_text = self.text && self.utf8_carry.is_empty();
        if !is_text {
            return Digest {
                hash: hex::encode(self.raw.finalize()),
                text: None,
                size: self.size,
                line_count: None,
                is_text: false,
            };
        }
        let partial = usize::from(matches!(self.last_byte, Some(b) if b != b'\n'));
        Digest {
            hash: hex::encode(self.normalized.finalize()),
            text: None,
            size: self.size,
            line_count: Some(i64::try_from(self.newlines + partial).unwrap_or(i64::MAX)),
            is_text: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(bytes: &[u8], chunk: usize) -> Digest {
        let mut d = StreamDigester::new();
        for part in bytes.chunks(chunk.max(1)) {
            d.update(part);
        }
        d.finish()
    }

    #[test]
    fn change_ids_are_hex_unique_and_sort_by_time() {
        let tag_a = change_tag("a.md", "modified", Some("x"), Some("y"), "");
        let tag_b = change_tag("b.md", "modified", Some("x"), Some("y"), "");
        assert_eq!(tag_a.len(), CHANGE_TAG_LEN);
        let a = change_id("2026-03-01 09:59:59.999999", &tag_a);
        let b = change_id("2026-03-01 10:00:00.000000", &tag_a);
        let c = change_id("2026-03-01 10:00:00.000000", &tag_b);
        for id in [&a, &b, &c] {
            assert_eq!(id.len(), 64, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
        }
        assert!(a < b, "{a} !< {b}");
        assert_ne!(b, c);
        assert!(b.starts_with("20260301100000000000"), "{b}");
    }

    #[test]
    fn crlf_and_lone_cr_hash_like_lf() {
        let lf = digest_bytes(b"a\nb\nc\n".to_vec());
        assert_eq!(digest_bytes(b"a\r\nb\r\nc\r\n".to_vec()).hash, lf.hash);
        assert_eq!(digest_bytes(b"a\rb\rc\r".to_vec()).hash, lf.hash);
        assert_eq!(digest_bytes(b"a\r\nb\rc\n".to_vec()).hash, lf.hash);
        assert_eq!(lf.text.as_deref(), Some("a\nb\nc\n"));
    }

    #[test]
    fn sha256_of_known_text() {
        // sha256("hello\n")
        assert_eq!(
            digest_bytes(b"hello\r\n".to_vec()).hash,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
    }

    #[test]
    fn crlf_split_across_read_buffer_boundary_hashes_like_whole_file() {
        let text = b"line one\r\nline two\r\n\r\nlast\r".to_vec();
        let whole = digest_bytes(text.clone());
        for chunk in 1..=text.len() {
            let streamed = stream(&text, chunk);
            assert_eq!(streamed.hash, whole.hash, "chunk size {chunk}");
            assert_eq!(streamed.line_count, whole.line_count, "chunk size {chunk}");
        }
    }

    #[test]
    fn utf8_split_across_chunks_is_still_text() {
        let text = "héllo wörld ✓ 𝄞\n".repeat(3);
        let whole = digest_bytes(text.clone().into_bytes());
        for chunk in 1..8 {
            let streamed = stream(text.as_bytes(), chunk);
            assert!(streamed.is_text);
            assert_eq!(streamed.hash, whole.hash);
        }
    }

    #[test]
    fn binary_hashes_raw_bytes_and_keeps_no_text() {
        let raw = b"PK\x03\x04\x00\r\n\xff".to_vec();
        let d = digest_bytes(raw.clone());
        assert!(!d.is_text);
        assert_eq!(d.text, None);
        assert_eq!(d.line_count, None);
        assert_eq!(d.hash, hex::encode(Sha256::digest(&raw)));
        assert_eq!(stream(&raw, 3), d);
    }

    #[test]
    fn invalid_utf8_is_binary() {
        let d = digest_bytes(b"caf\xe9\n".to_vec());
        assert!(!d.is_text);
        assert_eq!(stream(b"caf\xe9\n", 2).hash, d.hash);
        // A sequence cut off at end of file is invalid too.
        assert!(!stream("é".as_bytes()[..1].as_ref(), 1).is_text);
    }

    #[test]
    fn line_count_counts_only_newline_terminated_lines_and_a_final_partial() {
        assert_eq!(line_count(""), 0);
        assert_eq!(line_count("a"), 1);
        assert_eq!(line_count("a\n"), 1);
        assert_eq!(line_count("a\nb"), 2);
        assert_eq!(line_count("\n\n"), 2);
        // Unicode separators are not line breaks.
        assert_eq!(line_count("a\u{2028}b\u{2029}c\u{85}d\u{0b}e\u{0c}f\n"), 1);
    }

    #[test]
    fn empty_file_is_text_with_zero_lines() {
        let d = digest_bytes(Vec::new());
        assert!(d.is_text);
        assert_eq!(d.line_count, Some(0));
        assert_eq!(stream(b"", 4).hash, d.hash);
    }

    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        /// The obvious, slow definition of the normalization.
        fn reference(bytes: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'\r' {
                    out.push(b'\n');
                    if bytes.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                } else {
                    out.push(bytes[i]);
                }
                i += 1;
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(crate::engine::fuzz_cases()))]

            #[test]
            fn normalization_matches_the_reference(bytes in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), any::<u8>()], 0..200)) {
                prop_assert_eq!(normalize(bytes.clone()), reference(&bytes));
            }

            #[test]
            fn any_chunking_digests_like_the_whole(
                bytes in proptest::collection::vec(
                    prop_oneof![Just(b'\r'), Just(b'\n'), Just(0xC3u8), Just(0xA9u8), any::<u8>()], 0..300),
                cuts in proptest::collection::vec(1usize..40, 0..20),
            ) {
                let whole = digest_bytes(bytes.clone());
                let mut d = StreamDigester::new();
                let mut rest: &[u8] = &bytes;
                for cut in cuts {
                    let (head, tail) = rest.split_at(cut.min(rest.len()));
                    d.update(head);
                    rest = tail;
                }
                d.update(rest);
                let streamed = d.finish();
                prop_assert_eq!(&streamed.hash, &whole.hash);
                prop_assert_eq!(streamed.is_text, whole.is_text);
                prop_assert_eq!(streamed.line_count, whole.line_count);
            }
        }
    }
}
