//! shell: a client of the console (and of the timer): reads a command line,
//! answers, shows the prompt again.
//!
//! | command | what it does |
//! |---|---|
//! | `help` | lists the commands |
//! | `ps` | every server: state, restarts, system calls, exit code |
//! | `stats` | kernel entries by kind, context switches, interrupts, each ring's messages and doorbells, and the console's and timer's counters |
//! | `sleep MS` | sleeps through the timer service and says how long it took |
//! | `echo ...` | prints its arguments |
//! | `call SERVICE [VALUE]` | sends an echo request (`proto::echo::OP_ECHO`) to a service the shell uses, and prints the answer |
//! | `fault SERVER` | makes SERVER fault now (needs `inject_faults` in the manifest): its restart policy takes over |
//! | `batching` | shows whether batching is on or off |
//! | `poweroff` | prints the counters, then ends the machine (isa-debug-exit) |
//!
//! A command that fails prints why and the prompt comes back: a timer or
//! echo server that restarted or is down costs that command, not the
//! shell. If the console itself restarts, the line being read is lost and
//! the prompt is shown again by the new instance.
//!
//! Context: user space, the shell's only thread.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

mod power;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use devkit::clock::now_ns;
use devkit::sysinfo::channel_stats;
use devkit::{Console, Timer};
use proto::echo::OP_ECHO;
use proto::{console as cproto, timer as tproto};
use userland::abi::{self, ServerState, Syscall};
use userland::{Batching, Channel, ChannelError, Client, Descriptor, println, sys};

userland::entry!(async run);

const PROMPT: &[u8] = b"> ";

const HELP: &[&str] = &[
    "commands:",
    "  help        this list",
    "  ps          servers: state, restarts, system calls",
    "  stats       kernel entries, context switches, interrupts, rings",
    "  sleep MS    sleep MS milliseconds through the timer service",
    "  echo TEXT   print TEXT",
    "  call SERVICE [VALUE]  ask SERVICE to echo VALUE (a service the shell uses)",
    "  fault SERVER  make SERVER fault now (if the manifest grants it)",
    "  batching    show whether batching is on or off",
    "  poweroff    print the counters and end the machine",
];

struct Shell {
    console: Console,
    timer: Option<Timer>,
    /// Services opened by `call`, kept for the next call.
    services: Vec<(String, Client)>,
}

impl Shell {
    async fn say(&mut self, text: &str) -> Result<(), ChannelError> {
        self.console.line(text).await
    }

    async fn ps(&mut self) -> Result<(), ChannelError> {
        self.say("server           state     restarts  syscalls")
            .await?;
        for (_, info) in sys::servers() {
            let state = ServerState::from_raw(info.state)
                .map(ServerState::name)
                .unwrap_or("?");
            let mut line = format!(
                "{:<16} {:<9} {:>8}  {:>8}",
                abi::name_str(&info.name),
                state,
                info.restarts,
                info.syscalls
            );
            if info.state == ServerState::Exited as u32 {
                line.push_str(&format!("  (exit code {})", info.exit_code));
            }
            self.say(&line).await?;
        }
        Ok(())
    }

    async fn stats(&mut self) -> Result<(), ChannelError> {
        match sys::counters() {
            Ok(c) => {
                self.say(&format!("kernel entries: {}", c.entries()))
                    .await?;
                let mut calls = String::from("  system calls:");
                for (nr, &n) in c.syscalls.iter().enumerate() {
                    if n != 0
                        && let Some(call) = Syscall::from_raw(nr as u64)
                    {
                        calls.push_str(&format!(" {}={n}", call.name()));
                    }
                }
                self.say(&calls).await?;
                self.say(&format!(
                    "  device interrupts: {}, timer interrupts: {}, bad system calls: {}",
                    c.device_interrupts, c.timer_interrupts, c.bad_syscalls
                ))
                .await?;
                self.say(&format!(
                    "context switches: {}; doorbells: {} ({} woke a server); faults: {}",
                    c.context_switches, c.doorbells, c.wakeups, c.faults
                ))
                .await?;
                let backend = sys::boot_info_cached().map_or("?", |b| abi::name_str(&b.backend));
                let mut ops = format!(
                    "exit-causing operations ({backend} backend): {}",
                    c.hv_ops_total()
                );
                for op in abi::HvOp::ALL {
                    let n = c.hv_ops[op as usize];
                    if n != 0 {
                        ops.push_str(&format!(" {}={n}", op.name()));
                    }
                }
                self.say(&ops).await?;
                if c.emulated_port_io != 0 {
                    self.say(&format!(
                        "  server port accesses emulated after #GP: {}",
                        c.emulated_port_io
                    ))
                    .await?;
                }
                // The same, machine-readable, for `cargo xtask run --stats`.
                self.say(&format!("shell: counters: {c}")).await?;
            }
            Err(e) => self.say(&format!("counters: {e}")).await?,
        }
        self.say(
            "rings (client -> provider): requests, completions, doorbells from client/provider",
        )
        .await?;
        for i in 0.. {
            let Ok(s) = channel_stats(i) else { break };
            self.say(&format!(
                "  {:<10} {} -> {}: {} requests, {} completions, doorbells {}/{}",
                abi::name_str(&s.service),
                abi::name_str(&s.client),
                abi::name_str(&s.provider),
                s.requests,
                s.completions,
                s.doorbells_from_client,
                s.doorbells_from_provider
            ))
            .await?;
        }
        let every: [u64; cproto::STAT_COUNT as usize] = core::array::from_fn(|k| k as u64);
        let console = self.console.stats(every).await?;
        self.say(&format!(
            "console: {} bytes out in {} lines, {} status reads, {} bursts; {} bytes in through {} rx interrupts",
            console[cproto::STAT_TX_BYTES as usize],
            console[cproto::STAT_LINES as usize],
            console[cproto::STAT_TX_STATUS_READS as usize],
            console[cproto::STAT_BURSTS as usize],
            console[cproto::STAT_RX_BYTES as usize],
            console[cproto::STAT_RX_IRQS as usize],
        ))
        .await?;
        if let Some(timer) = self.timer.as_mut() {
            let every: [u64; tproto::STAT_COUNT as usize] = core::array::from_fn(|k| k as u64);
            let t = timer.stats(every).await?;
            self.say(&format!(
                "timer: {} requests, {} wake-ups, {} hardware programmings ({} port writes), {} interrupts",
                t[tproto::STAT_REQUESTS as usize],
                t[tproto::STAT_WAKEUPS as usize],
                t[tproto::STAT_PROGRAMMINGS as usize],
                t[tproto::STAT_PORT_WRITES as usize],
                t[tproto::STAT_IRQS as usize],
            ))
            .await?;
        }
        Ok(())
    }

