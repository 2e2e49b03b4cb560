//! The instructions that open or close a window the kernel relies on (CLI,
//! STI, HLT, STAC, CLAC) are never marked `nomem` in an `asm!` block: with
//! `nomem` the compiler may move memory accesses out of the window (a copy
//! out from under STAC, a store past the CLI that was to protect it). Reads
//! the hypervisor-facing module's source, since `options(...)` leaves no
//! trace in the machine code.

use std::path::Path;

const WINDOW: &[&str] = &["cli", "sti", "hlt", "stac", "clac"];

/// Every `asm!(...)` invocation in `text`, as the text between `asm!(` and
/// its closing parenthesis.
fn asm_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("asm!(") {
        let body = &rest[at + 5..];
        let mut depth = 1usize;
        let mut end = body.len();
        for (i, c) in body.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        blocks.push(&body[..end]);
        rest = &body[end..];
    }
    blocks
}

/// Whether an `asm!` block's template names one of the window instructions
/// and its options say `nomem`.
fn nomem_window(block: &str) -> bool {
    let template: String = block
        .split(',')
        .take_while(|part| part.trim_start().starts_with('"'))
        .collect();
    let names_window = template
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| WINDOW.contains(&word));
    names_window && block.contains("nomem")
}

#[test]
fn window_instructions_are_never_nomem() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/hv");
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("src/hv") {
        let path = entry.expect("an entry").path();
        let text = std::fs::read_to_string(&path).expect("a source file");
        for block in asm_blocks(&text) {
            if nomem_window(block) {
                offenders.push(format!("{}: asm!({block})", path.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "window instructions marked nomem:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_check_sees_what_it_must() {
    assert!(nomem_window(r#""cli", options(nomem, nostack)"#));
    assert!(nomem_window(r#""sti; hlt", options(nomem, nostack)"#));
    assert!(nomem_window(r#""stac", options(nomem, nostack)"#));
    assert!(!nomem_window(r#""cli", options(nostack)"#));
    assert!(!nomem_window(
        r#""mov {}, cr2", out(reg) x, options(nomem, nostack)"#
    ));
    assert_eq!(
        asm_blocks(r#"a asm!("cli", options(x(y))) b asm!("sti")"#).len(),
        2
    );
}
