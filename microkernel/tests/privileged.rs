//! The kernel's hypervisor-facing surface stays in one place: every privileged
//! instruction the built kernel executes comes from `microkernel/src/hv/` or
//! from the boot crate (`boot/src/`, the PVH entry).
//!
//! The check reads the BUILT kernel, not its source, so that a privileged
//! instruction reached through a helper (`idt.load()` is LIDT through the
//! x86_64 crate, `MapperFlush::flush()` is INVLPG) is caught as surely as one
//! written in `asm!`. It:
//!
//! 1. finds the kernel ELF (`$MICROKERNEL_KERNEL`, else
//!    `<target dir>/x86_64-unknown-none/release/microkernel`, building it with
//!    `cargo xtask build` when it is missing);
//! 2. decodes every executable section with iced-x86 (`.boot.text` as 32-bit
//!    code up to its `.code64` label, everything else as 64-bit code) and picks
//!    out the privileged instructions ([`privileged`]: the Intel SDM's system
//!    instructions, port I/O, and the FPU/extended state saves that context
//!    switching owns);
//! 3. asks the kernel's DWARF line tables (the kernel keeps `debug = 1`) for
//!    each one's inline chain, and decides ([`judge`]):
//!    - allowed if ANY frame of the chain whose file is in this workspace lies
//!      under `microkernel/src/hv/` or `boot/src/`: an x86_64-crate helper
//!      inlined into hv code is allowed, the same helper inlined anywhere else
//!      is not;
//!    - IN/OUT is also allowed through the kernel's two named device accesses,
//!      `microkernel/src/serial.rs` (the kernel's COM1) and
//!      `microkernel/src/exit.rs` (QEMU's isa-debug-exit port);
//!    - a chain with no workspace file at all is a dependency's function that
//!      was not inlined (uart_16550's, say): it is judged by its direct
//!      callers, every one of which must be allowed, and a function whose
//!      address is taken (so it may be called indirectly) fails;
//!    - an instruction without line information (assembly) is judged by the ELF
//!      symbol that contains it: `microkernel::hv::...` functions, the hv trap
//!      and system-call assembly labels, and the boot entry's labels;
//! 4. fails listing every other privileged instruction with its address,
//!    disassembly, symbol and the `file:line` of each inline frame.
//!
//! The unit tests at the end run the same classifier on synthetic inputs, so
//! the check is shown to fail where it must.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use addr2line::gimli;
use iced_x86::{
    Code, Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, Mnemonic, OpKind,
};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

// ---------------------------------------------------------------------------
// What is privileged.

/// How a privileged instruction is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A system instruction, or state that context switching owns.
    System,
    /// IN or OUT: also allowed in the kernel's COM1 and the exit port.
    PortIo,
}

/// System instructions: those that fault outside ring 0 (Intel SDM Vol. 3A,
/// 2.8 "System Instruction Summary" and 5.9 "Privileged Instructions"), the
/// ones that are ring 0's in practice (CLI/STI with IOPL 0, RDPMC without
/// CR4.PCE, the FS/GS base writes, SGDT & co. under UMIP), AMD's
/// equivalents, and the virtualization and hypercall instructions.
const SYSTEM: &[Mnemonic] = &[
    // Interrupt flag and halting.
    Mnemonic::Cli,
    Mnemonic::Sti,
    Mnemonic::Hlt,
    Mnemonic::Monitor,
    Mnemonic::Mwait,
    // Descriptor tables, task register, segment bases.
    Mnemonic::Lgdt,
    Mnemonic::Lidt,
    Mnemonic::Lldt,
    Mnemonic::Ltr,
    Mnemonic::Lkgs,
    Mnemonic::Sgdt,
    Mnemonic::Sidt,
    Mnemonic::Sldt,
    Mnemonic::Str,
    Mnemonic::Swapgs,
    Mnemonic::Rdfsbase,
    Mnemonic::Rdgsbase,
    Mnemonic::Wrfsbase,
    Mnemonic::Wrgsbase,
    // Control registers besides MOV CR (matched by operand in `privileged`).
    Mnemonic::Lmsw,
    Mnemonic::Smsw,
    Mnemonic::Clts,
    Mnemonic::Stac,
    Mnemonic::Clac,
    // TLB and caches.
    Mnemonic::Invlpg,
    Mnemonic::Invpcid,
    Mnemonic::Invlpga,
    Mnemonic::Invlpgb,
    Mnemonic::Tlbsync,
    Mnemonic::Invd,
    Mnemonic::Wbinvd,
    Mnemonic::Wbnoinvd,
    // MSRs, performance counters, XCR0, supervisor state.
    Mnemonic::Rdmsr,
    Mnemonic::Wrmsr,
    Mnemonic::Wrmsrns,
    Mnemonic::Rdmsrlist,
    Mnemonic::Wrmsrlist,
    Mnemonic::Rdpmc,
    Mnemonic::Xsetbv,
    Mnemonic::Xsaves,
    Mnemonic::Xsaves64,
    Mnemonic::Xrstors,
    Mnemonic::Xrstors64,
    Mnemonic::Hreset,
    Mnemonic::Pconfig,
    Mnemonic::Loadiwkey,
    Mnemonic::Encls,
    Mnemonic::Getsec,
    Mnemonic::Getsecq,
    // Returning to user space (and FRED's returns).
    Mnemonic::Sysret,
    Mnemonic::Sysretq,
    Mnemonic::Sysexit,
    Mnemonic::Sysexitq,
    Mnemonic::Iret,
    Mnemonic::Iretd,
    Mnemonic::Iretq,
    Mnemonic::Eretu,
    Mnemonic::Erets,
    // String port I/O: no exception covers it.
    Mnemonic::Insb,
    Mnemonic::Insw,
    Mnemonic::Insd,
    Mnemonic::Outsb,
    Mnemonic::Outsw,
    Mnemonic::Outsd,
    // Hypercalls, VMX, SVM, SEV-SNP, TDX.
    Mnemonic::Vmcall,
    Mnemonic::Vmmcall,
    Mnemonic::Vmgexit,
    Mnemonic::Vmfunc,
    Mnemonic::Vmlaunch,
    Mnemonic::Vmresume,
    Mnemonic::Vmxon,
    Mnemonic::Vmxoff,
    Mnemonic::Vmclear,
    Mnemonic::Vmptrld,
    Mnemonic::Vmptrst,
    Mnemonic::Vmread,
    Mnemonic::Vmwrite,
    Mnemonic::Invept,
    Mnemonic::Invvpid,
    Mnemonic::Vmrun,
    Mnemonic::Vmload,
    Mnemonic::Vmsave,
    Mnemonic::Stgi,
    Mnemonic::Clgi,
    Mnemonic::Skinit,
    Mnemonic::Pvalidate,
    Mnemonic::Rmpadjust,
    Mnemonic::Rmpupdate,
    Mnemonic::Rmpquery,
    Mnemonic::Psmash,
    Mnemonic::Tdcall,
    Mnemonic::Seamcall,
    Mnemonic::Seamret,
    Mnemonic::Seamops,
    // Not privileged, but the FPU/extended state a context switch saves and
    // restores is the hypervisor-facing module's (`hv/context.rs`), and the
    // source-text version of this test kept it there too.
    Mnemonic::Fxsave,
    Mnemonic::Fxsave64,
    Mnemonic::Fxrstor,
    Mnemonic::Fxrstor64,
    Mnemonic::Xsave,
    Mnemonic::Xsave64,
    Mnemonic::Xsavec,
    Mnemonic::Xsavec64,
    Mnemonic::Xsaveopt,
    Mnemonic::Xsaveopt64,
    Mnemonic::Xrstor,
    Mnemonic::Xrstor64,
];

