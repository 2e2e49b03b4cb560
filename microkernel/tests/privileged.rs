//! The kernel's hypervisor-facing surface stays in one place: no privileged
//! instruction, and no x86_64-crate helper that executes one, appears in
//! kernel code outside `src/hv/`. The boot crate (the PVH entry) is the
//! other place allowed; the early console and the test exit port use port
//! I/O, which is not privileged at ring 0 and is named explicitly here.

use std::path::{Path, PathBuf};

const PRIVILEGED: &[&str] = &[
    "cli",
    "sti",
    "hlt",
    "lgdt",
    "lidt",
    "ltr",
    "invlpg",
    "invpcid",
    "wrmsr",
    "rdmsr",
    "swapgs",
    "sysretq",
    "sysret",
    "iretq",
    "wbinvd",
    "xsetbv",
    "vmcall",
    "vmmcall",
    "stac",
    "clac",
    "fxsave64",
    "fxrstor64",
    "fxsave",
    "fxrstor",
    "lidt",
    "sgdt",
];

/// x86_64-crate paths whose functions execute privileged instructions.
const PRIVILEGED_PATHS: &[&str] = &[
    "instructions::interrupts",
    "instructions::tables",
    "instructions::tlb",
    "instructions::segmentation",
    "instructions::hlt",
    "registers::control",
    "registers::model_specific",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Scans Rust source line by line, knowing when it is inside an
/// `asm!`, `naked_asm!` or `global_asm!` invocation (templates may span
/// lines as raw strings).
#[derive(Default)]
struct Scanner {
    asm_depth: i32,
}

impl Scanner {
    /// What privileged thing `line` holds, if any.
    fn line(&mut self, line: &str) -> Option<String> {
        let code = line.split("//").next().unwrap_or("");
        if let Some(path) = PRIVILEGED_PATHS.iter().find(|p| code.contains(*p)) {
            return Some(path.to_string());
        }
        let starts_asm = code.contains("asm!(");
        if self.asm_depth == 0 && !starts_asm {
            return None;
        }
        let asm_part = if starts_asm {
            &code[code.find("asm!(").unwrap() + 5..]
        } else {
            code
        };
        if starts_asm {
            self.asm_depth = 1;
        }
        let found = asm_part.split([';', '"', ',']).find_map(|statement| {
            let statement = statement
                .trim()
                .trim_start_matches("r#")
                .trim_start_matches('#');
            let mnemonic = statement
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            if PRIVILEGED.contains(&mnemonic.as_str()) {
                return Some(mnemonic);
            }
            let control_register = statement.split([' ', ',']).any(|w| {
                let w = w.trim();
                w.len() == 3 && w.starts_with("cr") && w.as_bytes()[2].is_ascii_digit()
            });
            (mnemonic == "mov" && control_register).then(|| statement.to_string())
        });
        for c in asm_part.chars() {
            match c {
                '(' => self.asm_depth += 1,
                ')' => self.asm_depth -= 1,
                _ => {}
            }
        }
        self.asm_depth = self.asm_depth.max(0);
        found
    }
}

fn privileged_in(line: &str) -> Option<String> {
    Scanner::default().line(line)
}

#[test]
fn privileged_instructions_only_in_the_hypervisor_facing_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let hv = src.join("hv");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "found the kernel sources");
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(&hv)) {
        let text = std::fs::read_to_string(file).unwrap();
        let mut scanner = Scanner::default();
        for (n, line) in text.lines().enumerate() {
            if let Some(what) = scanner.line(line) {
                offenders.push(format!(
                    "{}:{}: {what}: {}",
                    file.display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "privileged instructions outside src/hv/:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_scanner_sees_what_it_must() {
    assert_eq!(
        privileged_in(r#"    unsafe { asm!("cli; hlt", options(nomem)) };"#).as_deref(),
        Some("cli")
    );
    assert_eq!(
        privileged_in(r#"asm!("mov cr3, {}", in(reg) x)"#).as_deref(),
        Some("mov cr3")
    );
    assert!(privileged_in(r#"asm!("invlpg [{}]", in(reg) v)"#).is_some());
    assert!(privileged_in("use x86_64::instructions::tables::lidt;").is_some());
    assert_eq!(
        privileged_in(r#"log::info!("cli is a word in a sentence")"#),
        None
    );
    assert_eq!(privileged_in("// wrmsr in a comment"), None);
    assert_eq!(privileged_in(r#"asm!("pause")"#), None);
    // Multi-line global_asm! templates are followed.
    let mut scanner = Scanner::default();
    let found: Vec<_> = [
        "global_asm!(",
        "    r#\"",
        "    mov eax, 1",
        "    swapgs",
        "\"#",
        ");",
        "let x = \"hlt\";",
    ]
    .iter()
    .filter_map(|l| scanner.line(l))
    .collect();
    assert_eq!(found, ["swapgs"]);
    // And the module that must have them does.
    for (file, expected) in [
        ("interrupts.rs", "cli"),
        ("context.rs", "swapgs"),
        ("trap.rs", "iretq"),
    ] {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/hv")
                .join(file),
        )
        .unwrap();
        let mut scanner = Scanner::default();
        let found: Vec<_> = text.lines().filter_map(|l| scanner.line(l)).collect();
        assert!(found.iter().any(|f| f == expected), "{file}: {found:?}");
    }
}
