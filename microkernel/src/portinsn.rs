//! Decoding the port-I/O instructions a server executes, for the backends
//! whose hypervisor ignores the I/O permission bitmap (pvm): there IN and
//! OUT from ring 3 raise #GP, and the kernel emulates them against the
//! server's grant. Pure logic, tested on the host.
//!
//! Only the eight forms a driver uses are accepted: IN and OUT, byte, word or
//! doubleword, with an 8-bit immediate port or the port in DX. String forms
//! (INS/OUTS, with or without REP) and LOCK are refused, and the server
//! faults as it would for any other #GP.

/// An access width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    Byte,
    Word,
    Dword,
}

impl Width {
    pub const fn bytes(self) -> u16 {
        match self {
            Width::Byte => 1,
            Width::Word => 2,
            Width::Dword => 4,
        }
    }
}

/// Where the instruction names its port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortOperand {
    /// An 8-bit immediate.
    Immediate(u8),
    /// The DX register.
    Dx,
}

/// One decoded IN or OUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortInsn {
    /// `true` for OUT (the value comes from AL/AX/EAX), `false` for IN.
    pub write: bool,
    pub width: Width,
    pub port: PortOperand,
    /// The instruction's length in bytes, to step over it.
    pub len: usize,
}

impl PortInsn {
    /// The port, given the interrupted DX.
    pub fn port(&self, rdx: u64) -> u16 {
        match self.port {
            PortOperand::Immediate(p) => u16::from(p),
            PortOperand::Dx => rdx as u16,
        }
    }

    /// RAX after an IN read `value`: AL and AX keep the rest of RAX, EAX
    /// clears the upper half, as the CPU does.
    pub fn merge_read(&self, rax: u64, value: u32) -> u64 {
        match self.width {
            Width::Byte => (rax & !0xff) | u64::from(value & 0xff),
            Width::Word => (rax & !0xffff) | u64::from(value & 0xffff),
            Width::Dword => u64::from(value),
        }
    }
}

/// The ports `[first, first + count)` of an `ioport_enable` call as a
/// first and last port, if the range is non-empty and inside the 16-bit
/// port space (no sum that overflows on the way).
pub fn port_range(first: u64, count: u64) -> Option<(u16, u16)> {
    if count == 0 || first > 0xFFFF || count > 0x1_0000 - first {
        return None;
    }
    Some((first as u16, (first + count - 1) as u16))
}

/// The longest x86 instruction.
pub const MAX_INSN: usize = 15;

