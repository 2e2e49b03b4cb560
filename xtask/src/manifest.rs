//! The boot manifest: reading `servers/manifest.toml` (the system's default)
//! and `tests/manifests/NAME.toml` (one per in-QEMU test scenario), checking
//! them, and encoding them into the binary form the kernel decodes
//! (the `manifest` crate, the one definition of that format).
//!
//! # The TOML format
//!
//! ```toml
//! [[server]]
//! name = "console"            # unique, [a-z0-9-], 1..=16 bytes
//! crate = "console"           # optional, default = name: the crate at servers/<crate>
//! bin = "console"             # optional, default = name: the [[bin]] to build
//! ports = ["0x3f8-0x3ff"]     # inclusive I/O port ranges, or single "0x60"
//! irqs = [4]                  # ISA/GSI lines 0..=23
//! mmio = [{ base = 0xfec00000, size = 0x1000 }]   # page-aligned
//! provides = ["console"]      # service names this server provides
//! uses = ["apic"]             # services it connects to as a client
//! ring_slots = 256            # optional: power of two, 8..=4096
//! restart = "on-fault"        # optional: "never" (default), "on-fault", "always"
//! restart_limit = 5           # optional: at most 5 restarts ...
//! restart_period_ms = 10000   # ... within 10 s, or it stays down
//! inject_faults = false       # optional: may make other servers fault
//! cpus = [0, 1]               # optional: the CPUs it may be placed on
//!                             # (0..=63, each once); absent: the kernel
//!                             # places it ("spread")
//! ```
//!
//! Servers boot in the order listed. Every `uses` entry is one channel
//! (provider, client, service); channels are numbered in server order, and
//! within a server in its `uses` order (see the `manifest` crate for how
//! that numbers each server's handles).
//!
//! Checking reports every problem it finds, each naming its file, server and
//! entry, e.g. `servers/manifest.toml: server "console": ports
//! "0x3f8-0x3ff" overlap server "uart2" ports "0x3f8-0x3f8"`.
//!
//! What a server may be granted is not decided here but by the grant rules
//! of the `manifest` crate (`check_port_grant`, and `check_mmio_grant`
//! against `STATIC_RAM`, where QEMU puts RAM), which the kernel applies
//! again at boot against the real memory map: no port range wider than 256
//! or holding PCI configuration, ISA DMA, A20/reset or SMI ports; no MMIO
//! region over RAM or above 1 TiB. This file checks what is TOML's: that
//! entries parse, and what the binary format needs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use ::manifest::{
    self as wire, DEFAULT_RING_SLOTS, MAX_CHANNELS, MAX_CPUS, MAX_IRQ, MAX_MMIO_REGIONS,
    MAX_PORT_RANGES, MAX_RING_SLOTS, MAX_SERVERS, MIN_RING_SLOTS, MmioRegion, Name, PortRange,
    STATIC_RAM,
};
use abi::MAX_NOTIFY_BITS;
use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The default manifest, relative to the workspace root.
pub const DEFAULT_MANIFEST: &str = "servers/manifest.toml";
/// The directory of test manifests, relative to the workspace root.
pub const TEST_MANIFESTS: &str = "tests/manifests";
/// The directory of server crates, relative to the workspace root.
pub const SERVERS_DIR: &str = "servers";
/// The longest test name (`abi::BootInfo::test_name` keeps a NUL).
pub const MAX_TEST_NAME: usize = 31;

/// A number as TOML gives it: an integer, or a string such as "0x3f8".
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Str(String),
}

impl Number {
    /// The entry as written, for messages.
    fn repr(&self) -> String {
        match self {
            Number::Int(i) => i.to_string(),
            Number::Str(s) => s.clone(),
        }
    }

    /// The entry as written, integers in hexadecimal (TOML forgets how
    /// they were written): for ports and addresses.
    fn hex(&self) -> String {
        match self {
            Number::Int(i) if *i >= 0 => format!("{i:#x}"),
            other => other.repr(),
        }
    }

    fn value(&self) -> Result<u64, String> {
        match self {
            Number::Int(i) => u64::try_from(*i).map_err(|_| "is negative".to_string()),
            Number::Str(s) => parse_u64(s).ok_or_else(|| "is not a number".to_string()),
        }
    }
}

/// A decimal or `0x` hexadecimal number; `_` separators allowed.
fn parse_u64(text: &str) -> Option<u64> {
    let text: String = text.trim().chars().filter(|&c| c != '_').collect();
    let (digits, radix) = match text.strip_prefix("0x").or(text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text.as_str(), 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    server: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: String,
    #[serde(rename = "crate")]
    krate: Option<String>,
    bin: Option<String>,
    #[serde(default)]
    ports: Vec<Number>,
    #[serde(default)]
    irqs: Vec<Number>,
    #[serde(default)]
    mmio: Vec<RawMmio>,
    #[serde(default)]
    provides: Vec<String>,
    #[serde(default)]
    uses: Vec<String>,
    ring_slots: Option<Number>,
    restart: Option<String>,
    restart_limit: Option<Number>,
    restart_period_ms: Option<Number>,
    #[serde(default)]
    inject_faults: bool,
    /// Checked by hand ([`cpu_mask`]), for messages that say what is wrong.
    cpus: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMmio {
    base: Number,
    size: Number,
}

/// A server crate under `servers/`: its package name and the bins it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrateInfo {
    pub package: String,
    pub bins: BTreeSet<String>,
}

/// The server crates a manifest may name, by directory name.
#[derive(Clone, Debug, Default)]
pub struct ServerCrates {
    /// A crate whose Cargo.toml could not be read maps to why not.
    crates: BTreeMap<String, Result<CrateInfo, String>>,
}

impl ServerCrates {
    /// Every directory of `servers_dir` that holds a Cargo.toml.
    pub fn scan(servers_dir: &Path) -> Result<Self> {
        let mut crates = BTreeMap::new();
        if !servers_dir.is_dir() {
            return Ok(Self { crates });
        }
        let entries = std::fs::read_dir(servers_dir)
            .with_context(|| format!("listing {}", servers_dir.display()))?;
        for entry in entries {
            let dir = entry?.path();
            if !dir.join("Cargo.toml").is_file() {
                continue;
            }
            let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            crates.insert(name.to_string(), read_crate(&dir));
        }
        Ok(Self { crates })
    }

    /// Crates given directly (for tests).
    pub fn from_crates<'a>(
        crates: impl IntoIterator<Item = (&'a str, &'a str, &'a [&'a str])>,
    ) -> Self {
        Self {
            crates: crates
                .into_iter()
                .map(|(dir, package, bins)| {
                    let info = CrateInfo {
                        package: package.to_string(),
                        bins: bins.iter().map(|b| b.to_string()).collect(),
                    };
                    (dir.to_string(), Ok(info))
                })
                .collect(),
        }
    }

    fn get(&self, dir: &str) -> Option<&Result<CrateInfo, String>> {
        self.crates.get(dir)
    }
}

