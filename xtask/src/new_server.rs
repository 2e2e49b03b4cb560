//! `cargo xtask new-server NAME [--provides SERVICE]`: start a new server.
//!
//! Creates `servers/NAME` (Cargo.toml, build.rs, src/main.rs: a working
//! async request loop that answers opcode 1 with its first argument, from
//! the templates in `xtask/templates/`), adds the crate to the workspace
//! `members`, and appends the server to `servers/manifest.toml`, providing
//! SERVICE (default: NAME). If that manifest has a server named `shell`,
//! SERVICE is added to the shell's `uses`, so that the shell can call it.
//! Both files are edited with `toml_edit`, so their comments and layout
//! stay as they were; only the new lines appear.
//!
//! Everything is checked before anything is written: a bad name, an
//! existing server, or a name or service that clashes with a crate, a bin,
//! a server or a service is refused with a message saying which, and the
//! tree is left as it was. Should a write fail halfway, what was written is
//! undone.
//!
//! Context: the host, run by a person (or a test) in a workspace checkout.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, RawString, Table, Value, value};

use crate::manifest::{self, DEFAULT_MANIFEST, SERVERS_DIR, ServerCrates};

/// The longest server or service name (as the binary manifest stores it).
pub const MAX_NAME: usize = 16;

/// The opcode the template answers: the value is the request's `args[0]`.
pub const OP_ECHO: u32 = proto::echo::OP_ECHO;

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
    if ::manifest::Name::new(service).is_none() {
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

/// The workspace's or manifest's TOML, parsed for editing: comments and
/// layout are kept through the edit.
fn parse_for_edit(text: &str, label: &str) -> Result<DocumentMut> {
    text.parse::<DocumentMut>()
        .with_context(|| format!("parsing {label}"))
}

fn raw(text: Option<&RawString>) -> String {
    text.and_then(RawString::as_str).unwrap_or("").to_string()
}

/// Insert the string `entry` into `array` at `index`, laid out like its
/// neighbours: on a line of its own with their indent when the array is
/// written one entry per line (each entry then ends in a comma), else
/// inline after a space. A comment at the end of the line before stays on
/// that line.
fn insert_like_neighbours(array: &mut Array, index: usize, entry: &str) {
    let len = array.len();
    // Appending after a last entry with no comma: what follows that entry
    // (its line end, a comment) belongs before the `]`.
    if index == len
        && !array.trailing_comma()
        && let Some(last) = index.checked_sub(1).and_then(|i| array.get_mut(i))
    {
        let suffix = raw(last.decor().suffix());
        last.decor_mut().set_suffix("");
        let trailing = raw(Some(array.trailing()));
        array.set_trailing(format!("{suffix}{trailing}"));
    }
    // The text between the previous entry's comma (or `[`) and what the
    // new entry goes before.
    let gap = match array.get(index) {
        Some(next) => raw(next.decor().prefix()),
        None => raw(Some(array.trailing())),
    };
    let mut value = Value::from(entry);
    value.decor_mut().set_suffix("");
    if let Some(nl) = gap.find('\n') {
        let (line_end, rest) = gap.split_at(nl);
        let last_line = |text: &str| text.rfind('\n').map(|nl| text[nl + 1..].to_string());
        let indent = index
            .checked_sub(1)
            .and_then(|i| last_line(&raw(array.get(i)?.decor().prefix())))
            .or_else(|| (index < len).then(|| last_line(rest)).flatten())
            .unwrap_or_else(|| "    ".to_string());
        value
            .decor_mut()
            .set_prefix(format!("{line_end}\n{indent}"));
        match array.get_mut(index) {
            Some(next) => next.decor_mut().set_prefix(rest),
            None => {
                array.set_trailing(rest);
                array.set_trailing_comma(true);
            }
        }
    } else {
        value
            .decor_mut()
            .set_prefix(if index == 0 { "" } else { " " });
        if index == 0
            && let Some(next) = array.get_mut(0)
        {
            next.decor_mut().set_prefix(" ");
        }
    }
    array.insert_formatted(index, value);
}

/// `cargo_toml` with `member` added to `[workspace] members`: after the
/// last `"servers/..."` entry (or as the last entry), laid out like the
/// entries around it. Everything else, comments included, stays as it was.
pub fn add_member(cargo_toml: &str, member: &str) -> Result<String> {
    let mut doc = parse_for_edit(cargo_toml, "the root Cargo.toml")?;
    let members = doc
        .get_mut("workspace")
        .and_then(Item::as_table_like_mut)
        .and_then(|w| w.get_mut("members"))
        .context("the root Cargo.toml has no [workspace] `members`")?
        .as_array_mut()
        .with_context(|| {
            format!(
                "the root Cargo.toml's workspace `members` is not a list; add \"{member}\" by hand"
            )
        })?;
    let entries: Vec<Option<&str>> = members.iter().map(Value::as_str).collect();
    let at = entries
        .iter()
        .rposition(|m| m.is_some_and(|m| m.starts_with("servers/")))
        .map_or(entries.len(), |i| i + 1);
    insert_like_neighbours(members, at, member);
    Ok(doc.to_string())
}

/// The largest position a table has in the document (its order among
/// the headers), searched through nested tables.
fn last_position(table: &Table) -> isize {
    let mut last = table.position().unwrap_or(0);
    for (_, item) in table.iter() {
        match item {
            Item::Table(t) => last = last.max(last_position(t)),
            Item::ArrayOfTables(a) => {
                for t in a.iter() {
                    last = last.max(last_position(t));
                }
            }
            _ => {}
        }
    }
    last
}

/// `manifest` with a new `[[server]]` entry at its end, after a comment
/// line that says where it came from. Everything before it stays as it was.
pub fn add_server(manifest: &str, name: &str, service: &str) -> Result<String> {
    let mut doc = parse_for_edit(manifest, DEFAULT_MANIFEST)?;
    // What follows the last entry (comments, blank lines) stays before
    // the new one, which ends the file.
    let tail = doc.trailing().as_str().unwrap_or("").trim_end().to_string();
    let mut prefix = String::new();
    if !tail.is_empty() {
        prefix.push_str(&tail);
        prefix.push('\n');
    }
    if !manifest.trim().is_empty() {
        prefix.push('\n');
    }
    prefix.push_str(&format!(
        "# Added by `cargo xtask new-server {name}`: see servers/{name}/src/main.rs.\n"
    ));
    let mut server = Table::new();
    server.decor_mut().set_prefix(prefix);
    server.set_position(Some(last_position(doc.as_table()) + 1));
    server.insert("name", value(name));
    server.insert("provides", value(Array::from_iter([service])));
    let servers = doc
        .entry("server")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .with_context(|| {
            format!(
                "{DEFAULT_MANIFEST}'s servers are not written as [[server]] tables; add server \"{name}\" by hand"
            )
        })?;
    servers.push(server);
    doc.set_trailing("");
    Ok(doc.to_string())
}

/// `manifest` with `service` added to the `uses` of the `[[server]]`
/// named `client` (at the end of its list, laid out like the list; or a
/// new `uses` right after its `name`); None if there is no such server or
/// its `uses` is not a list.
pub fn add_use(manifest: &str, client: &str, service: &str) -> Option<String> {
    let mut doc = manifest.parse::<DocumentMut>().ok()?;
    let entry = doc
        .get_mut("server")?
        .as_array_of_tables_mut()?
        .iter_mut()
        .find(|s| s.get("name").and_then(Item::as_str) == Some(client))?;
    match entry.get_mut("uses") {
        Some(uses) => {
            let uses = uses.as_array_mut()?;
            insert_like_neighbours(uses, uses.len(), service);
        }
        None => {
            // Right after `name`: move the keys that follow it behind the
            // new one, each with its own comments and layout.
            let keys: Vec<String> = entry.iter().map(|(k, _)| k.to_string()).collect();
            let after_name = keys.iter().position(|k| k == "name")? + 1;
            let moved: Vec<_> = keys[after_name..]
                .iter()
                .filter_map(|k| entry.remove_entry(k))
                .collect();
            entry.insert("uses", value(Array::from_iter([service])));
            for (key, item) in moved {
                entry.insert_formatted(&key, item);
            }
        }
    }
    Some(doc.to_string())
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
    let mut new_manifest = add_server(&manifest_text, name, service)
        .map_err(|e| anyhow::anyhow!("{e:#} (nothing was written)"))?;
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
        // A list on one line stays on one line.
        assert_eq!(
            add_member(
                "[workspace]\nmembers = [\"a\", \"servers/x\", \"b\"]\n",
                "servers/demo"
            )
            .unwrap(),
            "[workspace]\nmembers = [\"a\", \"servers/x\", \"servers/demo\", \"b\"]\n"
        );
        assert_eq!(
            add_member("[workspace]\nmembers = []\n", "servers/demo").unwrap(),
            "[workspace]\nmembers = [\"servers/demo\"]\n"
        );
        let e = add_member("[package]\nname = \"x\"\n", "servers/demo").unwrap_err();
        assert!(e.to_string().contains("no [workspace] `members`"), "{e}");
        let e = add_member("[workspace]\nmembers = \"a\"\n", "servers/demo").unwrap_err();
        assert!(e.to_string().contains("by hand"), "{e}");
        assert!(add_member("[workspace\n", "servers/demo").is_err());
    }

    /// A root Cargo.toml with comments everywhere a person might put one.
    const COMMENTED_CARGO: &str = r#"# The workspace.
[workspace]
resolver = "2"   # the 2021 resolver
members = [
    # Kernel side.
    "boot",
    "microkernel", # the kernel
    # User space.
    "servers/echo",
    "servers/shell",  # the prompt
    # Host side.
    "xtask",
]
# Host crates only.
default-members = ["xtask"]

[workspace.dependencies]
log = "0.4" # logging
"#;

    #[test]
    fn comments_survive_a_new_member_which_lands_after_the_last_server() {
        let out = add_member(COMMENTED_CARGO, "servers/demo").unwrap();
        assert_eq!(
            out,
            COMMENTED_CARGO.replace(
                "    \"servers/shell\",  # the prompt\n",
                "    \"servers/shell\",  # the prompt\n    \"servers/demo\",\n"
            )
        );
        // A comment after the last entry stays on its line.
        for (before, after) in [
            (
                "[workspace]\nmembers = [\n  \"a\", # last\n]\n",
                "[workspace]\nmembers = [\n  \"a\", # last\n  \"servers/demo\",\n]\n",
            ),
            (
                "[workspace]\nmembers = [\n  \"a\" # last\n]\n",
                "[workspace]\nmembers = [\n  \"a\", # last\n  \"servers/demo\",\n]\n",
            ),
        ] {
            assert_eq!(add_member(before, "servers/demo").unwrap(), after);
        }
        // The checked-in Cargo.toml: one line more, after the last server.
        let real = include_str!("../../Cargo.toml");
        let mut lines: Vec<&str> = real.lines().collect();
        let last_server = lines
            .iter()
            .rposition(|l| l.trim_start().starts_with("\"servers/"))
            .unwrap();
        lines.insert(last_server + 1, "    \"servers/demo\",");
        assert_eq!(
            add_member(real, "servers/demo").unwrap(),
            lines.join("\n") + "\n"
        );
        let members: Vec<String> =
            toml::from_str::<toml::Table>(&out).unwrap()["workspace"]["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_string())
                .collect();
        assert_eq!(
            members,
            [
                "boot",
                "microkernel",
                "servers/echo",
                "servers/shell",
                "servers/demo",
                "xtask"
            ]
        );
    }

    #[test]
    fn manifest_entries() {
        let m = "# comment\n[[server]]\nname = \"echo\"\nprovides = [\"echo\"]\n";
        let out = add_server(m, "demo", "demo-svc").unwrap();
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
        // A list written one per line gets a line of its own.
        let multi = "[[server]]\nname = \"shell\"\nuses = [\n  \"console\",\n]\n";
        assert_eq!(
            add_use(multi, "shell", "demo").unwrap(),
            "[[server]]\nname = \"shell\"\nuses = [\n  \"console\",\n  \"demo\",\n]\n"
        );
        let commented = "[[server]]\nname = \"shell\"\nuses = [\n  \"console\", # typed\n  # timers\n  \"timer\",\n]\n";
        assert_eq!(
            add_use(commented, "shell", "demo").unwrap(),
            commented.replace("\"timer\",\n", "\"timer\",\n  \"demo\",\n")
        );
        // A `uses` that is not a list is left alone.
        assert_eq!(
            add_use("[[server]]\nname = \"shell\"\nuses = 1\n", "shell", "demo"),
            None
        );
    }

    /// A manifest like servers/manifest.toml: a commented header, comments
    /// between and inside entries, and a comment after the last one.
    const COMMENTED_MANIFEST: &str = r#"# The boot manifest.
#
# [[server]]
# name = "console"            # unique

# The device servers.

[[server]]
name = "apic"
# The BIOS area.
mmio = [{ base = 0xe0000, size = 0x20000 }]
provides = ["apic"]   # the one provider

[[server]]
name = "shell"
# Its console.
ports = ["0xf4-0xf7"]
uses = ["console", "echo"] # what it may call

[[server]]
name = "echo"
provides = ["echo"]

# More servers go here.
"#;

    #[test]
    fn comments_survive_in_the_manifest_and_the_new_server_comes_last() {
        let added = add_server(COMMENTED_MANIFEST, "demo", "demo-svc").unwrap();
        // Everything before is untouched, the trailing comment included;
        // the new entry follows after a blank line and its own comment.
        assert_eq!(
            added,
            format!(
                "{COMMENTED_MANIFEST}\n# Added by `cargo xtask new-server demo`: see servers/demo/src/main.rs.\n\
                 [[server]]\nname = \"demo\"\nprovides = [\"demo-svc\"]\n"
            )
        );
        let out = add_use(&added, SHELL, "demo-svc").unwrap();
        assert_eq!(
            out,
            added.replace(
                "uses = [\"console\", \"echo\"] # what it may call",
                "uses = [\"console\", \"echo\", \"demo-svc\"] # what it may call"
            )
        );
        // The result reads as the manifest meant: demo last, the shell
        // using its service.
        let table: toml::Table = toml::from_str(&out).unwrap();
        let servers = table["server"].as_array().unwrap();
        let names: Vec<&str> = servers
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["apic", "shell", "echo", "demo"]);
        assert_eq!(servers[3]["provides"][0].as_str(), Some("demo-svc"));
        assert_eq!(servers[1]["uses"][2].as_str(), Some("demo-svc"));

        // The checked-in manifest keeps every line, too.
        let real = include_str!("../../servers/manifest.toml");
        let added = add_server(real, "demo", "demo").unwrap();
        assert!(added.starts_with(real.trim_end()), "{added}");
        assert!(
            added.ends_with("\n\n# Added by `cargo xtask new-server demo`: see servers/demo/src/main.rs.\n[[server]]\nname = \"demo\"\nprovides = [\"demo\"]\n"),
            "{added}"
        );
        let used = add_use(&added, SHELL, "demo").unwrap();
        assert_eq!(
            used.lines().filter(|l| !added.contains(*l)).count(),
            1,
            "{used}"
        );
        // No line end at the end of the file, or only comments in it.
        assert_eq!(
            add_server("[[server]]\nname = \"echo\"", "demo", "demo").unwrap(),
            "[[server]]\nname = \"echo\"\n\n# Added by `cargo xtask new-server demo`: see servers/demo/src/main.rs.\n[[server]]\nname = \"demo\"\nprovides = [\"demo\"]\n"
        );
        assert_eq!(
            add_server("# Nothing yet.\n\n", "demo", "demo").unwrap(),
            "# Nothing yet.\n\n# Added by `cargo xtask new-server demo`: see servers/demo/src/main.rs.\n[[server]]\nname = \"demo\"\nprovides = [\"demo\"]\n"
        );
        // An empty manifest gets just the entry.
        assert_eq!(
            add_server("", "demo", "demo").unwrap(),
            "# Added by `cargo xtask new-server demo`: see servers/demo/src/main.rs.\n[[server]]\nname = \"demo\"\nprovides = [\"demo\"]\n"
        );
        assert!(
            add_server("server = 1\n", "demo", "demo")
                .unwrap_err()
                .to_string()
                .contains("by hand")
        );
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