/// Whether `insn` is privileged, and how it is judged.
fn privileged(insn: &Instruction) -> Option<Kind> {
    let mnemonic = insn.mnemonic();
    if matches!(mnemonic, Mnemonic::In | Mnemonic::Out) {
        return Some(Kind::PortIo);
    }
    if SYSTEM.contains(&mnemonic) {
        return Some(Kind::System);
    }
    // MOV to or from a control, debug or (386) test register.
    matches!(
        insn.code(),
        Code::Mov_r32_cr
            | Code::Mov_r64_cr
            | Code::Mov_cr_r32
            | Code::Mov_cr_r64
            | Code::Mov_r32_dr
            | Code::Mov_r64_dr
            | Code::Mov_dr_r32
            | Code::Mov_dr_r64
            | Code::Mov_r32_tr
            | Code::Mov_tr_r32
    )
    .then_some(Kind::System)
}

// ---------------------------------------------------------------------------
// Where it may be.

/// Directories (relative to the workspace root) whose code may execute
/// privileged instructions: the hypervisor-facing module and the PVH entry.
const ALLOWED_DIRS: [&str; 2] = ["microkernel/src/hv", "boot/src"];

/// Files whose IN/OUT is allowed: the kernel's only device accesses besides
/// `hv/` (ARCHITECTURE.md). Port I/O is not privileged in ring 0; these two
/// are named so that any other port access still has to go through `hv/`.
const PORT_IO_FILES: &[&str] = &[
    // The kernel's COM1, through uart_16550: before any server runs, after
    // the console server ended, and for fault reports.
    "microkernel/src/serial.rs",
    // QEMU's isa-debug-exit port (0xf4), how the in-QEMU tests end.
    "microkernel/src/exit.rs",
];

/// Symbols, for code without line information (assembly), whose
/// instructions are allowed: hv's trap and system-call entry and exit
/// (`global_asm!` in `hv/trap.rs` and `hv/context.rs`, one of each per
/// backend)...
const HV_ASM_PREFIXES: &[&str] = &[
    "trap_stubs_",
    "trap_common_",
    "trap_return_",
    "syscall_entry_",
];

/// ... and the PVH entry's labels (`global_asm!` in `boot/src/entry.rs`).
const BOOT_ASM_SYMBOLS: &[&str] = &["pvh_start32", "long_mode_entry", "higher_half_entry"];

/// The label in `.boot.text` after which the boot code is 64-bit (`.code64`).
const BOOT_CODE64_LABEL: &str = "long_mode_entry";

/// The workspace root: source paths are judged relative to it.
fn workspace_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("microkernel/ is one level below the workspace root");
        root.canonicalize().unwrap_or_else(|_| root.to_path_buf())
    })
}

/// One frame of an instruction's inline chain.
#[derive(Clone, Debug, Default)]
struct SrcFrame {
    /// The (demangled) function this frame is in.
    function: Option<String>,
    /// Its source file as DWARF names it (absolute for this workspace's
    /// crates, whose compilation directory is the workspace root).
    file: Option<PathBuf>,
    line: Option<u32>,
}

impl SrcFrame {
    /// Whether the frame names a source file: a line, or at least a Rust
    /// file (a call site may have line 0). The assembly's codegen-unit
    /// pseudo-file, without lines, is no location.
    fn located(&self) -> bool {
        self.file.as_deref().is_some_and(|f| {
            self.line.is_some_and(|l| l > 0) || f.extension().is_some_and(|e| e == "rs")
        })
    }

