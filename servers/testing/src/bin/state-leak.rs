//! state-leak: shows that no user-visible CPU state passes from one server to
//! another (tests/manifests/cpustate.toml). Four servers run this bin; the
//! name says the role:
//! - `avx-writer` puts a marker in the upper half of ymm0, `avx-reader`
//!   reads that half after the writer has run;
//! - `fs-writer` sets the FS base to a marker, `fs-reader` reads its own;
//! - `sgdt-probe` asks for the GDT's address with SGDT, which UMIP forbids
//!   ring 3 (the kernel's descriptor tables are not a server's business).
//!
//! A writer prints `NAME: marker set`, then yields 200 times with the
//! marker in place; a reader yields 50 times, then prints `NAME: read 0x...`.
//! Where ring 3 may not use the feature, the instruction raises #UD and the
//! kernel stops that server: nothing could leak. Either way the reader must
//! never print the marker.
#![cfg_attr(target_os = "none", no_std, no_main)]

use userland::{abi, println, sys};

userland::entry!(run);

/// What the writers put in place and the readers must never see.
const MARKER: u64 = 0x5eed_1eac_5eed_1eac;

fn run() -> i32 {
    let Ok(me) = sys::server_info(userland::server_index()) else {
        println!("state-leak: FAIL no server_info for myself");
        return 1;
    };
    let name = abi::name_str(&me.name);
    match name {
        "avx-writer" | "fs-writer" => {
            println!("{name}: setting the marker");
            if name == "avx-writer" {
                probe::set_ymm0_upper(MARKER);
            } else {
                probe::set_fs_base(MARKER);
            }
            println!("{name}: marker set");
            for _ in 0..200 {
                let _ = sys::yield_now();
            }
            0
        }
        "avx-reader" | "fs-reader" => {
            for _ in 0..50 {
                let _ = sys::yield_now();
            }
            println!("{name}: reading");
            let value = if name == "avx-reader" {
                probe::ymm0_upper()
            } else {
                probe::fs_base()
            };
            println!("{name}: read {value:#x}");
            i32::from(value == MARKER)
        }
        "sgdt-probe" => {
            println!("{name}: executing sgdt");
            let base = probe::gdt_base();
            println!("{name}: read {base:#x}");
            0
        }
        other => {
            println!("state-leak: FAIL unknown role {other}");
            1
        }
    }
}

/// The instructions, each of which raises #UD where ring 3 may not use it.
/// This target is soft-float: the compiler never touches vector registers,
/// so ymm0 holds exactly what these put there.
mod probe {
    use core::arch::asm;

    pub fn set_ymm0_upper(marker: u64) {
        let lanes = [marker; 4];
        // SAFETY: reads 32 bytes of `lanes`; writes only ymm0, which no
        // compiled code of this target uses.
        unsafe { asm!("vmovdqu ymm0, [{}]", in(reg) lanes.as_ptr(), options(nostack, readonly)) };
    }

    pub fn ymm0_upper() -> u64 {
        let value: u64;
        // SAFETY: reads ymm0, writes xmm1 (unused by compiled code) and the
        // output register.
        unsafe {
            asm!(
                "vextractf128 xmm1, ymm0, 1",
                "vmovq {}, xmm1",
                out(reg) value,
                options(nostack, nomem),
            )
        };
        value
    }

    pub fn gdt_base() -> u64 {
        let mut table = [0u8; 10];
        // SAFETY: SGDT writes 10 bytes (limit, base) into `table`.
        unsafe { asm!("sgdt [{}]", in(reg) table.as_mut_ptr(), options(nostack)) };
        u64::from_le_bytes(table[2..10].try_into().unwrap_or([0; 8]))
    }

    pub fn set_fs_base(marker: u64) {
        // SAFETY: the FS base is this program's own; nothing here uses FS.
        unsafe { asm!("wrfsbase {}", in(reg) marker, options(nostack, nomem)) };
    }

    pub fn fs_base() -> u64 {
        let value: u64;
        // SAFETY: reading the FS base changes nothing.
        unsafe { asm!("rdfsbase {}", out(reg) value, options(nostack, nomem)) };
        value
    }
}