/// Decode the instruction at the start of `bytes` (as many as could be read
/// at the faulting RIP, up to [`MAX_INSN`]), if it is a plain IN or OUT.
pub fn decode(bytes: &[u8]) -> Option<PortInsn> {
    let mut operand_16 = false;
    let mut at = 0;
    // Legacy prefixes that do not change an IN or OUT (segment, address
    // size) or make it 16-bit (operand size); then at most one REX, which
    // must come last and which IN and OUT ignore.
    while let Some(&b) = bytes.get(at) {
        match b {
            0x66 => operand_16 = true,
            0x67 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            _ => break,
        }
        at += 1;
        if at >= MAX_INSN {
            return None;
        }
    }
    if matches!(bytes.get(at), Some(0x40..=0x4f)) {
        at += 1;
    }
    let opcode = *bytes.get(at)?;
    at += 1;
    let wide = if operand_16 {
        Width::Word
    } else {
        Width::Dword
    };
    let (write, width, immediate) = match opcode {
        0xe4 => (false, Width::Byte, true),
        0xe5 => (false, wide, true),
        0xe6 => (true, Width::Byte, true),
        0xe7 => (true, wide, true),
        0xec => (false, Width::Byte, false),
        0xed => (false, wide, false),
        0xee => (true, Width::Byte, false),
        0xef => (true, wide, false),
        _ => return None,
    };
    let port = if immediate {
        let p = *bytes.get(at)?;
        at += 1;
        PortOperand::Immediate(p)
    } else {
        PortOperand::Dx
    };
    (at <= MAX_INSN).then_some(PortInsn {
        write,
        width,
        port,
        len: at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(write: bool, width: Width, port: PortOperand, len: usize) -> Option<PortInsn> {
        Some(PortInsn {
            write,
            width,
            port,
            len,
        })
    }

    #[test]
    fn the_eight_forms() {
        use PortOperand::{Dx, Immediate};
        // Bytes (a byte past the instruction, where there is one, must not
        // be taken for part of it), then direction, width, port, length.
        let forms: [(&[u8], bool, Width, PortOperand, usize); 8] = [
            (&[0xe4, 0x40], false, Width::Byte, Immediate(0x40), 2),
            (&[0xe5, 0x71], false, Width::Dword, Immediate(0x71), 2),
            (&[0xe6, 0x43], true, Width::Byte, Immediate(0x43), 2),
            (&[0xe7, 0x80], true, Width::Dword, Immediate(0x80), 2),
            (&[0xec], false, Width::Byte, Dx, 1),
            (&[0xed], false, Width::Dword, Dx, 1),
            (&[0xee, 0x90], true, Width::Byte, Dx, 1),
            (&[0xef], true, Width::Dword, Dx, 1),
        ];
        for (bytes, write, width, port, len) in forms {
            assert_eq!(decode(bytes), insn(write, width, port, len), "{bytes:x?}");
        }
    }

    #[test]
    fn operand_size_prefix_makes_a_word_access() {
        assert_eq!(
            decode(&[0x66, 0xed]),
            insn(false, Width::Word, PortOperand::Dx, 2)
        );
        assert_eq!(
            decode(&[0x66, 0x2e, 0x48, 0xe7, 0x10]),
            insn(true, Width::Word, PortOperand::Immediate(0x10), 5)
        );
        // The prefix does not widen the byte forms.
        assert_eq!(
            decode(&[0x66, 0xee]),
            insn(true, Width::Byte, PortOperand::Dx, 2)
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bytes in [
            &[][..],
            &[0x90],             // nop
            &[0x6c],             // insb
            &[0xf3, 0x6e],       // rep outsb
            &[0xf0, 0xee],       // lock out
            &[0xe4],             // truncated immediate
            &[0x48, 0x66, 0xee], // REX not last
            &[0x0f, 0x01, 0xc1], // VMCALL
        ] {
            assert_eq!(decode(bytes), None, "{bytes:x?}");
        }
        assert_eq!(
            decode(&[0x66; 20]),
            None,
            "prefixes past the longest instruction"
        );
    }

    #[test]
    fn port_ranges_stay_in_the_port_space_without_overflow() {
        assert_eq!(port_range(0x3f8, 8), Some((0x3f8, 0x3ff)));
        assert_eq!(port_range(0, 0x1_0000), Some((0, 0xffff)));
        assert_eq!(port_range(0xffff, 1), Some((0xffff, 0xffff)));
        assert_eq!(port_range(0xffff, 2), None);
        assert_eq!(port_range(0x10000, 1), None);
        assert_eq!(
            port_range(1, u64::MAX),
            None,
            "first + count would overflow"
        );
        assert_eq!(port_range(u64::MAX, 1), None);
        assert_eq!(port_range(0x40, 0), None);
    }

    #[test]
    fn reads_merge_into_rax_as_the_cpu_does() {
        let byte = decode(&[0xec]).unwrap();
        let word = decode(&[0x66, 0xed]).unwrap();
        let dword = decode(&[0xed]).unwrap();
        let rax = 0x1122_3344_5566_7788;
        assert_eq!(byte.merge_read(rax, 0xab), 0x1122_3344_5566_77ab);
        assert_eq!(word.merge_read(rax, 0xabcd), 0x1122_3344_5566_abcd);
        assert_eq!(dword.merge_read(rax, 0xdead_beef), 0xdead_beef);
        assert_eq!(byte.port(0xffff_03f8), 0x03f8);
        assert_eq!(decode(&[0xe4, 0x60]).unwrap().port(0x3f8), 0x60);
    }
}
