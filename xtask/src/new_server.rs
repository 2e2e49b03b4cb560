//! `cargo xtask new-server NAME [--provides SERVICE]`: start a new server.
//!
//! Creates `servers/NAME` (Cargo.toml, build.rs, src/main.rs: a working
//! async request loop that answers opcode 1 with its first argument, from
//! the templates in `xtask/templates/`), adds the crate to the workspace
//! `members`, and appends the server to `servers/manifest.toml`, providing
//! SERVICE (default: NAME). If that manifest has a server named `shell`,
//! SERVICE is added to the shell's `uses`, so that the shell can call it.
//!
//! Everything is checked before anything is written: a bad name, an
//! existing server, or a name or service that clashes with a crate, a bin,
//! a server or a service is refused with a message saying which, and the
//! tree is left as it was. Should a write fail halfway, what was written is
//! undone.
//!
//! Context: the host, run by a person (or a test) in a workspace checkout.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::manifest::{self, DEFAULT_MANIFEST, SERVERS_DIR, ServerCrates};

/// The longest server or service name (as the binary manifest stores it).
pub const MAX_NAME: usize = 16;

/// The opcode the template answers: the value is the request's `args[0]`.
pub const OP_ECHO: u32 = pvchannel::proto::echo::OP_ECHO;

/// The server named `shell` gets every new service in its `uses`.
pub const SHELL: &str = "shell";

const CARGO_TOML: &str = include_str!("../templates/server/Cargo.toml.in");
const BUILD_RS: &str = include_str!("../templates/server/build.rs.in");
const MAIN_RS: &str = include_str!("../templates/server/main.rs.in");

/// Names Cargo or Rust will not take for a package or bin (keywords,
/// the standard crates, cargo's own output directories).
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "build",
    "const",
    "continue",
    "core",
    "crate",
    "deps",
    "do",
    "dyn",
    "else",
    "enum",
    "examples",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "incremental",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc-macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// What [`create`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    pub name: String,
    pub service: String,
    /// The files written, relative to the workspace root.
    pub files: Vec<PathBuf>,
    /// Whether the shell's `uses` got the service.
    pub shell_uses_it: bool,
}

/// Why `name` cannot be a new server's name, if it cannot: a Cargo package
/// and bin name, a manifest server name and an initrd file name at once.
pub fn check_name(name: &str) -> Result<(), String> {
    let rule = format!("a server name is 1..={MAX_NAME} bytes of [a-z0-9-] starting with a letter");
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "bad name \"{name}\": it is {} bytes; {rule}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        return Err(format!("bad name \"{name}\": {c:?} is not allowed; {rule}"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("bad name \"{name}\": {rule}"));
    }
    if name.ends_with('-') {
        return Err(format!("bad name \"{name}\": it must not end with '-'"));
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "bad name \"{name}\": it is reserved by Rust or Cargo"
        ));
    }
    Ok(())
}

/// Why `service` cannot be a service name, if it cannot.
pub fn check_service(service: &str) -> Result<(), String> {
    if pvchannel::manifest::Name::new(service).is_none() {
        return Err(format!(
            "bad service \"{service}\": a service name is 1..={MAX_NAME} bytes of [a-z0-9-]"
        ));
    }
    Ok(())
}

/// What the workspace already has, as far as names go.
#[derive(Debug, Default)]
struct Taken {
    /// Package name -> where (a member path or `servers/DIR`).
    packages: Vec<(String, String)>,
    /// Bin name -> the server crate directory that builds it.
    bins: Vec<(String, String)>,
    /// `[workspace.dependencies]` keys.
    dependencies: BTreeSet<String>,
    /// Servers of the default manifest: (name, provides).
    servers: Vec<(String, Vec<String>)>,
}

fn read_toml(root: &Path, label: &str) -> Result<toml::Table> {
    let text =
        std::fs::read_to_string(root.join(label)).with_context(|| format!("reading {label}"))?;
    toml::from_str(&text).with_context(|| format!("parsing {label}"))
}