    /// The frame's file relative to the workspace root, if it is located
    /// there.
    fn workspace_file(&self) -> Option<&Path> {
        if !self.located() {
            return None;
        }
        self.file.as_deref()?.strip_prefix(workspace_root()).ok()
    }
}

/// An ELF symbol containing code.
#[derive(Clone, Debug)]
struct Sym {
    /// Demangled name.
    name: String,
    address: u64,
    section: String,
}

/// What the classifier says about one instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    NotPrivileged,
    /// Allowed, and why.
    Allowed(String),
    /// Not allowed, and why.
    Rejected(String),
    /// Its inline chain names no workspace file: it is in a dependency's
    /// out-of-line function, which its callers decide about.
    ByCallers,
}

/// The classifier, on one instruction's bytes (decoded at `bitness`), its
/// inline chain (innermost frame first, as addr2line gives it) and the
/// symbol that contains it.
fn classify(bytes: &[u8], bitness: u32, frames: &[SrcFrame], symbol: Option<&Sym>) -> Verdict {
    let mut decoder = Decoder::new(bitness, bytes, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        return Verdict::NotPrivileged;
    }
    match privileged(&insn) {
        Some(kind) => judge(kind, frames, symbol),
        None => Verdict::NotPrivileged,
    }
}

/// Judge a privileged instruction of `kind` by its inline chain, or by its
/// symbol when it has no line information.
fn judge(kind: Kind, frames: &[SrcFrame], symbol: Option<&Sym>) -> Verdict {
    if !frames.iter().any(SrcFrame::located) {
        return judge_symbol(symbol);
    }
    let workspace: Vec<&Path> = frames.iter().filter_map(SrcFrame::workspace_file).collect();
    if workspace.is_empty() {
        return Verdict::ByCallers;
    }
    if let Some(file) = workspace
        .iter()
        .find(|f| ALLOWED_DIRS.iter().any(|d| f.starts_with(d)))
    {
        return Verdict::Allowed(format!("inline chain passes through {}", file.display()));
    }
    if kind == Kind::PortIo
        && let Some(file) = workspace
            .iter()
            .find(|f| PORT_IO_FILES.iter().any(|p| **f == Path::new(p)))
    {
        return Verdict::Allowed(format!("port I/O in {}", file.display()));
    }
    let files: Vec<String> = workspace.iter().map(|f| f.display().to_string()).collect();
    Verdict::Rejected(format!(
        "no frame in {}/ or {}/ (workspace frames: {})",
        ALLOWED_DIRS[0],
        ALLOWED_DIRS[1],
        files.join(", ")
    ))
}

/// Judge code without line information by the symbol containing it.
fn judge_symbol(symbol: Option<&Sym>) -> Verdict {
    let Some(sym) = symbol else {
        return Verdict::Rejected("no line information and no symbol".into());
    };
    let name = sym.name.as_str();
    if name.starts_with("microkernel::hv::") || name.starts_with("<microkernel::hv::") {
        Verdict::Allowed(format!("no line information; in {name}"))
    } else if HV_ASM_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Verdict::Allowed(format!("hv assembly `{name}`"))
    } else if BOOT_ASM_SYMBOLS.contains(&name) {
        Verdict::Allowed(format!("boot assembly `{name}`"))
    } else {
        Verdict::Rejected(format!(
            "no line information, and symbol `{name}` is not hv's or boot's"
        ))
    }
}

// ---------------------------------------------------------------------------
// Reading the kernel.

const TARGET: &str = "x86_64-unknown-none";

/// The kernel ELF, built with `cargo xtask build` if it is not there.
fn kernel_path() -> PathBuf {
    if let Some(path) = std::env::var_os("MICROKERNEL_KERNEL") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "MICROKERNEL_KERNEL={} is not a file",
            path.display()
        );
        return path;
    }
    let root = workspace_root();
    // A relative CARGO_TARGET_DIR is taken from the workspace root (cargo
    // takes it from where it was run, which the test cannot see).
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_relative() { root.join(d) } else { d })
        .unwrap_or_else(|| root.join("target"));
    let path = target_dir.join(TARGET).join("release").join("microkernel");
    if !path.is_file() {
        eprintln!(
            "privileged: {} is missing; running `cargo xtask build`",
            path.display()
        );
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args(["xtask", "build"])
            .current_dir(root)
            .output()
            .unwrap_or_else(|e| panic!("could not run `cargo xtask build`: {e}"));
        assert!(
            output.status.success(),
            "`cargo xtask build` failed ({}), so there is no kernel to check:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        assert!(
            path.is_file(),
            "`cargo xtask build` succeeded but {} is still missing",
            path.display()
        );
    }
    warn_if_stale(&path);
    path
}

/// Say so when kernel sources are newer than the ELF: the check reads what
/// was built, not what is on disk.
fn warn_if_stale(kernel: &Path) {
    let Ok(built) = std::fs::metadata(kernel).and_then(|m| m.modified()) else {
        return;
    };
    let mut newer = Vec::new();
    let mut stack: Vec<PathBuf> = ["microkernel/src", "boot/src", "pvchannel/src"]
        .iter()
        .map(|d| workspace_root().join(d))
        .collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > built)
            {
                newer.push(path);
            }
        }
    }
    if !newer.is_empty() {
        eprintln!(
            "privileged: warning: {} is older than {} source file(s), e.g. {}; \
             run `cargo xtask build` to check the current source",
            kernel.display(),
            newer.len(),
            newer[0].display()
        );
    }
}

/// A privileged instruction found in the kernel.
struct Found {
    address: u64,
    kind: Kind,
    text: String,
    bytes: Vec<u8>,
}

/// A direct branch: how out-of-line functions are traced to their callers.
struct Branch {
    site: u64,
    target: u64,
}

