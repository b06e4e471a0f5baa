//! Running a node: serve each role on its listener, run background tasks, stop cleanly.

use crate::wiring::{build_role, BuiltRole, NodeDeps, Role};
use pay_net::{BoxListener, ServeOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A started node.
pub struct RunningNode {
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    /// Handles of the built services (for tests and tooling).
    pub payments: Option<Arc<pay_payments::Payments>>,
    /// The tokenizer, if hosted here.
    pub tokenizer: Option<Arc<pay_tokenizer::Tokenizer>>,
}

impl RunningNode {
    /// Serves one more router (the admin endpoint of a local node) on `listener` until the
    /// node stops.
    pub fn serve_router(
        &mut self,
        name: &'static str,
        listener: BoxListener,
        router: axum::Router,
        opts: ServeOptions,
    ) {
        let mut rx = self.stop.subscribe();
        self.servers.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = pay_net::serve(listener, router, opts, shutdown).await {
                tracing::error!(listener = name, error = %e, "server failed");
            }
        }));
    }

    /// Stops accepting, lets in-flight requests finish, stops background tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for h in self.servers {
            let _ = h.await;
        }
        for h in self.background {
            let _ = h.await;
        }
    }
}

/// Builds and serves `roles`, each on its listener with its serve options.
///
/// When `deps.http` carries [`pay_net::InProcessRoutes`], every role served here without TLS
/// (the internal listeners) is registered there under its topology address, so calls between
/// the roles of this node go to the callee's router in process instead of over loopback TCP;
/// the listeners still serve callers from other nodes.
pub fn start(deps: &NodeDeps, roles: Vec<(Role, BoxListener, ServeOptions)>) -> Result<RunningNode, String> {
    let (stop, _) = watch::channel(false);
    let mut servers = vec![];
    let mut background = vec![];
    let mut built: BTreeMap<Role, BuiltRole> = BTreeMap::new();
    for (role, _, _) in &roles {
        built.insert(*role, build_role(*role, deps)?);
    }
    if let Some(routes) = deps.http.in_process() {
        for (role, _, opts) in &roles {
            let (Some(b), Ok(url), None) = (built.get(role), deps.topology.url(*role), &opts.tls) else {
                continue;
            };
            if routes.insert(url, b.router.clone()) {
                tracing::debug!(role = %role, url, "calls to this role stay in process");
            }
        }
    }
    let mut payments = None;
    let mut tokenizer = None;
    for (role, listener, opts) in roles {
        let Some(b) = built.remove(&role) else {
            continue;
        };
        payments = payments.or(b.payments.clone());
        tokenizer = tokenizer.or(b.tokenizer.clone());
        for task in b.background {
            background.push(tokio::spawn(task(stop.subscribe())));
        }
        let mut rx = stop.subscribe();
        let router = b.router;
        servers.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = pay_net::serve(listener, router, opts, shutdown).await {
                tracing::error!(role = %role, error = %e, "server failed");
            }
        }));
    }
    Ok(RunningNode {
        stop,
        servers,
        background,
        payments,
        tokenizer,
    })
}