/// Read a crate's package name and bins the way cargo finds them: the
/// `[[bin]]` tables, plus (unless `autobins = false`) `src/main.rs` as the
/// package's own bin and `src/bin/*.rs`, `src/bin/*/main.rs`.
fn read_crate(dir: &Path) -> Result<CrateInfo, String> {
    let path = dir.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
    let package = table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| format!("{} has no package.name", path.display()))?
        .to_string();
    let mut bins = BTreeSet::new();
    if let Some(list) = table.get("bin").and_then(|b| b.as_array()) {
        for bin in list {
            if let Some(name) = bin.get("name").and_then(|n| n.as_str()) {
                bins.insert(name.to_string());
            }
        }
    }
    let autobins = table
        .get("package")
        .and_then(|p| p.get("autobins"))
        .and_then(|a| a.as_bool())
        .unwrap_or(true);
    if autobins {
        if dir.join("src/main.rs").is_file() {
            bins.insert(package.clone());
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
            for entry in entries.flatten() {
                let p = entry.path();
                let stem = p.file_stem().and_then(|s| s.to_str()).map(str::to_string);
                let is_bin = (p.is_file() && p.extension().is_some_and(|e| e == "rs"))
                    || p.join("main.rs").is_file();
                if let (true, Some(stem)) = (is_bin, stem) {
                    bins.insert(stem);
                }
            }
        }
    }
    Ok(CrateInfo { package, bins })
}

/// One checked server.
#[derive(Clone, Debug)]
pub struct Server {
    pub name: String,
    /// The directory under `servers/`.
    pub krate: String,
    /// The crate's package name (for `cargo build -p`).
    pub package: String,
    /// The bin: its ELF is `servers/BIN` in the initrd.
    pub bin: String,
    pub provides: Vec<String>,
    pub uses: Vec<String>,
    /// Its record in the binary manifest.
    pub record: wire::Server,
}

/// A checked manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// Where it came from, as messages name it.
    pub label: String,
    /// In boot order.
    pub servers: Vec<Server>,
    /// In channel order.
    pub channels: Vec<wire::Channel>,
}

impl Manifest {
    /// The binary form the kernel reads.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let records: Vec<wire::Server> = self.servers.iter().map(|s| s.record).collect();
        wire::to_vec(&records, &self.channels).map_err(|e| anyhow::anyhow!("{}: {e}", self.label))
    }
}

/// A port range as written, with what it means.
struct PortEntry {
    repr: String,
    range: PortRange,
}

/// An MMIO region, with how messages show it.
struct MmioEntry {
    region: MmioRegion,
}

impl MmioEntry {
    fn repr(&self) -> String {
        format!(
            "{{ base = {:#x}, size = {:#x} }}",
            self.region.base, self.region.size
        )
    }
}

/// A server as it is being checked.
struct Draft {
    name: String,
    krate: String,
    package: String,
    bin: String,
    ports: Vec<PortEntry>,
    irqs: Vec<u8>,
    mmio: Vec<MmioEntry>,
    provides: Vec<String>,
    uses: Vec<String>,
    ring_slots: u32,
    restart: wire::Restart,
    restart_limit: u32,
    restart_period_ms: u32,
    inject_faults: bool,
    /// Bit n = CPU n; 0 = unspecified.
    cpus: u64,
}

/// Collects the messages of one file.
struct Problems<'a> {
    label: &'a str,
    list: Vec<String>,
}

impl Problems<'_> {
    fn file(&mut self, message: impl std::fmt::Display) {
        self.list.push(format!("{}: {message}", self.label));
    }

    fn server(&mut self, server: &str, message: impl std::fmt::Display) {
        self.list
            .push(format!("{}: server \"{server}\": {message}", self.label));
    }
}

/// Parse and check one manifest. `label` names it in messages (the path
/// relative to the workspace root).
pub fn check(label: &str, text: &str, crates: &ServerCrates) -> Result<Manifest> {
    let mut problems = Problems {
        label,
        list: Vec::new(),
    };
    let raw: RawManifest = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => bail!("{label}: {}", e.to_string().trim_end()),
    };
    if raw.server.is_empty() {
        bail!("{label}: no [[server]] entries");
    }
    let mut drafts = Vec::new();
    for (index, table) in raw.server.into_iter().enumerate() {
        let who = match table.get("name").and_then(|n| n.as_str()) {
            Some(name) => format!("server \"{name}\""),
            None => format!("server #{}", index + 1),
        };
        match toml::Value::Table(table).try_into::<RawServer>() {
            Ok(raw) => {
                if let Some(draft) = check_server(raw, crates, &mut problems) {
                    drafts.push(draft);
                }
            }
            Err(e) => {
                let why = e.to_string().trim_end().replace('\n', " ");
                problems.file(format_args!("{who}: {why}"));
            }
        }
    }
    if problems.list.is_empty() {
        check_between_servers(&drafts, &mut problems);
    }
    let channels = if problems.list.is_empty() {
        channels(&drafts, &mut problems)
    } else {
        Vec::new()
    };
    if !problems.list.is_empty() {
        bail!("{}", problems.list.join("\n"));
    }
    let manifest = Manifest {
        label: label.to_string(),
        servers: drafts.into_iter().map(finish).collect::<Result<_>>()?,
        channels,
    };
    // The kernel's own validation, run here so that a manifest it would
    // reject never reaches an image.
    manifest.encode()?;
    Ok(manifest)
}

/// The record of a checked draft.
fn finish(draft: Draft) -> Result<Server> {
    let mut record = wire::Server::new(
        Name::new(&draft.name).context("checked name")?,
        Name::bin(&draft.bin).context("checked bin")?,
    );
    for entry in &draft.ports {
        record
            .push_ports(entry.range)
            .ok()
            .context("checked port count")?;
    }
    for entry in &draft.mmio {
        record
            .push_mmio(entry.region)
            .ok()
            .context("checked MMIO count")?;
    }
    for &line in &draft.irqs {
        record.irqs.insert(line);
    }
    record.ring_slots = draft.ring_slots;
    record.restart = draft.restart;
    record.restart_limit = draft.restart_limit;
    record.restart_period_ms = draft.restart_period_ms;
    if draft.inject_faults {
        record.flags |= wire::FLAG_INJECT_FAULTS;
    }
    record.set_cpus(draft.cpus);
    Ok(Server {
        name: draft.name,
        krate: draft.krate,
        package: draft.package,
        bin: draft.bin,
        provides: draft.provides,
        uses: draft.uses,
        record,
    })
}

const NAME_RULE: &str = "1..=16 bytes of [a-z0-9-]";

