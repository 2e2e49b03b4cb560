//! Channel handles: the rings the manifest granted, as async clients and
//! providers.
//!
//! Context: a server's only thread, inside the executor.
//!
//! The kernel maps each channel's region (already formatted as a
//! pvchannel duplex: requests client to server, completions back) into both
//! servers and gives each side one notification bit per channel, raised by
//! the peer's `notify(handle)`. A side's two halves (for a client: the
//! request [`Sender`] and the completion [`Receiver`]) share that bit: each
//! holds its own [`Lane`] on it, so a doorbell wakes both and each
//! re-checks its ring.
//!
//! The only `unsafe` here is attaching the shared region; [`Channel`]
//! makes sure each region is attached at most once (and again only after
//! the kernel mapped a new generation of it in its place).
//!
//! # When the peer ends
//!
//! The kernel's status page says, per handle, the channel's generation and
//! whether the peer is alive, and the kernel raises the channel's bit when
//! either changes. A [`Client`] looks whenever it would otherwise wait (and
//! when it publishes). If the peer was restarted, it reconnects on the new
//! generation at once: completions the old peer published are still
//! delivered; each request that wants an answer and got none gets
//! [`ChannelError::PeerRestarted`] (it may or may not have been carried
//! out: the caller decides whether to ask again, so a request that crashes
//! its server is not replayed into every new instance); requests that
//! want no answer (a console write) and that the old peer had not released
//! are sent again to the new one, so output is not lost (a write the old
//! instance carried out just before it died may appear twice). If the peer stays down, every
//! wait ends in [`ChannelError::PeerDead`]. A [`Provider`] learns the same
//! through [`Provider::peer_change`] and reconnects with
//! [`Provider::reconnect`].

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::future::poll_fn;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll, Waker};

use abi::ChannelInfo;
use pvchannel::spin::SpinBudget;
use pvchannel::{
    Batching, ClientEnds, Completion, Descriptor, Doorbell, LayoutError, Receiver, RingError,
    Sender, ServerEnds,
};

use crate::notify::{Lane, NOTIFICATIONS};
use crate::sys;

/// Opcode reserved by the runtime: "this client is done". A [`Provider`]'s
/// [`serve`](Provider::serve) loop ends when it receives one; servers must
/// not use it for anything else.
pub const OP_HANGUP: u32 = u32::MAX;

/// Why a channel operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// A system call failed.
    Sys(abi::Error),
    /// The shared region does not hold a valid duplex channel.
    Layout(LayoutError),
    /// The peer corrupted the ring (or it was used after an error).
    Ring(RingError),
    /// No channel of this server matches.
    NotFound,
    /// The channel is already attached in this server.
    InUse,
    /// The notification bit has no free lane (or is out of range).
    NoLane,
    /// The peer ended and stays down.
    PeerDead,
    /// The peer was restarted before it answered a request (which it may
    /// or may not have carried out, or even seen). The channel is already
    /// reconnected: the next request goes to the new instance.
    PeerRestarted,
    /// A completion arrived for a request that was not made.
    Cookie {
        /// The cookie of the request being waited for.
        expected: u64,
        /// The cookie that came back.
        got: u64,
    },
}

impl From<abi::Error> for ChannelError {
    fn from(e: abi::Error) -> Self {
        match e {
            abi::Error::PeerDead => Self::PeerDead,
            abi::Error::PeerRestarted => Self::PeerRestarted,
            e => Self::Sys(e),
        }
    }
}

/// What became of a channel's peer since this end attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerChange {
    /// Nothing: the same instance, alive.
    None,
    /// It was restarted: the channel has a new generation to reconnect to.
    Restarted,
    /// It ended and stays down.
    Dead,
}

/// Read the status page's entry for `handle` against the generation this
/// end attached.
fn peer_change(handle: u32, attached: u32) -> PeerChange {
    let status = sys::channel_status(handle);
    if status.generation != attached {
        // A peer restarted and then gone for good still has a new
        // generation; the reconnect says `PeerDead`.
        PeerChange::Restarted
    } else if status.peer == abi::PEER_DEAD {
        PeerChange::Dead
    } else {
        PeerChange::None
    }
}

impl From<LayoutError> for ChannelError {
    fn from(e: LayoutError) -> Self {
        Self::Layout(e)
    }
}