fn strings(value: Option<&toml::Value>) -> Vec<String> {
    value
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn package_name(table: &toml::Table) -> Option<String> {
    table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
}

fn taken(root: &Path, cargo: &toml::Table) -> Result<Taken> {
    let mut taken = Taken::default();
    let workspace = cargo.get("workspace");
    for member in strings(workspace.and_then(|w| w.get("members"))) {
        let label = format!("{member}/Cargo.toml");
        if let Ok(table) = read_toml(root, &label)
            && let Some(package) = package_name(&table)
        {
            taken.packages.push((package, member));
        }
    }
    if let Some(deps) = workspace
        .and_then(|w| w.get("dependencies"))
        .and_then(|d| d.as_table())
    {
        taken.dependencies = deps.keys().cloned().collect();
    }
    let servers = root.join(SERVERS_DIR);
    if servers.is_dir() {
        for entry in std::fs::read_dir(&servers).context("listing servers/")? {
            let dir = entry?.path();
            let Some(dir_name) = dir.file_name().and_then(|n| n.to_str()).map(String::from) else {
                continue;
            };
            let label = format!("{SERVERS_DIR}/{dir_name}/Cargo.toml");
            let Ok(table) = read_toml(root, &label) else {
                continue;
            };
            let where_ = format!("{SERVERS_DIR}/{dir_name}");
            if let Some(package) = package_name(&table) {
                taken.packages.push((package.clone(), where_.clone()));
                if dir.join("src/main.rs").is_file() {
                    taken.bins.push((package, where_.clone()));
                }
            }
            if let Some(bins) = table.get("bin").and_then(|b| b.as_array()) {
                for bin in bins {
                    if let Some(name) = bin.get("name").and_then(|n| n.as_str()) {
                        taken.bins.push((name.to_string(), where_.clone()));
                    }
                }
            }
            if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                        taken.bins.push((stem.to_string(), where_.clone()));
                    }
                }
            }
        }
    }
    let manifest = read_toml(root, DEFAULT_MANIFEST)?;
    if let Some(list) = manifest.get("server").and_then(|s| s.as_array()) {
        for server in list {
            if let Some(name) = server.get("name").and_then(|n| n.as_str()) {
                taken
                    .servers
                    .push((name.to_string(), strings(server.get("provides"))));
            }
        }
    }
    Ok(taken)
}

/// Every reason `name` (providing `service`) clashes with what exists.
fn clashes(root: &Path, taken: &Taken, name: &str, service: &str) -> Vec<String> {
    let mut why = Vec::new();
    let dir = format!("{SERVERS_DIR}/{name}");
    if root.join(&dir).exists() {
        why.push(format!(
            "server \"{name}\" exists already ({dir} is there): choose another name, or edit it"
        ));
    }
    for (package, at) in &taken.packages {
        if package == name && *at != dir {
            why.push(format!(
                "\"{name}\" is the package name of the crate at {at}"
            ));
        }
    }
    for (bin, at) in &taken.bins {
        if bin == name && *at != dir {
            why.push(format!(
                "crate {at} builds a bin named \"{name}\" already (the initrd holds one servers/{name})"
            ));
        }
    }
    if taken.dependencies.contains(name) {
        why.push(format!(
            "\"{name}\" is a dependency in the root Cargo.toml's [workspace.dependencies]"
        ));
    }
    for (server, provides) in &taken.servers {
        if server == name {
            why.push(format!(
                "{DEFAULT_MANIFEST} has a server named \"{name}\" already"
            ));
        }
        if provides.iter().any(|p| p == service) {
            why.push(format!(
                "service \"{service}\" is provided by server \"{server}\" in {DEFAULT_MANIFEST} already (choose another with --provides)"
            ));
        }
        if name != service && provides.iter().any(|p| p == name) {
            why.push(format!(
                "\"{name}\" is the name of a service that server \"{server}\" provides"
            ));
        }
    }
    why
}

fn fill(template: &str, name: &str, service: &str) -> String {
    template
        .replace("{{NAME}}", name)
        .replace("{{SERVICE}}", service)
        .replace("{{OP_ECHO}}", &OP_ECHO.to_string())
}

/// The generated crate's files, relative to its directory.
pub fn crate_files(name: &str, service: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Cargo.toml", fill(CARGO_TOML, name, service)),
        ("build.rs", fill(BUILD_RS, name, service)),
        ("src/main.rs", fill(MAIN_RS, name, service)),
    ]
}

