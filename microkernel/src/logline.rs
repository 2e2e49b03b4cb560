//! What a server's `log` call prints: exactly one record, `[name] text`,
//! whatever bytes the server passed. A server must not be able to start a
//! line of its own choosing (and so forge "kernel: server console stopped"
//! or another server's output), move the cursor, clear the screen or
//! recolour the terminal: trailing newlines are trimmed, then every control
//! character, a backslash, and each byte that is not valid UTF-8 are
//! escaped visibly (`\n`, `\x1b`, `\\`, `\xff`), as are the Unicode
//! characters terminals treat as controls or that reorder or break what
//! follows (C1 controls, bidirectional overrides, line and paragraph
//! separators: `\u{202e}`). A record too long for the kernel's line is cut
//! between escapes, never inside one, and says how many bytes it left out.
//!
//! Pure functions over byte slices into caller-provided buffers (no
//! allocation), tested on the host. Context: any.

use core::fmt::{self, Write};

/// The longest record, newline included: the kernel formats its lines in a
/// buffer this long (`console.rs`). Room for a whole `log` line
/// (`syscall_args::MAX_LOG`, 1 KiB: machine-readable result lines such as the
/// stress server's are that long) with its name and a few escapes.
pub const RECORD_MAX: usize = 1152;

/// `text` without its trailing line ends (`\n`, `\r`): `println!` style
/// text ends in one, and it is not part of the record.
pub fn trim_line_end(text: &[u8]) -> &[u8] {
    let end = text
        .iter()
        .rposition(|&b| b != b'\n' && b != b'\r')
        .map_or(0, |i| i + 1);
    &text[..end]
}

/// How much of its input [`escape`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escaped {
    /// Bytes written to the output.
    pub written: usize,
    /// Input bytes those stand for (all of it unless the output filled).
    pub consumed: usize,
}

/// Escape `text` into `out` as described in the module comment, stopping
/// before the first character or escape that does not fit whole.
///
/// Runs of plain ASCII are copied in one piece and only the rest is looked
/// at character by character: where PVM interprets the kernel every
/// instruction costs about a microsecond, and a server may log 1 KiB lines
/// in a loop.
pub fn escape(text: &[u8], out: &mut [u8]) -> Escaped {
    let mut done = Escaped {
        written: 0,
        consumed: 0,
    };
    while done.consumed < text.len() {
        let rest = &text[done.consumed..];
        let room = out.len() - done.written;
        let run = rest
            .iter()
            .take(room)
            .position(|&b| !is_plain(b))
            .unwrap_or(rest.len().min(room));
        out[done.written..done.written + run].copy_from_slice(&rest[..run]);
        done.written += run;
        done.consumed += run;
        if run == rest.len() || run == room {
            break;
        }
        let mut unit = [0u8; 10];
        let (len, used) = escape_unit(&rest[run..], &mut unit);
        let Some(dst) = out.get_mut(done.written..done.written + len) else {
            break;
        };
        dst.copy_from_slice(&unit[..len]);
        done.written += len;
        done.consumed += used;
    }
    done
}

/// Printable ASCII other than the backslash: shown as it is.
fn is_plain(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'\\'
}

/// The first unit of `rest` (whose first byte is not plain) in `unit`: an
/// escaped control character or backslash, a character that passes as it
/// is, an escaped unsafe one, or one escaped byte of invalid UTF-8. Returns
/// the bytes written and the input bytes used.
fn escape_unit(rest: &[u8], unit: &mut [u8; 10]) -> (usize, usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = rest[0];
    let simple: &[u8] = match b {
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        b'\\' => b"\\\\",
        _ => b"",
    };
    if !simple.is_empty() {
        unit[..2].copy_from_slice(simple);
        return (2, 1);
    }
    // A character: the longest is four bytes, so four decide.
    let window = &rest[..rest.len().min(4)];
    let valid = match core::str::from_utf8(window) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&window[..e.valid_up_to()]).unwrap_or_default(),
    };
    match valid.chars().next() {
        // Control characters below 0x80 are single bytes, escaped as such.
        Some(c) if c.is_ascii() => {}
        Some(c) if is_unsafe_unicode(c) => {
            // `\u{...}`: at most six hex digits.
            let code = c as u32;
            let digits = (32 - code.leading_zeros()).div_ceil(4) as usize;
            unit[..3].copy_from_slice(b"\\u{");
            for i in 0..digits {
                unit[3 + i] = HEX[(code >> (4 * (digits - 1 - i)) & 0xf) as usize];
            }
            unit[3 + digits] = b'}';
            return (4 + digits, c.len_utf8());
        }
        Some(c) => {
            let n = c.len_utf8();
            unit[..n].copy_from_slice(&rest[..n]);
            return (n, n);
        }
        // Not the start of a valid character: this byte alone.
        None => {}
    }
    unit[..4].copy_from_slice(&[
        b'\\',
        b'x',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 0xf)],
    ]);
    (4, 1)
}

