//! A second network namespace joined to the test's own by a veth pair: a
//! "client" on the network, whose connections reach this "server" through a
//! real interface — not loopback, which is `-i lo` and skips nat
//! prerouting. And "containers" behind a bridge, for what is published by
//! translation through forwarding. Used inside a test's namespace (see
//! `netns::enter`).

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// The server's addresses on the veth, and the network the client is on.
pub const SERVER_V4: &str = "192.0.2.1";
pub const SERVER_V6: &str = "2001:db8::1";

/// The client's addresses: several, to ask as several sources.
pub const CLIENTS_V4: [&str; 4] = ["192.0.2.2", "192.0.2.7", "192.0.2.66", "192.0.2.130"];
pub const CLIENTS_V6: [&str; 3] = ["2001:db8::2", "2001:db8::7", "2001:db8::66"];

/// How long a connection attempt may take before a dropped SYN counts as
/// not getting through. Across a veth an accepted one completes at once.
pub const CONNECT_WAIT: Duration = Duration::from_millis(500);

/// How long a connection that should get through is given on a second
/// try: a loaded machine is slow, not a firewall.
pub const PATIENT_WAIT: Duration = Duration::from_secs(5);

/// Another network namespace, held open by a process of its own.
pub struct Namespace {
    holder: Child,
    file: File,
}