type Dwarf = gimli::Dwarf<gimli::EndianSlice<'static, gimli::RunTimeEndian>>;

struct Kernel {
    /// Code symbols, sorted by address.
    symbols: Vec<Sym>,
    /// Sizes of the sized ones, by address (a label has none).
    sizes: HashMap<u64, u64>,
    found: Vec<Found>,
    /// Direct call and jump sites, by target.
    callers: HashMap<u64, Vec<u64>>,
    /// Addresses taken as values (in data, or by LEA/MOV in code): a function
    /// there may be called indirectly.
    taken: HashSet<u64>,
    dwarf: addr2line::Context<gimli::EndianSlice<'static, gimli::RunTimeEndian>>,
    decoded: usize,
}

impl Kernel {
    fn load(path: &Path) -> Kernel {
        // Leaked: the DWARF borrows it for the whole test.
        let data: &'static [u8] = std::fs::read(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .leak();
        let elf = object::File::parse(data)
            .unwrap_or_else(|e| panic!("{} is not an ELF file: {e}", path.display()));

        let mut symbols: Vec<Sym> = Vec::new();
        let mut sizes = HashMap::new();
        let mut section_names = HashMap::new();
        for section in elf.sections() {
            section_names.insert(section.index(), section.name().unwrap_or("?").to_string());
        }
        for symbol in elf.symbols() {
            let Some(index) = symbol.section_index() else {
                continue;
            };
            let Ok(section) = elf.section_by_index(index) else {
                continue;
            };
            if section.kind() != SectionKind::Text
                || !matches!(
                    symbol.kind(),
                    SymbolKind::Text | SymbolKind::Label | SymbolKind::Unknown
                )
            {
                continue;
            }
            let Ok(raw) = symbol.name() else { continue };
            if raw.is_empty() {
                continue;
            }
            let name = addr2line::demangle_auto(Cow::Borrowed(raw), None).into_owned();
            if symbol.size() > 0 {
                sizes.insert(symbol.address(), symbol.size());
            }
            symbols.push(Sym {
                name,
                address: symbol.address(),
                section: section_names[&index].clone(),
            });
        }
        // At one address, prefer a sized function, then a name that is not
        // a linker-script marker (`__boot_start`).
        symbols.sort_by_key(|s| {
            (
                s.address,
                !sizes.contains_key(&s.address),
                s.name.starts_with("__"),
                s.name.clone(),
            )
        });
        symbols.dedup_by_key(|s| s.address);
        assert!(
            symbols.len() > 100,
            "{} has {} code symbols: is it stripped?",
            path.display(),
            symbols.len()
        );

        let mut found = Vec::new();
        let mut branches = Vec::new();
        let mut taken = HashSet::new();
        let mut decoded = 0;
        let mut formatter = IntelFormatter::new();
        for section in elf.sections() {
            let bytes = section
                .data()
                .unwrap_or_else(|e| panic!("reading a section of {}: {e}", path.display()));
            if section.kind() != SectionKind::Text {
                // Function addresses stored as data: vtables, fn pointers.
                if matches!(
                    section.kind(),
                    SectionKind::Data | SectionKind::ReadOnlyData | SectionKind::ReadOnlyString
                ) {
                    for chunk in bytes.chunks_exact(8) {
                        taken.insert(u64::from_le_bytes(chunk.try_into().unwrap()));
                    }
                }
                continue;
            }
            let name = section.name().unwrap_or("?");
            let start = section.address();
            let end = start + bytes.len() as u64;
            // Decode symbol by symbol, so that anything odd between functions
            // cannot desynchronise the rest of the section.
            let mut cuts: Vec<u64> = symbols
                .iter()
                .map(|s| s.address)
                .filter(|a| (start..end).contains(a))
                .collect();
            cuts.insert(0, start);
            cuts.push(end);
            cuts.dedup();
            let code64 = symbols
                .iter()
                .find(|s| s.name == BOOT_CODE64_LABEL && s.section == name)
                .map(|s| s.address);
            for piece in cuts.windows(2) {
                let (from, to) = (piece[0], piece[1]);
                let bitness = if name == ".boot.text" && code64.is_none_or(|a| from < a) {
                    32
                } else {
                    64
                };
                let data = &bytes[(from - start) as usize..(to - start) as usize];
                let mut decoder = Decoder::with_ip(bitness, data, from, DecoderOptions::NONE);
                let mut insn = Instruction::default();
                while decoder.can_decode() {
                    decoder.decode_out(&mut insn);
                    decoded += 1;
                    if insn.is_invalid() {
                        continue;
                    }
                    for i in 0..insn.op_count() {
                        match insn.op_kind(i) {
                            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                                branches.push(Branch {
                                    site: insn.ip(),
                                    target: insn.near_branch_target(),
                                });
                            }
                            OpKind::Immediate32to64 | OpKind::Immediate64 | OpKind::Immediate32 => {
                                taken.insert(insn.immediate(i));
                            }
                            OpKind::Memory if insn.mnemonic() == Mnemonic::Lea => {
                                taken.insert(if insn.is_ip_rel_memory_operand() {
                                    insn.ip_rel_memory_address()
                                } else {
                                    insn.memory_displacement64()
                                });
                            }
                            _ => {}
                        }
                    }
                    if let Some(kind) = privileged(&insn) {
                        let mut text = String::new();
                        formatter.format(&insn, &mut text);
                        let offset = (insn.ip() - start) as usize;
                        found.push(Found {
                            address: insn.ip(),
                            kind,
                            text,
                            bytes: bytes[offset..offset + insn.len()].to_vec(),
                        });
                    }
                }
            }
        }