/// The record for `text` logged by server `name`, in `out`: `[name]
/// escaped-text\n`, cut with ` [+N bytes]` when it does not fit. Returns
/// the record's length.
pub fn server_record(name: &str, text: &[u8], out: &mut [u8; RECORD_MAX]) -> usize {
    let text = trim_line_end(text);
    let mut w = Cursor::new(&mut out[..RECORD_MAX - 1]);
    put_prefix(&mut w, name);
    let start = w.len;
    let room = RECORD_MAX - 1 - start;
    // Escaped once, leaving room for the cut marker (which names at most
    // as many bytes as the whole text has); only if the text did not fit is
    // the rest tried in the marker's room, as a record that just fits is
    // not cut.
    let marker = Marker(text.len() as u64).len();
    let mut done = escape(text, &mut w.buf[start..start + room.saturating_sub(marker)]);
    if done.consumed < text.len() {
        let more = escape(&text[done.consumed..], &mut w.buf[start + done.written..]);
        if done.consumed + more.consumed == text.len() {
            done.written += more.written;
            done.consumed = text.len();
        }
    }
    w.len = start + done.written;
    if done.consumed < text.len() {
        let _ = w.put_all(format_args!(
            "{}",
            Marker((text.len() - done.consumed) as u64)
        ));
    }
    let len = w.len;
    out[len] = b'\n';
    len + 1
}

/// The note that goes out before server `name`'s first line admitted after
/// `dropped` of its lines were not: `[name] (N lines dropped)\n`.
pub fn dropped_note(name: &str, dropped: u64, out: &mut [u8; RECORD_MAX]) -> usize {
    let mut w = Cursor::new(&mut out[..RECORD_MAX - 1]);
    put_prefix(&mut w, name);
    let plural = if dropped == 1 { "" } else { "s" };
    let _ = w.put_all(format_args!("({dropped} line{plural} dropped)"));
    let len = w.len;
    out[len] = b'\n';
    len + 1
}

/// How many console write requests `bytes` takes when `pending` bytes of an
/// unfinished line wait before them and each request carries at most `max`
/// bytes and ends at a newline (the kernel log's chunking, `klog.rs`), so
/// that a line is queued only where it fits whole.
pub fn chunks(pending: usize, bytes: &[u8], max: usize) -> usize {
    let mut len = pending;
    let mut n = 0;
    for &b in bytes {
        len += 1;
        if len >= max || b == b'\n' {
            n += 1;
            len = 0;
        }
    }
    n
}

/// `[name] `, the name escaped like the text (names come from the checked
/// manifest, but the record's first bytes are the kernel's to vouch for).
fn put_prefix(w: &mut Cursor<'_>, name: &str) {
    const NAME_MAX: usize = 32;
    let _ = w.put(b"[");
    let end = w.len + NAME_MAX.min(w.buf.len() - w.len - 2);
    let done = escape(name.as_bytes(), &mut w.buf[w.len..end]);
    w.len += done.written;
    let _ = w.put(b"] ");
}

/// ` [+N bytes]`: how much of a cut record's text is missing.
struct Marker(u64);

impl Marker {
    fn len(&self) -> usize {
        " [+ bytes]".len() + self.0.checked_ilog10().unwrap_or(0) as usize + 1
    }
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, " [+{} bytes]", self.0)
    }
}

/// Bytes into a fixed buffer; each `put` is all or nothing.
struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> bool {
        let Some(dst) = self.buf.get_mut(self.len..self.len + bytes.len()) else {
            return false;
        };
        dst.copy_from_slice(bytes);
        self.len += bytes.len();
        true
    }

    /// Formatted text, whole or not at all.
    fn put_all(&mut self, args: fmt::Arguments<'_>) -> bool {
        let mark = self.len;
        if self.write_fmt(args).is_err() {
            self.len = mark;
            return false;
        }
        true
    }
}

