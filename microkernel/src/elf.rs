//! Checking a server image before anything of it is mapped: every header
//! field is measured against the file's bounds and the user address range,
//! so that a corrupt or hostile ELF gets a clear error instead of a mapping.
//! goblin decodes the headers; the policy is ours. Also which of a
//! segment's pages hold file bytes and which only zeros
//! ([`Segment::split_pages`]: the loader maps the latter on first touch).

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::header::{self, Header};
use goblin::elf::program_header::{self, ProgramHeader};
use scroll::Pread;

const PAGE: u64 = abi::layout::PAGE_SIZE;
const MAX_PROGRAM_HEADERS: u16 = 64;

/// A loadable segment, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub mem_size: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub writable: bool,
    pub executable: bool,
}

impl Segment {
    pub fn page_start(&self) -> u64 {
        self.vaddr & !(PAGE - 1)
    }
    pub fn page_end(&self) -> u64 {
        (self.vaddr + self.mem_size).div_ceil(PAGE) * PAGE
    }

    /// The segment's pages split by what the loader must put in them: those
    /// that hold at least one byte of the file, copied at load, and after
    /// them those that hold none (pure `.bss`: zeros only), which can wait
    /// for their first touch. Both ranges are page-aligned and together are
    /// exactly `page_start()..page_end()`; either may be empty.
    pub fn split_pages(&self) -> PageSplit {
        let start = self.page_start();
        let loaded_end = if self.file_size == 0 {
            start
        } else {
            // `check` bounds `vaddr + mem_size`, and `file_size <= mem_size`.
            (self.vaddr + self.file_size).div_ceil(PAGE) * PAGE
        };
        PageSplit {
            loaded: start..loaded_end,
            zero: loaded_end..self.page_end(),
        }
    }
}

impl Segment {
    /// Where in an image of `image_len` bytes the page at `page` (one of
    /// this segment's loaded pages) can be mapped from as it is, shared and
    /// read-only, instead of copied: `Some(offset)` when the segment is not
    /// writable, its file offset and address agree modulo the page size, the
    /// whole page lies inside the image, and the page holds nothing that
    /// must read as zero (no `.bss` of this segment in it). The page may show
    /// bytes of the image around the segment (headers, the next segment),
    /// which are the server's own image.
    pub fn shared_page_offset(&self, page: u64, image_len: u64) -> Option<u64> {
        if self.writable
            || self.vaddr % PAGE != self.file_offset % PAGE
            || !page.is_multiple_of(PAGE)
        {
            return None;
        }
        let offset = self
            .file_offset
            .checked_add(page.checked_sub(self.page_start())?)?
            - self.vaddr % PAGE;
        let fits = offset.checked_add(PAGE).is_some_and(|end| end <= image_len);
        let no_zeros =
            self.mem_size == self.file_size || page + PAGE <= self.vaddr + self.file_size;
        let inside = page >= self.page_start() && page < self.split_pages().loaded.end;
        (fits && no_zeros && inside).then_some(offset)
    }
}

/// A segment's pages by content ([`Segment::split_pages`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageSplit {
    /// Pages holding file bytes (the rest of such a page is zero).
    pub loaded: Range<u64>,
    /// Pages past the last file byte: nothing but zeros.
    pub zero: Range<u64>,
}

/// A checked image: where to start, and what to map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub entry: u64,
    pub segments: Vec<Segment>,
}