impl From<RingError> for ChannelError {
    fn from(e: RingError) -> Self {
        Self::Ring(e)
    }
}

impl core::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Sys(e) => write!(f, "system call failed: {e}"),
            Self::Layout(e) => write!(f, "{e}"),
            Self::Ring(e) => write!(f, "{e}"),
            Self::NotFound => f.write_str("no such channel"),
            Self::InUse => f.write_str("channel already attached"),
            Self::NoLane => f.write_str("no free waiter lane on the notification bit"),
            Self::PeerDead => f.write_str("the server at the other end is down"),
            Self::PeerRestarted => {
                f.write_str("the server at the other end restarted before it answered")
            }
            Self::Cookie { expected, got } => {
                write!(f, "completion for cookie {got}, expected {expected}")
            }
        }
    }
}

/// The doorbell of one half of a channel: rings the peer with
/// `notify(handle)`, waits through a [`Lane`] on the channel's bit.
#[derive(Debug)]
pub struct ChannelBell {
    handle: u32,
    lane: Lane<'static>,
    /// The peer runs on another CPU: ring at once rather than with the
    /// next `wait`, since it can act on the doorbell while this end goes
    /// on (and this end may poll for its answer instead of sleeping).
    peer_elsewhere: bool,
}

impl ChannelBell {
    /// A bell for channel `handle` whose peer raises `bit`.
    pub fn new(handle: u32, bit: u32) -> Result<Self, ChannelError> {
        let lane = NOTIFICATIONS.lane(bit).ok_or(ChannelError::NoLane)?;
        Ok(Self {
            handle,
            lane,
            peer_elsewhere: false,
        })
    }

    /// A bell for `channel`, which knows where its peer runs.
    fn for_channel(channel: &Channel, bit: u32) -> Result<Self, ChannelError> {
        let mut bell = Self::new(channel.handle, bit)?;
        bell.peer_elsewhere = channel.peer_elsewhere();
        Ok(bell)
    }
}

impl Doorbell for ChannelBell {
    fn ring(&self) {
        if self.peer_elsewhere {
            // Nobody to report a failure to: the handle is known good.
            let _ = sys::notify(self.handle);
        } else {
            sys::owe_doorbell(self.handle);
        }
    }

    fn register(&self, waker: &Waker) {
        self.lane.register(waker);
    }
}

/// Handles already attached (at most once each: the ring ends are
/// single-producer, single-consumer).
static ATTACHED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

fn claim(handle: u32) -> Result<(), ChannelError> {
    let word = ATTACHED
        .get(handle as usize / 64)
        .ok_or(ChannelError::InUse)?;
    let bit = 1u64 << (handle % 64);
    if word.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
        return Err(ChannelError::InUse);
    }
    Ok(())
}

/// One channel the manifest granted this server, not yet attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    handle: u32,
    info: ChannelInfo,
}

/// The longest an end polls before it sleeps, where its peer runs on
/// another CPU, in microseconds (`pvchannel::spin`; an idle peer costs an
/// eighth of it a sleep). Long enough to outlast the peer's own kernel
/// entry where PVM interprets the kernel (about 1.4 ms here): with 100 us
/// the two ends of a stream took turns sleeping, one kernel entry per
/// 1,000 messages; with 2 ms, one per several million (docs/BENCHMARKS.md).
pub const SPIN_MAX_US: u64 = 2000;

impl Channel {
    /// Describe channel `handle`.
    pub fn from_handle(handle: u32) -> Result<Self, ChannelError> {
        Ok(Self {
            handle,
            info: sys::channel_info(handle)?,
        })
    }

    /// Every channel of this server, in handle order (handles 0.. until the
    /// kernel says `BadHandle`).
    pub fn all() -> impl Iterator<Item = Channel> {
        (0u32..)
            .map_while(|h| Channel::from_handle(h).ok())
            .take(ATTACHED.len() * 64)
    }

    /// The client channel to `service` (the first one, if the manifest
    /// lists it twice), attached.
    pub fn open(service: &str) -> Result<Client, ChannelError> {
        Self::all()
            .find(|c| !c.is_provider() && c.service() == service)
            .ok_or(ChannelError::NotFound)?
            .client()
    }

