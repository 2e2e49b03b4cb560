//! QMP, QEMU's JSON control protocol, for one thing: KVM's own per-vCPU
//! counters (`query-stats`, target `vcpu`), read before and after a
//! workload and subtracted.
//!
//! Start QEMU with [`args`] (`-qmp unix:PATH,server=on,wait=off`), then
//! [`Client::connect`] to PATH (it retries while QEMU starts), and call
//! [`Client::vcpu_stats`] as often as needed. Under TCG `query-stats`
//! answers with no KVM provider and every counter reads as absent.
//!
//! On this project's machines KVM is the PVM backend: its `exits` counts
//! exits to the host, `insn_emulation` the instructions it emulates (which
//! on PVM includes the guest's privileged instructions), `hypercalls`,
//! `io_exits`, `mmio_exits`, `halt_exits` and `irq_injections` what their
//! names say. [`KEY_STATS`] are the ones the tables show.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The counters the stress tables and `run --stats` show, in order.
pub const KEY_STATS: &[&str] = &[
    "exits",
    "io_exits",
    "mmio_exits",
    "halt_exits",
    "hypercalls",
    "irq_injections",
    "insn_emulation",
    "pf_taken",
];

/// The QEMU arguments that open a QMP socket at `path`.
pub fn args(path: &Path) -> Vec<String> {
    vec![
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", path.display()),
    ]
}

/// A fresh socket path for one QEMU process.
pub fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("microkernel-qmp-{}-{tag}.sock", std::process::id()))
}

/// Cumulative counters, summed over every vCPU: name to value. Only
/// numeric counters are kept (histograms and flags are dropped).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats(pub BTreeMap<String, u64>);

impl Stats {
    /// A counter, or `None` when KVM did not report it.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.get(name).copied()
    }

    /// `self - before`, counter by counter (counters missing on either
    /// side are dropped).
    pub fn since(&self, before: &Stats) -> Stats {
        Stats(
            self.0
                .iter()
                .filter_map(|(k, v)| before.0.get(k).map(|b| (k.clone(), v.saturating_sub(*b))))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parse a `query-stats` reply (the whole `{"return": [...]}` object):
/// sum every numeric stat of every `kvm` vCPU entry.
pub fn parse_vcpu_stats(reply: &Value) -> Result<Stats> {
    let Some(entries) = reply.get("return").and_then(Value::as_array) else {
        bail!("query-stats: no \"return\" array in {reply}");
    };
    let mut sum = BTreeMap::new();
    for entry in entries {
        if entry.get("provider").and_then(Value::as_str) != Some("kvm") {
            continue;
        }
        for stat in entry
            .get("stats")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(name), Some(value)) = (
                stat.get("name").and_then(Value::as_str),
                stat.get("value").and_then(Value::as_u64),
            ) else {
                continue;
            };
            *sum.entry(name.to_string()).or_insert(0u64) += value;
        }
    }
    Ok(Stats(sum))
}

/// A QMP connection in command mode.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connect to QEMU's socket at `path` (retrying until `timeout` while
    /// QEMU creates it), read the greeting and enter command mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < timeout => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("connecting to QMP at {}", path.display()));
                }
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let writer = stream.try_clone()?;
        let mut client = Self {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = client.read_message()?;
        if greeting.get("QMP").is_none() {
            bail!("QMP: unexpected greeting {greeting}");
        }
        client.execute("qmp_capabilities", None)?;
        Ok(client)
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("QMP: QEMU closed the connection");
        }
        serde_json::from_str(&line).with_context(|| format!("QMP: not JSON: {line:?}"))
    }

    /// Run one command; returns the whole reply object (events that
    /// arrive in between are skipped).
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut request = serde_json::json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        writeln!(self.writer, "{request}")?;
        self.writer.flush()?;
        loop {
            let message = self.read_message()?;
            if message.get("event").is_some() {
                continue;
            }
            if let Some(error) = message.get("error") {
                bail!("QMP {command}: {error}");
            }
            return Ok(message);
        }
    }

    /// KVM's per-vCPU cumulative counters, summed over vCPUs.
    pub fn vcpu_stats(&mut self) -> Result<Stats> {
        let reply = self.execute("query-stats", Some(serde_json::json!({ "target": "vcpu" })))?;
        parse_vcpu_stats(&reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real reply of QEMU 7.2 on this project's KVM (PVM)
    /// host, plus a second vCPU and a non-KVM provider.
    const SAMPLE: &str = r#"{"return": [
      {"provider": "kvm", "qom-path": "/machine/unattached/device[0]", "stats": [
        {"name": "guest_mode", "value": false},
        {"name": "irq_injections", "value": 1},
        {"name": "hypercalls", "value": 0},
        {"name": "insn_emulation", "value": 903930},
        {"name": "halt_exits", "value": 1},
        {"name": "mmio_exits", "value": 0},
        {"name": "io_exits", "value": 0},
        {"name": "exits", "value": 4966},
        {"name": "halt_wait_hist", "value": [0, 0, 0]}]},
      {"provider": "kvm", "qom-path": "/machine/unattached/device[1]", "stats": [
        {"name": "exits", "value": 34},
        {"name": "io_exits", "value": 2}]},
      {"provider": "other", "stats": [{"name": "exits", "value": 1000000}]}
    ]}"#;

    #[test]
    fn reply_is_summed_over_kvm_vcpus() {
        let stats = parse_vcpu_stats(&serde_json::from_str(SAMPLE).unwrap()).unwrap();
        assert_eq!(stats.get("exits"), Some(5000));
        assert_eq!(stats.get("io_exits"), Some(2));
        assert_eq!(stats.get("insn_emulation"), Some(903930));
        assert_eq!(stats.get("halt_exits"), Some(1));
        // Flags and histograms are not counters.
        assert_eq!(stats.get("guest_mode"), None);
        assert_eq!(stats.get("halt_wait_hist"), None);
    }

    #[test]
    fn tcg_reply_has_no_counters() {
        let stats = parse_vcpu_stats(&serde_json::json!({"return": []})).unwrap();
        assert!(stats.is_empty());
        assert!(parse_vcpu_stats(&serde_json::json!({"error": {}})).is_err());
    }

    #[test]
    fn since_subtracts_counter_by_counter() {
        let before = Stats([("exits".into(), 10), ("io_exits".into(), 3)].into());
        let after = Stats([("exits".into(), 25), ("hypercalls".into(), 1)].into());
        let d = after.since(&before);
        assert_eq!(d.get("exits"), Some(15));
        assert_eq!(d.get("io_exits"), None);
        assert_eq!(d.get("hypercalls"), None);
    }
}