/// Check what one server says on its own; None if it is too broken to
/// check against the others.
fn check_server(raw: RawServer, crates: &ServerCrates, problems: &mut Problems) -> Option<Draft> {
    let before = problems.list.len();
    let name = raw.name;
    if Name::new(&name).is_none() {
        problems.server(&name, format_args!("bad name: it must be {NAME_RULE}"));
    }

    let krate = raw.krate.unwrap_or_else(|| name.clone());
    let bin = raw.bin.unwrap_or_else(|| name.clone());
    let mut package = String::new();
    let crate_ok = !krate.is_empty()
        && krate
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !crate_ok {
        problems.server(
            &name,
            format_args!("bad crate \"{krate}\": it must be a directory name of [a-z0-9_-]"),
        );
    } else {
        match crates.get(&krate) {
            None => problems.server(
                &name,
                format_args!("crate \"{krate}\" not found (no {SERVERS_DIR}/{krate}/Cargo.toml)"),
            ),
            Some(Err(why)) => problems.server(&name, format_args!("crate \"{krate}\": {why}")),
            Some(Ok(info)) => {
                package = info.package.clone();
                if !info.bins.contains(&bin) {
                    let have: Vec<&str> = info.bins.iter().map(String::as_str).collect();
                    problems.server(
                        &name,
                        format_args!(
                            "crate \"{krate}\" has no bin \"{bin}\" (it has: {})",
                            if have.is_empty() {
                                "none".to_string()
                            } else {
                                have.join(", ")
                            }
                        ),
                    );
                }
            }
        }
    }
    if Name::bin(&bin).is_none() {
        problems.server(
            &name,
            format_args!("bad bin \"{bin}\": it must be 1..=16 bytes of [a-z0-9_-]"),
        );
    }

    let mut ports: Vec<PortEntry> = Vec::new();
    for entry in &raw.ports {
        let repr = entry.hex();
        match port_range(entry) {
            Ok(range) => {
                if let Some(other) = ports.iter().find(|o| o.range.overlaps(&range)) {
                    problems.server(
                        &name,
                        format_args!(
                            "ports \"{repr}\" overlap ports \"{}\" of the same server",
                            other.repr
                        ),
                    );
                }
                ports.push(PortEntry { repr, range });
            }
            Err(why) => problems.server(&name, format_args!("ports \"{repr}\": {why}")),
        }
    }
    if raw.ports.len() > MAX_PORT_RANGES {
        problems.server(
            &name,
            format_args!(
                "{} port ranges, the binary manifest holds at most {MAX_PORT_RANGES}",
                raw.ports.len()
            ),
        );
    }

    let mut irqs: Vec<u8> = Vec::new();
    for entry in &raw.irqs {
        match entry.value() {
            Ok(line) if line <= u64::from(MAX_IRQ) => {
                let line = line as u8;
                if irqs.contains(&line) {
                    problems.server(&name, format_args!("irq {line} is listed twice"));
                }
                irqs.push(line);
            }
            Ok(_) => problems.server(
                &name,
                format_args!("irq {}: IRQ lines are 0..={MAX_IRQ}", entry.repr()),
            ),
            Err(why) => problems.server(&name, format_args!("irq \"{}\" {why}", entry.repr())),
        }
    }

    let mut mmio: Vec<MmioEntry> = Vec::new();
    for entry in &raw.mmio {
        match mmio_region(entry) {
            Ok(region) => {
                let new = MmioEntry { region };
                if let Some(other) = mmio.iter().find(|o| o.region.overlaps(&region)) {
                    problems.server(
                        &name,
                        format_args!(
                            "mmio {} overlaps mmio {} of the same server",
                            new.repr(),
                            other.repr()
                        ),
                    );
                }
                mmio.push(new);
            }
            Err(why) => problems.server(
                &name,
                format_args!(
                    "mmio {{ base = {}, size = {} }}: {why}",
                    entry.base.hex(),
                    entry.size.hex()
                ),
            ),
        }
    }
    if raw.mmio.len() > MAX_MMIO_REGIONS {
        problems.server(
            &name,
            format_args!(
                "{} MMIO regions, the binary manifest holds at most {MAX_MMIO_REGIONS}",
                raw.mmio.len()
            ),
        );
    }

    for (list, what) in [(&raw.provides, "provides"), (&raw.uses, "uses")] {
        for (i, service) in list.iter().enumerate() {
            if Name::new(service).is_none() {
                problems.server(
                    &name,
                    format_args!("{what} \"{service}\": a service name must be {NAME_RULE}"),
                );
            } else if list[..i].contains(service) {
                problems.server(&name, format_args!("{what} \"{service}\" is listed twice"));
            }
        }
    }
    for service in &raw.uses {
        if raw.provides.contains(service) {
            problems.server(&name, format_args!("uses its own service \"{service}\""));
        }
    }

    let ring_slots = match &raw.ring_slots {
        None => DEFAULT_RING_SLOTS,
        Some(n) => match n.value() {
            Ok(v) if u32::try_from(v).is_ok_and(wire::ring_slots_ok) => v as u32,
            _ => {
                problems.server(
                    &name,
                    format_args!(
                        "ring_slots {}: it must be a power of two in {MIN_RING_SLOTS}..={MAX_RING_SLOTS}",
                        n.repr()
                    ),
                );
                DEFAULT_RING_SLOTS
            }
        },
    };

    let restart = match raw.restart.as_deref() {
        None => wire::Restart::Never,
        Some(policy) => wire::Restart::from_name(policy).unwrap_or_else(|| {
            problems.server(
                &name,
                format_args!(
                    "restart \"{policy}\": it must be \"never\", \"on-fault\" or \"always\""
                ),
            );
            wire::Restart::Never
        }),
    };
    let mut count = |key: &str, value: &Option<Number>, default: u32, min: u64| match value {
        None => default,
        Some(n) => match n.value() {
            Ok(v) if v >= min && u32::try_from(v).is_ok() => v as u32,
            _ => {
                problems.server(
                    &name,
                    format_args!(
                        "{key} {}: it must be a number in {min}..=4294967295",
                        n.repr()
                    ),
                );
                default
            }
        },
    };
    let restart_limit = count(
        "restart_limit",
        &raw.restart_limit,
        wire::DEFAULT_RESTART_LIMIT,
        0,
    );
    let restart_period_ms = count(
        "restart_period_ms",
        &raw.restart_period_ms,
        wire::DEFAULT_RESTART_PERIOD_MS,
        1,
    );

    let cpus = match &raw.cpus {
        None => 0,
        Some(value) => cpu_mask(value).unwrap_or_else(|why| {
            for why in why {
                problems.server(&name, why);
            }
            0
        }),
    };

    (problems.list.len() == before).then_some(Draft {
        name,
        krate,
        package,
        bin,
        ports,
        irqs,
        mmio,
        provides: raw.provides,
        uses: raw.uses,
        ring_slots,
        restart,
        restart_limit,
        restart_period_ms,
        inject_faults: raw.inject_faults,
        cpus,
    })
}

/// `cpus = [0, 1]`: the mask of the CPUs listed (bit n = CPU n), or every
/// problem with the list. An array of integers `0..MAX_CPUS`, each once,
/// at least one (to leave the placement to the kernel, leave `cpus` out).
fn cpu_mask(value: &toml::Value) -> Result<u64, Vec<String>> {
    let last = MAX_CPUS - 1;
    let Some(list) = value.as_array() else {
        return Err(vec![format!(
            "cpus = {value}: it must be an array of CPU numbers 0..={last}, e.g. cpus = [0, 1]"
        )]);
    };
    if list.is_empty() {
        return Err(vec![
            "cpus = []: it lists no CPU (leave cpus out to let the kernel place the server)"
                .to_string(),
        ]);
    }
    let mut mask = 0u64;
    let mut problems = Vec::new();
    for entry in list {
        match entry.as_integer() {
            Some(cpu) if (0..i64::from(MAX_CPUS)).contains(&cpu) => {
                let bit = 1u64 << cpu;
                if mask & bit != 0 {
                    problems.push(format!("cpus: CPU {cpu} is listed twice"));
                }
                mask |= bit;
            }
            Some(cpu) => problems.push(format!("cpus: CPU {cpu}: CPUs are 0..={last}")),
            None => problems.push(format!(
                "cpus: {entry} is not a CPU number (an integer 0..={last})"
            )),
        }
    }
    if problems.is_empty() {
        Ok(mask)
    } else {
        Err(problems)
    }
}

fn port_number(text: &str) -> Result<u16, String> {
    let value = parse_u64(text).ok_or_else(|| format!("\"{}\" is not a number", text.trim()))?;
    u16::try_from(value).map_err(|_| format!("port {value:#x} is past 0xffff"))
}