    /// The provider ends of every client of `service` that attached, in
    /// handle order (empty when no client uses it). A client whose ring is
    /// corrupt already (a hostile client can write its shared memory before
    /// the provider looks) is left out with a line that names it: it costs
    /// that client its channel, not the other clients their service.
    pub fn clients_of(service: &str) -> Result<Vec<Provider>, ChannelError> {
        let mut providers = Vec::new();
        for channel in Self::all().filter(|c| c.is_provider() && c.service() == service) {
            match channel.provider() {
                Ok(provider) => providers.push(provider),
                Err(e) => crate::println!(
                    "{service}: client {} dropped, its ring is unusable: {e}",
                    channel.peer()
                ),
            }
        }
        Ok(providers)
    }

    /// The handle.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// What `channel_info` said.
    pub fn info(&self) -> &ChannelInfo {
        &self.info
    }

    /// How long an end of this channel polls before it sleeps: up to
    /// [`SPIN_MAX_US`] when the peer runs on another CPU (so that steady
    /// traffic needs no doorbell and no `wait`), never when it shares
    /// this one (it cannot make progress while this end spins).
    pub fn spin_budget(&self) -> SpinBudget {
        match sys::boot_info_cached() {
            Some(boot) if self.peer_elsewhere() => {
                SpinBudget::up_to(boot.tsc_hz / 1_000_000 * SPIN_MAX_US, sys::rdtsc)
            }
            _ => SpinBudget::off(),
        }
    }

    /// Whether the peer is a server that runs on another CPU.
    pub fn peer_elsewhere(&self) -> bool {
        let own = sys::boot_info_cached().map(|b| b.cpu);
        self.info.peer_cpu != abi::NO_CPU && own.is_some_and(|own| own != self.info.peer_cpu)
    }

    /// The service name.
    pub fn service(&self) -> &str {
        abi::name_str(&self.info.service)
    }

    /// The peer server's name.
    pub fn peer(&self) -> &str {
        abi::name_str(&self.info.peer)
    }

    /// Whether this server provides the service (it is the server side).
    pub fn is_provider(&self) -> bool {
        self.info.is_provider != 0
    }

    /// The notification bit the peer's doorbell raises.
    pub fn notify_bit(&self) -> u32 {
        self.info.notify_bit
    }

    /// The generation of the ring this end has mapped.
    pub fn generation(&self) -> u32 {
        self.info.generation
    }

    /// What became of the peer since this end attached.
    pub fn peer_change(&self) -> PeerChange {
        peer_change(self.handle, self.info.generation)
    }

    /// Map the channel's current generation (`channel_reconnect`) and
    /// describe it; the caller must drop every ring end of the old one
    /// before using the new ones.
    fn remap(&mut self) -> Result<pvchannel::Duplex<Descriptor, Completion>, ChannelError> {
        self.info = sys::channel_reconnect(self.handle)?;
        self.map_duplex()
    }

    fn attach(&self) -> Result<pvchannel::Duplex<Descriptor, Completion>, ChannelError> {
        claim(self.handle)?;
        self.map_duplex()
    }

    /// The region `info` describes, as a duplex. Only for a handle claimed
    /// by this program (`attach`), or remapped by the kernel since
    /// (`reconnect`).
    fn map_duplex(&self) -> Result<pvchannel::Duplex<Descriptor, Completion>, ChannelError> {
        let len = usize::try_from(self.info.len).map_err(|_| {
            ChannelError::Layout(LayoutError::TooSmall {
                needed: 0,
                len: usize::MAX,
            })
        })?;
        // SAFETY: the kernel mapped `len` bytes read-write at `base` for
        // this channel (that is what `channel_info` reports) for the life of
        // the server, and `claim` makes this the only attachment of the
        // region in this program (a reconnect drops the old ring ends
        // before using the new mapping). The peer may write anything
        // there; pvchannel validates all it reads.
        let duplex = unsafe { pvchannel::attach_duplex(self.info.base as *mut u8, len)? };
        Ok(duplex)
    }

    fn bells(&self) -> Result<(ChannelBell, ChannelBell), ChannelError> {
        Ok((
            ChannelBell::for_channel(self, self.info.notify_bit)?,
            ChannelBell::for_channel(self, self.info.notify_bit)?,
        ))
    }

