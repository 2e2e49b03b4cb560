//! xtask as a library: building the kernel image and initrd, finding or
//! installing QEMU, choosing KVM or TCG, and running the system. The `xtask`
//! binary is its command line; the `tests/` crate uses it to boot images.

pub mod build;
pub mod hostprobe;
pub mod manifest;
pub mod new_server;
pub mod qemu;
pub mod qmp;
pub mod rings;
pub mod soak;
pub mod stress;
pub mod summary;

use std::path::PathBuf;

/// Where cargo puts build outputs: `CARGO_TARGET_DIR` when set (relative
/// to the current directory, as cargo reads it), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    target_dir_from(
        std::env::var_os("CARGO_TARGET_DIR"),
        std::env::current_dir().unwrap_or_default(),
        workspace_root(),
    )
}

fn target_dir_from(env: Option<std::ffi::OsString>, cwd: PathBuf, workspace: PathBuf) -> PathBuf {
    match env {
        Some(dir) if !dir.is_empty() => cwd.join(dir),
        _ => workspace.join("target"),
    }
}

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

#[cfg(test)]
mod target_dir_tests {
    use super::*;

    #[test]
    fn cargo_target_dir_wins_and_a_relative_one_is_read_from_the_cwd() {
        let (cwd, ws) = (PathBuf::from("/here"), PathBuf::from("/ws"));
        assert_eq!(
            target_dir_from(None, cwd.clone(), ws.clone()),
            PathBuf::from("/ws/target")
        );
        assert_eq!(
            target_dir_from(Some("/elsewhere".into()), cwd.clone(), ws.clone()),
            PathBuf::from("/elsewhere")
        );
        assert_eq!(
            target_dir_from(Some("out".into()), cwd.clone(), ws.clone()),
            PathBuf::from("/here/out")
        );
        assert_eq!(
            target_dir_from(Some("".into()), cwd, ws),
            PathBuf::from("/ws/target")
        );
    }
}