impl Namespace {
    pub fn new() -> Namespace {
        let holder = Command::new("unshare")
            .args(["--net", "--", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare a namespace");
        // Until unshare has made it, the holder is in this namespace still.
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let theirs = format!("/proc/{}/ns/net", holder.id());
        super::managers::until("the new namespace", || {
            std::fs::read_link(&theirs).is_ok_and(|link| link != ours)
        });
        let file = File::open(&theirs).unwrap();
        Namespace { holder, file }
    }

    fn pid(&self) -> String {
        self.holder.id().to_string()
    }

    /// Runs `argv` in the namespace.
    fn run(&self, argv: &[&str]) {
        let entered = format!("--net=/proc/{}/ns/net", self.pid());
        let mut all = vec!["nsenter", entered.as_str(), "--"];
        all.extend_from_slice(argv);
        run(&all);
    }

    /// Makes something in the namespace (a socket stays in the namespace it
    /// was made in), this thread stepping in and back.
    fn within<T>(&self, make: impl FnOnce() -> T) -> T {
        let home = File::open("/proc/thread-self/ns/net").unwrap();
        // SAFETY: both descriptors are open network namespace files.
        assert_eq!(
            unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let made = make();
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        made
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A "container": a namespace behind a bridge of this one, its address
/// `address` (with its prefix), its default route the bridge's `gateway`,
/// listening on `port`. Forwarding is turned on here.
pub struct Container {
    _namespace: Namespace,
}

impl Container {
    pub fn new(bridge: &str, gateway: &str, address: &str, port: u16) -> Container {
        let namespace = Namespace::new();
        let pid = namespace.pid();
        run(&["/sbin/ip", "link", "add", bridge, "type", "bridge"]);
        run(&["/sbin/ip", "addr", "add", gateway, "dev", bridge]);
        run(&["/sbin/ip", "link", "set", bridge, "up"]);
        let outside = format!("v-{bridge}");
        run(&[
            "/sbin/ip", "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns",
            &pid,
        ]);
        run(&["/sbin/ip", "link", "set", &outside, "master", bridge, "up"]);
        namespace.run(&["/sbin/ip", "link", "set", "lo", "up"]);
        namespace.run(&["/sbin/ip", "addr", "add", address, "dev", "eth0"]);
        namespace.run(&["/sbin/ip", "link", "set", "eth0", "up"]);
        let via = gateway.split('/').next().unwrap();
        namespace.run(&["/sbin/ip", "route", "add", "default", "via", via]);
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
        namespace.within(|| listen(&[port]));
        Container {
            _namespace: namespace,
        }
    }
}

/// The client's namespace, on a veth pair with this one.
pub struct Peer {
    namespace: Namespace,
}

impl Peer {
    /// A client namespace on a veth pair with this one, both ends up and
    /// addressed (IPv4 /24, IPv6 /64 without duplicate address detection).
    pub fn new() -> Peer {
        let namespace = Namespace::new();
        let pid = namespace.pid();
        run(&[
            "/sbin/ip", "link", "add", "pl-srv", "type", "veth", "peer", "name", "pl-cli", "netns",
            &pid,
        ]);
        run(&[
            "/sbin/ip",
            "addr",
            "add",
            &format!("{SERVER_V4}/24"),
            "dev",
            "pl-srv",
        ]);
        let v6 = format!("{SERVER_V6}/64");
        run(&[
            "/sbin/ip", "-6", "addr", "add", &v6, "dev", "pl-srv", "nodad",
        ]);
        run(&["/sbin/ip", "link", "set", "pl-srv", "up"]);
        namespace.run(&["/sbin/ip", "link", "set", "lo", "up"]);
        for address in CLIENTS_V4 {
            let address = format!("{address}/24");
            namespace.run(&["/sbin/ip", "addr", "add", &address, "dev", "pl-cli"]);
        }
        for address in CLIENTS_V6 {
            let address = format!("{address}/64");
            namespace.run(&[
                "/sbin/ip", "-6", "addr", "add", &address, "dev", "pl-cli", "nodad",
            ]);
        }
        namespace.run(&["/sbin/ip", "link", "set", "pl-cli", "up"]);
        Peer { namespace }
    }

    /// Whether a new TCP connection from the client's `from` to the
    /// server's `to`:`port` gets through (a reset from a reject does not),
    /// given a second, patient try when the first does not.
    pub fn reaches(&self, from: &str, to: &str, port: u16) -> bool {
        self.connects(from, to, port) || self.attempt(from, to, port, PATIENT_WAIT)
    }

    /// Whether a new TCP connection from the client's `from` to the
    /// server's `to`:`port` gets through within `CONNECT_WAIT` (a reset
    /// from a reject does not).
    pub fn connects(&self, from: &str, to: &str, port: u16) -> bool {
        self.attempt(from, to, port, CONNECT_WAIT)
    }

    fn attempt(&self, from: &str, to: &str, port: u16, wait: Duration) -> bool {
        let from: IpAddr = from.parse().unwrap();
        let to = SocketAddr::new(to.parse().unwrap(), port);
        let socket = self
            .namespace
            .within(|| Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap());
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .unwrap_or_else(|error| panic!("bind {from}: {error}"));
        let refused = [
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::EACCES,
            libc::EPERM,
        ];
        match socket.connect_timeout(&to.into(), wait) {
            Ok(()) => true,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                false
            }
            // A reject with an ICMP error other than port unreachable.
            Err(error)
                if error
                    .raw_os_error()
                    .is_some_and(|code| refused.contains(&code)) =>
            {
                false
            }
            Err(error) => panic!("{from} -> {to}: unexpected {error}"),
        }
    }
}

impl Peer {
    /// Tries every connection `(from, to, port)` at once; whether each got
    /// through. Waits one `CONNECT_WAIT` at most, however many.
    pub fn connect_all(&self, attempts: &[(String, String, u16)]) -> Vec<bool> {
        let sockets: Vec<(Socket, SocketAddr)> = attempts
            .iter()
            .map(|(from, to, port)| {
                let from: IpAddr = from.parse().unwrap();
                let to = SocketAddr::new(to.parse().unwrap(), *port);
                let socket = self
                    .namespace
                    .within(|| Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap());
                socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
                (socket, to)
            })
            .collect();
        let refused = [
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::EACCES,
            libc::EPERM,
        ];
        let threads: Vec<_> = sockets
            .into_iter()
            .map(|(socket, to)| {
                std::thread::spawn(
                    move || match socket.connect_timeout(&to.into(), CONNECT_WAIT) {
                        Ok(()) => true,
                        Err(error)
                            if matches!(
                                error.kind(),
                                std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::ConnectionRefused
                            ) || error
                                .raw_os_error()
                                .is_some_and(|code| refused.contains(&code)) =>
                        {
                            false
                        }
                        Err(error) => panic!("-> {to}: unexpected {error}"),
                    },
                )
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .collect()
    }
}

/// Listens for TCP on each of `ports` on every address, both families,
/// accepting and dropping each client; and binds UDP there too.
pub fn listen(ports: &[u16]) {
    for &port in ports {
        for ip in ["0.0.0.0", "::"] {
            let address = SocketAddr::new(ip.parse().unwrap(), port);
            let socket = Socket::new(Domain::for_address(address), Type::STREAM, None).unwrap();
            if address.is_ipv6() {
                socket.set_only_v6(true).unwrap();
            }
            socket.set_reuse_address(true).unwrap();
            socket.bind(&address.into()).unwrap();
            socket.listen(128).unwrap();
            let listener: TcpListener = socket.into();
            std::thread::spawn(move || for _ in listener.incoming() {});
            let _ = UdpSocket::bind(address).map(std::mem::forget);
        }
    }
}

fn run(argv: &[&str]) {
    let status = Command::new(argv[0]).args(&argv[1..]).status().unwrap();
    assert!(status.success(), "{argv:?}");
}
