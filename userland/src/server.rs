//! The server skeleton: answer every client of a service.
//!
//! Context: a server's main task, inside the executor.
//!
//! ```ignore
//! userland::entry!(async run);
//!
//! async fn run() -> i32 {
//!     let report = userland::server::serve("echo", |request| {
//!         Completion::ok(request.cookie(), request.arg(0))
//!     })
//!     .await;
//!     report.exit_code()
//! }
//! ```
//!
//! Each client gets its own request loop ([`Provider::serve`]); the loops
//! run concurrently in one task, so the handler needs no `Send` and may
//! keep state (`FnMut`). A loop ends when its client hangs up
//! ([`OP_HANGUP`](crate::channel::OP_HANGUP), sent by
//! [`Client::close`](crate::channel::Client::close)) or breaks its ring;
//! `serve` returns when every loop has ended.

use alloc::vec::Vec;
use core::cell::RefCell;

use futures_util::future::join_all;
use pvchannel::{Completion, Descriptor};

use crate::channel::{Channel, ChannelError};
use crate::println;

/// What [`serve`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// Clients found for the service.
    pub clients: usize,
    /// Requests handled (hang-ups not counted).
    pub requests: u64,
    /// Clients whose loop ended with an error (each was logged).
    pub failed: usize,
    /// Doorbells rung towards the clients.
    pub doorbells: u64,
}

impl ServeReport {
    /// 0 when every client finished cleanly, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.failed != 0)
    }
}

/// Answer every request of every client of `service` with `handler` until
/// all of them hang up. A client whose ring fails is logged and dropped;
/// the others go on. Fails only if the channels cannot be attached.
pub async fn serve(
    service: &str,
    handler: impl FnMut(Descriptor) -> Completion,
) -> Result<ServeReport, ChannelError> {
    let providers = Channel::clients_of(service)?;
    let handler = RefCell::new(handler);
    let handler = &handler;
    let loops = providers.into_iter().map(|mut provider| async move {
        // The borrow lasts only for one synchronous call of the handler, and
        // the loops run on one thread: they never overlap.
        let result = provider.serve(|d| (handler.borrow_mut())(d)).await;
        if let Err(e) = &result {
            println!("serve {service}: client {} failed: {e}", provider.peer());
        }
        (result, provider.doorbells())
    });
    let results: Vec<_> = join_all(loops).await;
    let mut report = ServeReport {
        clients: results.len(),
        ..ServeReport::default()
    };
    for (result, doorbells) in results {
        report.doorbells += doorbells;
        match result {
            Ok(n) => report.requests += n,
            Err(_) => report.failed += 1,
        }
    }
    Ok(report)
}
