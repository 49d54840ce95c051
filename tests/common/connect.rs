//! Real TCP connections on loopback inside a test's namespace: a listener
//! on port 22 for each family, and whether a new connection gets through.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// How long a connection attempt may take before a dropped SYN counts as
/// unreachable. A loopback connect that is not dropped completes at once.
pub const CONNECT_WAIT: Duration = Duration::from_millis(700);

/// Listens on 127.0.0.1:22 and [::1]:22, accepting and dropping each client.
pub fn ssh_listeners() -> [SocketAddr; 2] {
    let addresses: [SocketAddr; 2] = ["127.0.0.1:22".parse().unwrap(), "[::1]:22".parse().unwrap()];
    for address in addresses {
        let listener = TcpListener::bind(address).unwrap();
        std::thread::spawn(move || for _ in listener.incoming() {});
    }
    addresses
}

/// Whether a new connection to `address` gets through.
pub fn reachable(address: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&address, CONNECT_WAIT) {
        Ok(_) => true,
        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => false,
        Err(error) => panic!("connect to {address}: unexpected {error}"),
    }
}