/// Why an image was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElfError {
    TooShort(usize),
    NotElf,
    Not64BitLittleEndian,
    NotExecutable(u16),
    WrongMachine(u16),
    BadProgramHeaderSize(u16),
    ProgramHeaderCount(u16),
    ProgramHeadersOutOfFile,
    Decode,
    Unsupported { index: usize, kind: &'static str },
    FileSizeExceedsMemSize { index: usize },
    SegmentOutOfFile { index: usize },
    SegmentOutOfRange { index: usize, vaddr: u64, end: u64 },
    WritableAndExecutable { index: usize },
    Overlap { first: usize, second: usize },
    NoLoadableSegment,
    EntryNotExecutable(u64),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::TooShort(len) => {
                write!(f, "image is {len} bytes, shorter than an ELF header")
            }
            ElfError::NotElf => f.write_str("not an ELF file (bad magic)"),
            ElfError::Not64BitLittleEndian => f.write_str("not a 64-bit little-endian ELF"),
            ElfError::NotExecutable(t) => {
                write!(f, "ELF type {t} is not a static executable (ET_EXEC)")
            }
            ElfError::WrongMachine(m) => write!(f, "ELF machine {m} is not x86_64"),
            ElfError::BadProgramHeaderSize(s) => write!(f, "program header size {s} is not 56"),
            ElfError::ProgramHeaderCount(n) => {
                write!(f, "{n} program headers (1..={MAX_PROGRAM_HEADERS} allowed)")
            }
            ElfError::ProgramHeadersOutOfFile => {
                f.write_str("program headers lie outside the file")
            }
            ElfError::Decode => f.write_str("headers could not be decoded"),
            ElfError::Unsupported { index, kind } => {
                write!(
                    f,
                    "program header {index}: {kind} is not supported (static images only)"
                )
            }
            ElfError::FileSizeExceedsMemSize { index } => {
                write!(f, "segment {index}: file size exceeds memory size")
            }
            ElfError::SegmentOutOfFile { index } => {
                write!(f, "segment {index}: data lies outside the file")
            }
            ElfError::SegmentOutOfRange { index, vaddr, end } => {
                write!(
                    f,
                    "segment {index}: {vaddr:#x}..{end:#x} is outside the user image range"
                )
            }
            ElfError::WritableAndExecutable { index } => {
                write!(f, "segment {index} is both writable and executable")
            }
            ElfError::Overlap { first, second } => {
                write!(f, "segments {first} and {second} overlap")
            }
            ElfError::NoLoadableSegment => f.write_str("no loadable segment"),
            ElfError::EntryNotExecutable(e) => {
                write!(f, "entry point {e:#x} is not in an executable segment")
            }
        }
    }
}