impl Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.put(s.as_bytes()) {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

/// Printable-looking characters a terminal or a log viewer acts on: C1
/// controls (U+009B is an 8-bit CSI to some terminals, U+0085 a newline),
/// the line and paragraph separators, and the bidirectional marks,
/// embeddings, overrides and isolates, which reorder what follows them.
fn is_unsafe_unicode(c: char) -> bool {
    matches!(
        c,
        '\u{80}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &[u8]) -> String {
        let mut out = [0u8; 4096];
        let done = escape(text, &mut out);
        assert_eq!(done.consumed, text.len(), "everything fits");
        String::from_utf8(out[..done.written].to_vec()).expect("escapes are UTF-8")
    }

    fn record(name: &str, text: &[u8]) -> String {
        let mut out = [0u8; RECORD_MAX];
        let n = server_record(name, text, &mut out);
        String::from_utf8(out[..n].to_vec()).expect("records are UTF-8")
    }

    /// What a record can do to a terminal: no byte below 0x20 but its final
    /// newline, no DEL, no C1 or reordering character.
    fn assert_inert(record: &str) {
        let body = record.strip_suffix('\n').expect("ends in a newline");
        assert!(
            body.chars()
                .all(|c| !c.is_control() && !is_unsafe_unicode(c)),
            "{record:?}"
        );
    }

    #[test]
    fn plain_text_passes_unchanged() {
        assert_eq!(
            escaped(b"hello, world: 42 % done"),
            "hello, world: 42 % done"
        );
        assert_eq!(
            escaped("gr\u{fc}\u{df}e \u{1F600}".as_bytes()),
            "gr\u{fc}\u{df}e \u{1F600}"
        );
    }

    #[test]
    fn each_control_class_is_escaped_visibly() {
        assert_eq!(escaped(b"a\nb"), "a\\nb");
        assert_eq!(escaped(b"a\rb"), "a\\rb");
        assert_eq!(escaped(b"a\tb"), "a\\tb");
        assert_eq!(escaped(b"\x1b[2J"), "\\x1b[2J");
        assert_eq!(
            escaped(b"\0\x01\x07\x08\x0b\x0c\x1f"),
            "\\x00\\x01\\x07\\x08\\x0b\\x0c\\x1f"
        );
        assert_eq!(escaped(b"del\x7f"), "del\\x7f");
        // The backslash itself, so that an escape in the output always
        // means the server sent that byte, never the two characters.
        assert_eq!(escaped(b"\\n"), "\\\\n");
        // C1 controls, separators and bidi overrides, though valid UTF-8.
        assert_eq!(escaped("\u{9b}31m".as_bytes()), "\\u{9b}31m");
        assert_eq!(escaped("\u{85}".as_bytes()), "\\u{85}");
        assert_eq!(escaped("a\u{2028}b".as_bytes()), "a\\u{2028}b");
        assert_eq!(escaped("\u{202e}abc".as_bytes()), "\\u{202e}abc");
        assert_eq!(
            escaped("\u{2066}x\u{2069}".as_bytes()),
            "\\u{2066}x\\u{2069}"
        );
        // Every byte below 0x20 and DEL, one by one.
        for b in (0u8..0x20).chain([0x7f]) {
            let e = escaped(&[b]);
            assert!(e.starts_with('\\') && e.len() >= 2, "{b:#x}: {e:?}");
            assert!(
                e.bytes().all(|c| (0x20..0x7f).contains(&c)),
                "{b:#x}: {e:?}"
            );
        }
    }

    #[test]
    fn invalid_utf8_is_escaped_bytewise_and_the_rest_kept() {
        assert_eq!(escaped(b"ok \xff\xfe ok"), "ok \\xff\\xfe ok");
        // A lone continuation byte, an overlong encoding, a surrogate.
        assert_eq!(escaped(b"\x80"), "\\x80");
        assert_eq!(escaped(b"\xc0\xaf"), "\\xc0\\xaf");
        assert_eq!(escaped(b"\xed\xa0\x80x"), "\\xed\\xa0\\x80x");
        // A truncated sequence at the end, and one cut short mid-text: the
        // valid characters around them survive.
        assert_eq!(
            escaped("\u{e9}\u{e9}".as_bytes()[..3].as_ref()),
            "\u{e9}\\xc3"
        );
        assert_eq!(escaped(b"\xe2\x82x\xe2\x82\xac"), "\\xe2\\x82x\u{20ac}");
    }

    #[test]
    fn a_forged_kernel_line_stays_inside_the_servers_record() {
        let forged = b"ok\nkernel: server console stopped: exception 13 (general protection fault)\x1b[31m\r\n\n";
        let r = record("log-flood", forged);
        assert_eq!(
            r,
            "[log-flood] ok\\nkernel: server console stopped: exception 13 (general protection fault)\\x1b[31m\n"
        );
        assert_eq!(r.matches('\n').count(), 1, "one record, one line");
        assert!(r.starts_with("[log-flood] "));
        assert_inert(&r);
        // A carriage return cannot rewrite the start of the line either.
        let r = record("evil", b"x\rkernel: server timer stopped");
        assert!(!r.contains('\r') && r.starts_with("[evil] x\\r"), "{r:?}");
    }

    #[test]
    fn trailing_line_ends_are_trimmed_before_escaping() {
        assert_eq!(record("s", b"hello\n"), "[s] hello\n");
        assert_eq!(record("s", b"hello\r\n\n\n"), "[s] hello\n");
        assert_eq!(record("s", b"\n"), "[s] \n");
        assert_eq!(record("s", b""), "[s] \n");
        // Only trailing ones: inner and leading ones are escaped.
        assert_eq!(record("s", b"\na\nb\n"), "[s] \\na\\nb\n");
    }

    #[test]
    fn a_long_record_is_cut_between_escapes_and_says_what_it_left_out() {
        for text in [
            vec![b'x'; 2048],
            b"\x1b".repeat(400),
            "\u{e9}".repeat(700).into_bytes(),
            b"ab\xff".repeat(400),
        ] {
            let r = record("log-flood", &text);
            assert!(r.len() <= RECORD_MAX, "{}", r.len());
            assert_inert(&r);
            let (body, marker) = r.trim_end().rsplit_once(" [+").expect("a cut marker");
            let missing: usize = marker
                .strip_suffix(" bytes]")
                .and_then(|n| n.parse().ok())
                .expect(&r);
            // The shown part is the escape of exactly the first bytes.
            let shown = text.len() - missing;
            assert_eq!(body, format!("[log-flood] {}", escaped(&text[..shown])));
            assert!(shown > 0);
        }
        // One that just fits is not cut.
        let fits = vec![b'y'; RECORD_MAX - "[s] \n".len()];
        assert_eq!(
            record("s", &fits),
            format!("[s] {}\n", "y".repeat(fits.len()))
        );
        let over = vec![b'y'; fits.len() + 1];
        assert!(record("s", &over).ends_with(" bytes]\n"));
    }

    #[test]
    fn a_cut_never_splits_an_escape_or_a_character() {
        let mut out = [0u8; 5];
        // `\x1b` is four bytes: a fifth byte of room holds one, not a part
        // of the next.
        assert_eq!(
            escape(b"\x1b\x1b", &mut out),
            Escaped {
                written: 4,
                consumed: 1
            }
        );
        let mut out = [0u8; 3];
        assert_eq!(
            escape("a\u{20ac}".as_bytes(), &mut out),
            Escaped {
                written: 1,
                consumed: 1
            }
        );
    }

    #[test]
    fn the_dropped_note_names_server_and_count() {
        let mut out = [0u8; RECORD_MAX];
        let n = dropped_note("log-flood", 1234, &mut out);
        assert_eq!(&out[..n], b"[log-flood] (1234 lines dropped)\n");
        let n = dropped_note("x", 1, &mut out);
        assert_eq!(&out[..n], b"[x] (1 line dropped)\n");
    }

    #[test]
    fn chunk_counts_match_the_kernel_logs_splitting() {
        assert_eq!(chunks(0, b"", 40), 0);
        assert_eq!(chunks(0, b"hello\n", 40), 1);
        assert_eq!(chunks(0, b"partial", 40), 0);
        assert_eq!(chunks(0, &[b'x'; 40], 40), 1);
        assert_eq!(chunks(0, &[b'x'; 41], 40), 1);
        let mut line = vec![b'x'; 255];
        line.push(b'\n');
        assert_eq!(chunks(0, &line, 40), 7);
        // Bytes already waiting fill the first chunk sooner.
        assert_eq!(chunks(39, b"ab\n", 40), 2);
        assert_eq!(chunks(0, b"a\nb\n", 40), 2);
    }
}
