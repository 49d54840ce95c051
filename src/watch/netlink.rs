//! netfilter's own news of every committed change, for this network
//! namespace: a NETLINK_NETFILTER socket in group NFNLGRP_NFTABLES (what
//! `nft monitor` reads), split into transactions at each NEWGEN, with the
//! generation id and the committing process; and the one-message GETGEN
//! query. Reads only: it never sends anything that changes the firewall.
//! iptables-legacy tells nothing here (see `watch` for its checks).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `NETLINK_NETFILTER` and its group for nf_tables (linux/netfilter/nfnetlink.h).
const NETLINK_NETFILTER: i32 = 12;
const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// nf_tables message types (linux/netfilter/nf_tables.h).
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
/// Attribute 1 of every nf_tables object is the table it is in; a chain
/// names itself in 3, a rule its chain in 2; NEWGEN carries id, pid, name.
const ATTR_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_GEN_ID: u16 = 1;
const NFTA_GEN_PROC_PID: u16 = 2;
const NFTA_GEN_PROC_NAME: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
/// nft's own receive buffer: room for a big ruleset's burst.
const RECEIVE_BUFFER: i32 = 16 << 20;

/// The address families of nf_tables tables (`NFPROTO_*`).
pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

/// What portlocker holds in nf_tables: changes there wake `watch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// Each table (family, name) of portlocker's place.
    pub tables: Vec<(u8, String)>,
    /// Chains whose rules matter in those tables; empty: all of them.
    pub chains: Vec<String>,
}

impl Place {
    /// Whether an object of `table` (in `family`), in `chain` if it is a
    /// chain or a rule, is part of the place.
    fn holds(&self, family: u8, table: &str, chain: Option<&str>) -> bool {
        let in_table = self
            .tables
            .iter()
            .any(|(f, name)| *f == family && name == table);
        in_table
            && match chain {
                None => true,
                Some(chain) => self.chains.is_empty() || self.chains.iter().any(|c| c == chain),
            }
    }
}

/// One committed transaction, as its NEWGEN told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub id: u32,
    /// The committing process, when the kernel said (0: the kernel itself).
    pub pid: u32,
    pub name: String,
    /// Whether any change in it was in portlocker's place.
    pub touched: bool,
}

/// What reading the socket brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum News {
    Generation(Generation),
    /// The kernel dropped news for want of room (ENOBUFS): anything may have changed.
    Lost,
}

/// A socket subscribed to nf_tables' news in this network namespace.
pub struct Listener {
    socket: OwnedFd,
    place: Place,
    /// Whether a change of the transaction so far touched the place.
    touched: bool,
    buffer: Vec<u8>,
    /// Transactions read but not yet told (one read may hold several).
    ready: std::collections::VecDeque<Generation>,
}

impl Listener {
    /// Subscribes; an error when this kernel or process cannot (no
    /// CAP_NET_ADMIN, no nf_tables).
    pub fn subscribe(place: Place) -> io::Result<Listener> {
        let socket = open()?;
        bind(&socket)?;
        let group = NFNLGRP_NFTABLES;
        setsockopt(
            &socket,
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            &group,
        )?;
        // Root may raise it past rmem_max; otherwise the default stays.
        if setsockopt(
            &socket,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &RECEIVE_BUFFER,
        )
        .is_err()
        {
            let _ = setsockopt(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF, &RECEIVE_BUFFER);
        }
        Ok(Listener {
            socket,
            place,
            touched: false,
            buffer: vec![0; 1 << 16],
            ready: Default::default(),
        })
    }

    /// Changes what counts as portlocker's place (the config was read again).
    pub fn set_place(&mut self, place: Place) {
        self.place = place;
    }

    /// Waits for the next news; every transaction is one `Generation`.
    pub fn wait(&mut self) -> io::Result<News> {
        loop {
            if let Some(generation) = self.ready.pop_front() {
                return Ok(News::Generation(generation));
            }
            // SAFETY: recv(2) into a buffer we own, of its length.
            let read = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    self.buffer.as_mut_ptr().cast(),
                    self.buffer.len(),
                    0,
                )
            };
            if read < 0 {
                let error = io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        self.touched = false;
                        return Ok(News::Lost);
                    }
                    _ => return Err(error),
                }
            }
            let buffer = std::mem::take(&mut self.buffer);
            for (kind, payload) in messages(&buffer[..read as usize]) {
                if let Some(generation) = self.take(kind, payload) {
                    self.ready.push_back(generation);
                }
            }
            self.buffer = buffer;
        }
    }

    /// Takes in one message; the transaction's `Generation` at its NEWGEN.
    fn take(&mut self, kind: u16, payload: &[u8]) -> Option<Generation> {
        if kind >> 8 != NFNL_SUBSYS_NFTABLES || payload.len() < NFGENMSG_LEN {
            return None;
        }
        let family = payload[0];
        let attributes = &payload[NFGENMSG_LEN..];
        let text = |wanted| attribute(attributes, wanted).map(c_text);
        match kind & 0xff {
            NFT_MSG_NEWGEN => {
                let generation = Generation {
                    id: attribute(attributes, NFTA_GEN_ID)
                        .and_then(be32)
                        .unwrap_or(0),
                    pid: attribute(attributes, NFTA_GEN_PROC_PID)
                        .and_then(be32)
                        .unwrap_or(0),
                    name: text(NFTA_GEN_PROC_NAME).unwrap_or_default(),
                    touched: self.touched,
                };
                self.touched = false;
                Some(generation)
            }
            message => {
                let chain = match message {
                    NFT_MSG_NEWCHAIN | NFT_MSG_DELCHAIN => text(NFTA_CHAIN_NAME),
                    NFT_MSG_NEWRULE | NFT_MSG_DELRULE => text(NFTA_RULE_CHAIN),
                    NFT_MSG_NEWTABLE | NFT_MSG_DELTABLE => None,
                    // Sets, objects, flowtables: in the table, of no chain.
                    _ => None,
                };
                if let Some(table) = text(ATTR_TABLE)
                    && self.place.holds(family, &table, chain.as_deref())
                {
                    self.touched = true;
                }
                None
            }
        }
    }
}

