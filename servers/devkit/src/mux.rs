//! A device server's main loop over many clients and one IRQ.
//!
//! [`Mux`] holds the provider end of every client of a service and,
//! optionally, the server's [`IrqLine`]. The server's loop is:
//!
//! 1. [`Mux::take_batch`]: every request already in the rings (with
//!    batching off: one request), so the device work of a whole batch can
//!    be done with as few device accesses as it allows;
//! 2. the device work, answering with [`Mux::reply`];
//! 3. [`Mux::wait`]: publish the answers and sleep until a ring has a
//!    request, the IRQ fired, or a full completion ring has room again.
//!
//! Hang-ups ([`OP_HANGUP`]) end a client: it is reported once in the batch
//! and never polled again. A client whose ring breaks is dropped the same
//! way (and logged), and so is one that leaves more than
//! [`MAX_BACKLOG`] answers unread: its answers wait in this server's heap,
//! and one client must not be able to exhaust it for the others.
//!
//! A client that ended (the kernel's status page says so) is first served
//! what it left in its ring, its last words, and then handed to the server
//! as a hang-up, in that order, so that no request of a dead instance comes
//! after its hang-up (an apic route after the masking of its lines). One
//! that ended for good is then forgotten; one that was restarted is served
//! again on the channel's new generation, under the same index.
//!
//! Context: a server's only thread, inside the executor.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::future::poll_fn;
use core::task::Poll;

use userland::{
    Batching, Channel, ChannelError, Completion, Descriptor, OP_HANGUP, PeerChange, Provider,
};
use userland::{println, pvchannel::RingError, sys};

use crate::irq::IrqLine;

/// Why [`Mux::wait`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A request is waiting (take it with [`Mux::take_batch`]).
    Request,
    /// The IRQ line fired (acknowledge it when handled).
    Irq,
    /// A client's completion ring has room for the answers held back.
    Room,
    /// No client is left and there is no IRQ to wait for.
    Idle,
}

/// Answers one client may leave unread beyond its completion ring before
/// it loses its channel.
pub const MAX_BACKLOG: usize = 1024;

struct ClientSlot {
    provider: Provider,
    alive: bool,
    /// The client ended (`Dead`) or was restarted (`Restarted`): what is
    /// left in its ring is served, then it gets its hang-up.
    ending: PeerChange,
    /// Answers that did not fit the completion ring yet.
    backlog: VecDeque<Completion>,
}

/// The clients of one service, and the server's IRQ.
pub struct Mux {
    clients: Vec<ClientSlot>,
    irq: Option<IrqLine>,
    /// Requests taken while waiting, handed out first by `take_batch`.
    stash: VecDeque<(usize, Descriptor)>,
    /// Hang-ups that stand for a client dropped for misbehaviour, handed
    /// out before anything else (its other requests are discarded).
    ended: VecDeque<usize>,
    batching: Batching,
    batch_limit: usize,
}

impl Mux {
    /// Attach every client of `service` (as the manifest lists them).
    pub fn new(service: &str) -> Result<Self, ChannelError> {
        let clients = Channel::clients_of(service)?
            .into_iter()
            .map(|provider| ClientSlot {
                provider,
                alive: true,
                ending: PeerChange::None,
                backlog: VecDeque::new(),
            })
            .collect();
        Ok(Self {
            clients,
            irq: None,
            stash: VecDeque::new(),
            ended: VecDeque::new(),
            batching: sys::batching(),
            batch_limit: 1024,
        })
    }

    /// Wait on `irq` too.
    pub fn with_irq(mut self, irq: IrqLine) -> Self {
        self.irq = Some(irq);
        self
    }

    /// The batching policy chosen at boot.
    pub fn batching(&self) -> Batching {
        self.batching
    }

    /// The IRQ line, if any.
    pub fn irq(&mut self) -> Option<&mut IrqLine> {
        self.irq.as_mut()
    }

    /// Clients attached at start.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Clients that have not hung up.
    pub fn alive(&self) -> usize {
        self.clients.iter().filter(|c| c.alive).count()
    }

    /// The name of client `i`.
    pub fn peer(&self, i: usize) -> &str {
        self.clients.get(i).map(|c| c.provider.peer()).unwrap_or("")
    }

    /// The IRQ lines the manifest grants client `i` (bit `n` = line `n`;
    /// 0 for no such client): what a provider lets that client touch.
    pub fn peer_irqs(&self, i: usize) -> u32 {
        self.clients
            .get(i)
            .and_then(|c| c.provider.channel())
            .map_or(0, |ch| ch.info().peer_irqs)
    }

    /// End client `i` for `why`, once: logged, its backlog freed, and a
    /// hang-up handed to the server in the next batch as if the client had
    /// sent it, so that the server forgets the client's work too (a timer
    /// would otherwise go on ticking its series).
    fn drop_client(&mut self, i: usize, why: impl core::fmt::Display) {
        if let Some(c) = self.clients.get_mut(i)
            && c.alive
        {
            println!("client {} dropped: {why}", c.provider.peer());
            c.alive = false;
            c.ending = PeerChange::None;
            c.backlog.clear();
            self.stash.retain(|&(j, _)| j != i);
            self.ended.push_back(i);
        }
    }

    /// Look at every live client's status: one that ended or was restarted
    /// starts ending (its ring is drained first: `finish`).
    fn check_peers(&mut self) {
        for c in self.clients.iter_mut() {
            if c.alive && c.ending == PeerChange::None {
                c.ending = c.provider.peer_change();
            } else if !c.alive && c.provider.peer_change() == PeerChange::Restarted {
                // A client that hung up and was restarted since: served
                // again (its hang-up was handed out already).
                if c.provider.reconnect().is_ok() {
                    c.alive = true;
                    c.backlog.clear();
                }
            }
        }
    }

