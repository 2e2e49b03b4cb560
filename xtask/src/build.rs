//! Building the bare-metal parts: the kernel ELF, the servers the manifests
//! name, and the initrd image.
//!
//! The initrd is a ustar archive holding:
//! - `manifest`: the binary default manifest (`servers/manifest.toml`);
//! - `manifests/NAME`: the binary test manifest `tests/manifests/NAME.toml`,
//!   which the kernel uses instead when booted with `test=NAME`;
//! - `servers/BIN`: the ELF of every bin any manifest names.

use std::io::Read as _;
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

/// `cargo` (the one running xtask), in the workspace root.
pub fn cargo() -> Command {
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
/// Every server's bytes start on a 4 KiB boundary (a padding entry before
/// it where needed), so that the kernel can map its read-only pages
/// straight from the initrd instead of copying them.
pub fn write_initrd(path: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut archive = tar::Builder::new(file);
    let mut offset = 0u64;
    for (name, bytes) in files {
        if name.starts_with("servers/")
            && let Some(pad) = page_padding(offset)
        {
            let mut header = tar::Header::new_ustar();
            header.set_size(pad);
            header.set_mode(0o644);
            header.set_cksum();
            archive
                .append_data(&mut header, PADDING, std::io::repeat(0).take(pad))
                .context("adding padding")?;
            offset += TAR_BLOCK + pad.div_ceil(TAR_BLOCK) * TAR_BLOCK;
        }
        offset += TAR_BLOCK + (bytes.len() as u64).div_ceil(TAR_BLOCK) * TAR_BLOCK;
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

/// A tar block: a header, or a unit of file data.
const TAR_BLOCK: u64 = 512;
/// The name of the entries that align servers (the kernel reads no such file).
const PADDING: &str = ".pad";

/// The data size of a padding entry that, written at archive offset
/// `offset`, makes the next entry's data start on a 4 KiB boundary; `None`
/// when it starts on one already.
fn page_padding(offset: u64) -> Option<u64> {
    // The kernel maps a server's pages in place only where they start on
    // one of its pages.
    const PAGE: u64 = abi::layout::PAGE_SIZE;
    if (offset + TAR_BLOCK).is_multiple_of(PAGE) {
        return None;
    }
    // The padding's header and data, then the next header, must end on a
    // page: its data is what remains after two headers.
    Some((PAGE - (offset + 2 * TAR_BLOCK) % PAGE) % PAGE)
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

/// The initrd's files: the binary manifests, then the server ELFs, those of
/// the default system first and in its boot order (the kernel walks the
/// archive only as far as it needs to, and each header costs it where PVM
/// interprets it).
pub fn initrd_files(
    manifests: &Manifests,
    elfs: &[(String, PathBuf)],
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = vec![("manifest".to_string(), manifests.default.encode()?)];
    for (name, manifest) in &manifests.tests {
        files.push((format!("manifests/{name}"), manifest.encode()?));
    }
    let boot_order = |bin: &str| {
        manifests
            .default
            .servers
            .iter()
            .position(|s| s.bin == bin)
            .unwrap_or(usize::MAX)
    };
    let mut elfs: Vec<&(String, PathBuf)> = elfs.iter().collect();
    elfs.sort_by_key(|(bin, _)| boot_order(bin));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_puts_the_next_entrys_data_on_a_page() {
        for blocks in 0..16u64 {
            let offset = blocks * TAR_BLOCK;
            let data_at = match page_padding(offset) {
                None => offset + TAR_BLOCK,
                Some(pad) => offset + TAR_BLOCK + pad + TAR_BLOCK,
            };
            assert_eq!(data_at % 4096, 0, "offset {offset}");
            assert_eq!(page_padding(offset).unwrap_or(0) % TAR_BLOCK, 0);
        }
    }

    #[test]
    fn servers_start_on_a_page_in_the_initrd() {
        let dir = std::env::temp_dir().join(format!("initrd-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("initrd.tar");
        let files = vec![
            ("manifest".to_string(), vec![1u8; 100]),
            ("servers/a".to_string(), vec![2u8; 5000]),
            ("manifests/x".to_string(), vec![3u8; 700]),
            ("servers/b".to_string(), vec![4u8; 10]),
        ];
        write_initrd(&path, &files).unwrap();
        let mut archive = tar::Archive::new(std::fs::File::open(&path).unwrap());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let at = entry.raw_file_position();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            if name.starts_with("servers/") {
                assert_eq!(at % 4096, 0, "{name} at {at}");
            }
            if name != PADDING {
                seen.push((name, bytes));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(seen, files, "every file, whole and in order");
    }
}
