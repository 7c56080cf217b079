//! A TCP relay that records every byte a client sends: what crossed the wire, for "never in clear" checks.
//!
//! It listens on 127.0.0.1 before it knows its backend (so a registry can be configured with the
//! relay's port, see [`crate::RegistryConfig::external_url`]), then passes bytes both ways
//! untouched: TLS stays TLS (its bytes are ciphertext), plain HTTP stays readable. Every socket
//! has a read limit; the accept loop ends when the relay drops.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result};

/// How long a relayed connection may stay silent before it is closed.
const IDLE: Duration = Duration::from_secs(60);

/// A recording TCP relay on 127.0.0.1; stops accepting when dropped.
pub struct TcpRelay {
    port: u16,
    backend: Arc<AtomicU16>,
    sent: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpRelay {
    /// Listens on a free port; connections are refused until [`TcpRelay::set_backend`].
    pub fn start() -> Result<TcpRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").context("relay cannot listen")?;
        let port = listener.local_addr()?.port();
        let backend = Arc::new(AtomicU16::new(0));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (backend, sent, stop) = (backend.clone(), sent.clone(), stop.clone());
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let port = backend.load(Ordering::Relaxed);
                    let sent = sent.clone();
                    thread::spawn(move || relay(client, port, sent));
                }
            })
        };
        Ok(TcpRelay {
            port,
            backend,
            sent,
            stop,
            thread: Some(thread),
        })
    }

    /// Relays to `127.0.0.1:port` from now on.
    pub fn set_backend(&self, port: u16) {
        self.backend.store(port, Ordering::Relaxed);
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every byte clients sent so far, connections one after another.
    pub fn client_bytes(&self) -> Vec<u8> {
        self.sent.lock().unwrap().clone()
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ =
            TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn relay(client: TcpStream, port: u16, sent: Arc<Mutex<Vec<u8>>>) {
    if port == 0 {
        return;
    }
    let Ok(server) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), IDLE) else {
        return;
    };
    for s in [&client, &server] {
        let _ = s.set_read_timeout(Some(IDLE));
        let _ = s.set_write_timeout(Some(IDLE));
    }
    let (Ok(client_r), Ok(server_w)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream = thread::spawn(move || copy(client_r, server_w, Some(&sent)));
    copy(server, client, None);
    let _ = upstream.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream, log: Option<&Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(sent) = log {
            sent.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