    /// Attach as the client: send requests, receive completions. Uses the
    /// batching policy chosen at boot.
    pub fn client(self) -> Result<Client, ChannelError> {
        let ends = self.attach()?.client()?;
        let (tx_bell, rx_bell) = self.bells()?;
        Ok(Client::new(ends, tx_bell, rx_bell, sys::batching()).with_channel(self))
    }

    /// Attach as the provider: receive requests, send completions. Uses the
    /// batching policy chosen at boot.
    pub fn provider(self) -> Result<Provider, ChannelError> {
        let ends = self.attach()?.server()?;
        let (rx_bell, tx_bell) = self.bells()?;
        Ok(Provider::new(ends, rx_bell, tx_bell, sys::batching()).with_channel(self))
    }
}

/// The client side of a channel: requests out, completions back.
///
/// [`call`](Self::call) is one request and its answer. For pipelining,
/// [`send`](Self::send) many requests (flagged `FLAG_NO_COMPLETION` or
/// not), [`flush`](Self::flush), and [`recv`](Self::recv) the completions.
/// Every request that wants a completion gets exactly one outcome from
/// `recv`: its completion, or an error if the peer restarted or died
/// before it answered (see the module's "When the peer ends").
pub struct Client<D: Doorbell = ChannelBell> {
    requests: Sender<Descriptor, D>,
    completions: Receiver<Completion, D>,
    next_cookie: u64,
    channel: Option<Channel>,
    /// Requests sent that want a completion and have had no outcome yet.
    /// (`PeerRestarted` is one: they are never sent again.)
    outstanding: u64,
    /// Completions the previous instance of the peer published before it
    /// ended, handed out before anything else.
    early: VecDeque<Completion>,
    /// Outstanding requests the previous instance never answered:
    /// each is one `PeerRestarted` from `recv`.
    lost: u64,
    /// A reconnect that failed after the kernel had mapped the new ring:
    /// the channel is unusable, and every operation says why.
    broken: Option<ChannelError>,
}

impl<D: Doorbell> Client<D> {
    /// A client over ring ends and a doorbell per half (host tests build
    /// one over heap regions; servers use [`Channel::open`]).
    pub fn new(
        ends: ClientEnds<Descriptor, Completion>,
        tx_bell: D,
        rx_bell: D,
        batching: Batching,
    ) -> Self {
        Self {
            requests: Sender::new(ends.0, tx_bell, batching),
            completions: Receiver::new(ends.1, rx_bell, batching),
            next_cookie: 1,
            channel: None,
            outstanding: 0,
            early: VecDeque::new(),
            lost: 0,
            broken: None,
        }
    }

    fn with_channel(mut self, channel: Channel) -> Self {
        self.requests.set_spin(channel.spin_budget());
        self.completions.set_spin(channel.spin_budget());
        self.channel = Some(channel);
        self
    }

    /// The channel, when opened through [`Channel`].
    pub fn channel(&self) -> Option<&Channel> {
        self.channel.as_ref()
    }