    /// Client `i` is ending and its ring is empty: hand out its hang-up,
    /// then forget it or, restarted, serve the new instance.
    fn finish(&mut self, i: usize, out: &mut Vec<(usize, Descriptor)>) {
        let c = &mut self.clients[i];
        let why = core::mem::replace(&mut c.ending, PeerChange::None);
        c.backlog.clear();
        out.push((i, Descriptor::new(OP_HANGUP, 0)));
        c.alive = false;
        if why == PeerChange::Restarted {
            match c.provider.reconnect() {
                // Not logged: the kernel reports the restart.
                Ok(()) => c.alive = true,
                Err(ChannelError::PeerDead) => {}
                Err(e) => println!("client {} lost: {e}", c.provider.peer()),
            }
        }
    }

    fn accept(&mut self, i: usize, d: Descriptor, out: &mut Vec<(usize, Descriptor)>) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        if !c.alive {
            return;
        }
        if d.opcode() == OP_HANGUP {
            c.alive = false;
            c.ending = PeerChange::None;
            c.provider.flush();
        }
        out.push((i, d));
    }

    /// Append the requests that are there to `out` without waiting: all of
    /// them (up to a bound) with batching on, at most one with it off.
    /// Hang-ups are included (and end their client). Returns how many.
    pub fn take_batch(&mut self, out: &mut Vec<(usize, Descriptor)>) -> usize {
        let start = out.len();
        let limit = match self.batching {
            Batching::On => self.batch_limit,
            Batching::Off => 1,
        };
        self.check_peers();
        // Hang-ups of dropped clients go out whatever the limit: until the
        // server has seen them it may still answer their old work.
        while let Some(i) = self.ended.pop_front() {
            out.push((i, Descriptor::new(OP_HANGUP, 0)));
        }
        while out.len() - start < limit {
            let Some((i, d)) = self.stash.pop_front() else {
                break;
            };
            self.accept(i, d, out);
        }
        let n = self.clients.len();
        let mut progress = true;
        while progress && out.len() - start < limit {
            progress = false;
            for i in 0..n {
                if out.len() - start >= limit {
                    break;
                }
                if !self.clients[i].alive {
                    continue;
                }
                match self.clients[i].provider.receiver().try_recv() {
                    Ok(d) => {
                        self.accept(i, d, out);
                        progress = true;
                    }
                    Err(RingError::Empty) if self.clients[i].ending != PeerChange::None => {
                        self.finish(i, out);
                        progress = true;
                    }
                    Err(RingError::Empty) => {}
                    Err(e) => self.drop_client(i, e),
                }
            }
        }
        out.len() - start
    }

    /// Answer client `i` (queued if its completion ring is full).
    pub fn reply(&mut self, i: usize, completion: Completion) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        if !c.alive {
            return;
        }
        let sent = if c.backlog.is_empty() {
            c.provider.sender().try_send(completion)
        } else {
            Err(RingError::Full)
        };
        match sent {
            Ok(()) => {}
            Err(RingError::Full) if c.backlog.len() < MAX_BACKLOG => {
                c.backlog.push_back(completion)
            }
            Err(RingError::Full) => self.drop_client(
                i,
                format_args!("it left more than {MAX_BACKLOG} answers unread"),
            ),
            Err(e) => self.drop_client(i, e),
        }
    }

    /// Publish every answer (and move held-back ones into rings with room).
    pub fn flush(&mut self) {
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if !c.alive {
                continue;
            }
            let mut broken = None;
            while let Some(&next) = c.backlog.front() {
                match c.provider.sender().try_send(next) {
                    Ok(()) => {
                        c.backlog.pop_front();
                    }
                    Err(RingError::Full) => break,
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                }
            }
            c.provider.flush();
            if let Some(e) = broken {
                self.drop_client(i, e);
            }
        }
    }

    /// Publish the answers, then sleep until there is something to do.
    pub async fn wait(&mut self) -> Event {
        self.flush();
        if !self.stash.is_empty() || !self.ended.is_empty() {
            return Event::Request;
        }
        poll_fn(|cx| {
            self.check_peers();
            let ending = self
                .clients
                .iter()
                .any(|c| c.alive && c.ending != PeerChange::None);
            if !self.ended.is_empty() || ending {
                return Poll::Ready(Event::Request);
            }
            if let Some(irq) = self.irq.as_mut()
                && irq.poll_fired(cx).is_ready()
            {
                return Poll::Ready(Event::Irq);
            }
            let mut any = self.irq.is_some();
            for i in 0..self.clients.len() {
                let c = &mut self.clients[i];
                if !c.alive {
                    continue;
                }
                any = true;
                if !c.backlog.is_empty()
                    && let Poll::Ready(Ok(())) = c.provider.sender().poll_ready(cx)
                {
                    return Poll::Ready(Event::Room);
                }
                match c.provider.receiver().poll_recv(cx) {
                    Poll::Ready(Ok(d)) => {
                        self.stash.push_back((i, d));
                        return Poll::Ready(Event::Request);
                    }
                    Poll::Ready(Err(e)) => {
                        self.drop_client(i, e);
                        return Poll::Ready(Event::Request);
                    }
                    Poll::Pending => {}
                }
            }
            if any {
                Poll::Pending
            } else {
                Poll::Ready(Event::Idle)
            }
        })
        .await
    }
}

/// An error completion for an unknown opcode.
pub fn unknown(d: &Descriptor) -> Completion {
    Completion::err(d.cookie(), userland::abi::Error::InvalidArgument)
}