        let endian = if elf.is_little_endian() {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        };
        let sections = gimli::DwarfSections::load(|id| -> Result<&'static [u8], String> {
            match elf.section_by_name(id.name()) {
                Some(section) => section
                    .data()
                    .map_err(|e| format!("{}: {e} (compressed?)", id.name())),
                None => Ok(&[]),
            }
        })
        .unwrap_or_else(|e| panic!("reading the DWARF of {}: {e}", path.display()));
        let dwarf: Dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, endian));
        let dwarf = addr2line::Context::from_dwarf(dwarf)
            .unwrap_or_else(|e| panic!("parsing the DWARF of {}: {e}", path.display()));

        let mut callers: HashMap<u64, Vec<u64>> = HashMap::new();
        for b in branches {
            callers.entry(b.target).or_default().push(b.site);
        }
        Kernel {
            symbols,
            sizes,
            found,
            callers,
            taken,
            dwarf,
            decoded,
        }
    }

    /// One instruction's report: address, disassembly, symbol, inline chain.
    fn describe(&self, address: u64, text: &str, out: &mut String) {
        let symbol = self.symbol(address).map_or("?", |s| s.name.as_str());
        let _ = writeln!(out, "  {address:#x}  {text:<28} in {symbol}");
        let frames = self.frames(address);
        if !frames.iter().any(SrcFrame::located) {
            let _ = writeln!(out, "      (no line information)");
        }
        for (i, frame) in frames.iter().enumerate() {
            let _ = writeln!(
                out,
                "      {} {}:{}  {}",
                if i == 0 { "at      " } else { "inlined into" },
                frame.file.as_deref().map_or("?".into(), display_path),
                frame.line.map_or("?".into(), |l| l.to_string()),
                frame.function.as_deref().unwrap_or("?"),
            );
        }
    }
}

/// What judging an instruction by its callers needs to know of a program.
trait Program {
    /// The symbol containing `address`.
    fn symbol(&self, address: u64) -> Option<&Sym>;
    /// The inline chain at `address`, innermost frame first.
    fn frames(&self, address: u64) -> Vec<SrcFrame>;
    /// Where the function starting at `entry` ends (`entry + 1` if unknown).
    fn function_end(&self, entry: u64) -> u64;
    /// The direct calls and jumps to `entry`.
    fn callers(&self, entry: u64) -> &[u64];
    /// Whether `entry` is used as a value (vtables, function pointers).
    fn address_taken(&self, entry: u64) -> bool;
}

/// Judge the instruction at `address`, following a dependency's
/// out-of-line function to its callers. `trail` collects the call sites
/// followed, for the report.
fn judge_at(
    program: &impl Program,
    kind: Kind,
    address: u64,
    visiting: &mut Vec<u64>,
    trail: &mut Vec<u64>,
) -> Verdict {
    let verdict = judge(kind, &program.frames(address), program.symbol(address));
    if verdict != Verdict::ByCallers {
        return verdict;
    }
    let Some(function) = program.symbol(address) else {
        return Verdict::Rejected("in no workspace file and no symbol".into());
    };
    let entry = function.address;
    if program.address_taken(entry) {
        return Verdict::Rejected(format!(
            "in {}, a dependency's function whose address is taken, so it \
             may be called from anywhere",
            function.name
        ));
    }
    if visiting.contains(&entry) {
        // Recursion: the other callers decide.
        return Verdict::Allowed("recursive call".into());
    }
    let end = program.function_end(entry);
    let sites: Vec<u64> = program
        .callers(entry)
        .iter()
        .copied()
        .filter(|a| !(entry..end).contains(a))
        .collect();
    if sites.is_empty() {
        return Verdict::Rejected(format!(
            "in {}, a dependency's function with no direct caller",
            function.name
        ));
    }
    visiting.push(entry);
    let mut reasons = Vec::new();
    let mut verdict = None;
    for site in sites {
        trail.push(site);
        match judge_at(program, kind, site, visiting, trail) {
            Verdict::Allowed(why) => {
                trail.pop();
                reasons.push(why);
            }
            rejected => {
                verdict = Some(rejected);
                break;
            }
        }
    }
    visiting.pop();
    verdict.unwrap_or_else(|| {
        reasons.sort();
        reasons.dedup();
        Verdict::Allowed(format!(
            "in {}, called only from allowed code ({})",
            function.name,
            reasons.join("; ")
        ))
    })
}

impl Program for Kernel {
    /// The symbol containing `address`: the nearest one at or below it, if
    /// it is a label or `address` is within its size.
    fn symbol(&self, address: u64) -> Option<&Sym> {
        let i = self.symbols.partition_point(|s| s.address <= address);
        let sym = self.symbols.get(i.checked_sub(1)?)?;
        match self.sizes.get(&sym.address) {
            Some(&size) if address >= sym.address + size => None,
            _ => Some(sym),
        }
    }

    /// The inline chain at `address`, innermost frame first.
    fn frames(&self, address: u64) -> Vec<SrcFrame> {
        let mut out = Vec::new();
        let Ok(mut iter) = self.dwarf.find_frames(address).skip_all_loads() else {
            return out;
        };
        while let Ok(Some(frame)) = iter.next() {
            out.push(SrcFrame {
                function: frame
                    .function
                    .as_ref()
                    .and_then(|f| f.demangle().ok())
                    .map(|n| n.into_owned()),
                file: frame
                    .location
                    .as_ref()
                    .and_then(|l| l.file)
                    .map(PathBuf::from),
                line: frame.location.as_ref().and_then(|l| l.line),
            });
        }
        out
    }

    fn function_end(&self, entry: u64) -> u64 {
        self.sizes.get(&entry).map_or(entry + 1, |s| entry + s)
    }