/// "0x3f8-0x3ff", "0x60" or 0x60, if the grant rules allow it.
fn port_range(entry: &Number) -> Result<PortRange, String> {
    let (first, last) = match entry {
        Number::Int(i) => {
            let port = u16::try_from(*i).map_err(|_| format!("port {i} is not in 0..=0xffff"))?;
            (port, port)
        }
        Number::Str(s) => match s.split_once('-') {
            Some((a, b)) => (port_number(a)?, port_number(b)?),
            None => {
                let port = port_number(s)?;
                (port, port)
            }
        },
    };
    let range = PortRange::inclusive(first, last)
        .ok_or_else(|| "the range ends before it starts".to_string())?;
    wire::check_port_grant(u32::from(range.first), range.count).map_err(|e| e.to_string())?;
    Ok(range)
}

/// `{ base = .., size = .. }`, if the grant rules allow it (checked against
/// where QEMU puts RAM: xtask does not know the guest's memory map).
fn mmio_region(entry: &RawMmio) -> Result<MmioRegion, String> {
    let base = entry.base.value().map_err(|why| format!("base {why}"))?;
    let size = entry.size.value().map_err(|why| format!("size {why}"))?;
    wire::check_mmio_grant(base, size, &STATIC_RAM).map_err(|e| e.to_string())?;
    Ok(MmioRegion { base, size })
}

/// Names, grants and services across servers.
fn check_between_servers(drafts: &[Draft], problems: &mut Problems) {
    if drafts.len() > MAX_SERVERS {
        problems.file(format_args!(
            "{} servers, the binary manifest holds at most {MAX_SERVERS}",
            drafts.len()
        ));
    }
    for (i, a) in drafts.iter().enumerate() {
        for b in &drafts[i + 1..] {
            if a.name == b.name {
                problems.server(&b.name, "the name is used by an earlier server too");
                continue;
            }
            for pa in &a.ports {
                for pb in b.ports.iter().filter(|pb| pa.range.overlaps(&pb.range)) {
                    problems.server(
                        &a.name,
                        format_args!(
                            "ports \"{}\" overlap server \"{}\" ports \"{}\"",
                            pa.repr, b.name, pb.repr
                        ),
                    );
                }
            }
            for ma in &a.mmio {
                for mb in b.mmio.iter().filter(|mb| ma.region.overlaps(&mb.region)) {
                    problems.server(
                        &a.name,
                        format_args!(
                            "mmio {} overlaps server \"{}\" mmio {}",
                            ma.repr(),
                            b.name,
                            mb.repr()
                        ),
                    );
                }
            }
            for line in a.irqs.iter().filter(|l| b.irqs.contains(l)) {
                problems.server(
                    &a.name,
                    format_args!("irq {line} is also granted to server \"{}\"", b.name),
                );
            }
            for service in a.provides.iter().filter(|s| b.provides.contains(s)) {
                problems.server(
                    &b.name,
                    format_args!(
                        "provides \"{service}\", which server \"{}\" provides already",
                        a.name
                    ),
                );
            }
        }
    }
}

/// One channel per `uses` entry, in server order then `uses` order.
fn channels(drafts: &[Draft], problems: &mut Problems) -> Vec<wire::Channel> {
    let mut channels = Vec::new();
    for (client, draft) in drafts.iter().enumerate() {
        for service in &draft.uses {
            let Some(provider) = drafts.iter().position(|d| d.provides.contains(service)) else {
                problems.server(
                    &draft.name,
                    format_args!("uses \"{service}\", which no server provides"),
                );
                continue;
            };
            let Some(service) = Name::new(service) else {
                continue;
            };
            channels.push(wire::Channel {
                service,
                provider,
                client,
                ring_slots: drafts[provider].ring_slots,
            });
        }
    }
    if channels.len() > MAX_CHANNELS {
        problems.file(format_args!(
            "{} channels (one per `uses` entry), the binary manifest holds at most {MAX_CHANNELS}",
            channels.len()
        ));
    }
    for (index, draft) in drafts.iter().enumerate() {
        let handles = channels
            .iter()
            .filter(|c| c.client == index || c.provider == index)
            .count();
        let needed = handles + draft.irqs.len();
        if needed > MAX_NOTIFY_BITS as usize {
            problems.server(
                &draft.name,
                format_args!(
                    "{handles} channels and {} IRQ lines need {needed} notification bits, a server has {MAX_NOTIFY_BITS}",
                    draft.irqs.len()
                ),
            );
        }
    }
    channels
}

/// The default manifest and the test manifests, all checked.
#[derive(Clone, Debug)]
pub struct Manifests {
    pub default: Manifest,
    /// By test name (the file stem), sorted.
    pub tests: Vec<(String, Manifest)>,
}

impl Manifests {
    /// Every manifest: the default first.
    pub fn all(&self) -> impl Iterator<Item = &Manifest> {
        std::iter::once(&self.default).chain(self.tests.iter().map(|(_, m)| m))
    }

    /// The server packages to build, each once, sorted.
    pub fn packages(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .all()
            .flat_map(|m| m.servers.iter().map(|s| s.package.clone()))
            .collect();
        set.into_iter().collect()
    }

    /// The bins to pack, each once, sorted, with the package that builds it.
    /// Two packages building a bin of the same name is an error: the
    /// initrd has one `servers/BIN`.
    pub fn bins(&self) -> Result<Vec<(String, String)>> {
        let mut bins: BTreeMap<String, (String, String)> = BTreeMap::new();
        for manifest in self.all() {
            for server in &manifest.servers {
                let from = (server.package.clone(), manifest.label.clone());
                if let Some((package, label)) = bins.get(&server.bin) {
                    if *package != server.package {
                        bail!(
                            "{}: server \"{}\": bin \"{}\" of crate \"{}\" has the same name as a bin of crate \"{package}\" ({label}); the initrd has one servers/{}",
                            manifest.label,
                            server.name,
                            server.bin,
                            server.krate,
                            server.bin
                        );
                    }
                } else {
                    bins.insert(server.bin.clone(), from);
                }
            }
        }
        Ok(bins
            .into_iter()
            .map(|(bin, (package, _))| (bin, package))
            .collect())
    }
}

