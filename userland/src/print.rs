//! `println!` for servers: formats into a fixed buffer on the stack and
//! hands each line to [`sys::log`](crate::sys::log), which prints it on the
//! kernel console prefixed with the server's name.
//!
//! Context: anywhere in a server, including the panic handler: no
//! allocation, no locks. A line longer than [`LINE_MAX`] bytes is cut at a
//! character boundary and ends in `...`; a `\n` in the text starts a new
//! `log` call.

use core::fmt::{self, Write};

/// The longest line handed to the kernel, in bytes (including the `...`
/// that marks a cut line).
pub const LINE_MAX: usize = 240;

const ELLIPSIS: &[u8] = b"...";

/// Splits formatted text into lines of at most `N` bytes and passes each to
/// `sink`. Lines that do not fit are cut at a character boundary and marked
/// with `...`.
pub struct LineWriter<F: FnMut(&[u8]), const N: usize = LINE_MAX> {
    buf: [u8; N],
    len: usize,
    truncated: bool,
    sink: F,
}

impl<F: FnMut(&[u8]), const N: usize> LineWriter<F, N> {
    /// A writer that sends every finished line to `sink`.
    pub const fn new(sink: F) -> Self {
        const {
            assert!(
                N > ELLIPSIS.len(),
                "a line must hold more than the ellipsis"
            )
        };
        Self {
            buf: [0; N],
            len: 0,
            truncated: false,
            sink,
        }
    }

    fn emit(&mut self) {
        if self.truncated {
            // Make room for the marker, backing off to a character boundary.
            let mut cut = self.len.min(N - ELLIPSIS.len());
            // Bytes before `len` are whole characters: `cut` is a boundary
            // unless it lands on a continuation byte.
            while cut > 0 && cut < self.len && (self.buf[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            self.buf[cut..cut + ELLIPSIS.len()].copy_from_slice(ELLIPSIS);
            self.len = cut + ELLIPSIS.len();
        }
        (self.sink)(&self.buf[..self.len]);
        self.len = 0;
        self.truncated = false;
    }

    fn push(&mut self, text: &str) {
        if self.truncated {
            return;
        }
        let room = N - self.len;
        if text.len() <= room {
            self.buf[self.len..self.len + text.len()].copy_from_slice(text.as_bytes());
            self.len += text.len();
            return;
        }
        // Take what fits, ending on a character boundary.
        let mut take = room;
        while !text.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        self.truncated = true;
    }

    /// Send the last line (even if empty).
    pub fn finish(mut self) {
        self.emit();
    }
}

impl<F: FnMut(&[u8]), const N: usize> Write for LineWriter<F, N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(nl) = rest.find('\n') {
            self.push(&rest[..nl]);
            self.emit();
            rest = &rest[nl + 1..];
        }
        self.push(rest);
        Ok(())
    }
}

/// Format `args` and log it, one `log` call per line. Used by
/// [`println!`](crate::println).
pub fn print_args(args: fmt::Arguments<'_>) {
    let mut w = LineWriter::<_, LINE_MAX>::new(|line: &[u8]| {
        // Nothing useful to do if the console refuses a line.
        let _ = crate::sys::log(line);
    });
    let _ = w.write_fmt(args);
    w.finish();
}

/// Print a line on the kernel console (prefixed by the server's name).
/// Formats like `std::println!`, without allocating.
#[macro_export]
macro_rules! println {
    () => {
        $crate::print::print_args(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::print::print_args(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;

    fn lines<const N: usize>(args: fmt::Arguments<'_>) -> Vec<String> {
        let mut out = Vec::new();
        let mut w = LineWriter::<_, N>::new(|l: &[u8]| {
            out.push(String::from_utf8(l.to_vec()).expect("lines stay valid UTF-8"))
        });
        w.write_fmt(args).unwrap();
        w.finish();
        out
    }

    #[test]
    fn short_line_passes_unchanged() {
        assert_eq!(lines::<16>(format_args!("hi {}", 42)), ["hi 42"]);
    }

    #[test]
    fn empty_line_is_still_a_line() {
        assert_eq!(lines::<16>(format_args!("")), [""]);
    }

    #[test]
    fn exact_fit_is_not_cut() {
        assert_eq!(lines::<8>(format_args!("12345678")), ["12345678"]);
    }

    #[test]
    fn long_line_is_cut_and_marked() {
        assert_eq!(lines::<8>(format_args!("123456789abc")), ["12345..."]);
        // Pieces arriving separately are cut the same way.
        assert_eq!(
            lines::<8>(format_args!("{}{}{}", "1234", "5678", "9abc")),
            ["12345..."]
        );
    }

    #[test]
    fn newlines_split_lines_and_reset_the_cut() {
        assert_eq!(
            lines::<8>(format_args!("a\n123456789\nb")),
            ["a", "12345...", "b"]
        );
        assert_eq!(lines::<8>(format_args!("x\n")), ["x", ""]);
    }

    #[test]
    fn cut_respects_utf8_boundaries() {
        // 'é' is two bytes: the cut never splits it.
        for text in ["ééééééé", "aéééééé", "aaééééé", "ééé\u{1F600}zzzzz"] {
            for line in lines::<8>(format_args!("{text}")) {
                assert!(line.len() <= 8, "{line:?}");
                assert!(line.ends_with("...") || line == text);
            }
        }
    }

    #[test]
    fn default_limit_holds() {
        let long = "x".repeat(1000);
        let out = lines::<LINE_MAX>(format_args!("{long}"));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), LINE_MAX);
        assert!(out[0].ends_with("..."));
    }
}
