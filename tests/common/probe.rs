//! Real traffic to many ports at once inside a test's namespace: TCP
//! listeners and UDP echoes on every address, and batches of probes — new
//! TCP connections, UDP datagrams — from chosen local addresses. A batch is
//! read once a control exchange sent after it has come back: loopback
//! handles packets in order, so by then every probe that gets through has
//! been answered, and a dropped one is told without waiting out a timeout.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// A port nothing closes: its answer tells the probes before it were handled.
pub const CONTROL_PORT: u16 = 7;

/// How long a probe that should get through may take (a loaded machine):
/// waited only for those, so it never slows a passing test.
const THROUGH_WAIT: Duration = Duration::from_secs(5);

/// After the control answered, how long a dropped probe is still watched.
const GRACE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One probe: a new connection, or a datagram, from `from` to `to`:`port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Probe {
    pub proto: Proto,
    pub from: IpAddr,
    pub to: IpAddr,
    pub port: u16,
}

/// Listens (TCP) or echoes (UDP) on `port` of every IPv4 and IPv6 address.
pub fn serve(proto: Proto, port: u16) {
    for ip in ["0.0.0.0", "::"] {
        let address = SocketAddr::new(ip.parse().unwrap(), port);
        let kind = match proto {
            Proto::Tcp => Type::STREAM,
            Proto::Udp => Type::DGRAM,
        };
        let socket = Socket::new(Domain::for_address(address), kind, None).unwrap();
        if address.is_ipv6() {
            socket.set_only_v6(true).unwrap();
        }
        socket.set_reuse_address(true).unwrap();
        socket.bind(&address.into()).unwrap();
        match proto {
            Proto::Tcp => {
                socket.listen(1024).unwrap();
                let listener: TcpListener = socket.into();
                std::thread::spawn(move || for _ in listener.incoming() {});
            }
            Proto::Udp => {
                let echo: UdpSocket = socket.into();
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 64];
                    while let Ok((n, peer)) = echo.recv_from(&mut buffer) {
                        let _ = echo.send_to(&buffer[..n], peer);
                    }
                });
            }
        }
    }
}

/// Echoes UDP on `port` of each of `addresses`, bound to each apart: an
/// echo bound to every address answers from the address routing picks,
/// which need not be the one it was reached at.
pub fn echo_on(port: u16, addresses: &[IpAddr]) {
    for &address in addresses {
        let echo = UdpSocket::bind(SocketAddr::new(address, port))
            .unwrap_or_else(|error| panic!("bind {address}:{port}: {error}"));
        std::thread::spawn(move || {
            let mut buffer = [0u8; 64];
            while let Ok((n, peer)) = echo.recv_from(&mut buffer) {
                let _ = echo.send_to(&buffer[..n], peer);
            }
        });
    }
}

/// Starts the control listener and echo; once per namespace.
pub fn serve_control() {
    serve(Proto::Tcp, CONTROL_PORT);
    serve(Proto::Udp, CONTROL_PORT);
}

/// The source ports probes take, from each address in turn.
const PORTS: std::ops::Range<u16> = 20000..60000;

/// How long before a source port may be taken again: conntrack forgets a
/// UDP exchange after 30 s (120 s once it is a stream), TCP's TIME_WAIT
/// lasts 60 s.
const FORGOTTEN: Duration = Duration::from_secs(150);

/// A source port from `from` that no flow conntrack (or TCP) may still
/// remember: a remembered one would pass as established. Each address
/// takes the ports in turn; a turn that came round too soon waits.
fn fresh_port(from: IpAddr) -> u16 {
    static TURNS: Mutex<BTreeMap<IpAddr, (u16, Instant)>> = Mutex::new(BTreeMap::new());
    let mut turns = TURNS.lock().unwrap();
    let (next, began) = turns.entry(from).or_insert((PORTS.start, Instant::now()));
    if *next == PORTS.end {
        std::thread::sleep(FORGOTTEN.saturating_sub(began.elapsed()));
        (*next, *began) = (PORTS.start, Instant::now());
    }
    *next += 1;
    *next - 1
}

/// A probe under way.
enum Sent {
    Tcp(Socket),
    /// The socket, and whether an answer came (reading it takes it).
    Udp(UdpSocket, Cell<bool>),
}

impl Sent {
    fn start(probe: &Probe) -> Sent {
        let to = SocketAddr::new(probe.to, probe.port);
        let from = SocketAddr::new(probe.from, fresh_port(probe.from));
        let kind = match probe.proto {
            Proto::Tcp => Type::STREAM,
            Proto::Udp => Type::DGRAM,
        };
        let socket = Socket::new(Domain::for_address(to), kind, None).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket
            .bind(&from.into())
            .unwrap_or_else(|error| panic!("bind {from}: {error}"));
        socket.set_nonblocking(true).unwrap();
        match probe.proto {
            Proto::Tcp => {
                if let Err(error) = socket.connect(&to.into())
                    && error.raw_os_error() != Some(libc::EINPROGRESS)
                {
                    panic!("{probe:?}: connect: {error}");
                }
                Sent::Tcp(socket)
            }
            Proto::Udp => {
                let udp: UdpSocket = socket.into();
                udp.connect(to).unwrap();
                udp.send(b"probe").unwrap();
                Sent::Udp(udp, Cell::new(false))
            }
        }
    }

    /// Whether it got through: connected, or answered.
    fn through(&self) -> bool {
        match self {
            Sent::Tcp(socket) => socket.peer_addr().is_ok(),
            Sent::Udp(udp, answered) => {
                let mut buffer = [0u8; 16];
                // An error (an ICMP one from the send) is no answer either.
                if !answered.get() && udp.recv(&mut buffer).is_ok() {
                    answered.set(true);
                }
                answered.get()
            }
        }
    }
}

/// A control exchange from `from` to `to`, which nothing closes; panics
/// when it does not come back.
fn control(from: IpAddr, to: IpAddr) {
    let address = SocketAddr::new(to, CONTROL_PORT);
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(from, fresh_port(from)).into())
        .unwrap();
    socket
        .connect_timeout(&address.into(), THROUGH_WAIT)
        .unwrap_or_else(|error| panic!("control {from} -> {address}: {error}"));
    let stream: TcpStream = socket.into();
    drop(stream);
    let udp = UdpSocket::bind(SocketAddr::new(from, fresh_port(from))).unwrap();
    udp.set_read_timeout(Some(THROUGH_WAIT)).unwrap();
    udp.send_to(b"control", address).unwrap();
    let mut buffer = [0u8; 16];
    udp.recv(&mut buffer)
        .unwrap_or_else(|error| panic!("control udp {from} -> {address}: {error}"));
}

/// Sends every probe at once and tells, for each, whether it got through,
/// against `expected`: the probes whose answer differs, in words. A probe
/// expected through is waited for up to `THROUGH_WAIT`; one expected
/// dropped is watched until its control came back and a little after.
pub fn mismatches(expected: &[(Probe, bool)]) -> Vec<String> {
    let sent: Vec<Sent> = expected
        .iter()
        .map(|(probe, _)| Sent::start(probe))
        .collect();
    let pairs: BTreeSet<(IpAddr, IpAddr)> = expected
        .iter()
        .map(|(probe, _)| (probe.from, probe.to))
        .collect();
    for (from, to) in pairs {
        control(from, to);
    }
    let controlled = Instant::now();
    let mut wrong = Vec::new();
    loop {
        let waiting = expected
            .iter()
            .zip(&sent)
            .any(|((_, through), sent)| *through && !sent.through());
        let elapsed = controlled.elapsed();
        if (!waiting && elapsed >= GRACE) || elapsed >= THROUGH_WAIT {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for ((probe, through), sent) in expected.iter().zip(&sent) {
        let got = sent.through();
        if got != *through {
            let what = if got { "got through" } else { "was dropped" };
            wrong.push(format!(
                "{:?} {} -> {}:{} {what}",
                probe.proto, probe.from, probe.to, probe.port
            ));
        }
    }
    wrong
}