/// `cargo_toml` with `member` added to `[workspace] members`: after the
/// last `"servers/..."` entry (or as the last entry), in the file's own
/// layout. Only that line changes.
pub fn add_member(cargo_toml: &str, member: &str) -> Result<String> {
    let lines: Vec<&str> = cargo_toml.lines().collect();
    let start = lines
        .iter()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with("members") && l["members".len()..].trim_start().starts_with('=')
        })
        .context("the root Cargo.toml has no `members = [` line")?;
    if !lines[start].trim_end().ends_with('[') {
        bail!(
            "the root Cargo.toml's members are not written one per line (`members = [` ... `]`); add \"{member}\" by hand"
        );
    }
    let end = start
        + lines[start..]
            .iter()
            .position(|l| l.trim() == "]")
            .context("the root Cargo.toml's `members = [` has no closing `]` line")?;
    let items = &lines[start + 1..end];
    let indent = items
        .iter()
        .find(|l| l.trim_start().starts_with('"'))
        .map(|l| &l[..l.len() - l.trim_start().len()])
        .unwrap_or("    ");
    let after = items
        .iter()
        .rposition(|l| l.trim_start().starts_with("\"servers/"))
        .or_else(|| items.iter().rposition(|l| l.trim_start().starts_with('"')));
    let at = match after {
        Some(i) => start + 1 + i + 1,
        None => end,
    };
    // The entry before the new one must end in a comma.
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    if at > start + 1 {
        let prev = &mut out[at - 1];
        if prev.trim_start().starts_with('"') && !prev.trim_end().ends_with(',') {
            prev.push(',');
        }
    }
    out.insert(at, format!("{indent}\"{member}\","));
    let mut text = out.join("\n");
    if cargo_toml.ends_with('\n') {
        text.push('\n');
    }
    // Check that the result says what was meant, and nothing else changed.
    let before: toml::Table = toml::from_str(cargo_toml).context("parsing the root Cargo.toml")?;
    let mut after: toml::Table =
        toml::from_str(&text).context("the root Cargo.toml after adding the member")?;
    let members = after
        .get_mut("workspace")
        .and_then(|w| w.get_mut("members"))
        .and_then(|m| m.as_array_mut())
        .context("no workspace.members after the edit")?;
    let position = members.iter().position(|m| m.as_str() == Some(member));
    match position {
        Some(i) => {
            members.remove(i);
        }
        None => bail!("adding \"{member}\" to the root Cargo.toml's members failed"),
    }
    if before != after {
        bail!("adding \"{member}\" to the root Cargo.toml's members would change more than that");
    }
    Ok(text)
}

/// `manifest` with a new `[[server]]` entry at its end.
pub fn add_server(manifest: &str, name: &str, service: &str) -> String {
    let mut text = manifest.trim_end().to_string();
    if !text.is_empty() {
        text.push_str("\n\n");
    }
    let _ = write!(
        text,
        "# Added by `cargo xtask new-server {name}`: see servers/{name}/src/main.rs.\n\
         [[server]]\n\
         name = \"{name}\"\n\
         provides = [\"{service}\"]\n"
    );
    text
}

/// `manifest` with `service` added to the `uses` of the server named
/// `client`; None if there is no such server or its entry is not written
/// in the simple form this edits (`uses = [...]` on one line, or none).
pub fn add_use(manifest: &str, client: &str, service: &str) -> Option<String> {
    let lines: Vec<&str> = manifest.lines().collect();
    let name_line = format!("name = \"{client}\"");
    let at = lines.iter().position(|l| {
        let t = l.trim();
        t == name_line || t.starts_with(&format!("{name_line} "))
    })?;
    // The entry: from its [[server]] header to the next header.
    let begin = lines[..at].iter().rposition(|l| l.trim() == "[[server]]")?;
    let end = lines[at..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map_or(lines.len(), |i| at + i);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match (begin..end).find(|&i| lines[i].trim_start().starts_with("uses")) {
        Some(i) => {
            let line = lines[i];
            let open = line.find('[')?;
            let close = line.rfind(']')?;
            let inner = line[open + 1..close].trim();
            let list = if inner.is_empty() {
                format!("\"{service}\"")
            } else {
                format!("{}, \"{service}\"", inner.trim_end_matches(','))
            };
            out[i] = format!("{}[{list}]{}", &line[..open], &line[close + 1..]);
        }
        None => out.insert(at + 1, format!("uses = [\"{service}\"]")),
    }
    let mut text = out.join("\n");
    if manifest.ends_with('\n') {
        text.push('\n');
    }
    // The edit must have done exactly that.
    let before: toml::Table = toml::from_str(manifest).ok()?;
    let mut after: toml::Table = toml::from_str(&text).ok()?;
    let servers = after.get_mut("server")?.as_array_mut()?;
    let entry = servers
        .iter_mut()
        .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(client))?
        .as_table_mut()?;
    let uses = entry.get_mut("uses")?.as_array_mut()?;
    if uses.last().and_then(|u| u.as_str()) != Some(service) {
        return None;
    }
    uses.pop();
    if uses.is_empty() && !before_has_uses(&before, client) {
        entry.remove("uses");
    }
    (before == after).then_some(text)
}