/// The generation id nf_tables is at now (GETGEN); it changes with every
/// commit to nf_tables in this namespace, never with iptables-legacy's.
pub fn generation() -> io::Result<u32> {
    let socket = open()?;
    let timeout = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    setsockopt(&socket, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
    let mut request = Vec::with_capacity(NLMSG_HDRLEN + NFGENMSG_LEN);
    let length = (NLMSG_HDRLEN + NFGENMSG_LEN) as u32;
    request.extend(length.to_ne_bytes());
    request.extend(((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    request.extend((libc::NLM_F_REQUEST as u16).to_ne_bytes());
    request.extend(1u32.to_ne_bytes()); // sequence
    request.extend(0u32.to_ne_bytes()); // port id: the kernel fills it in
    request.extend([libc::AF_UNSPEC as u8, 0, 0, 0]); // nfgenmsg
    // SAFETY: send(2) of a buffer we own, of its length.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buffer = vec![0u8; 8192];
    // SAFETY: recv(2) into a buffer we own, of its length.
    let read = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            0,
        )
    };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    for (kind, payload) in messages(&buffer[..read as usize]) {
        if kind == NLMSG_ERROR && payload.len() >= 4 {
            let code = i32::from_ne_bytes(payload[..4].try_into().expect("four bytes"));
            if code != 0 {
                return Err(io::Error::from_raw_os_error(-code));
            }
        }
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN
            && payload.len() >= NFGENMSG_LEN
            && let Some(id) = attribute(&payload[NFGENMSG_LEN..], NFTA_GEN_ID).and_then(be32)
        {
            return Ok(id);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no generation id in the kernel's answer",
    ))
}

fn open() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds `socket` to an address the kernel picks, as `nft monitor` does:
/// group news reaches only a socket with one.
fn bind(socket: &OwnedFd) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_nl is valid; bind(2) reads it, of its size.
    let done = unsafe {
        let mut address: libc::sockaddr_nl = std::mem::zeroed();
        address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        libc::bind(
            socket.as_raw_fd(),
            (&address as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    match done {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn setsockopt<T>(socket: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: setsockopt(2) reading a value we own, of its size.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    match done {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The netlink messages in `bytes`, as (type, payload); a message cut short ends the walk.
fn messages(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let length = u32::from_ne_bytes(rest[..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(rest[4..6].try_into().ok()?);
        if length < NLMSG_HDRLEN || length > rest.len() {
            return None;
        }
        let payload = &rest[NLMSG_HDRLEN..length];
        rest = &rest[align(length).min(rest.len())..];
        Some((kind, payload))
    })
}

/// The payload of the first attribute of `wanted` type (nested flag masked off).
fn attribute(mut bytes: &[u8], wanted: u16) -> Option<&[u8]> {
    while bytes.len() >= 4 {
        let length = u16::from_ne_bytes([bytes[0], bytes[1]]) as usize;
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & 0x3fff;
        if length < 4 || length > bytes.len() {
            return None;
        }
        if kind == wanted {
            return Some(&bytes[4..length]);
        }
        bytes = &bytes[align(length).min(bytes.len())..];
    }
    None
}

fn align(length: usize) -> usize {
    (length + 3) & !3
}

fn be32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// A NUL-terminated string attribute, as text.
fn c_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink message of nf_tables `message` in `family` with `attributes`.
    fn message(message: u16, family: u8, attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        for (kind, value) in attributes {
            let length = 4 + value.len();
            body.extend((length as u16).to_ne_bytes());
            body.extend(kind.to_ne_bytes());
            body.extend(*value);
            body.resize(align(body.len()), 0);
        }
        let mut bytes = Vec::new();
        bytes.extend(((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        bytes.extend(((NFNL_SUBSYS_NFTABLES << 8) | message).to_ne_bytes());
        bytes.extend([0; 10]);
        bytes.extend(body);
        bytes
    }

    fn listener(place: Place) -> Listener {
        Listener {
            socket: open().unwrap_or_else(|_| {
                // Any descriptor will do: the parsing never reads it.
                OwnedFd::from(std::fs::File::open("/dev/null").unwrap())
            }),
            place,
            touched: false,
            buffer: Vec::new(),
            ready: Default::default(),
        }
    }

    fn feed(listener: &mut Listener, bytes: &[u8]) -> Vec<Generation> {
        messages(bytes)
            .filter_map(|(kind, payload)| listener.take(kind, payload))
            .collect()
    }

    fn newgen(id: u32, pid: u32, name: &str) -> Vec<u8> {
        let name = format!("{name}\0");
        message(
            NFT_MSG_NEWGEN,
            0,
            &[
                (NFTA_GEN_ID, &id.to_be_bytes()),
                (NFTA_GEN_PROC_PID, &pid.to_be_bytes()),
                (NFTA_GEN_PROC_NAME, name.as_bytes()),
            ],
        )
    }

    #[test]
    fn a_transaction_is_split_at_its_newgen_and_told_if_it_touched_the_place() {
        let nft = Place {
            tables: vec![(NFPROTO_INET, "portlocker".into())],
            chains: Vec::new(),
        };
        let mut l = listener(nft);
        // `nft flush ruleset`: another table, then ours, then NEWGEN.
        let mut bytes = message(NFT_MSG_DELTABLE, NFPROTO_IPV4, &[(ATTR_TABLE, b"filter\0")]);
        bytes.extend(message(
            NFT_MSG_DELTABLE,
            NFPROTO_INET,
            &[(ATTR_TABLE, b"portlocker\0")],
        ));
        bytes.extend(newgen(42, 4242, "nft"));
        // Then a change elsewhere only.
        bytes.extend(message(
            NFT_MSG_NEWRULE,
            NFPROTO_IPV4,
            &[(ATTR_TABLE, b"filter\0"), (NFTA_RULE_CHAIN, b"INPUT\0")],
        ));
        bytes.extend(newgen(43, 77, "iptables-nft"));
        assert_eq!(
            feed(&mut l, &bytes),
            [
                Generation {
                    id: 42,
                    pid: 4242,
                    name: "nft".into(),
                    touched: true
                },
                Generation {
                    id: 43,
                    pid: 77,
                    name: "iptables-nft".into(),
                    touched: false
                },
            ]
        );
    }

    #[test]
    fn in_iptables_only_its_chains_of_the_filter_tables_count() {
        let ipt = Place {
            tables: vec![
                (NFPROTO_IPV4, "filter".into()),
                (NFPROTO_IPV6, "filter".into()),
            ],
            chains: vec!["INPUT".into(), "PORTLOCKER".into()],
        };
        let mut l = listener(ipt);
        let rule = |family, chain: &[u8]| {
            let mut bytes = message(
                NFT_MSG_DELRULE,
                family,
                &[(ATTR_TABLE, b"filter\0"), (NFTA_RULE_CHAIN, chain)],
            );
            bytes.extend(newgen(1, 1, "x"));
            bytes
        };
        let touched = |l: &mut Listener, bytes: Vec<u8>| feed(l, &bytes)[0].touched;
        assert!(!touched(&mut l, rule(NFPROTO_IPV4, b"FORWARD\0")));
        assert!(touched(&mut l, rule(NFPROTO_IPV4, b"INPUT\0")));
        assert!(touched(&mut l, rule(NFPROTO_IPV6, b"PORTLOCKER\0")));
        assert!(!touched(&mut l, rule(NFPROTO_INET, b"INPUT\0")));
        let mut chain = message(
            NFT_MSG_DELCHAIN,
            NFPROTO_IPV4,
            &[
                (ATTR_TABLE, b"filter\0"),
                (NFTA_CHAIN_NAME, b"PORTLOCKER\0"),
            ],
        );
        chain.extend(newgen(2, 1, "x"));
        assert!(touched(&mut l, chain));
        let mut table = message(NFT_MSG_DELTABLE, NFPROTO_IPV6, &[(ATTR_TABLE, b"filter\0")]);
        table.extend(newgen(3, 1, "x"));
        assert!(touched(&mut l, table));
    }

    #[test]
    fn cut_or_lying_lengths_end_the_walk_without_a_panic() {
        let mut l = listener(Place {
            tables: Vec::new(),
            chains: Vec::new(),
        });
        let whole = newgen(5, 6, "nft");
        for cut in 0..whole.len() {
            let _ = feed(&mut l, &whole[..cut]);
        }
        let mut lying = whole.clone();
        lying[0] = 0xff;
        assert!(feed(&mut l, &lying).is_empty());
        let mut attribute_lies = whole;
        attribute_lies[NLMSG_HDRLEN + NFGENMSG_LEN] = 0xff;
        let generations = feed(&mut l, &attribute_lies);
        assert_eq!(generations.len(), 1);
        assert_eq!(generations[0].id, 0);
    }
}
