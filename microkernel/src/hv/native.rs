//! The native backend: plain instructions, for bare metal, TCG, and KVM on
//! hardware virtualization (with KVM's PV EOI and PV send-IPI where
//! offered). It also runs, correctly but slowly, where this project's
//! PVM-type KVM interprets a kernel that has not opted into its native
//! mode (`hv=native` there); the one thing that needs then is a SYSCALL
//! that arrives as a fault.
//!
//! Everything not overridden here is the interface's default: CLI/STI and
//! RFLAGS for the interrupt flag, INVLPG and CR3, SWAPGS on every crossing,
//! the TSS I/O permission bitmap for servers' ports, SMEP/SMAP/UMIP where
//! the CPU has them.

use super::KvmFeatures;
use super::backend::Backend;
use super::context::{self, SYSCALL_VECTOR};
use super::trap::TrapFrame;

pub struct Native {
    /// KVM's paravirtual features, when the hypervisor is KVM.
    pub kvm: Option<KvmFeatures>,
    /// The hypervisor interprets this kernel (a PVM-type KVM whose native
    /// mode was not entered): SYSCALL arrives as a fault at LSTAR.
    pub interpreted_by_pvm: bool,
}

impl Backend for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn trap_vector(&self, frame: &mut TrapFrame) -> u64 {
        // A system call that arrived as a fault keeps its fault vector in
        // the frame, so that it returns through IRETQ (PVM forbids SYSRET
        // to a guest it interprets).
        if self.interpreted_by_pvm && context::syscall_arrived_as_fault(frame) {
            return SYSCALL_VECTOR;
        }
        frame.vector
    }

    fn extended_state(&self) -> Option<(u64, usize)> {
        if self.interpreted_by_pvm {
            // The interpreter cannot execute XGETBV or XSAVE (the VM stops
            // with an emulation failure), while ring 3 runs on the hardware
            // with the host's XCR0: servers can use AVX and this kernel
            // cannot switch it. Said at boot; hv=pvm has no such gap.
            log::warn!(
                "PVM interprets this kernel: ring 3 can use AVX and PKRU, which the kernel \
                 cannot save here, so servers may see each other's AVX registers (use hv=auto)"
            );
            return None;
        }
        context::init_extended_state()
    }

    fn send_ipi(&self, apic_id: u32, vector: u8) {
        let pv = self.kvm.is_some_and(|k| k.has(KvmFeatures::PV_SEND_IPI));
        if !(pv && super::kvm::send_ipi(apic_id, vector)) {
            super::lapic::send_ipi(apic_id, vector);
        }
    }

    fn describe(&self, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        out.write_str("plain instructions")?;
        super::describe_kvm(out, self.kvm)?;
        if self.interpreted_by_pvm {
            out.write_str("; interpreted by PVM (SYSCALL recovered from its fault)")?;
        }
        Ok(())
    }
}