    async fn sleep(&mut self, arg: &str) -> Result<(), ChannelError> {
        let Ok(ms) = arg.trim().parse::<u64>() else {
            return self.say("usage: sleep MS").await;
        };
        let Some(timer) = self.timer.as_mut() else {
            return self.say("sleep: no timer service").await;
        };
        let start = now_ns();
        let ended = timer.sleep_for(ms * 1_000_000).await?;
        let took = ended.saturating_sub(start);
        self.say(&format!(
            "slept {ms} ms ({}.{:03} ms by the timer's clock)",
            took / 1_000_000,
            took / 1000 % 1000
        ))
        .await
    }

    async fn call(&mut self, arg: &str) -> Result<(), ChannelError> {
        let mut words = arg.split_whitespace();
        let Some(service) = words.next() else {
            return self.say("usage: call SERVICE [VALUE]").await;
        };
        let Ok(value) = words.next().unwrap_or("1").parse::<u64>() else {
            return self.say("call: VALUE must be a number").await;
        };
        let at = match self.services.iter().position(|(name, _)| name == service) {
            Some(at) => at,
            None => match Channel::open(service) {
                Ok(client) => {
                    self.services.push((service.into(), client));
                    self.services.len() - 1
                }
                Err(e) => {
                    let text = format!(
                        "call: no channel to {service} ({e}); the manifest must list it in the shell's uses"
                    );
                    return self.say(&text).await;
                }
            },
        };
        let request = Descriptor::new(OP_ECHO, 0).with_args([value]);
        let text = match self.services[at].1.call(request).await {
            Ok(answer) => match answer.result() {
                Ok(v) => format!("{service} answered {v}"),
                Err(e) => format!("{service} refused: {e}"),
            },
            Err(e) => format!("call: {service}: {e}"),
        };
        self.say(&text).await
    }

    async fn fault(&mut self, arg: &str) -> Result<(), ChannelError> {
        let name = arg.trim();
        let Some((index, _)) = sys::servers().find(|(_, info)| abi::name_str(&info.name) == name)
        else {
            return self.say(&format!("fault: no server {name:?}")).await;
        };
        match sys::inject_fault(index) {
            Ok(()) => self.say(&format!("fault: {name} faults now")).await,
            Err(e) => self.say(&format!("fault: {name}: {e}")).await,
        }
    }

    /// Run one command line; false when the shell should end. A command
    /// that fails says why; only a console that cannot be written ends
    /// the shell.
    async fn command(&mut self, line: &str) -> Result<bool, ChannelError> {
        let line = line.trim();
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let done = self.run_command(cmd, rest).await;
        if let Err(e) = done {
            self.say(&format!("{cmd}: {e}")).await?;
        }
        Ok(true)
    }

    async fn run_command(&mut self, cmd: &str, rest: &str) -> Result<(), ChannelError> {
        match cmd {
            "" => {}
            "help" => {
                for l in HELP {
                    self.say(l).await?;
                }
            }
            "ps" => self.ps().await?,
            "stats" => self.stats().await?,
            "sleep" => self.sleep(rest).await?,
            "echo" => self.say(rest.trim_start()).await?,
            "call" => self.call(rest).await?,
            "fault" => self.fault(rest).await?,
            "batching" => {
                let on = sys::batching() == Batching::On;
                self.say(if on { "batching on" } else { "batching off" })
                    .await?
            }
            "poweroff" => {
                self.stats().await?;
                self.say("powering off").await?;
                self.console.flush().await?;
                let e = power::poweroff();
                self.say(&format!("poweroff failed: {e}")).await?;
            }
            other => {
                self.say(&format!("unknown command: {other} (try help)"))
                    .await?
            }
        }
        Ok(())
    }
}

async fn run() -> i32 {
    let console = match Console::open() {
        Ok(c) => c,
        Err(e) => {
            println!("shell: FAIL cannot open the console: {e}");
            return 1;
        }
    };
    let timer = Timer::open().ok();
    let mut shell = Shell {
        console,
        timer,
        services: Vec::new(),
    };
    let result: Result<(), ChannelError> = async {
        shell
            .say("shell: ready (type help for the commands)")
            .await?;
        loop {
            let mut line = Vec::new();
            let read = async {
                shell.console.write(PROMPT).await?;
                shell.console.flush().await?;
                shell.console.read_line(&mut line).await
            };
            match read.await {
                Ok(()) => {}
                // The console restarted under the read: ask again.
                Err(ChannelError::PeerRestarted) => continue,
                Err(e) => return Err(e),
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            match shell.command(&text).await {
                Ok(true) | Err(ChannelError::PeerRestarted) => {}
                Ok(false) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
    .await;
    match result {
        Ok(()) => 0,
        Err(e) => {
            println!("shell: FAIL {e}");
            1
        }
    }
}
