//! A server that accepts connections on 127.0.0.1 and never answers: the "hung destination" fault.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

/// Accepts every connection, reads and drops what arrives, answers nothing; ends when dropped.
pub struct SilentServer {
    port: u16,
    /// Held connections: closed when the server drops.
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl SilentServer {
    pub fn start() -> Result<SilentServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let keep = Arc::downgrade(&held);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Some(held) = keep.upgrade() else { break };
                let Ok(stream) = stream else { continue };
                if let Ok(mut reader) = stream.try_clone() {
                    // Swallow request bytes so a sender is not stopped by a full buffer alone.
                    let _ = reader.set_read_timeout(Some(Duration::from_secs(600)));
                    thread::spawn(move || {
                        let mut sink = [0u8; 8192];
                        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                    });
                }
                held.lock().unwrap_or_else(|e| e.into_inner()).push(stream);
            }
        });
        Ok(SilentServer { port, held })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many connections it has accepted and holds.
    pub fn connections(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        for s in self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        // Wake the accept loop so it sees the server is gone.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
