//! The initrd's files: a walk over the ustar archive xtask writes (a
//! 512-byte header per file, its data padded to 512 bytes, two zero blocks
//! at the end), giving each regular file's name and bytes.
//!
//! Written here rather than taken from `tar-no-std` because of what it
//! costs where PVM interprets the kernel (about a microsecond an
//! instruction): that crate's check of the archive and its walk over the
//! entries took 590 and 430 ms of a 2.6 s boot. This walk reads each header
//! once, sums its checksum eight bytes at a time and parses the two fields
//! it needs; every offset is checked against the archive's length, so a
//! corrupt initrd is an error, never a read out of bounds.
//!
//! Context: any; no allocation.

/// Size of a tar block (a header, or a unit of file data).
const BLOCK: usize = 512;

/// Why the archive cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitrdError {
    /// The header at this offset does not hold the checksum it states.
    Checksum { offset: usize },
    /// The header at this offset has a size field that is not octal.
    BadSize { offset: usize },
    /// The file whose header is at this offset runs past the archive.
    Truncated { offset: usize },
}

impl core::fmt::Display for InitrdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Checksum { offset } => write!(f, "bad header checksum at offset {offset:#x}"),
            Self::BadSize { offset } => write!(f, "bad size field at offset {offset:#x}"),
            Self::Truncated { offset } => {
                write!(f, "the file at offset {offset:#x} runs past the archive")
            }
        }
    }
}

/// One regular file of the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct File<'a> {
    /// Its path, as stored (at most 100 bytes: xtask's names are short).
    pub name: &'a [u8],
    pub data: &'a [u8],
}

/// The regular files of `archive`, in order; the first corrupt header ends
/// the walk with an error.
pub fn files(archive: &[u8]) -> Files<'_> {
    Files {
        archive,
        at: 0,
        done: false,
    }
}

/// The iterator of [`files`].
pub struct Files<'a> {
    archive: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> Iterator for Files<'a> {
    type Item = Result<File<'a>, InitrdError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let offset = self.at;
            let Some(header) = self.archive.get(offset..offset + BLOCK) else {
                // No room for another header: the end (a writer may omit
                // the two zero blocks).
                self.done = true;
                return None;
            };
            let header: &[u8; BLOCK] = header.try_into().ok()?;
            // A zero block ends the archive (looked at whole only when its
            // name is empty: every header costs where the kernel is
            // interpreted).
            if header[0] == 0 && header.iter().all(|&b| b == 0) {
                self.done = true;
                return None;
            }
            let entry = parse(header, offset).and_then(|(name, size, regular)| {
                let start = offset + BLOCK;
                let data = start
                    .checked_add(size)
                    .and_then(|end| self.archive.get(start..end))
                    .ok_or(InitrdError::Truncated { offset })?;
                self.at = start + size.div_ceil(BLOCK) * BLOCK;
                Ok(regular.then_some(File { name, data }))
            });
            match entry {
                Ok(Some(file)) => return Some(Ok(file)),
                Ok(None) => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// A header's name, data size and whether it is a regular file, once its
/// checksum is right.
fn parse(header: &[u8; BLOCK], offset: usize) -> Result<(&[u8], usize, bool), InitrdError> {
    let stated = octal(&header[148..156]).ok_or(InitrdError::Checksum { offset })?;
    if checksum(header) != stated {
        return Err(InitrdError::Checksum { offset });
    }
    let size = octal(&header[124..136]).ok_or(InitrdError::BadSize { offset })?;
    let size = usize::try_from(size).map_err(|_| InitrdError::BadSize { offset })?;
    let name = &header[..100];
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    // '0' and NUL are regular files; directories, links and the rest are
    // skipped (their size says how much data to step over).
    let regular = matches!(header[156], b'0' | 0);
    Ok((name, size, regular))
}

/// The header's checksum: the sum of its bytes with the checksum field
/// itself counted as spaces. Eight bytes at a time: the interpreted kernel
/// pays for every instruction.
fn checksum(header: &[u8; BLOCK]) -> u64 {
    const LOW_BYTES: u64 = 0x00FF_00FF_00FF_00FF;
    let mut sum = 0u64;
    for chunk in header.chunks_exact(8) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        // Four 16-bit lanes of byte pairs; 64 words cannot overflow a lane
        // (at most 64 * 2 * 255).
        sum += (word & LOW_BYTES) + ((word >> 8) & LOW_BYTES);
    }
    let lanes = (sum & 0xFFFF) + ((sum >> 16) & 0xFFFF) + ((sum >> 32) & 0xFFFF) + (sum >> 48);
    let field: u64 = header[148..156].iter().map(|&b| u64::from(b)).sum();
    lanes - field + 8 * u64::from(b' ')
}

