//! A pre-installed NRI plugin for berth's e2e tests. berthd launches it from `[nri]
//! plugin_path` with its connection on fd 3 (`NRI_PLUGIN_SOCKET`) and its name and index in
//! the environment; it annotates every container created with `nri.test/preinstalled` set to
//! `<idx>-<name>:<its config file>`, and exits when berthd closes the connection.
//!
//! With `NRI_TEST_CONNECT=<socket>` it instead tries to register as an external plugin on that
//! socket and exits 0 if the runtime accepted it, 3 if not (the tests run it unprivileged).

use std::sync::{Arc, OnceLock};

use nri::api;
use nri::plugin::{Event, EventHandler, Reply, Stub};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Some(socket) = std::env::var_os("NRI_TEST_CONNECT") {
        let handler: EventHandler = Arc::new(|_| Box::pin(async { Ok(Reply::default()) }));
        match Stub::connect(socket.as_ref(), "intruder", "99", 0, handler).await {
            Ok(_) => std::process::exit(0),
            Err(e) => {
                eprintln!("nri-test-plugin: not registered: {e}");
                std::process::exit(3);
            }
        }
    }
    let (stream, name, idx) = match Stub::launched() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("nri-test-plugin: {e}");
            std::process::exit(2);
        }
    };
    let config: Arc<OnceLock<String>> = Arc::default();
    let me = format!("{idx}-{name}");
    let (cfg, who) = (config.clone(), me.clone());
    let handler: EventHandler = Arc::new(move |ev: Event| {
        let reply = match ev {
            Event::Configure(req) => {
                let _ = cfg.set(req.config.trim().to_string());
                Reply::default()
            }
            Event::CreateContainer(..) => {
                let mut adjust = api::ContainerAdjustment::default();
                let value = format!("{who}:{}", cfg.get().map_or("", String::as_str));
                adjust
                    .annotations
                    .insert("nri.test/preinstalled".into(), value);
                Reply {
                    adjust: Some(adjust),
                    update: Vec::new(),
                }
            }
            _ => Reply::default(),
        };
        Box::pin(async move { Ok(reply) })
    });
    let events = nri::event_bit(api::Event::CreateContainer);
    match Stub::over(stream, &name, &idx, events, handler).await {
        Ok(stub) => stub.closed().await,
        Err(e) => {
            eprintln!("nri-test-plugin {me}: {e}");
            std::process::exit(1);
        }
    }
}
