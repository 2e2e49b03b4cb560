//! `cargo xtask rings`: pvchannel's `rounds` benchmark over several code
//! layouts of the same source, pooled into one table.
//!
//! A single bench binary's ratio between two rings is one draw of its code
//! layout. On the AMD EPYC development VM the same pvchannel source, built
//! into two `rounds` binaries that differed only elsewhere, moved batches
//! of 64 `u64`s at 0.78 to 0.88 times a line-aligned ringbuf in one and at
//! 1.15 to 1.28 times in the other, in every process of each and in both
//! machine states (docs/BENCHMARKS.md, "Code layout"). So this builds the
//! bench once per layout: layout 0 is the plain link, layout N is linked
//! with `--shuffle-sections=*=N`, which puts every function (each in a
//! section of its own) at another place. It then runs the layouts in turn,
//! `--passes` times, saving each run's output, and has `rounds --replay`
//! pool them: one table per machine state over every round, and each run's
//! ratio on its own.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};

use crate::build::cargo;
use crate::target_dir;

/// The options of `cargo xtask rings`.
#[derive(Clone, Debug, clap::Args)]
pub struct RingsArgs {
    /// Code layouts: the plain link and LAYOUTS - 1 shuffled ones.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub layouts: u32,
    /// Runs of each layout, the layouts taken in turn in every pass.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub passes: u32,
    /// Arguments for every `rounds` run, after `--` (for example
    /// `-- --items 5000000 --rounds 15 --candidate`; see
    /// pvchannel/benches/rounds.rs).
    #[arg(last = true, value_name = "ROUNDS_ARGS")]
    pub rounds_args: Vec<String>,
}

/// The extra `rustc` arguments of layout `layout`: none for the plain link.
pub fn layout_flags(layout: u32) -> Vec<String> {
    if layout == 0 {
        Vec::new()
    } else {
        vec![
            "-C".into(),
            format!("link-arg=-Wl,--shuffle-sections=*={layout}"),
        ]
    }
}

/// The executable cargo reports building, from its `--message-format=json`
/// output (the last one, if it reports several).
pub fn executable_from_messages(json_lines: &str) -> Option<PathBuf> {
    json_lines
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
}

/// Where one run's output is saved.
pub fn run_file(dir: &Path, layout: u32, pass: u32) -> PathBuf {
    dir.join(format!("layout-{layout}.pass-{pass}.txt"))
}

/// Build layout `layout` of the bench and copy it to `dir`; returns the copy.
fn build_layout(dir: &Path, layout: u32) -> Result<PathBuf> {
    let out = cargo()
        .args([
            "rustc",
            "-p",
            "pvchannel",
            "--bench",
            "rounds",
            "--profile",
            "bench",
            "--message-format=json-render-diagnostics",
            "--",
        ])
        .args(layout_flags(layout))
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo rustc")?;
    if !out.status.success() {
        bail!(
            "building layout {layout} failed{}",
            if layout == 0 {
                ""
            } else {
                " (shuffling the layout needs the lld linker, which Rust links \
                 with by default on x86_64 Linux since 1.90)"
            }
        );
    }
    let built = executable_from_messages(&String::from_utf8_lossy(&out.stdout))
        .context("cargo reported no bench executable")?;
    let copy = dir.join(format!("rounds-layout-{layout}"));
    std::fs::copy(&built, &copy)
        .with_context(|| format!("copying {} to {}", built.display(), copy.display()))?;
    Ok(copy)
}

/// Refuse the `rounds` arguments that would spoil the runs, before any is
/// built: `--replay` (what `rings` does at the end) and `--quiet` (which
/// leaves out the round lines the replay reads).
pub fn check_rounds_args(rounds_args: &[String]) -> Result<()> {
    if rounds_args.iter().any(|a| a == "--replay") {
        bail!("--replay is what `rings` does at the end; give it to `rounds` directly");
    }
    if rounds_args.iter().any(|a| a == "--quiet") {
        bail!("--quiet leaves out the round lines that `rings` pools; drop it");
    }
    Ok(())
}

pub fn main(args: &RingsArgs) -> Result<ExitCode> {
    check_rounds_args(&args.rounds_args)?;
    let dir = target_dir().join("rings");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut binaries = Vec::new();
    for layout in 0..args.layouts {
        eprintln!("rings: building layout {layout}");
        binaries.push(build_layout(&dir, layout)?);
    }
    let mut files = Vec::new();
    for pass in 0..args.passes {
        for (layout, binary) in (0..).zip(&binaries) {
            let file = run_file(&dir, layout, pass);
            eprintln!(
                "rings: pass {} of {}, layout {layout}: {}",
                pass + 1,
                args.passes,
                file.display()
            );
            let out = Command::new(binary)
                .args(&args.rounds_args)
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("running {}", binary.display()))?;
            std::fs::write(&file, &out.stdout)
                .with_context(|| format!("writing {}", file.display()))?;
            if !out.status.success() {
                bail!(
                    "{} failed; its output is in {}",
                    binary.display(),
                    file.display()
                );
            }
            files.push(file.display().to_string());
        }
    }
    let status = Command::new(&binaries[0])
        .args(&args.rounds_args)
        .arg("--replay")
        .arg(files.join(","))
        .status()
        .context("running rounds --replay")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_zero_is_the_plain_link_and_the_others_shuffle_with_their_seed() {
        assert!(layout_flags(0).is_empty());
        assert_eq!(
            layout_flags(3),
            ["-C", "link-arg=-Wl,--shuffle-sections=*=3"]
        );
    }

    #[test]
    fn the_executable_is_read_from_cargos_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"pvchannel"},"executable":null}"#,
            "\n",
            "not json\n",
            r#"{"reason":"compiler-artifact","target":{"name":"rounds"},"executable":"/t/release/deps/rounds-1a2b"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n",
        );
        assert_eq!(
            executable_from_messages(messages),
            Some(PathBuf::from("/t/release/deps/rounds-1a2b"))
        );
        assert_eq!(
            executable_from_messages(r#"{"reason":"build-finished"}"#),
            None
        );
    }

    #[test]
    fn arguments_that_would_spoil_the_runs_are_refused_up_front() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_rounds_args(&args(&["--items", "640000", "--candidate"])).is_ok());
        let quiet = check_rounds_args(&args(&["--rounds", "3", "--quiet"])).unwrap_err();
        assert!(quiet.to_string().contains("--quiet"), "{quiet}");
        let replay = check_rounds_args(&args(&["--replay", "a.txt"])).unwrap_err();
        assert!(replay.to_string().contains("--replay"), "{replay}");
    }

    #[test]
    fn each_run_has_a_file_of_its_own() {
        let dir = Path::new("/t/rings");
        assert_eq!(
            run_file(dir, 2, 1),
            PathBuf::from("/t/rings/layout-2.pass-1.txt")
        );
        assert_ne!(run_file(dir, 1, 2), run_file(dir, 2, 1));
    }
}