/// An octal number as tar writes it: optional leading spaces, digits, then
/// NUL or space padding. `None` for anything else (or no digits).
fn octal(field: &[u8]) -> Option<u64> {
    let field = match field.iter().position(|&b| b != b' ') {
        Some(start) => &field[start..],
        None => return None,
    };
    let end = field
        .iter()
        .position(|&b| b == 0 || b == b' ')
        .unwrap_or(field.len());
    let digits = &field[..end];
    if digits.is_empty() || field[end..].iter().any(|&b| b != 0 && b != b' ') {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| match d {
        b'0'..=b'7' => n.checked_mul(8)?.checked_add(u64::from(d - b'0')),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive as xtask writes it (the `tar` crate, ustar headers).
    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn names(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        files(bytes)
            .map(|f| {
                let f = f.unwrap();
                (String::from_utf8(f.name.to_vec()).unwrap(), f.data.to_vec())
            })
            .collect()
    }

    #[test]
    fn reads_what_the_tar_crate_writes() {
        let big = vec![7u8; 1500];
        let bytes = archive(&[
            ("manifest", b"abc"),
            ("servers/console", &big),
            ("empty", b""),
            ("servers/exactly-a-block", &[1u8; 512]),
        ]);
        let got = names(&bytes);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], ("manifest".into(), b"abc".to_vec()));
        assert_eq!(got[1], ("servers/console".into(), big));
        assert_eq!(got[2], ("empty".into(), Vec::new()));
        assert_eq!(got[3].1, vec![1u8; 512]);
    }

    #[test]
    fn checksum_matches_a_plain_byte_sum() {
        let bytes = archive(&[("a-file-name", b"x")]);
        let header: &[u8; BLOCK] = bytes[..BLOCK].try_into().unwrap();
        let plain: u64 = header
            .iter()
            .enumerate()
            .map(|(i, &b)| u64::from(if (148..156).contains(&i) { b' ' } else { b }))
            .sum();
        assert_eq!(checksum(header), plain);
        let mut all_ones = [0xFFu8; BLOCK];
        all_ones[148..156].copy_from_slice(b"        ");
        assert_eq!(checksum(&all_ones), 504 * 255 + 8 * 32);
    }

    #[test]
    fn corrupt_archives_are_errors_not_reads_out_of_bounds() {
        let good = archive(&[("one", b"hello"), ("two", &[9u8; 700])]);
        // A flipped byte in a header.
        let mut bad = good.clone();
        bad[3] ^= 0x20;
        assert_eq!(
            files(&bad).next(),
            Some(Err(InitrdError::Checksum { offset: 0 }))
        );
        // Cut in the middle of the second file's data.
        let cut = &good[..BLOCK * 3 + 100];
        let got: Vec<_> = files(cut).collect();
        assert_eq!(got[0].unwrap().name, b"one");
        assert_eq!(got[1], Err(InitrdError::Truncated { offset: 1024 }));
        assert_eq!(got.len(), 2);
        // The first header's size field set to `size`, with a checksum
        // that fits it: only the size can be wrong. Its first entry's error.
        let first_sized = |size: &[u8; 12]| {
            let mut bad = good.clone();
            bad[124..136].copy_from_slice(size);
            let sum = checksum(bad[..BLOCK].try_into().unwrap());
            bad[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            files(&bad).next().and_then(Result::err)
        };
        // A size that is not octal.
        assert_eq!(
            first_sized(b"0000000009x\0"),
            Some(InitrdError::BadSize { offset: 0 })
        );
        // A size past the end.
        assert_eq!(
            first_sized(b"77777777777\0"),
            Some(InitrdError::Truncated { offset: 0 })
        );
        // Nothing at all, or less than a header: no files.
        assert_eq!(files(&[]).count(), 0);
        assert_eq!(files(&[0u8; 100]).count(), 0);
    }

    #[test]
    fn octal_fields() {
        assert_eq!(octal(b"0000644\0"), Some(0o644));
        assert_eq!(octal(b"  1777 \0"), Some(0o1777));
        assert_eq!(octal(b"00000000000\0"), Some(0));
        assert_eq!(octal(b"        "), None);
        assert_eq!(octal(b"0008\0"), None);
        assert_eq!(octal(b"12 3\0"), None);
        assert_eq!(octal(b"77777777777777777777777"), None);
    }
}
