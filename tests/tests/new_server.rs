//! `cargo xtask new-server` in a temporary copy of the workspace: refusals
//! write nothing; `new-server demo`, one build, and a boot in which
//! `demo-client` (servers/testing) calls the new server, which answers.
//! And every kind of manifest error is reported naming its file and entry,
//! by `cargo xtask build` before anything is built.
//!
//! The copy has its own `target/` (xtask builds into the workspace it was
//! compiled in), so this test never touches this checkout's build. It builds
//! the kernel and every server once: expect a few minutes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tests::{Accel, EXIT_SUCCESS};
use xtask::build::{Image, TARGET};
use xtask::qemu;

/// A copy of the workspace's source (tracked and untracked, not ignored:
/// no `target/`), removed when dropped unless the test failed.
struct Copy {
    root: PathBuf,
}

impl Copy {
    fn new(tag: &str) -> Self {
        let source = xtask::workspace_root();
        let root = std::env::temp_dir().join(format!("microkernel-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let listed = Command::new("git")
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .current_dir(&source)
            .output()
            .expect("running git ls-files");
        assert!(listed.status.success(), "git ls-files failed");
        for name in listed.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let name = Path::new(std::str::from_utf8(name).expect("UTF-8 file names"));
            let from = source.join(name);
            if !from.is_file() {
                continue; // deleted in the working tree
            }
            let to = root.join(name);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
        }
        Self { root }
    }

    /// `cargo ARGS` in the copy, with the copy's own target directory.
    fn cargo(&self, args: &[&str]) -> Output {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(args)
            .current_dir(&self.root)
            .env("CARGO_TARGET_DIR", self.root.join("target"))
            .env("CARGO_NET_OFFLINE", "true")
            .env_remove("MICROKERNEL_KERNEL")
            .env_remove("MICROKERNEL_INITRD")
            .output()
            .expect("running cargo");
        eprintln!(
            "$ cargo {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn new_server(&self, args: &[&str]) -> Output {
        let mut all = vec!["xtask", "new-server"];
        all.extend_from_slice(args);
        self.cargo(&all)
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root.join(path))
            .unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    fn write(&self, path: &str, text: &str) {
        std::fs::write(self.root.join(path), text).unwrap();
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the workspace copy is kept at {}", self.root.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What `new-server` may change: refusals must leave all of it as it was.
fn snapshot(copy: &Copy) -> (String, String, Vec<String>) {
    let mut dirs: Vec<String> = std::fs::read_dir(copy.root.join("servers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    (
        copy.read("Cargo.toml"),
        copy.read("servers/manifest.toml"),
        dirs,
    )
}

/// Each refusal names its reason and writes nothing.
fn refusals(copy: &Copy) {
    let before = snapshot(copy);
    for (args, why) in [
        (&["Demo"][..], "bad name \"Demo\""),
        (&["de_mo"][..], "bad name \"de_mo\""),
        (&["seventeen-bytes-x"][..], "bad name \"seventeen-bytes-x\""),
        (&["9lives"][..], "starting with a letter"),
        (&["echo"][..], "server \"echo\" exists already"),
        (
            &["echo2", "--provides", "echo"][..],
            "service \"echo\" is provided by server \"echo\"",
        ),
        (&["demo2", "--provides", "Bad"][..], "bad service \"Bad\""),
        (
            &["survivor"][..],
            "crate servers/testing builds a bin named \"survivor\" already",
        ),
        (
            &["userland"][..],
            "\"userland\" is the package name of the crate at userland",
        ),
    ] {
        let out = copy.new_server(args);
        let e = stderr(&out);
        assert!(!out.status.success(), "new-server {args:?} was accepted");
        assert!(e.contains(why), "new-server {args:?}: {why:?} not in:\n{e}");
        assert_eq!(
            snapshot(copy),
            before,
            "new-server {args:?} wrote something"
        );
    }
}

/// The copy's initrd holds `name` as a file.
fn initrd_has(initrd: &Path, name: &str) -> bool {
    let bytes = std::fs::read(initrd).unwrap();
    // ustar: a 512-byte header per file, its name NUL-padded at offset 0.
    bytes
        .chunks(512)
        .any(|h| h.len() == 512 && h.starts_with(name.as_bytes()) && h[name.len()] == 0)
}

const DEMO_TEST: &str = r#"# test=demo: the server made by `cargo xtask new-server demo`, called by
# demo-client.
[[server]]
name = "demo"
provides = ["demo"]

[[server]]
name = "demo-client"
crate = "testing"
uses = ["demo"]
"#;

fn boot_demo(image: &Image, accel: Accel) {
    let run = tests::Boot::new(accel)
        .cmdline("test=demo demo-client.service=demo")
        .run_image(image);
    let out = run.output();
    let context = format!("[{accel} {:?} {}]\n{out}", run.captured.status, run.cmdline);
    eprintln!("{context}");
    assert_eq!(run.captured.status, Some(EXIT_SUCCESS), "{context}");
    for needle in [
        "[demo] demo: serving 1 client(s)",
        "demo-client: demo echo(0x7) = 0x7",
        "demo-client: demo echo(0xffffffffffffffff) = 0xffffffffffffffff",
        "demo-client: all 3 answers from demo correct",
        "demo: answered 3 request(s) from 1 client(s)",
        "kernel: server demo exited with code 0",
        "kernel: server demo-client exited with code 0",
    ] {
        assert!(out.contains(needle), "{needle:?} missing\n{context}");
    }
    assert!(!out.contains("FAIL"), "{context}");
}

#[test]
fn new_server_demo_builds_boots_and_answers() {
    qemu::ensure_qemu().expect("QEMU is needed");
    let copy = Copy::new("new-server");
    refusals(&copy);

    let out = copy.new_server(&["demo"]);
    assert!(
        out.status.success(),
        "new-server demo failed: {}",
        stderr(&out)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("created server \"demo\" providing service \"demo\""),
        "{said}"
    );
    for file in [
        "servers/demo/Cargo.toml",
        "servers/demo/build.rs",
        "servers/demo/src/main.rs",
    ] {
        assert!(copy.root.join(file).is_file(), "{file} not created");
        assert!(said.contains(file), "{file} not reported: {said}");
    }
    assert!(copy.read("Cargo.toml").contains("\"servers/demo\","));
    assert!(
        copy.read("servers/manifest.toml")
            .contains("[[server]]\nname = \"demo\"\nprovides = [\"demo\"]\n")
    );
    // Once made, a second `new-server demo` is an existing server.
    let again = copy.new_server(&["demo"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("server \"demo\" exists already"));

    // The template's own unit tests pass on the host.
    let host = copy.cargo(&["test", "--package", "demo"]);
    assert!(host.status.success(), "cargo test -p demo failed");
    assert!(
        String::from_utf8_lossy(&host.stdout).contains("test result: ok. 2 passed"),
        "the template's tests did not run"
    );

    // A broken manifest stops the build before anything is built, naming
    // the file and the entry.
    copy.write(
        "tests/manifests/broken.toml",
        "[[server]]\nname = \"demo-client\"\ncrate = \"testing\"\nuses = [\"nobody\"]\n",
    );
    let refused = copy.cargo(&["xtask", "build"]);
    assert!(!refused.status.success(), "a broken manifest was built");
    assert!(
        stderr(&refused).contains(
            "tests/manifests/broken.toml: server \"demo-client\": uses \"nobody\", which no server provides"
        ),
        "{}",
        stderr(&refused)
    );
    assert!(!stderr(&refused).contains("Compiling microkernel"));
    std::fs::remove_file(copy.root.join("tests/manifests/broken.toml")).unwrap();

    copy.write("tests/manifests/demo.toml", DEMO_TEST);
    let built = copy.cargo(&["xtask", "build"]);
    assert!(
        built.status.success(),
        "cargo xtask build failed in the copy"
    );
    let release = copy.root.join("target").join(TARGET).join("release");
    let image = Image {
        kernel: release.join("microkernel"),
        initrd: copy.root.join("target/initrd.tar"),
    };
    // The default manifest (what `cargo xtask run` boots) names demo, and
    // its ELF is in the initrd.
    let manifests = xtask::manifest::load_all(&copy.root).expect("the copy's manifests");
    assert!(
        manifests
            .default
            .servers
            .iter()
            .any(|s| s.name == "demo" && s.bin == "demo"),
        "demo is not in the default manifest"
    );
    assert!(initrd_has(&image.initrd, "servers/demo"));
    assert!(initrd_has(&image.initrd, "manifests/demo"));

    boot_demo(&image, Accel::Tcg);
    tests::on_kvm("new_server_demo_builds_boots_and_answers on KVM", || {
        boot_demo(&image, Accel::Kvm)
    });
}

/// A workspace with a few server crates (as the manifest checker sees
/// them) and the given default and test manifests.
fn manifest_root(tag: &str, default: &str, tests: &[(&str, &str)]) -> PathBuf {
    let root =
        std::env::temp_dir().join(format!("microkernel-manifest-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    for name in ["echo", "hello"] {
        write(
            &format!("servers/{name}/Cargo.toml"),
            &format!("[package]\nname = \"{name}\"\n"),
        );
        write(&format!("servers/{name}/src/main.rs"), "");
    }
    write(
        "servers/testing/Cargo.toml",
        "[package]\nname = \"testing\"\n",
    );
    write("servers/testing/src/bin/survivor.rs", "");
    write("servers/manifest.toml", default);
    for (name, text) in tests {
        write(&format!("tests/manifests/{name}.toml"), text);
    }
    root
}

/// The error `load_all` reports for a default manifest `text`.
fn manifest_error(tag: &str, text: &str) -> String {
    let root = manifest_root(tag, text, &[]);
    let e = match xtask::manifest::load_all(&root) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => format!("{e:#}"),
    };
    std::fs::remove_dir_all(&root).unwrap();
    e
}

const GOOD: &str = "[[server]]\nname = \"echo\"\nprovides = [\"echo\"]\n\n[[server]]\nname = \"hello\"\nuses = [\"echo\"]\n";

#[test]
fn each_manifest_error_names_its_file_and_entry() {
    let root = manifest_root("good", GOOD, &[]);
    let good = xtask::manifest::load_all(&root).expect("the good manifest");
    assert_eq!(good.default.servers.len(), 2);
    std::fs::remove_dir_all(&root).unwrap();

    for (kind, text, message) in [
        (
            "unknown server (its crate has no such bin)",
            "[[server]]\nname = \"ghost\"\ncrate = \"testing\"\n",
            "servers/manifest.toml: server \"ghost\": crate \"testing\" has no bin \"ghost\" (it has: survivor)",
        ),
        (
            "missing crate",
            "[[server]]\nname = \"net\"\n",
            "servers/manifest.toml: server \"net\": crate \"net\" not found (no servers/net/Cargo.toml)",
        ),
        (
            "duplicate server",
            "[[server]]\nname = \"echo\"\n[[server]]\nname = \"echo\"\n",
            "servers/manifest.toml: server \"echo\": the name is used by an earlier server too",
        ),
        (
            "duplicate service",
            "[[server]]\nname = \"echo\"\nprovides = [\"echo\"]\n[[server]]\nname = \"e2\"\ncrate = \"echo\"\nbin = \"echo\"\nprovides = [\"echo\"]\n",
            "servers/manifest.toml: server \"e2\": provides \"echo\", which server \"echo\" provides already",
        ),
        (
            "overlapping ports",
            "[[server]]\nname = \"echo\"\nports = [\"0x3f8-0x3ff\"]\n[[server]]\nname = \"hello\"\nports = [\"0x3fc\"]\n",
            "servers/manifest.toml: server \"echo\": ports \"0x3f8-0x3ff\" overlap server \"hello\" ports \"0x3fc\"",
        ),
        (
            "overlapping MMIO",
            "[[server]]\nname = \"echo\"\nmmio = [{ base = 0xfec00000, size = 0x2000 }]\n[[server]]\nname = \"hello\"\nmmio = [{ base = 0xfec01000, size = 0x1000 }]\n",
            "servers/manifest.toml: server \"echo\": mmio { base = 0xfec00000, size = 0x2000 } overlaps server \"hello\" mmio { base = 0xfec01000, size = 0x1000 }",
        ),
        (
            "an IRQ line granted twice",
            "[[server]]\nname = \"echo\"\nirqs = [4]\n[[server]]\nname = \"hello\"\nirqs = [4]\n",
            "servers/manifest.toml: server \"echo\": irq 4 is also granted to server \"hello\"",
        ),
        (
            "a channel nobody provides",
            "[[server]]\nname = \"hello\"\nuses = [\"echo\"]\n",
            "servers/manifest.toml: server \"hello\": uses \"echo\", which no server provides",
        ),
        (
            "overlapping grants within one server",
            "[[server]]\nname = \"echo\"\nports = [\"0x60\", \"0x60-0x64\"]\n",
            "servers/manifest.toml: server \"echo\": ports \"0x60-0x64\" overlap ports \"0x60\" of the same server",
        ),
        (
            "a bad name",
            "[[server]]\nname = \"Echo\"\ncrate = \"echo\"\nbin = \"echo\"\n",
            "servers/manifest.toml: server \"Echo\": bad name",
        ),
        (
            "an unknown field",
            "[[server]]\nname = \"echo\"\nportz = [1]\n",
            "servers/manifest.toml: server \"echo\": unknown field `portz`",
        ),
    ] {
        let e = manifest_error("kind", text);
        assert!(e.contains(message), "{kind}: {message:?} not in:\n{e}");
    }

    // Every problem of every file at once, each with its own file.
    let root = manifest_root(
        "many",
        "[[server]]\nname = \"echo\"\nirqs = [4]\n[[server]]\nname = \"hello\"\nirqs = [4]\nuses = [\"nothing\"]\n",
        &[
            ("ok", GOOD),
            ("lost", "[[server]]\nname = \"hello\"\nuses = [\"echo\"]\n"),
        ],
    );
    let e = format!("{:#}", xtask::manifest::load_all(&root).unwrap_err());
    std::fs::remove_dir_all(&root).unwrap();
    for message in [
        "servers/manifest.toml: server \"echo\": irq 4 is also granted to server \"hello\"",
        "tests/manifests/lost.toml: server \"hello\": uses \"echo\", which no server provides",
    ] {
        assert!(e.contains(message), "{message:?} not in:\n{e}");
    }
    assert!(!e.contains("tests/manifests/ok.toml"), "{e}");
}