/// Is `name` a usable test name (`test=NAME`, initrd `manifests/NAME`)?
pub fn test_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TEST_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Read and check `servers/manifest.toml` and every `tests/manifests/*.toml`
/// under `root`, reporting the problems of all of them at once.
pub fn load_all(root: &Path) -> Result<Manifests> {
    let crates = ServerCrates::scan(&root.join(SERVERS_DIR))?;
    let mut errors = String::new();
    let load = |label: &str| -> Result<Manifest> {
        let text = std::fs::read_to_string(root.join(label))
            .with_context(|| format!("reading {label}"))?;
        check(label, &text, &crates)
    };
    let default = load(DEFAULT_MANIFEST)
        .map_err(|e| {
            let _ = writeln!(errors, "{e:#}");
        })
        .ok();
    let mut tests = Vec::new();
    let dir = root.join(TEST_MANIFESTS);
    if dir.is_dir() {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {TEST_MANIFESTS}"))? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string();
            names.push(stem);
        }
        names.sort();
        for name in names {
            let label = format!("{TEST_MANIFESTS}/{name}.toml");
            if !test_name_ok(&name) {
                let _ = writeln!(
                    errors,
                    "{label}: the test name \"{name}\" must be 1..={MAX_TEST_NAME} bytes of [a-z0-9_-]"
                );
                continue;
            }
            match load(&label) {
                Ok(m) => tests.push((name, m)),
                Err(e) => {
                    let _ = writeln!(errors, "{e:#}");
                }
            }
        }
    }
    match default {
        Some(default) if errors.is_empty() => {
            let manifests = Manifests { default, tests };
            manifests.bins()?;
            Ok(manifests)
        }
        _ => bail!("{}", errors.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::manifest::Role;

    const LABEL: &str = "servers/manifest.toml";

    fn crates() -> ServerCrates {
        ServerCrates::from_crates([
            ("console", "console", &["console"][..]),
            ("uart2", "uart2", &["uart2"][..]),
            ("apic", "apic-server", &["apic"][..]),
            ("echo", "echo", &["echo"][..]),
            ("hello", "hello", &["hello"][..]),
            (
                "testing",
                "testing",
                &[
                    "ring-consumer",
                    "ring-producer",
                    "survivor",
                    "fault-page",
                    "fault-privileged",
                    "fault-divide",
                    "syscall-fuzz",
                    "peek-kernel",
                    "peek-other",
                ][..],
            ),
        ])
    }

    fn ok(text: &str) -> Manifest {
        check(LABEL, text, &crates()).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The error for `text`, which must name every one of `needles`.
    fn err(text: &str, needles: &[&str]) -> String {
        let e = match check(LABEL, text, &crates()) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.starts_with(LABEL), "{e}");
        for needle in needles {
            assert!(e.contains(needle), "{needle:?} not in: {e}");
        }
        e
    }

    const GOOD: &str = r#"
        [[server]]
        name = "apic"
        mmio = [{ base = 0xfec00000, size = 0x1000 }, { base = "0xfee0_0000", size = 4096 }]
        provides = ["apic"]
        ring_slots = 64

        [[server]]
        name = "console"
        ports = ["0x3f8-0x3ff", "0x60", 0x64]
        irqs = [4, "0x1"]
        provides = ["console"]
        uses = ["apic"]

        [[server]]
        name = "echo"
        provides = ["echo"]
        uses = ["console"]

        [[server]]
        name = "hello"
        uses = ["echo", "console"]
    "#;

    #[test]
    fn a_good_manifest() {
        let m = ok(GOOD);
        assert_eq!(m.servers.len(), 4);
        let apic = &m.servers[0];
        assert_eq!(
            (
                apic.krate.as_str(),
                apic.package.as_str(),
                apic.bin.as_str()
            ),
            ("apic", "apic-server", "apic")
        );
        assert_eq!(apic.record.ring_slots, 64);
        let console = &m.servers[1].record;
        assert_eq!(
            console.ports(),
            [
                PortRange {
                    first: 0x3f8,
                    count: 8
                },
                PortRange {
                    first: 0x60,
                    count: 1
                },
                PortRange {
                    first: 0x64,
                    count: 1
                },
            ]
        );
        assert_eq!(console.irqs.iter().collect::<Vec<_>>(), [1, 4]);
        assert_eq!(console.ring_slots, DEFAULT_RING_SLOTS);
        let channels: Vec<(usize, usize, &str, u32)> = m
            .channels
            .iter()
            .map(|c| (c.provider, c.client, c.service.as_str(), c.ring_slots))
            .collect();
        assert_eq!(
            channels,
            [
                (0, 1, "apic", 64),
                (1, 2, "console", 256),
                (2, 3, "echo", 256),
                (1, 3, "console", 256),
            ]
        );
        let bytes = m.encode().unwrap();
        let decoded = wire::Manifest::decode(&bytes).unwrap();
        assert_eq!(decoded.server_count(), 4);
        let hello: Vec<_> = decoded.handles(3).map(|h| (h.channel, h.role)).collect();
        assert_eq!(hello, [(2, Role::Client), (3, Role::Client)]);
        let console: Vec<_> = decoded.handles(1).map(|h| (h.channel, h.role)).collect();
        assert_eq!(
            console,
            [(0, Role::Client), (1, Role::Provider), (3, Role::Provider)]
        );
    }

    #[test]
    fn syntax_errors_and_unknown_fields() {
        err("[[server]\nname = 1", &["servers/manifest.toml: "]);
        err("[[servers]]\nname = \"a\"", &["unknown field `servers`"]);
        err(
            "[[server]]\nname = \"echo\"\nportz = [1]",
            &["server \"echo\"", "unknown field `portz`"],
        );
        err(
            "[[server]]\nname = \"echo\"\nmmio = [{ base = 0x1000, size = 0x1000, cache = true }]",
            &["server \"echo\"", "unknown field `cache`"],
        );
        err(
            "[[server]]\ncrate = \"echo\"",
            &["server #1", "missing field `name`"],
        );
        err(
            "[[server]]\nname = \"echo\"\nirqs = 4",
            &["server \"echo\"", "invalid type"],
        );
        err("", &["no [[server]] entries"]);
    }

    #[test]
    fn crates_and_bins() {
        err(
            "[[server]]\nname = \"nosuch\"",
            &[
                "server \"nosuch\"",
                "crate \"nosuch\" not found (no servers/nosuch/Cargo.toml)",
            ],
        );
        err(
            "[[server]]\nname = \"x\"\ncrate = \"../echo\"",
            &["server \"x\"", "bad crate \"../echo\""],
        );
        err(
            "[[server]]\nname = \"x\"\ncrate = \"testing\"",
            &[
                "server \"x\"",
                "crate \"testing\" has no bin \"x\"",
                "survivor",
            ],
        );
        err(
            "[[server]]\nname = \"x\"\ncrate = \"echo\"\nbin = \"Echo\"",
            &["server \"x\"", "bad bin \"Echo\""],
        );
        let mut broken = crates();
        broken.crates.insert(
            "broken".into(),
            Err("servers/broken/Cargo.toml has no package.name".into()),
        );
        let e = check(LABEL, "[[server]]\nname = \"broken\"", &broken).unwrap_err();
        assert!(
            format!("{e}").contains(
                "server \"broken\": crate \"broken\": servers/broken/Cargo.toml has no package.name"
            ),
            "{e}"
        );
    }

    #[test]
    fn names() {
        for bad in ["Echo", "", "a_b", "a b", "seventeen-bytes-x"] {
            err(
                &format!("[[server]]\nname = \"{bad}\"\ncrate = \"echo\"\nbin = \"echo\""),
                &[&format!("server \"{bad}\": bad name")],
            );
        }
        ok("[[server]]\nname = \"sixteen-bytes-xy\"\ncrate = \"echo\"\nbin = \"echo\"");
        err(
            "[[server]]\nname = \"echo\"\n[[server]]\nname = \"echo\"",
            &["server \"echo\": the name is used by an earlier server too"],
        );
        err(
            "[[server]]\nname = \"echo\"\nprovides = [\"Echo\"]",
            &[
                "server \"echo\"",
                "provides \"Echo\": a service name must be",
            ],
        );
        err(
            "[[server]]\nname = \"echo\"\nprovides = [\"a\", \"a\"]",
            &["server \"echo\"", "provides \"a\" is listed twice"],
        );
    }

    #[test]
    fn ports() {
        let one = |ports: &str| format!("[[server]]\nname = \"console\"\nports = {ports}");
        for (ports, why) in [
            ("[\"0xzz\"]", "ports \"0xzz\": \"0xzz\" is not a number"),
            (
                "[\"0x3ff-0x3f8\"]",
                "ports \"0x3ff-0x3f8\": the range ends before it starts",
            ),
            (
                "[\"0x10000\"]",
                "ports \"0x10000\": port 0x10000 is past 0xffff",
            ),
            (
                "[\"0x1-0x10000\"]",
                "ports \"0x1-0x10000\": port 0x10000 is past 0xffff",
            ),
            ("[-1]", "ports \"-1\": port -1 is not in 0..=0xffff"),
            ("[\"\"]", "ports \"\": \"\" is not a number"),
            ("[\"1-2-3\"]", "ports \"1-2-3\""),
            (
                "[\"0x3f8-0x3ff\", \"0x3fa\"]",
                "ports \"0x3fa\" overlap ports \"0x3f8-0x3ff\" of the same server",
            ),
        ] {
            err(&one(ports), &["server \"console\"", why]);
        }
        ok(&one("[\"1000-1_009\", 0x60]"));
        err(
            &one("[0x60, 0x60]"),
            &["ports \"0x60\" overlap ports \"0x60\" of the same server"],
        );
        let many: Vec<String> = (0..17).map(|p| format!("\"{}\"", 0x300 + p)).collect();
        err(
            &one(&format!("[{}]", many.join(", "))),
            &[
                "server \"console\"",
                "17 port ranges, the binary manifest holds at most 16",
            ],
        );
        err(
            r#"
            [[server]]
            name = "console"
            ports = ["0x3f8-0x3ff"]
            [[server]]
            name = "uart2"
            ports = ["0x3f8-0x3f8"]
            "#,
            &[
                r#"servers/manifest.toml: server "console": ports "0x3f8-0x3ff" overlap server "uart2" ports "0x3f8-0x3f8""#,
            ],
        );
    }

    /// The grant rules of the `manifest` crate, as xtask reports them.
    #[test]
    fn port_grants_a_server_has_no_business_with() {
        let one = |ports: &str| format!("[[server]]\nname = \"console\"\nports = {ports}");
        for (ports, why) in [
            (
                "[\"0x0-0xffff\"]",
                r#"servers/manifest.toml: server "console": ports "0x0-0xffff": 65536 ports, a grant holds at most 256"#,
            ),
            (
                "[\"0x300-0x400\"]",
                r#"server "console": ports "0x300-0x400": 257 ports"#,
            ),
            (
                "[\"0xcf8\"]",
                r#"server "console": ports "0xcf8": holds the PCI configuration ports (0xcf8-0xcff), which no server may be granted"#,
            ),
            (
                "[\"0xcfc-0xcff\"]",
                r#"ports "0xcfc-0xcff": holds the PCI configuration ports"#,
            ),
            (
                "[0x92]",
                r#"ports "0x92": holds system control port A (A20 gate, fast reset)"#,
            ),
            (
                "[\"0x0-0xf\"]",
                r#"ports "0x0-0xf": holds the first ISA DMA controller (0x0-0x1f)"#,
            ),
            (
                "[\"0xb2\"]",
                r#"ports "0xb2": holds the APM/SMI command ports"#,
            ),
        ] {
            err(&one(ports), &[why]);
        }
        // Every other problem is still reported beside it.
        err(
            &one("[\"0x0-0xffff\", \"0xzz\"]"),
            &[
                r#"ports "0x0-0xffff": 65536 ports"#,
                r#"ports "0xzz": "0xzz" is not a number"#,
            ],
        );
        ok(&one(
            "[\"0x300-0x3ff\", \"0x20-0x21\", \"0xa0-0xa1\", 0x80]",
        ));
    }

    /// The issue's exploit: a window over the kernel's image at 1 MiB.
    #[test]
    fn mmio_grants_over_ram() {
        let one = |mmio: &str| format!("[[server]]\nname = \"apic\"\nmmio = [{mmio}]");
        for (mmio, why) in [
            (
                "{ base = 0x100000, size = 0x100000 }",
                r#"servers/manifest.toml: server "apic": mmio { base = 0x100000, size = 0x100000 }: overlaps RAM at 0x100000..0xc0000000"#,
            ),
            (
                "{ base = 0, size = 0x1000 }",
                r#"server "apic": mmio { base = 0x0, size = 0x1000 }: overlaps RAM at 0x0..0xa0000"#,
            ),
            (
                "{ base = 0xbffff000, size = 0x2000 }",
                "overlaps RAM at 0x100000..0xc0000000",
            ),
            (
                "{ base = 0x10000000000, size = 0x1000 }",
                r#"server "apic": mmio { base = 0x10000000000, size = 0x1000 }: the region ends past 1 TiB"#,
            ),
        ] {
            err(&one(mmio), &[why]);
        }
        ok(&one(
            "{ base = 0xe0000, size = 0x20000 }, { base = 0xfed00000, size = 0x1000 }, { base = 0xc0000000, size = 0x1000 }",
        ));
    }

    #[test]
    fn irqs() {
        let one = |irqs: &str| format!("[[server]]\nname = \"console\"\nirqs = {irqs}");
        err(
            &one("[24]"),
            &["server \"console\"", "irq 24: IRQ lines are 0..=23"],
        );
        err(
            &one("[-1]"),
            &["server \"console\"", "irq \"-1\" is negative"],
        );
        err(
            &one("[\"four\"]"),
            &["server \"console\"", "irq \"four\" is not a number"],
        );
        err(
            &one("[4, 4]"),
            &["server \"console\"", "irq 4 is listed twice"],
        );
        ok(&one("[0, 23]"));
        err(
            "[[server]]\nname = \"console\"\nirqs = [4]\n[[server]]\nname = \"uart2\"\nirqs = [3, 4]",
            &["server \"console\": irq 4 is also granted to server \"uart2\""],
        );
    }

    #[test]
    fn mmio() {
        let one = |mmio: &str| format!("[[server]]\nname = \"apic\"\nmmio = [{mmio}]");
        for (mmio, why) in [
            (
                "{ base = 0xfec00800, size = 0x1000 }",
                "mmio { base = 0xfec00800, size = 0x1000 }: base and size must be multiples of 0x1000",
            ),
            (
                "{ base = 0xfec00000, size = 0x800 }",
                "must be multiples of 0x1000 (page aligned)",
            ),
            ("{ base = 0xfec00000, size = 0 }", "the size is zero"),
            (
                "{ base = \"0xfffffffffffff000\", size = 0x2000 }",
                "ends past the physical address limit",
            ),
            (
                "{ base = \"0x10000000000000\", size = 0x1000 }",
                "ends past the physical address limit",
            ),
            (
                "{ base = \"0xfffffffffffffffff\", size = 0x1000 }",
                "base is not a number",
            ),
            ("{ base = -4096, size = 0x1000 }", "base is negative"),
            (
                "{ base = 0x1000, size = \"x\" }",
                "mmio { base = 0x1000, size = x }: size is not a number",
            ),
            (
                "{ base = 0xfec00000, size = 0x2000 }, { base = 0xfec01000, size = 0x1000 }",
                "mmio { base = 0xfec01000, size = 0x1000 } overlaps mmio { base = 0xfec00000, size = 0x2000 } of the same server",
            ),
        ] {
            err(&one(mmio), &["server \"apic\"", why]);
        }
        let many: Vec<String> = (1..10)
            .map(|i| format!("{{ base = {}, size = 4096 }}", 0xfed0_0000_u64 + i * 4096))
            .collect();
        err(
            &one(&many.join(", ")),
            &[
                "server \"apic\"",
                "9 MMIO regions, the binary manifest holds at most 8",
            ],
        );
        err(
            r#"
            [[server]]
            name = "apic"
            mmio = [{ base = 0xfec00000, size = 0x1000 }]
            [[server]]
            name = "console"
            mmio = [{ base = 0xfe000000, size = 0x1000000 }]
            "#,
            &[
                "server \"apic\": mmio { base = 0xfec00000, size = 0x1000 } overlaps server \"console\" mmio { base = 0xfe000000, size = 0x1000000 }",
            ],
        );
    }

    #[test]
    fn services() {
        err(
            "[[server]]\nname = \"hello\"\nuses = [\"echo\"]",
            &["server \"hello\": uses \"echo\", which no server provides"],
        );
        err(
            "[[server]]\nname = \"echo\"\nprovides = [\"echo\"]\nuses = [\"echo\"]",
            &["server \"echo\": uses its own service \"echo\""],
        );
        err(
            "[[server]]\nname = \"echo\"\nprovides = [\"echo\"]\n[[server]]\nname = \"hello\"\nprovides = [\"echo\"]",
            &["server \"hello\": provides \"echo\", which server \"echo\" provides already"],
        );
        err(
            "[[server]]\nname = \"echo\"\nprovides = [\"echo\"]\n[[server]]\nname = \"hello\"\nuses = [\"echo\", \"echo\"]",
            &["server \"hello\": uses \"echo\" is listed twice"],
        );
        err(
            "[[server]]\nname = \"hello\"\nuses = [\"Bad\"]",
            &["server \"hello\": uses \"Bad\": a service name must be"],
        );
        for slots in ["4", "100", "8192", "0", "-8", "\"x\""] {
            err(
                &format!("[[server]]\nname = \"echo\"\nring_slots = {slots}"),
                &[
                    "server \"echo\"",
                    "ring_slots",
                    "must be a power of two in 8..=4096",
                ],
            );
        }
        ok("[[server]]\nname = \"echo\"\nring_slots = 4096");
        ok("[[server]]\nname = \"echo\"\nring_slots = 8");
    }

    #[test]
    fn supervision() {
        let m = ok(
            "[[server]]\nname = \"echo\"\nrestart = \"on-fault\"\nrestart_limit = 3\nrestart_period_ms = 500\ninject_faults = true",
        );
        let record = &m.servers[0].record;
        assert_eq!(record.restart, wire::Restart::OnFault);
        assert_eq!((record.restart_limit, record.restart_period_ms), (3, 500));
        assert!(record.may_inject_faults());
        let m = ok("[[server]]\nname = \"echo\"");
        let record = &m.servers[0].record;
        assert_eq!(record.restart, wire::Restart::Never);
        assert!(!record.may_inject_faults());
        err(
            "[[server]]\nname = \"echo\"\nrestart = \"sometimes\"",
            &["server \"echo\": restart \"sometimes\": it must be"],
        );
        err(
            "[[server]]\nname = \"echo\"\nrestart_period_ms = 0",
            &["server \"echo\": restart_period_ms 0: it must be a number in 1..="],
        );
        err(
            "[[server]]\nname = \"echo\"\nrestart_limit = -1",
            &["server \"echo\": restart_limit -1"],
        );
    }

    #[test]
    fn cpus() {
        let cpus = |text: &str| {
            ok(&format!("[[server]]\nname = \"echo\"\n{text}")).servers[0]
                .record
                .cpus()
        };
        assert_eq!(cpus(""), 0);
        assert_eq!(cpus("cpus = [0]"), 1);
        assert_eq!(cpus("cpus = [1]"), 2);
        assert_eq!(cpus("cpus = [3, 0, 63]"), 1 << 63 | 1 << 3 | 1);
        let all: Vec<String> = (0..64).map(|c| c.to_string()).collect();
        assert_eq!(cpus(&format!("cpus = [{}]", all.join(", "))), u64::MAX);
        // Through the binary format and back.
        let m = ok("[[server]]\nname = \"echo\"\ncpus = [1]\n[[server]]\nname = \"hello\"");
        let bytes = m.encode().unwrap();
        let decoded = wire::Manifest::decode(&bytes).unwrap();
        assert_eq!(decoded.server(0).unwrap().cpus(), 2);
        assert_eq!(decoded.server(1).unwrap().cpus(), 0);

        let bad = |text: &str, needles: &[&str]| {
            err(&format!("[[server]]\nname = \"echo\"\n{text}"), needles)
        };
        bad(
            "cpus = 1",
            &["server \"echo\": cpus = 1: it must be an array of CPU numbers 0..=63"],
        );
        bad(
            "cpus = \"0,1\"",
            &["server \"echo\": cpus = \"0,1\": it must be an array"],
        );
        bad(
            "cpus = [\"0\"]",
            &["server \"echo\": cpus: \"0\" is not a CPU number (an integer 0..=63)"],
        );
        bad("cpus = [1.5]", &["cpus: 1.5 is not a CPU number"]);
        bad("cpus = [[0]]", &["cpus: [0] is not a CPU number"]);
        bad(
            "cpus = [64]",
            &["server \"echo\": cpus: CPU 64: CPUs are 0..=63"],
        );
        bad("cpus = [-1]", &["cpus: CPU -1: CPUs are 0..=63"]);
        bad(
            "cpus = [0, 1, 0]",
            &["server \"echo\": cpus: CPU 0 is listed twice"],
        );
        bad(
            "cpus = []",
            &["server \"echo\": cpus = []: it lists no CPU (leave cpus out"],
        );
        // Every problem of the list at once.
        bad(
            "cpus = [99, 2, 2, \"x\"]",
            &[
                "CPU 99: CPUs are 0..=63",
                "CPU 2 is listed twice",
                "\"x\" is not a CPU number",
            ],
        );
    }

    /// `count` servers of crate "echo", named s0, s1, ...
    fn many_servers(count: usize, extra: impl Fn(usize) -> String) -> String {
        (0..count)
            .map(|i| {
                format!(
                    "[[server]]\nname = \"s{i}\"\ncrate = \"echo\"\nbin = \"echo\"\n{}\n",
                    extra(i)
                )
            })
            .collect()
    }

    #[test]
    fn limits() {
        ok(&many_servers(32, |_| String::new()));
        err(
            &many_servers(33, |_| String::new()),
            &["servers/manifest.toml: 33 servers, the binary manifest holds at most 32"],
        );
        // s0 provides a and b; 31 clients use both: 62 channels, fine;
        // s0 with 2 IRQs needs 64 notification bits.
        let fan = |i: usize, irqs: &str| {
            if i == 0 {
                format!("provides = [\"a\", \"b\", \"c\"]\nirqs = {irqs}")
            } else {
                "uses = [\"a\", \"b\"]".into()
            }
        };
        ok(&many_servers(32, |i| fan(i, "[0]")));
        err(
            &many_servers(32, |i| fan(i, "[0, 1]")),
            &[
                "server \"s0\": 62 channels and 2 IRQ lines need 64 notification bits, a server has 63",
            ],
        );
        // 65 channels.
        let text = many_servers(32, |i| match i {
            0 => "provides = [\"a\", \"b\"]".into(),
            1 => "provides = [\"c\"]\nuses = [\"a\", \"b\"]".into(),
            _ => "uses = [\"a\", \"b\", \"c\"]".into(),
        });
        err(
            &text,
            &[
                "servers/manifest.toml: 92 channels (one per `uses` entry), the binary manifest holds at most 64",
            ],
        );
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-manifest-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn crates_are_scanned_as_cargo_sees_them() {
        let root = temp_dir("scan");
        let servers = root.join("servers");
        write(
            &servers.join("echo/Cargo.toml"),
            "[package]\nname = \"echo\"\n",
        );
        write(&servers.join("echo/src/main.rs"), "");
        write(
            &servers.join("testing/Cargo.toml"),
            "[package]\nname = \"testing-servers\"\n[[bin]]\nname = \"survivor\"\npath = \"x.rs\"\n",
        );
        write(&servers.join("testing/src/bin/fault-page.rs"), "");
        write(&servers.join("testing/src/bin/ring-consumer/main.rs"), "");
        write(
            &servers.join("noauto/Cargo.toml"),
            "[package]\nname = \"noauto\"\nautobins = false\n",
        );
        write(&servers.join("noauto/src/main.rs"), "");
        write(&servers.join("broken/Cargo.toml"), "[package\n");
        std::fs::create_dir_all(servers.join("not-a-crate")).unwrap();
        let crates = ServerCrates::scan(&servers).unwrap();
        let get = |dir: &str| crates.get(dir).cloned();
        assert_eq!(
            get("echo"),
            Some(Ok(CrateInfo {
                package: "echo".into(),
                bins: ["echo".to_string()].into(),
            }))
        );
        assert_eq!(
            get("testing"),
            Some(Ok(CrateInfo {
                package: "testing-servers".into(),
                bins: ["fault-page", "ring-consumer", "survivor"]
                    .map(String::from)
                    .into(),
            }))
        );
        assert_eq!(get("noauto").unwrap().unwrap().bins.len(), 0);
        assert!(get("broken").unwrap().unwrap_err().contains("parsing"));
        assert_eq!(get("not-a-crate"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn load_all_reports_every_file() {
        let root = temp_dir("load");
        write(
            &root.join("servers/echo/Cargo.toml"),
            "[package]\nname = \"echo\"\n",
        );
        write(&root.join("servers/echo/src/main.rs"), "");
        write(
            &root.join("servers/other/Cargo.toml"),
            "[package]\nname = \"other\"\n[[bin]]\nname = \"echo\"\n",
        );
        write(
            &root.join(DEFAULT_MANIFEST),
            "[[server]]\nname = \"echo\"\n",
        );
        write(
            &root.join("tests/manifests/good.toml"),
            "[[server]]\nname = \"e2\"\ncrate = \"echo\"\nbin = \"echo\"\n",
        );
        write(&root.join("tests/manifests/README.md"), "not a manifest");
        let loaded = load_all(&root).unwrap();
        assert_eq!(loaded.tests.len(), 1);
        assert_eq!(loaded.tests[0].0, "good");
        assert_eq!(loaded.tests[0].1.label, "tests/manifests/good.toml");
        assert_eq!(loaded.packages(), ["echo"]);
        assert_eq!(
            loaded.bins().unwrap(),
            [("echo".to_string(), "echo".to_string())]
        );

        write(&root.join("tests/manifests/Bad Name.toml"), "");
        write(
            &root.join("tests/manifests/broken.toml"),
            "[[server]]\nname = \"nope\"\n",
        );
        write(
            &root.join(DEFAULT_MANIFEST),
            "[[server]]\nname = \"echo\"\nirqs = [99]\n",
        );
        let e = format!("{:#}", load_all(&root).unwrap_err());
        assert!(
            e.contains("servers/manifest.toml: server \"echo\": irq 99"),
            "{e}"
        );
        assert!(
            e.contains("tests/manifests/Bad Name.toml: the test name \"Bad Name\""),
            "{e}"
        );
        assert!(
            e.contains("tests/manifests/broken.toml: server \"nope\": crate \"nope\" not found"),
            "{e}"
        );

        // The same bin name built by two crates.
        std::fs::remove_file(root.join("tests/manifests/Bad Name.toml")).unwrap();
        write(
            &root.join(DEFAULT_MANIFEST),
            "[[server]]\nname = \"echo\"\n",
        );
        write(
            &root.join("tests/manifests/broken.toml"),
            "[[server]]\nname = \"x\"\ncrate = \"other\"\nbin = \"echo\"\n",
        );
        let e = format!("{:#}", load_all(&root).unwrap_err());
        assert!(
            e.contains(
                "tests/manifests/broken.toml: server \"x\": bin \"echo\" of crate \"other\""
            ),
            "{e}"
        );

        std::fs::remove_file(root.join(DEFAULT_MANIFEST)).unwrap();
        let e = format!("{:#}", load_all(&root).unwrap_err());
        assert!(e.contains("reading servers/manifest.toml"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Every manifest of the repository passes, grant rules included.
    #[test]
    fn repository_manifests_pass_the_grant_rules() {
        let root = crate::workspace_root();
        let manifests = load_all(&root).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(!manifests.tests.is_empty());
        for manifest in manifests.all() {
            for server in &manifest.servers {
                assert_eq!(
                    server.record.check_grants(&STATIC_RAM),
                    Ok(()),
                    "{}: {}",
                    manifest.label,
                    server.name
                );
            }
        }
    }

    /// The repository's own manifests, against the crates they expect.
    #[test]
    fn repository_manifests_are_valid() {
        let root = crate::workspace_root();
        let mut labels = vec![DEFAULT_MANIFEST.to_string()];
        for name in ["ring", "faults", "fuzz", "isolation"] {
            labels.push(format!("{TEST_MANIFESTS}/{name}.toml"));
        }
        // Against the server crates actually in the tree, not the fixture.
        let real = ServerCrates::scan(&root.join(SERVERS_DIR)).unwrap();
        for label in &labels {
            let text = std::fs::read_to_string(root.join(label)).unwrap();
            check(label, &text, &real).unwrap_or_else(|e| panic!("{e:#}"));
        }
        let text = std::fs::read_to_string(root.join(&labels[4])).unwrap();
        let isolation = check(&labels[4], &text, &real).unwrap();
        let c = isolation.channels[0];
        let name = |i: usize| isolation.servers[i].name.as_str();
        assert_eq!(
            (name(c.provider), name(c.client), c.service.as_str()),
            ("echo", "hello", "echo")
        );
        let text = std::fs::read_to_string(root.join(&labels[1])).unwrap();
        let ring = check(&labels[1], &text, &crates()).unwrap();
        assert_eq!(ring.channels[0].ring_slots, 1024);
    }

    /// `cargo xtask stress --smp N` (N >= 2) boots stress-smp: stress with
    /// the stream's two ends on CPUs 0 and 1, nothing else changed.
    #[test]
    fn stress_smp_is_stress_with_its_ends_on_two_cpus() {
        let root = crate::workspace_root();
        let real = ServerCrates::scan(&root.join(SERVERS_DIR)).unwrap();
        let load = |name: &str| {
            let label = format!("{TEST_MANIFESTS}/{name}.toml");
            let text = std::fs::read_to_string(root.join(&label)).unwrap();
            check(&label, &text, &real).unwrap_or_else(|e| panic!("{e:#}"))
        };
        let (plain, smp) = (load("stress"), load(crate::stress::SMP_STREAM_TEST));
        let cpus = |m: &Manifest| -> Vec<(String, u64)> {
            m.servers
                .iter()
                .map(|s| (s.name.clone(), s.record.cpus()))
                .collect()
        };
        assert_eq!(
            cpus(&smp),
            [
                ("stress-consumer".to_string(), 1),
                ("stress-producer".to_string(), 2)
            ]
        );
        assert!(cpus(&plain).iter().all(|(_, mask)| *mask == 0));
        let mut records: Vec<wire::Server> = smp.servers.iter().map(|s| s.record).collect();
        for r in &mut records {
            r.set_cpus(0);
        }
        let plain_records: Vec<wire::Server> = plain.servers.iter().map(|s| s.record).collect();
        assert_eq!(records, plain_records);
        assert_eq!(smp.channels, plain.channels);
    }
}