fn before_has_uses(manifest: &toml::Table, client: &str) -> bool {
    manifest
        .get("server")
        .and_then(|s| s.as_array())
        .and_then(|a| {
            a.iter()
                .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(client))
        })
        .is_some_and(|s| s.get("uses").is_some())
}

/// Files as they were, to put back if a later step fails.
struct Undo {
    root: PathBuf,
    restore: Vec<(PathBuf, String)>,
    remove_dir: Option<PathBuf>,
}

impl Undo {
    fn run(self) {
        for (path, text) in self.restore {
            let _ = std::fs::write(self.root.join(path), text);
        }
        if let Some(dir) = self.remove_dir {
            let _ = std::fs::remove_dir_all(self.root.join(dir));
        }
    }
}

/// Create server `name` in the workspace at `root` (see the module docs).
pub fn create(root: &Path, name: &str, provides: Option<&str>) -> Result<Created> {
    check_name(name).map_err(anyhow::Error::msg)?;
    let service = provides.unwrap_or(name);
    check_service(service).map_err(anyhow::Error::msg)?;

    let cargo_text =
        std::fs::read_to_string(root.join("Cargo.toml")).context("reading the root Cargo.toml")?;
    let cargo: toml::Table = toml::from_str(&cargo_text).context("parsing the root Cargo.toml")?;
    let taken = taken(root, &cargo)?;
    let why = clashes(root, &taken, name, service);
    if !why.is_empty() {
        bail!(
            "cannot create server \"{name}\"; nothing was written:\n  {}",
            why.join("\n  ")
        );
    }
    let manifest_text = std::fs::read_to_string(root.join(DEFAULT_MANIFEST))
        .with_context(|| format!("reading {DEFAULT_MANIFEST}"))?;
    // A manifest that is already broken would hide what this adds.
    let crates = ServerCrates::scan(&root.join(SERVERS_DIR))?;
    manifest::check(DEFAULT_MANIFEST, &manifest_text, &crates).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\n{DEFAULT_MANIFEST} has problems already; fix them first (nothing was written)"
        )
    })?;

    let dir = PathBuf::from(SERVERS_DIR).join(name);
    let member = format!("{SERVERS_DIR}/{name}");
    let new_cargo = add_member(&cargo_text, &member)
        .map_err(|e| anyhow::anyhow!("{e:#} (nothing was written)"))?;
    let mut new_manifest = add_server(&manifest_text, name, service);
    let has_shell = taken.servers.iter().any(|(s, _)| s == SHELL);
    let mut shell_uses_it = false;
    if has_shell && let Some(text) = add_use(&new_manifest, SHELL, service) {
        new_manifest = text;
        shell_uses_it = true;
    }

    let undo = Undo {
        root: root.to_path_buf(),
        restore: vec![
            (PathBuf::from("Cargo.toml"), cargo_text),
            (PathBuf::from(DEFAULT_MANIFEST), manifest_text),
        ],
        remove_dir: Some(dir.clone()),
    };
    let write_all = || -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for (file, text) in crate_files(name, service) {
            let path = dir.join(file);
            let full = root.join(&path);
            std::fs::create_dir_all(full.parent().expect("a file in a directory"))
                .with_context(|| format!("creating {}", path.display()))?;
            std::fs::write(&full, text).with_context(|| format!("writing {}", path.display()))?;
            files.push(path);
        }
        std::fs::write(root.join("Cargo.toml"), &new_cargo)
            .context("writing the root Cargo.toml")?;
        files.push(PathBuf::from("Cargo.toml"));
        std::fs::write(root.join(DEFAULT_MANIFEST), &new_manifest)
            .with_context(|| format!("writing {DEFAULT_MANIFEST}"))?;
        files.push(PathBuf::from(DEFAULT_MANIFEST));
        // The manifest as the build will check it, with the new crate.
        let crates = ServerCrates::scan(&root.join(SERVERS_DIR))?;
        manifest::check(DEFAULT_MANIFEST, &new_manifest, &crates)?;
        Ok(files)
    };
    match write_all() {
        Ok(files) => Ok(Created {
            name: name.to_string(),
            service: service.to_string(),
            files,
            shell_uses_it,
        }),
        Err(e) => {
            undo.run();
            Err(e.context(format!(
                "creating server \"{name}\" failed; what was written has been undone"
            )))
        }
    }
}

