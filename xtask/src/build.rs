//! Building the bare-metal parts: the kernel ELF, the servers the manifests
//! name, and the initrd image.
//!
//! The initrd is a ustar archive holding:
//! - `manifest`: the binary default manifest (`servers/manifest.toml`);
//! - `manifests/NAME`: the binary test manifest `tests/manifests/NAME.toml`,
//!   which the kernel uses instead when booted with `test=NAME`;
//! - `servers/BIN`: the ELF of every bin any manifest names.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::manifest::{self, Manifests};
use crate::workspace_root;

pub const TARGET: &str = "x86_64-unknown-none";

/// What `build` produced.
#[derive(Clone, Debug)]
pub struct Image {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// rust-toolchain.toml names the target, but rustup does not add it to a
/// toolchain that is already installed: add it when it is missing.
pub fn ensure_target() -> Result<()> {
    let sysroot = Command::new("rustc")
        .arg("--print")
        .arg("sysroot")
        .current_dir(workspace_root())
        .output();
    if let Ok(out) = sysroot {
        let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if Path::new(&root).join("lib/rustlib").join(TARGET).exists() {
            return Ok(());
        }
    }
    eprintln!("xtask: adding the {TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .current_dir(workspace_root())
        .status()
        .context("running rustup (is it installed?)")?;
    if !status.success() {
        bail!("`rustup target add {TARGET}` failed");
    }
    Ok(())
}

/// Build the kernel (release profile: the debug build is too slow under TCG).
pub fn kernel() -> Result<PathBuf> {
    ensure_target()?;
    let status = cargo()
        .args([
            "build",
            "--release",
            "--package",
            "microkernel",
            "--target",
            TARGET,
        ])
        .status()
        .context("running cargo build for the kernel")?;
    if !status.success() {
        bail!("building the kernel failed");
    }
    Ok(crate::target_dir()
        .join(TARGET)
        .join("release")
        .join("microkernel"))
}

/// Pack the initrd: a tar archive of the files the kernel reads at boot,
/// at its usual place (`target/initrd.tar`).
pub fn initrd(files: &[(String, Vec<u8>)]) -> Result<PathBuf> {
    let path = crate::target_dir().join("initrd.tar");
    write_initrd(&path, files)?;
    Ok(path)
}

/// Write `files` as an initrd archive at `path` (tests build their own).
pub fn write_initrd(path: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut archive = tar::Builder::new(file);
    for (name, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive
            .append_data(&mut header, name, bytes.as_slice())
            .with_context(|| format!("adding {name}"))?;
    }
    archive.finish()?;
    Ok(())
}

/// Build every server crate the manifests name (release, one cargo run for
/// all of them) and return each bin's ELF path, sorted by bin name.
pub fn servers(manifests: &Manifests) -> Result<Vec<(String, PathBuf)>> {
    ensure_target()?;
    let bins = manifests.bins()?;
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--target", TARGET]);
    for package in manifests.packages() {
        cmd.args(["--package", &package]);
    }
    let status = cmd
        .status()
        .context("running cargo build for the servers")?;
    if !status.success() {
        bail!("building the servers failed");
    }
    let dir = crate::target_dir().join(TARGET).join("release");
    Ok(bins
        .into_iter()
        .map(|(bin, _package)| {
            let path = dir.join(&bin);
            (bin, path)
        })
        .collect())
}

/// The initrd's files: the binary manifests, then the server ELFs.
pub fn initrd_files(
    manifests: &Manifests,
    elfs: &[(String, PathBuf)],
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = vec![("manifest".to_string(), manifests.default.encode()?)];
    for (name, manifest) in &manifests.tests {
        files.push((format!("manifests/{name}"), manifest.encode()?));
    }
    for (bin, path) in elfs {
        let elf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        files.push((format!("servers/{bin}"), elf));
    }
    Ok(files)
}

/// Read and check every manifest (`servers/manifest.toml` and
/// `tests/manifests/*.toml`); the error lists every problem found.
pub fn manifests() -> Result<Manifests> {
    manifest::load_all(&workspace_root())
}

/// Build everything QEMU needs.
pub fn all() -> Result<Image> {
    // Check the manifests first: a mistake there stops the build at once.
    let manifests = manifests()?;
    let kernel = kernel()?;
    let elfs = servers(&manifests)?;
    let initrd = initrd(&initrd_files(&manifests, &elfs)?)?;
    Ok(Image { kernel, initrd })
}