    /// Look at the peer: reconnect if it was restarted (`Ok(true)`), fail
    /// with `PeerDead` if it is down for good.
    fn sync_peer(&mut self) -> Result<bool, ChannelError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        let Some(channel) = &self.channel else {
            return Ok(false);
        };
        match channel.peer_change() {
            PeerChange::None => Ok(false),
            PeerChange::Dead => Err(ChannelError::PeerDead),
            PeerChange::Restarted => self.reconnect().map(|()| true),
        }
    }

    /// Move to the channel's new generation: keep what the old peer
    /// answered, send again the unreleased requests that want no answer,
    /// count the answers that will never come.
    fn reconnect(&mut self) -> Result<(), ChannelError> {
        let Some(channel) = self.channel.as_mut() else {
            return Ok(());
        };
        while let Ok(completion) = self.completions.try_recv() {
            self.early.push_back(completion);
        }
        let producer = self.requests.producer();
        producer.publish();
        let mut replay = alloc::vec![Descriptor::default(); producer.capacity() as usize];
        let n = producer.unconsumed(&mut replay).unwrap_or(0);
        replay.truncate(n);
        // From here the old ring's memory may be gone: its ends are
        // replaced before anything touches them again, or, if that cannot
        // be done, never used again.
        let ends = channel.remap().and_then(|d| Ok(d.client()?));
        let (requests, completions) = match ends {
            Ok(ends) => ends,
            Err(ChannelError::PeerDead) => return Err(ChannelError::PeerDead),
            Err(e) => {
                self.broken = Some(e);
                return Err(e);
            }
        };
        self.requests.replace_ring(requests);
        self.completions.replace_ring(completions);
        for request in replay.into_iter().filter(|r| !r.wants_completion()) {
            if self.requests.producer().stage(request).is_err() {
                break;
            }
        }
        self.requests.flush();
        self.lost = self.outstanding.saturating_sub(self.early.len() as u64);
        Ok(())
    }

    /// Ready when a request slot is free; reconnects on the way if the
    /// peer was restarted.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        loop {
            match self.requests.poll_ready(cx) {
                Poll::Ready(result) => return Poll::Ready(result.map_err(Into::into)),
                Poll::Pending => match self.sync_peer() {
                    Ok(false) => return Poll::Pending,
                    Ok(true) => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                },
            }
        }
    }

    /// The next outcome of an outstanding request.
    fn poll_outcome(&mut self, cx: &mut Context<'_>) -> Poll<Result<Completion, ChannelError>> {
        loop {
            if let Some(completion) = self.early.pop_front() {
                self.outstanding = self.outstanding.saturating_sub(1);
                return Poll::Ready(Ok(completion));
            }
            if self.lost > 0 {
                self.lost -= 1;
                self.outstanding = self.outstanding.saturating_sub(1);
                return Poll::Ready(Err(ChannelError::PeerRestarted));
            }
            match self.completions.poll_recv(cx) {
                Poll::Ready(Ok(completion)) => {
                    self.outstanding = self.outstanding.saturating_sub(1);
                    return Poll::Ready(Ok(completion));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => match self.sync_peer() {
                    Ok(false) => return Poll::Pending,
                    Ok(true) => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                },
            }
        }
    }

    /// Send `request` with a fresh cookie, publish it, and wait for its
    /// completion. Completions of earlier pipelined requests must have been
    /// received first (a completion with another cookie is an error).
    pub async fn call(&mut self, request: Descriptor) -> Result<Completion, ChannelError> {
        let cookie = self.next_cookie;
        self.next_cookie = self.next_cookie.wrapping_add(1);
        let request = Descriptor::new(request.opcode(), cookie)
            .with_flags(request.flags() & !Descriptor::FLAG_NO_COMPLETION)
            .with_args(request.args());
        self.send(request).await?;
        self.flush();
        let completion = poll_fn(|cx| self.poll_outcome(cx)).await?;
        if completion.cookie() != cookie {
            return Err(ChannelError::Cookie {
                expected: cookie,
                got: completion.cookie(),
            });
        }
        Ok(completion)
    }

    /// Queue `request` as it is (cookie and flags included), waiting for
    /// space; with batching on it is published with its batch (or by
    /// [`flush`](Self::flush)).
    pub async fn send(&mut self, request: Descriptor) -> Result<(), ChannelError> {
        self.sync_peer()?;
        loop {
            poll_fn(|cx| self.poll_room(cx)).await?;
            match self.requests.try_send(request) {
                Err(RingError::Full) => continue,
                Err(e) => return Err(e.into()),
                Ok(()) => {
                    self.outstanding += u64::from(request.wants_completion());
                    return Ok(());
                }
            }
        }
    }

    /// Publish every queued request (and ring if the server sleeps). If the
    /// peer was restarted meanwhile, they go to the new instance.
    pub fn flush(&mut self) {
        // A peer that is down is reported by the next wait.
        let _ = self.sync_peer();
        self.requests.flush();
    }

    /// Wait for the next completion (or the error that stands for it).
    pub async fn recv(&mut self) -> Result<Completion, ChannelError> {
        self.flush();
        poll_fn(|cx| self.poll_outcome(cx)).await
    }

    /// Tell the server this client is done ([`OP_HANGUP`]) and publish.
    pub async fn close(mut self) -> Result<(), ChannelError> {
        let bye = Descriptor::new(OP_HANGUP, 0).with_flags(Descriptor::FLAG_NO_COMPLETION);
        self.send(bye).await?;
        self.flush();
        Ok(())
    }

    /// Doorbells this client rang (both halves).
    pub fn doorbells(&self) -> u64 {
        self.requests.doorbells() + self.completions.doorbells()
    }

    /// The request half.
    pub fn sender(&mut self) -> &mut Sender<Descriptor, D> {
        &mut self.requests
    }

    /// The completion half.
    pub fn receiver(&mut self) -> &mut Receiver<Completion, D> {
        &mut self.completions
    }
}