/// The command: create, then say what was done and what comes next.
pub fn run(root: &Path, name: &str, provides: Option<&str>) -> Result<()> {
    let created = create(root, name, provides)?;
    println!(
        "created server \"{}\" providing service \"{}\":",
        created.name, created.service
    );
    for file in &created.files {
        println!("  {}", file.display());
    }
    if created.shell_uses_it {
        println!(
            "  (server \"{SHELL}\" now uses \"{}\" in {DEFAULT_MANIFEST})",
            created.service
        );
    }
    println!(
        "Next: edit servers/{name}/src/main.rs (opcode {OP_ECHO} answers args[0]); \
         `cargo xtask run` boots it; docs/ADDING_A_SERVER.md explains the rest."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["demo", "a", "net-0", "sixteen-bytes-xy"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "0 bytes"),
            ("seventeen-bytes-x", "17 bytes"),
            ("Demo", "'D' is not allowed"),
            ("de_mo", "'_' is not allowed"),
            ("de mo", "' ' is not allowed"),
            ("../x", "'.' is not allowed"),
            ("0demo", "starting with a letter"),
            ("-demo", "starting with a letter"),
            ("demo-", "must not end with '-'"),
            ("test", "reserved"),
            ("fn", "reserved"),
        ] {
            let e = check_name(bad).unwrap_err();
            assert!(e.contains(&format!("bad name \"{bad}\"")), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(check_service("net-0").is_ok());
        assert!(
            check_service("Net")
                .unwrap_err()
                .contains("bad service \"Net\"")
        );
    }

    const CARGO: &str = r#"[workspace]
resolver = "2"
members = [
    "boot",
    "servers/echo",
    "servers/hello",
    "xtask",
]
default-members = ["xtask"]
"#;

    #[test]
    fn members_get_one_line() {
        let out = add_member(CARGO, "servers/demo").unwrap();
        assert_eq!(
            out,
            CARGO.replace(
                "    \"servers/hello\",\n",
                "    \"servers/hello\",\n    \"servers/demo\",\n"
            )
        );
        // No server yet: after the last entry; a missing comma is added.
        let bare = "[workspace]\nmembers = [\n  \"a\",\n  \"b\"\n]\n";
        assert_eq!(
            add_member(bare, "servers/demo").unwrap(),
            "[workspace]\nmembers = [\n  \"a\",\n  \"b\",\n  \"servers/demo\",\n]\n"
        );
        assert!(
            add_member("[workspace]\nmembers = [\"a\"]\n", "servers/demo")
                .unwrap_err()
                .to_string()
                .contains("by hand")
        );
        assert!(add_member("[package]\nname = \"x\"\n", "servers/demo").is_err());
    }

    #[test]
    fn manifest_entries() {
        let m = "# comment\n[[server]]\nname = \"echo\"\nprovides = [\"echo\"]\n";
        let out = add_server(m, "demo", "demo-svc");
        assert!(out.starts_with(m), "{out}");
        assert!(
            out.ends_with("[[server]]\nname = \"demo\"\nprovides = [\"demo-svc\"]\n"),
            "{out}"
        );

        let shell = "[[server]]\nname = \"shell\"\nuses = [\"console\"] # typed\n\n[[server]]\nname = \"x\"\n";
        assert_eq!(
            add_use(shell, "shell", "demo").unwrap(),
            shell.replace("[\"console\"]", "[\"console\", \"demo\"]")
        );
        let no_uses = "[[server]]\nname = \"shell\"\nports = [1]\n[[server]]\nname = \"x\"\n";
        assert_eq!(
            add_use(no_uses, "shell", "demo").unwrap(),
            no_uses.replace(
                "name = \"shell\"\n",
                "name = \"shell\"\nuses = [\"demo\"]\n"
            )
        );
        assert_eq!(add_use(no_uses, "nobody", "demo"), None);
        // A multi-line list is left alone rather than edited wrongly.
        let multi = "[[server]]\nname = \"shell\"\nuses = [\n  \"console\",\n]\n";
        assert_eq!(add_use(multi, "shell", "demo"), None);
    }

    #[test]
    fn the_template_fills_in_every_placeholder() {
        for (file, text) in crate_files("demo", "demo-svc") {
            assert!(!text.contains("{{"), "{file}: {text}");
        }
        let files = crate_files("demo", "demo-svc");
        assert!(files[0].1.contains("name = \"demo\""));
        assert!(files[2].1.contains("const SERVICE: &str = \"demo-svc\";"));
    }
}
