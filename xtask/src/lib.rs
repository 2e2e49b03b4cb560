//! xtask as a library: building the kernel image and initrd, finding or
//! installing QEMU, choosing KVM or TCG, and running the system. The `xtask`
//! binary is its command line; the `tests/` crate uses it to boot images.

pub mod build;
pub mod manifest;
pub mod new_server;
pub mod qemu;
pub mod qmp;
pub mod stress;
pub mod summary;

use std::path::PathBuf;

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
