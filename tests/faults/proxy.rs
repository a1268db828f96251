//! A loopback TCP proxy that puts faults between the service and a real
//! backend (Redis or Ceph RGW), which itself is never touched.
//!
//! [`Mode::Pass`] relays bytes both ways. [`Mode::Down`] closes the listener
//! (new connections are refused) and drops every live connection, as a
//! backend that died would. [`Mode::Stall`] accepts connections but relays
//! nothing, on new and live connections alike, as a backend that hangs
//! would; bytes already sent wait in the socket buffers, and are relayed if
//! the mode returns to `Pass`. [`Mode::HoldDeleteAnswers`] relays every
//! request, but holds the answer to a `DELETE` (an S3 `DeleteObject` that
//! RGW carried out and did not confirm), until the mode changes.
//! [`Mode::HoldCompletions`] relays every request but an S3
//! `CompleteMultipartUpload` (`POST …?uploadId=…`), which it holds, and
//! everything after it on its connection, until the mode changes (the API
//! suite's process tests include this file for it).

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpSocket, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Relays bytes both ways.
    Pass,
    /// Refuses connections and has dropped the live ones.
    Down,
    /// Accepts connections and relays nothing.
    Stall,
    /// Relays requests, and holds the answer on a connection that sent a
    /// `DELETE` (HTTP/1.1, a request's head in one write).
    HoldDeleteAnswers,
    /// Relays requests, and holds a `CompleteMultipartUpload` (HTTP/1.1,
    /// a request's head in one write) and what follows it on its
    /// connection.
    #[allow(dead_code)] // the fault tests do not use it; tests/api does
    HoldCompletions,
}

type Tasks = Arc<Mutex<Vec<JoinHandle<()>>>>;

/// One proxy in front of one backend address.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
    connections: Tasks,
    held: watch::Sender<usize>,
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `upstream`, in `mode`.
    pub async fn start(upstream: SocketAddr, mode: Mode) -> Self {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind the proxy");
        let proxy = Self {
            addr: listener.local_addr().unwrap(),
            upstream,
            mode: watch::channel(mode).0,
            acceptor: Mutex::new(None),
            connections: Tasks::default(),
            held: watch::channel(0).0,
        };
        match mode {
            Mode::Down => drop(listener),
            Mode::Pass | Mode::Stall | Mode::HoldDeleteAnswers | Mode::HoldCompletions => {
                proxy.serve(listener)
            }
        }
        proxy
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the proxy holds a request ([`Mode::HoldCompletions`]).
    #[allow(dead_code)] // the fault tests do not use it; tests/api does
    pub async fn until_a_request_is_held(&self) {
        let mut held = self.held.subscribe();
        held.wait_for(|held| *held > 0)
            .await
            .expect("the proxy is there");
    }

    /// Switches to `mode`. When it returns, a `Down` proxy refuses
    /// connections and has closed every live one, and a proxy back from
    /// `Down` accepts them again.
    pub async fn set(&self, mode: Mode) {
        let previous = self.mode.send_replace(mode);
        match (previous, mode) {
            (Mode::Down, Mode::Down) => {}
            (_, Mode::Down) => {
                let acceptor = self.acceptor.lock().unwrap().take();
                if let Some(acceptor) = acceptor {
                    acceptor.abort();
                    let _ = acceptor.await; // the listener is closed once it ends
                }
                let live: Vec<_> = self.connections.lock().unwrap().drain(..).collect();
                for connection in &live {
                    connection.abort();
                }
                for connection in live {
                    let _ = connection.await;
                }
            }
            (Mode::Down, _) => {
                // The port was free meanwhile; take it back (a socket in
                // TIME_WAIT does not stop SO_REUSEADDR).
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                let listener = loop {
                    match listen(self.addr) {
                        Ok(listener) => break listener,
                        Err(err) => {
                            assert!(
                                tokio::time::Instant::now() < deadline,
                                "cannot listen on {} again: {err}",
                                self.addr
                            );
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                };
                self.serve(listener);
            }
            // The relays watch the mode and stop or resume by themselves.
            _ => {}
        }
    }

    fn serve(&self, listener: TcpListener) {
        let task = tokio::spawn(accept(
            listener,
            self.upstream,
            self.mode.subscribe(),
            self.connections.clone(),
            self.held.clone(),
        ));
        *self.acceptor.lock().unwrap() = Some(task);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(acceptor) = self.acceptor.lock().unwrap().take() {
            acceptor.abort();
        }
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

/// A listening socket on `addr`, with `SO_REUSEADDR`.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    connections: Tasks,
    held: watch::Sender<usize>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let task = tokio::spawn(relay(client, upstream, mode.clone(), held.clone()));
        let mut live = connections.lock().unwrap();
        live.retain(|task| !task.is_finished());
        live.push(task);
    }
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    held: watch::Sender<usize>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let sent_delete = Arc::new(AtomicBool::new(false));
    tokio::join!(
        pump(
            client_read,
            server_write,
            mode.clone(),
            Direction::Requests(sent_delete.clone(), held)
        ),
        pump(
            server_read,
            client_write,
            mode,
            Direction::Answers(sent_delete)
        ),
    );
}

/// Which way a pump copies, with the connection's flag of a `DELETE` sent.
enum Direction {
    /// Client to backend: sets the flag on a `DELETE`; counts the requests
    /// it holds in [`Mode::HoldCompletions`].
    Requests(Arc<AtomicBool>, watch::Sender<usize>),
    /// Backend to client: holds while the flag is set, in
    /// [`Mode::HoldDeleteAnswers`].
    Answers(Arc<AtomicBool>),
}

impl Direction {
    /// Whether this pump must hold in `mode`.
    fn holds(&self, mode: Mode) -> bool {
        match (mode, self) {
            (Mode::Stall, _) => true,
            (Mode::HoldDeleteAnswers, Direction::Answers(sent_delete)) => {
                sent_delete.load(Ordering::SeqCst)
            }
            _ => false,
        }
    }
}

/// Copies `from` to `to` while the mode lets it, until either side closes.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    direction: Direction,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if !unheld(&mut mode, &direction).await {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        if let Direction::Requests(sent_delete, held) = &direction {
            if *mode.borrow() == Mode::HoldDeleteAnswers && buffer[..n].starts_with(b"DELETE ") {
                sent_delete.store(true, Ordering::SeqCst);
            }
            if *mode.borrow() == Mode::HoldCompletions && is_completion(&buffer[..n]) {
                held.send_modify(|held| *held += 1);
                let released = mode.wait_for(|mode| *mode != Mode::HoldCompletions).await;
                if released.is_err() {
                    return;
                }
            }
        }
        if !unheld(&mut mode, &direction).await || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// Waits while the mode holds this pump; `false` once the proxy is gone.
async fn unheld(mode: &mut watch::Receiver<Mode>, direction: &Direction) -> bool {
    loop {
        let current = *mode.borrow_and_update();
        if !direction.holds(current) {
            return true;
        }
        if mode.changed().await.is_err() {
            return false;
        }
    }
}

/// Whether `bytes` begin a `CompleteMultipartUpload`: `POST` with an
/// `uploadId` in its request line (`CreateMultipartUpload` is `?uploads`).
fn is_completion(bytes: &[u8]) -> bool {
    let line = bytes
        .split(|byte| *byte == b'\n')
        .next()
        .unwrap_or_default();
    line.starts_with(b"POST ") && line.windows(9).any(|window| window == b"uploadId=")
}