    fn callers(&self, entry: u64) -> &[u64] {
        self.callers.get(&entry).map_or(&[], Vec::as_slice)
    }

    fn address_taken(&self, entry: u64) -> bool {
        self.taken.contains(&entry)
    }
}

/// A source path for humans: relative to the workspace, or shortened to the
/// crate directory for registry crates.
fn display_path(path: &Path) -> String {
    if let Ok(rel) = path.strip_prefix(workspace_root()) {
        return rel.display().to_string();
    }
    let text = path.display().to_string();
    match text.find("/registry/src/") {
        Some(i) => {
            let rest = &text[i + "/registry/src/".len()..];
            rest.split_once('/')
                .map_or(text.clone(), |(_, krate)| format!("<registry>/{krate}"))
        }
        None => text,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn privileged_instructions_only_in_the_hypervisor_facing_module() {
    let path = kernel_path();
    let kernel = Kernel::load(&path);
    assert!(
        kernel.decoded > 10_000,
        "decoded only {} instructions in {}",
        kernel.decoded,
        path.display()
    );

    let mut offenders = String::new();
    let mut count = 0;
    let mut allowed: BTreeMap<String, usize> = BTreeMap::new();
    for found in &kernel.found {
        let mut trail = Vec::new();
        match judge_at(
            &kernel,
            found.kind,
            found.address,
            &mut Vec::new(),
            &mut trail,
        ) {
            Verdict::Allowed(why) => {
                // Counted by the kind of reason, for the summary.
                let key = if why.starts_with("inline chain passes through microkernel/src/hv") {
                    "hv/ (line tables)".to_string()
                } else if why.starts_with("inline chain passes through boot/src") {
                    "boot/src/ (line tables)".to_string()
                } else if why.starts_with("in ") {
                    format!("by callers: {why}")
                } else {
                    why
                };
                *allowed.entry(key).or_default() += 1;
            }
            Verdict::Rejected(why) => {
                count += 1;
                let text = format!("{} [{}]", found.text, hex(&found.bytes));
                kernel.describe(found.address, &text, &mut offenders);
                for site in &trail {
                    let _ = writeln!(offenders, "    called from:");
                    kernel.describe(*site, "call", &mut offenders);
                }
                let _ = writeln!(offenders, "    => {why}\n");
            }
            Verdict::NotPrivileged | Verdict::ByCallers => unreachable!(),
        }
    }
    println!(
        "{}: {} instructions decoded, {} privileged",
        path.display(),
        kernel.decoded,
        kernel.found.len()
    );
    for (why, n) in &allowed {
        println!("  allowed {n:>4}: {why}");
    }
    assert!(
        count == 0,
        "{count} privileged instruction(s) in {} outside {}:\n\n{offenders}\
         Move them into microkernel/src/hv/ (see docs/ARCHITECTURE.md, \
         \"The hypervisor-facing module\"); if this is a stale kernel, run `cargo xtask build`.",
        path.display(),
        ALLOWED_DIRS.map(|d| format!("{d}/")).join(" and ")
    );
    // The check is not vacuous: the line tables place hv's instructions in
    // hv/, and the assembly was decoded and recognised.
    for expected in ["hv/ (line tables)", "hv assembly", "boot assembly"] {
        assert!(
            allowed.keys().any(|k| k.starts_with(expected)),
            "no privileged instruction was placed by {expected:?}: the kernel's \
             line tables or symbols are not what this test expects ({allowed:?})"
        );
    }
}

// ---------------------------------------------------------------------------
// The classifier on synthetic inputs.

fn frame(function: &str, file: &str, line: u32) -> SrcFrame {
    let file = if file.starts_with('/') {
        PathBuf::from(file)
    } else {
        workspace_root().join(file)
    };
    SrcFrame {
        function: Some(function.into()),
        file: Some(file),
        line: Some(line),
    }
}

fn sym(name: &str, section: &str) -> Sym {
    Sym {
        name: name.into(),
        address: 0,
        section: section.into(),
    }
}

const X86_64_TABLES: &str =
    "/root/.cargo/registry/src/index.crates.io-0/x86_64-0.15.5/src/instructions/tables.rs";
const UART: &str = "/root/.cargo/registry/src/index.crates.io-0/uart_16550-0.9.0/src/lib.rs";

/// `lidt [rax]`, `mov dr7, rax`, `out dx, al`, `in al, dx`, `cli`,
/// `invlpg [rdi]`, `wrmsr`, `mov cr3, rax`, `swapgs`, `mov rax, rbx`.
const LIDT: &[u8] = &[0x0f, 0x01, 0x18];
const MOV_DR7: &[u8] = &[0x0f, 0x23, 0xf8];
const OUT: &[u8] = &[0xee];
const IN: &[u8] = &[0xec];
const CLI: &[u8] = &[0xfa];
const INVLPG: &[u8] = &[0x0f, 0x01, 0x3f];
const WRMSR: &[u8] = &[0x0f, 0x30];
const MOV_CR3: &[u8] = &[0x0f, 0x22, 0xd8];
const SWAPGS: &[u8] = &[0x0f, 0x01, 0xf8];
const MOV: &[u8] = &[0x48, 0x89, 0xd8];

fn allowed(v: &Verdict) -> bool {
    matches!(v, Verdict::Allowed(_))
}

fn rejected(v: &Verdict) -> bool {
    matches!(v, Verdict::Rejected(_))
}

#[test]
fn the_decoder_sees_privileged_instructions() {
    for bytes in [LIDT, MOV_DR7, OUT, IN, CLI, INVLPG, WRMSR, MOV_CR3, SWAPGS] {
        let insn = Decoder::new(64, bytes, DecoderOptions::NONE).decode();
        assert!(privileged(&insn).is_some(), "{bytes:02x?}: {insn}");
    }
    for bytes in [MOV, &[0x90][..], &[0x0f, 0x0b][..], &[0xf3, 0x90][..]] {
        let insn = Decoder::new(64, bytes, DecoderOptions::NONE).decode();
        assert!(privileged(&insn).is_none(), "{bytes:02x?}: {insn}");
    }
    let out = Decoder::new(64, OUT, DecoderOptions::NONE).decode();
    assert_eq!(privileged(&out), Some(Kind::PortIo));
    // 32-bit boot code: `mov cr0, eax`, `lgdt [0x100100]`.
    for bytes in [&[0x0f, 0x22, 0xc0][..], &[0x0f, 0x01, 0x15, 0, 1, 0x10, 0]] {
        let insn = Decoder::new(32, bytes, DecoderOptions::NONE).decode();
        assert!(privileged(&insn).is_some(), "{bytes:02x?}: {insn}");
    }
}

#[test]
fn lidt_outside_hv_is_rejected() {
    // `idt.load()` in the scheduler: the x86_64 crate's helper inlined there.
    let frames = [
        frame("x86_64::instructions::tables::lidt", X86_64_TABLES, 38),
        frame(
            "x86_64::structures::idt::InterruptDescriptorTable::load",
            X86_64_TABLES,
            90,
        ),
        frame(
            "microkernel::sched::switch",
            "microkernel/src/sched.rs",
            120,
        ),
    ];
    let v = classify(
        LIDT,
        64,
        &frames,
        Some(&sym("microkernel::sched::switch", ".text")),
    );
    assert!(rejected(&v), "{v:?}");
    // Written directly in asm! there, too.
    let v = classify(LIDT, 64, &frames[2..], None);
    assert!(rejected(&v), "{v:?}");
}

#[test]
fn lidt_inlined_into_hv_is_allowed() {
    // The same helper, inlined into hv code that the scheduler's code inlined
    // in turn: the hv frame in the chain is what counts.
    let frames = [
        frame("x86_64::instructions::tables::lidt", X86_64_TABLES, 38),
        frame(
            "microkernel::hv::cpu::load_idt",
            "microkernel/src/hv/cpu.rs",
            57,
        ),
        frame(
            "microkernel::sched::switch",
            "microkernel/src/sched.rs",
            120,
        ),
    ];
    let v = classify(LIDT, 64, &frames, None);
    assert!(allowed(&v), "{v:?}");
}

#[test]
fn debug_register_write_in_main_is_rejected() {
    let frames = [frame(
        "microkernel::kernel_main",
        "microkernel/src/main.rs",
        40,
    )];
    assert!(rejected(&classify(MOV_DR7, 64, &frames, None)));
    let frames = [frame(
        "microkernel::hv::cpu::set_dr7",
        "microkernel/src/hv/cpu.rs",
        9,
    )];
    assert!(allowed(&classify(MOV_DR7, 64, &frames, None)));
}

#[test]
fn invlpg_in_memory_paging_is_rejected() {
    // `MapperFlush::flush()` outside hv/.
    let frames = [
        frame("x86_64::instructions::tlb::flush", X86_64_TABLES, 20),
        frame(
            "microkernel::memory::paging::map",
            "microkernel/src/memory/paging.rs",
            80,
        ),
    ];
    assert!(rejected(&classify(INVLPG, 64, &frames, None)));
}

#[test]
fn port_io_is_allowed_only_in_serial_and_exit_port() {
    let console = [
        frame("<uart_16550::PioBackend>::write", UART, 53),
        frame("microkernel::serial::init", "microkernel/src/serial.rs", 30),
    ];
    assert!(allowed(&classify(OUT, 64, &console, None)));
    assert!(allowed(&classify(IN, 64, &console, None)));
    let exit = [frame(
        "microkernel::exit::exit_qemu",
        "microkernel/src/exit.rs",
        20,
    )];
    assert!(allowed(&classify(OUT, 64, &exit, None)));
    // Only IN/OUT: serial may not mask interrupts itself.
    assert!(rejected(&classify(CLI, 64, &console, None)));
    // And no other file may do port I/O.
    let ports = [frame(
        "microkernel::ports::poke",
        "microkernel/src/ports.rs",
        7,
    )];
    assert!(rejected(&classify(OUT, 64, &ports, None)));
}

#[test]
fn dependency_code_is_judged_by_its_callers() {
    let frames = [frame("uart_16550::Uart16550::send_bytes_exact", UART, 1050)];
    assert_eq!(classify(OUT, 64, &frames, None), Verdict::ByCallers);
    // Core-library frames do not count as the workspace either.
    let frames = [frame(
        "core::iter::Iterator::for_each",
        "/rustc/0/library/core/src/iter/traits/iterator.rs",
        2817,
    )];
    assert_eq!(classify(WRMSR, 64, &frames, None), Verdict::ByCallers);
}

#[test]
fn code_without_line_information_is_judged_by_its_symbol() {
    // A codegen-unit pseudo-file without a line is no location.
    let cgu = [SrcFrame {
        function: None,
        file: Some(workspace_root().join("microkernel.0-cgu.15")),
        line: None,
    }];
    for (bytes, name, section) in [
        (SWAPGS, "trap_common_swapgs", ".text"),
        (SWAPGS, "syscall_entry_swapgs", ".text"),
        (MOV_CR3, "pvh_start32", ".boot.text"),
        (WRMSR, "microkernel::hv::msr::write", ".text"),
        (
            WRMSR,
            "<microkernel::hv::pvm::Pvm as microkernel::hv::backend::Backend>::init",
            ".text",
        ),
    ] {
        let v = classify(bytes, 64, &cgu, Some(&sym(name, section)));
        assert!(allowed(&v), "{name}: {v:?}");
        assert!(allowed(&classify(
            bytes,
            64,
            &[],
            Some(&sym(name, section))
        )));
    }
    for name in [
        "microkernel::traps::init",
        "<microkernel::sched::X as microkernel::hv::backend::Backend>::f",
        "my_stub",
    ] {
        let v = classify(SWAPGS, 64, &[], Some(&sym(name, ".text")));
        assert!(rejected(&v), "{name}: {v:?}");
    }
    assert!(rejected(&classify(SWAPGS, 64, &[], None)));
}

#[test]
fn unprivileged_instructions_are_not_judged() {
    let frames = [frame(
        "microkernel::kernel_main",
        "microkernel/src/main.rs",
        40,
    )];
    assert_eq!(classify(MOV, 64, &frames, None), Verdict::NotPrivileged);
}

/// A made-up program for the caller walk: functions at 0x1000 steps.
#[derive(Default)]
struct Synthetic {
    symbols: Vec<Sym>,
    frames: HashMap<u64, Vec<SrcFrame>>,
    callers: HashMap<u64, Vec<u64>>,
    taken: HashSet<u64>,
}

impl Synthetic {
    /// Function `name` at `entry` (0x1000 long), with the inline chain of
    /// each listed address in it.
    fn function(&mut self, entry: u64, name: &str, sites: &[(u64, Vec<SrcFrame>)]) {
        self.symbols.push(Sym {
            name: name.into(),
            address: entry,
            section: ".text".into(),
        });
        self.symbols.sort_by_key(|s| s.address);
        for (address, frames) in sites {
            self.frames.insert(*address, frames.clone());
        }
    }

    fn call(&mut self, site: u64, target: u64) {
        self.callers.entry(target).or_default().push(site);
    }
}

impl Program for Synthetic {
    fn symbol(&self, address: u64) -> Option<&Sym> {
        self.symbols
            .iter()
            .rev()
            .find(|s| (s.address..s.address + 0x1000).contains(&address))
    }

    fn frames(&self, address: u64) -> Vec<SrcFrame> {
        self.frames.get(&address).cloned().unwrap_or_default()
    }

    fn function_end(&self, entry: u64) -> u64 {
        entry + 0x1000
    }

    fn callers(&self, entry: u64) -> &[u64] {
        self.callers.get(&entry).map_or(&[], Vec::as_slice)
    }

    fn address_taken(&self, entry: u64) -> bool {
        self.taken.contains(&entry)
    }
}

/// uart_16550's `send_bytes` (an OUT at 0x1010, not inlined), called from
/// the console; `wrapper` (0x3000) is another uart function calling it.
fn uart_program() -> Synthetic {
    let mut p = Synthetic::default();
    p.function(
        0x1000,
        "uart_16550::Uart16550<B>::send_bytes",
        &[(0x1010, vec![frame("uart_16550::send_bytes", UART, 1018)])],
    );
    p.function(
        0x2000,
        "microkernel::serial::send_with_crlf",
        &[(
            0x2020,
            vec![frame(
                "microkernel::serial::send_with_crlf",
                "microkernel/src/serial.rs",
                52,
            )],
        )],
    );
    p.call(0x2020, 0x1000);
    p.function(
        0x3000,
        "uart_16550::Uart16550<B>::wrapper",
        &[(0x3030, vec![frame("uart_16550::wrapper", UART, 7)])],
    );
    p.function(
        0x4000,
        "microkernel::sched::switch",
        &[(
            0x4040,
            vec![frame(
                "microkernel::sched::switch",
                "microkernel/src/sched.rs",
                9,
            )],
        )],
    );
    p
}

fn judge_in(p: &Synthetic, kind: Kind, address: u64) -> Verdict {
    judge_at(p, kind, address, &mut Vec::new(), &mut Vec::new())
}

#[test]
fn a_dependency_called_only_from_the_console_may_do_port_io() {
    let p = uart_program();
    let v = judge_in(&p, Kind::PortIo, 0x1010);
    assert!(allowed(&v), "{v:?}");
    // But not a system instruction: the console is no exception for those.
    assert!(rejected(&judge_in(&p, Kind::System, 0x1010)));
}

#[test]
fn a_dependency_called_from_elsewhere_too_is_rejected() {
    let mut p = uart_program();
    p.call(0x4040, 0x1000);
    let mut trail = Vec::new();
    let v = judge_at(&p, Kind::PortIo, 0x1010, &mut Vec::new(), &mut trail);
    assert!(rejected(&v), "{v:?}");
    assert_eq!(trail, [0x4040], "the report names the offending call");
}

#[test]
fn callers_are_followed_through_other_dependency_functions() {
    let mut p = uart_program();
    // console -> wrapper -> send_bytes, and wrapper recursing on itself.
    p.call(0x3030, 0x1000);
    p.call(0x2020, 0x3000);
    p.call(0x3030, 0x3000);
    assert!(allowed(&judge_in(&p, Kind::PortIo, 0x1010)));
    // The scheduler reaching send_bytes through wrapper.
    p.call(0x4040, 0x3000);
    assert!(rejected(&judge_in(&p, Kind::PortIo, 0x1010)));
}

#[test]
fn a_dependency_without_callers_or_called_indirectly_is_rejected() {
    let mut p = uart_program();
    p.callers.clear();
    assert!(rejected(&judge_in(&p, Kind::PortIo, 0x1010)));
    let mut p = uart_program();
    p.taken.insert(0x1000);
    assert!(rejected(&judge_in(&p, Kind::PortIo, 0x1010)));
}