/// Check `bytes` as a server image whose segments must lie in `[base, end)`.
pub fn check(bytes: &[u8], base: u64, end: u64) -> Result<Image, ElfError> {
    if bytes.len() < goblin::elf64::header::SIZEOF_EHDR {
        return Err(ElfError::TooShort(bytes.len()));
    }
    if &bytes[..4] != header::ELFMAG {
        return Err(ElfError::NotElf);
    }
    if bytes[header::EI_CLASS] != header::ELFCLASS64
        || bytes[header::EI_DATA] != header::ELFDATA2LSB
    {
        return Err(ElfError::Not64BitLittleEndian);
    }
    let header = bytes
        .pread_with::<Header>(0, Endian::Little)
        .map_err(|_| ElfError::Decode)?;
    if header.e_type != header::ET_EXEC {
        return Err(ElfError::NotExecutable(header.e_type));
    }
    if header.e_machine != header::EM_X86_64 {
        return Err(ElfError::WrongMachine(header.e_machine));
    }
    if usize::from(header.e_phentsize) != goblin::elf64::program_header::SIZEOF_PHDR {
        return Err(ElfError::BadProgramHeaderSize(header.e_phentsize));
    }
    if header.e_phnum == 0 || header.e_phnum > MAX_PROGRAM_HEADERS {
        return Err(ElfError::ProgramHeaderCount(header.e_phnum));
    }
    let table_end = (u64::from(header.e_phnum) * goblin::elf64::program_header::SIZEOF_PHDR as u64)
        .checked_add(header.e_phoff)
        .ok_or(ElfError::ProgramHeadersOutOfFile)?;
    if table_end > bytes.len() as u64 {
        return Err(ElfError::ProgramHeadersOutOfFile);
    }
    let ctx = Ctx::new(Container::Big, Endian::Little);
    let headers = ProgramHeader::parse(
        bytes,
        header.e_phoff as usize,
        usize::from(header.e_phnum),
        ctx,
    )
    .map_err(|_| ElfError::Decode)?;

    let mut segments: Vec<Segment> = Vec::new();
    for (index, ph) in headers.iter().enumerate() {
        match ph.p_type {
            program_header::PT_LOAD => {}
            program_header::PT_INTERP => {
                return Err(ElfError::Unsupported {
                    index,
                    kind: "PT_INTERP",
                });
            }
            program_header::PT_DYNAMIC => {
                return Err(ElfError::Unsupported {
                    index,
                    kind: "PT_DYNAMIC",
                });
            }
            program_header::PT_TLS => {
                return Err(ElfError::Unsupported {
                    index,
                    kind: "PT_TLS",
                });
            }
            _ => continue,
        }
        if ph.p_memsz == 0 {
            continue;
        }
        if ph.p_filesz > ph.p_memsz {
            return Err(ElfError::FileSizeExceedsMemSize { index });
        }
        let file_end = ph
            .p_offset
            .checked_add(ph.p_filesz)
            .ok_or(ElfError::SegmentOutOfFile { index })?;
        if file_end > bytes.len() as u64 {
            return Err(ElfError::SegmentOutOfFile { index });
        }
        let vend = ph.p_vaddr.checked_add(ph.p_memsz);
        match vend {
            Some(vend) if ph.p_vaddr >= base && vend <= end => {}
            _ => {
                return Err(ElfError::SegmentOutOfRange {
                    index,
                    vaddr: ph.p_vaddr,
                    end: vend.unwrap_or(u64::MAX),
                });
            }
        }
        let segment = Segment {
            vaddr: ph.p_vaddr,
            mem_size: ph.p_memsz,
            file_offset: ph.p_offset,
            file_size: ph.p_filesz,
            writable: ph.is_write(),
            executable: ph.is_executable(),
        };
        if segment.writable && segment.executable {
            return Err(ElfError::WritableAndExecutable { index });
        }
        segments.push(segment);
    }
    if segments.is_empty() {
        return Err(ElfError::NoLoadableSegment);
    }
    // Segments share no page: each page gets exactly one set of permissions.
    for (i, a) in segments.iter().enumerate() {
        for (j, b) in segments.iter().enumerate().skip(i + 1) {
            if a.page_start() < b.page_end() && b.page_start() < a.page_end() {
                return Err(ElfError::Overlap {
                    first: i,
                    second: j,
                });
            }
        }
    }
    let entry = header.e_entry;
    if !segments
        .iter()
        .any(|s| s.executable && entry >= s.vaddr && entry < s.vaddr + s.mem_size)
    {
        return Err(ElfError::EntryNotExecutable(entry));
    }
    Ok(Image { entry, segments })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x40_0000;
    const END: u64 = 0x4000_0000;

    /// A segment as `Image` holds it, executable exactly when read-only.
    fn shared_segment(
        vaddr: u64,
        file_offset: u64,
        file_size: u64,
        mem_size: u64,
        writable: bool,
    ) -> Segment {
        Segment {
            vaddr,
            mem_size,
            file_offset,
            file_size,
            writable,
            executable: !writable,
        }
    }

    #[test]
    fn read_only_pages_are_shared_from_the_image_where_they_line_up() {
        // Text at file 0x1000, 0x2800 bytes: three pages, all in the image.
        let text = shared_segment(0x40_0000, 0x1000, 0x2800, 0x2800, false);
        assert_eq!(text.shared_page_offset(0x40_0000, 0x10_000), Some(0x1000));
        assert_eq!(text.shared_page_offset(0x40_2000, 0x10_000), Some(0x3000));
        // The last page would run past a short image: copied instead.
        assert_eq!(text.shared_page_offset(0x40_2000, 0x3800), None);
        // Not one of its pages, or not page-aligned.
        assert_eq!(text.shared_page_offset(0x40_3000, 0x10_000), None);
        assert_eq!(text.shared_page_offset(0x3F_F000, 0x10_000), None);
        assert_eq!(text.shared_page_offset(0x40_0800, 0x10_000), None);
        // An unaligned start: the page starts before the segment's bytes.
        let rodata = shared_segment(0x40_5100, 0x5100, 0x100, 0x100, false);
        assert_eq!(rodata.shared_page_offset(0x40_5000, 0x10_000), Some(0x5000));
        // Writable, or offset and address that disagree: always copied.
        let data = shared_segment(0x40_6000, 0x6000, 0x1000, 0x1000, true);
        assert_eq!(data.shared_page_offset(0x40_6000, 0x10_000), None);
        let skewed = shared_segment(0x40_7000, 0x7200, 0x1000, 0x1000, false);
        assert_eq!(skewed.shared_page_offset(0x40_7000, 0x10_000), None);
        // A read-only segment with zeros past its file bytes: the page that
        // holds them must read as zero, so it is copied.
        let with_bss = shared_segment(0x40_8000, 0x8000, 0x1800, 0x3000, false);
        assert_eq!(
            with_bss.shared_page_offset(0x40_8000, 0x10_000),
            Some(0x8000)
        );
        assert_eq!(with_bss.shared_page_offset(0x40_9000, 0x10_000), None);
    }

    /// A minimal valid image: a text segment and a data segment.
    struct Builder {
        entry: u64,
        phdrs: Vec<[u64; 7]>, // type|flags<<32, offset, vaddr, paddr, filesz, memsz, align
        e_type: u16,
        machine: u16,
        len: usize,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                entry: 0x40_1000,
                phdrs: vec![
                    [
                        1 | (5 << 32),
                        0x1000,
                        0x40_1000,
                        0x40_1000,
                        0x100,
                        0x100,
                        0x1000,
                    ],
                    [
                        1 | (6 << 32),
                        0x2000,
                        0x40_2000,
                        0x40_2000,
                        0x10,
                        0x3000,
                        0x1000,
                    ],
                ],
                e_type: 2,
                machine: 62,
                len: 0x3000,
            }
        }

        fn bytes(&self) -> Vec<u8> {
            let mut b = vec![0u8; self.len.max(64 + 56 * self.phdrs.len())];
            b[..4].copy_from_slice(b"\x7fELF");
            b[4] = 2;
            b[5] = 1;
            b[6] = 1;
            b[16..18].copy_from_slice(&self.e_type.to_le_bytes());
            b[18..20].copy_from_slice(&self.machine.to_le_bytes());
            b[20..24].copy_from_slice(&1u32.to_le_bytes());
            b[24..32].copy_from_slice(&self.entry.to_le_bytes());
            b[32..40].copy_from_slice(&64u64.to_le_bytes());
            b[52..54].copy_from_slice(&64u16.to_le_bytes());
            b[54..56].copy_from_slice(&56u16.to_le_bytes());
            b[56..58].copy_from_slice(&(self.phdrs.len() as u16).to_le_bytes());
            b[58..60].copy_from_slice(&64u16.to_le_bytes());
            for (i, ph) in self.phdrs.iter().enumerate() {
                let at = 64 + 56 * i;
                b[at..at + 8].copy_from_slice(&ph[0].to_le_bytes());
                for (k, v) in ph[1..].iter().enumerate() {
                    b[at + 8 + 8 * k..at + 16 + 8 * k].copy_from_slice(&v.to_le_bytes());
                }
            }
            b.truncate(self.len.max(64 + 56 * self.phdrs.len()));
            b
        }
    }

    #[test]
    fn a_valid_image_is_accepted() {
        let image = check(&Builder::new().bytes(), BASE, END).unwrap();
        assert_eq!(image.entry, 0x40_1000);
        assert_eq!(image.segments.len(), 2);
        assert!(image.segments[0].executable && !image.segments[0].writable);
        assert!(image.segments[1].writable && !image.segments[1].executable);
    }

    #[test]
    fn truncations_never_panic_and_are_refused() {
        let bytes = Builder::new().bytes();
        for len in 0..bytes.len() {
            if len < 0x2010 {
                assert!(
                    check(&bytes[..len], BASE, END).is_err(),
                    "accepted {len} bytes"
                );
            }
        }
    }

    #[test]
    fn every_single_byte_corruption_of_the_headers_is_safe() {
        let bytes = Builder::new().bytes();
        for at in 0..(64 + 56 * 2) {
            for value in [0u8, 0xff, 0x7f, 0x80] {
                let mut b = bytes.clone();
                b[at] = value;
                let _ = check(&b, BASE, END);
            }
        }
    }

    #[test]
    fn specific_faults_are_named() {
        let mut b = Builder::new();
        b.e_type = 3;
        assert_eq!(
            check(&b.bytes(), BASE, END),
            Err(ElfError::NotExecutable(3))
        );

        let mut b = Builder::new();
        b.machine = 3;
        assert_eq!(check(&b.bytes(), BASE, END), Err(ElfError::WrongMachine(3)));

        let mut b = Builder::new();
        b.phdrs[1][4] = 0x4000; // filesz > memsz
        assert_eq!(
            check(&b.bytes(), BASE, END),
            Err(ElfError::FileSizeExceedsMemSize { index: 1 })
        );

        let mut b = Builder::new();
        b.phdrs[1][1] = 0x10_0000; // offset beyond the file
        assert_eq!(
            check(&b.bytes(), BASE, END),
            Err(ElfError::SegmentOutOfFile { index: 1 })
        );

        let mut b = Builder::new();
        b.phdrs[0][2] = 0xffff_ffff_8000_0000; // kernel address
        assert!(matches!(
            check(&b.bytes(), BASE, END),
            Err(ElfError::SegmentOutOfRange { index: 0, .. })
        ));

        let mut b = Builder::new();
        b.phdrs[1][2] = u64::MAX - 0x10; // wraps
        assert!(matches!(
            check(&b.bytes(), BASE, END),
            Err(ElfError::SegmentOutOfRange { index: 1, .. })
        ));

        let mut b = Builder::new();
        b.phdrs[0][0] = 1 | (7 << 32);
        assert_eq!(
            check(&b.bytes(), BASE, END),
            Err(ElfError::WritableAndExecutable { index: 0 })
        );

        let mut b = Builder::new();
        b.phdrs[1][2] = 0x40_1800;
        assert_eq!(
            check(&b.bytes(), BASE, END),
            Err(ElfError::Overlap {
                first: 0,
                second: 1
            })
        );

        let mut b = Builder::new();
        b.entry = 0x40_2000;
        assert_eq!(
            check(&b.bytes(), BASE, END),
            Err(ElfError::EntryNotExecutable(0x40_2000))
        );

        let mut b = Builder::new();
        b.phdrs.push([3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            check(&b.bytes(), BASE, END),
            Err(ElfError::Unsupported {
                index: 2,
                kind: "PT_INTERP"
            })
        );

        let mut bytes = Builder::new().bytes();
        bytes[0] = b'X';
        assert_eq!(check(&bytes, BASE, END), Err(ElfError::NotElf));
        assert!(
            check(&bytes, BASE, END)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
    }

    fn segment(vaddr: u64, file_size: u64, mem_size: u64) -> Segment {
        shared_segment(vaddr, 0x1000, file_size, mem_size, true)
    }

    fn split(vaddr: u64, file_size: u64, mem_size: u64) -> (Range<u64>, Range<u64>) {
        let s = segment(vaddr, file_size, mem_size).split_pages();
        (s.loaded, s.zero)
    }

    #[test]
    fn pages_past_the_file_bytes_are_zero_pages() {
        // .data of 0x10 bytes, then .bss to 0x3000: one page loaded, two zero.
        assert_eq!(
            split(0x40_2000, 0x10, 0x3000),
            (0x40_2000..0x40_3000, 0x40_3000..0x40_5000)
        );
        // The file ends exactly on a page boundary.
        assert_eq!(
            split(0x40_2000, 0x2000, 0x5000),
            (0x40_2000..0x40_4000, 0x40_4000..0x40_7000)
        );
        // The file ends one byte into a page: that page is loaded.
        assert_eq!(
            split(0x40_2000, 0x2001, 0x5000),
            (0x40_2000..0x40_5000, 0x40_5000..0x40_7000)
        );
    }

    #[test]
    fn a_page_shared_by_file_bytes_and_bss_is_loaded() {
        // Like a server's RW segment: .data ends mid-page, .bss runs on.
        assert_eq!(
            split(0x41_6000, 0xd68, 0x10_5038),
            (0x41_6000..0x41_7000, 0x41_7000..0x51_c000)
        );
        // Unaligned start, file and memory ending on the same page.
        assert_eq!(
            split(0x40_2800, 0x100, 0x400),
            (0x40_2000..0x40_3000, 0x40_3000..0x40_3000)
        );
    }

    #[test]
    fn a_segment_without_file_bytes_is_all_zero_pages() {
        assert_eq!(
            split(0x40_2000, 0, 0x2000),
            (0x40_2000..0x40_2000, 0x40_2000..0x40_4000)
        );
        // Starting mid-page: the first page holds no file byte either.
        assert_eq!(
            split(0x40_2800, 0, 0x1000),
            (0x40_2000..0x40_2000, 0x40_2000..0x40_4000)
        );
    }

    #[test]
    fn a_segment_without_bss_has_no_zero_pages() {
        assert_eq!(
            split(0x40_1000, 0x100, 0x100),
            (0x40_1000..0x40_2000, 0x40_2000..0x40_2000)
        );
        assert_eq!(
            split(0x40_1000, 0x3000, 0x3000),
            (0x40_1000..0x40_4000, 0x40_4000..0x40_4000)
        );
    }

    #[test]
    fn the_split_covers_every_page_of_every_checked_segment() {
        let image = check(&Builder::new().bytes(), BASE, END).unwrap();
        for s in &image.segments {
            let split = s.split_pages();
            assert_eq!(split.loaded.start, s.page_start());
            assert_eq!(split.loaded.end, split.zero.start);
            assert_eq!(split.zero.end, s.page_end());
            assert_eq!(split.loaded.start % PAGE, 0);
            assert_eq!(split.zero.start % PAGE, 0);
        }
        // The builder's data segment: 0x10 file bytes in 0x3000.
        assert_eq!(
            image.segments[1].split_pages(),
            PageSplit {
                loaded: 0x40_2000..0x40_3000,
                zero: 0x40_3000..0x40_5000
            }
        );
    }
}