/// The provider (server) side of a channel: requests in, completions out.
pub struct Provider<D: Doorbell = ChannelBell> {
    requests: Receiver<Descriptor, D>,
    completions: Sender<Completion, D>,
    channel: Option<Channel>,
}

impl<D: Doorbell> Provider<D> {
    /// A provider over ring ends and a doorbell per half.
    pub fn new(
        ends: ServerEnds<Descriptor, Completion>,
        rx_bell: D,
        tx_bell: D,
        batching: Batching,
    ) -> Self {
        Self {
            requests: Receiver::new(ends.0, rx_bell, batching),
            completions: Sender::new(ends.1, tx_bell, batching),
            channel: None,
        }
    }

    fn with_channel(mut self, channel: Channel) -> Self {
        self.requests.set_spin(channel.spin_budget());
        self.completions.set_spin(channel.spin_budget());
        self.channel = Some(channel);
        self
    }

    /// The channel, when attached through [`Channel`].
    pub fn channel(&self) -> Option<&Channel> {
        self.channel.as_ref()
    }

    /// The client's name (empty for channels not made by [`Channel`]).
    pub fn peer(&self) -> &str {
        self.channel.as_ref().map(Channel::peer).unwrap_or("")
    }

    /// What became of the client since this end attached
    /// ([`PeerChange::None`] for channels not made by [`Channel`]).
    pub fn peer_change(&self) -> PeerChange {
        self.channel
            .as_ref()
            .map_or(PeerChange::None, Channel::peer_change)
    }

    /// Attach the channel's new generation after the client was
    /// restarted: a fresh ring, nothing of the old client's carried over.
    pub fn reconnect(&mut self) -> Result<(), ChannelError> {
        let Some(channel) = self.channel.as_mut() else {
            return Ok(());
        };
        let (requests, completions) = channel.remap()?.server()?;
        self.requests.replace_ring(requests);
        self.completions.replace_ring(completions);
        Ok(())
    }

    /// Wait for the next request. Publishes pending completions first, so
    /// a client waiting for them is never left behind. A client that
    /// ended for good reads as a hang-up ([`OP_HANGUP`]); one that was
    /// restarted is reconnected and served afresh.
    pub async fn recv(&mut self) -> Result<Descriptor, ChannelError> {
        match self.requests.try_recv() {
            Err(RingError::Empty) => {}
            other => return Ok(other?),
        }
        self.completions.flush();
        poll_fn(|cx| {
            loop {
                match self.requests.poll_recv(cx) {
                    Poll::Ready(result) => return Poll::Ready(result.map_err(Into::into)),
                    Poll::Pending => match self.peer_change() {
                        PeerChange::None => return Poll::Pending,
                        PeerChange::Dead => {
                            return Poll::Ready(Ok(Descriptor::new(OP_HANGUP, 0)));
                        }
                        PeerChange::Restarted => match self.reconnect() {
                            Ok(()) => {}
                            Err(ChannelError::PeerDead) => {
                                return Poll::Ready(Ok(Descriptor::new(OP_HANGUP, 0)));
                            }
                            Err(e) => return Poll::Ready(Err(e)),
                        },
                    },
                }
            }
        })
        .await
    }

