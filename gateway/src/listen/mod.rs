//! Listeners: bind client sockets and run accept loops. Each accepted connection goes to
//! `conn::serve` on its own task.
//!
//! `max_connections` is a semaphore shared by every listener: when it is exhausted the loop stops
//! accepting, so new connections wait in the kernel's accept queue (counted) until a slot frees.
//! On the drain signal the loop ends and the socket closes, so new connections are refused.

pub mod quic;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{self, ListenerCtx};
use crate::Shared;

/// Binds a listening socket with address reuse and a deep backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Accepts connections until `drain` fires.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ListenerCtx>,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    drain: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                ctx.limited.inc();
                tokio::select! {
                    p = limit.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = drain.cancelled() => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and similar: back off instead of spinning.
                    tracing::warn!(listener = %ctx.name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = drain.cancelled() => break,
        };
        ctx.accepted.inc();
        let _ = stream.set_nodelay(true);
        let task = conn::serve(stream, peer, ctx.clone(), shared.clone(), drain.clone(), permit);
        tracker.spawn(shared.monitors.connection(task));
    }
    tracing::info!(listener = %ctx.name, "listener closed");
}