    /// The next request if one is there, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<Descriptor>, ChannelError> {
        match self.requests.try_recv() {
            Ok(d) => Ok(Some(d)),
            Err(RingError::Empty) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Queue a completion, waiting for space; published with its batch or
    /// by [`flush`](Self::flush) (and before [`recv`](Self::recv) sleeps).
    /// A client that ends while its completion ring is full cannot keep
    /// this waiting: if it was restarted, the channel is reconnected and
    /// the answer (meant for the old instance) dropped; if it is gone,
    /// `PeerDead`.
    pub async fn reply(&mut self, completion: Completion) -> Result<(), ChannelError> {
        loop {
            let room = poll_fn(|cx| match self.completions.poll_ready(cx) {
                Poll::Ready(result) => Poll::Ready(result.map_err(ChannelError::from)),
                Poll::Pending => match self.peer_change() {
                    PeerChange::None => Poll::Pending,
                    PeerChange::Dead => Poll::Ready(Err(ChannelError::PeerDead)),
                    PeerChange::Restarted => Poll::Ready(Err(ChannelError::PeerRestarted)),
                },
            })
            .await;
            match room {
                Ok(()) => match self.completions.try_send(completion) {
                    Err(RingError::Full) => continue,
                    sent => return Ok(sent?),
                },
                Err(ChannelError::PeerRestarted) => return self.reconnect(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Publish queued completions (and ring if the client sleeps).
    pub fn flush(&mut self) {
        self.completions.flush();
    }

    /// Answer requests with `handler` until the client hangs up
    /// ([`OP_HANGUP`]); returns how many requests were handled. A whole
    /// batch of requests is handled before the completions are published,
    /// so a busy client costs one doorbell per batch, not per request.
    pub async fn serve(
        &mut self,
        mut handler: impl FnMut(Descriptor) -> Completion,
    ) -> Result<u64, ChannelError> {
        let mut handled = 0;
        loop {
            let request = self.recv().await?;
            if request.opcode() == OP_HANGUP {
                self.flush();
                return Ok(handled);
            }
            handled += 1;
            let completion = handler(request);
            if request.wants_completion() {
                self.reply(completion).await?;
            }
        }
    }

    /// Doorbells this provider rang (both halves).
    pub fn doorbells(&self) -> u64 {
        self.requests.doorbells() + self.completions.doorbells()
    }

    /// The request half.
    pub fn receiver(&mut self) -> &mut Receiver<Descriptor, D> {
        &mut self.requests
    }

    /// The completion half.
    pub fn sender(&mut self) -> &mut Sender<Completion, D> {
        &mut self.completions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Executor;
    use crate::notify::Notifications;
    use alloc::boxed::Box;
    use alloc::sync::Arc;
    use core::sync::atomic::AtomicU64;
    use pvchannel::owned;
    use pvchannel::{PairDoorbell, WakerPair};
    use std::sync::Mutex;

    type Bell = PairDoorbell<Arc<WakerPair>>;

    /// A client and a provider over one heap region; `rings` counts the
    /// doorbells each way. Requests use pair 0 (client side 0), completions
    /// pair 1 (provider side 0).
    fn pair(batching: Batching, cap: u32) -> (Client<Bell>, Provider<Bell>, [Arc<WakerPair>; 2]) {
        let (client_ends, server_ends) = owned::duplex::<Descriptor, Completion>(cap, cap).unwrap();
        let req = Arc::new(WakerPair::new());
        let comp = Arc::new(WakerPair::new());
        let client = Client::new(
            client_ends,
            PairDoorbell::new(req.clone(), 0),
            PairDoorbell::new(comp.clone(), 1),
            batching,
        );
        let provider = Provider::new(
            server_ends,
            PairDoorbell::new(req.clone(), 1),
            PairDoorbell::new(comp.clone(), 0),
            batching,
        );
        (client, provider, [req, comp])
    }

    fn run<F: core::future::Future>(ex: &mut Executor<'_>, f: F) -> F::Output {
        ex.block_on(f, |mask| {
            panic!("in-process bells never wait on bits (mask {mask:#x})")
        })
        .expect("no stall")
    }

    fn leaked() -> &'static Notifications {
        Box::leak(Box::new(Notifications::new()))
    }

    fn echo_handler(d: Descriptor) -> Completion {
        Completion::ok(d.cookie(), d.arg(0)).with_aux(u64::from(d.opcode()))
    }

    #[test]
    fn call_gets_its_answer_both_batching_modes() {
        for batching in [Batching::On, Batching::Off] {
            let (mut client, mut provider, _) = pair(batching, 8);
            let mut ex = Executor::new(leaked());
            let served = Arc::new(AtomicU64::new(u64::MAX));
            let s = served.clone();
            ex.spawn(async move {
                let n = provider.serve(echo_handler).await.unwrap();
                s.store(n, Ordering::SeqCst);
            });
            let answers = run(&mut ex, async move {
                let mut out = Vec::new();
                for v in [1u64, 42, 0xdead_beef, u64::MAX] {
                    let c = client
                        .call(Descriptor::new(7, 0).with_args([v]))
                        .await
                        .unwrap();
                    out.push((c.value(), c.aux(), c.result()));
                }
                client.close().await.unwrap();
                // Let the provider see the hangup.
                futures_util::future::poll_fn(|cx| {
                    if s_done(&served) {
                        core::task::Poll::Ready(())
                    } else {
                        cx.waker().wake_by_ref();
                        core::task::Poll::Pending
                    }
                })
                .await;
                (out, served.load(Ordering::SeqCst))
            });
            assert_eq!(
                answers.0,
                [
                    (1, 7, Ok(1)),
                    (42, 7, Ok(42)),
                    (0xdead_beef, 7, Ok(0xdead_beef)),
                    (u64::MAX, 7, Ok(u64::MAX))
                ],
                "{batching:?}"
            );
            assert_eq!(answers.1, 4, "{batching:?}");
        }
    }

    fn s_done(s: &AtomicU64) -> bool {
        s.load(Ordering::SeqCst) != u64::MAX
    }

    #[test]
    fn pipelined_stream_arrives_in_order_through_a_small_ring() {
        // Many more messages than slots: the producer must wait for space
        // and the consumer for items, in both batching modes.
        for batching in [Batching::On, Batching::Off] {
            let (mut client, mut provider, pairs) = pair(batching, 16);
            let mut ex = Executor::new(leaked());
            const N: u64 = 10_000;
            let result = Arc::new(Mutex::new(None));
            let r = result.clone();
            ex.spawn(async move {
                let mut expected = 0;
                loop {
                    let d = provider.recv().await.unwrap();
                    if d.opcode() == OP_HANGUP {
                        break;
                    }
                    if d.arg(0) != expected {
                        *r.lock().unwrap() = Some(Err((expected, d.arg(0))));
                        return;
                    }
                    expected += 1;
                }
                *r.lock().unwrap() = Some(Ok(expected));
            });
            let r = result.clone();
            run(&mut ex, async move {
                for seq in 0..N {
                    let d = Descriptor::new(1, seq)
                        .with_args([seq])
                        .with_flags(Descriptor::FLAG_NO_COMPLETION);
                    client.send(d).await.unwrap();
                }
                client.close().await.unwrap();
                futures_util::future::poll_fn(|cx| {
                    if r.lock().unwrap().is_some() {
                        core::task::Poll::Ready(())
                    } else {
                        cx.waker().wake_by_ref();
                        core::task::Poll::Pending
                    }
                })
                .await;
            });
            assert_eq!(*result.lock().unwrap(), Some(Ok(N)), "{batching:?}");
            let rings = pairs[0].rings(0);
            match batching {
                // Doorbells only when the consumer slept: far fewer than
                // messages.
                Batching::On => assert!(rings < N / 4, "{rings} doorbells"),
                // One per descriptor (and the hangup).
                Batching::Off => assert!(rings > N, "{rings} doorbells"),
            }
        }
    }

    #[test]
    fn wrong_cookie_is_reported() {
        let (mut client, provider, _) = pair(Batching::On, 8);
        let mut ex = Executor::new(leaked());
        let (_, mut tx) = provider_parts(provider);
        // A completion nobody asked for is already waiting.
        tx.try_send(Completion::ok(999, 0)).unwrap();
        tx.flush();
        let out = run(
            &mut ex,
            async move { client.call(Descriptor::new(1, 0)).await },
        );
        assert_eq!(
            out,
            Err(ChannelError::Cookie {
                expected: 1,
                got: 999
            })
        );
    }

    fn provider_parts(p: Provider<Bell>) -> (Receiver<Descriptor, Bell>, Sender<Completion, Bell>) {
        (p.requests, p.completions)
    }

    #[test]
    fn claims_are_exclusive() {
        // Handles far above what a test server uses elsewhere.
        claim(250).unwrap();
        assert_eq!(claim(250), Err(ChannelError::InUse));
        claim(251).unwrap();
        assert_eq!(claim(256), Err(ChannelError::InUse));
    }
}
