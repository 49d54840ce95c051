//! This host's own addresses, as the kernel lists them to this process
//! (`getifaddrs`): where a packet from the network for this host is sent.
//! Reads only; starts no process.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::config::Family;

/// The addresses of `family` on every interface but loopback; None when the
/// kernel would not list them.
pub fn local_addresses(family: Family) -> Option<Vec<IpAddr>> {
    let mut first: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills in a list it allocates; freed below.
    if unsafe { libc::getifaddrs(&mut first) } != 0 {
        return None;
    }
    let mut found = Vec::new();
    let mut at = first;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs made, not yet freed.
        let entry = unsafe { &*at };
        at = entry.ifa_next;
        // SAFETY: a non-null ifa_addr points to a sockaddr of the family it names.
        let Some(address) = (unsafe { address_of(entry.ifa_addr) }) else {
            continue;
        };
        let ours = matches!(
            (family, address),
            (Family::Ipv4, IpAddr::V4(_)) | (Family::Ipv6, IpAddr::V6(_))
        );
        if ours && !address.is_loopback() && !found.contains(&address) {
            found.push(address);
        }
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(first) };
    found.sort();
    Some(found)
}

/// The names of this host's interfaces, loopback left out; None when the
/// kernel would not list them.
pub fn interfaces() -> Option<Vec<String>> {
    let mut first: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills in a list it allocates; freed below.
    if unsafe { libc::getifaddrs(&mut first) } != 0 {
        return None;
    }
    let mut found: Vec<String> = Vec::new();
    let mut at = first;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs made, not yet freed.
        let entry = unsafe { &*at };
        at = entry.ifa_next;
        // SAFETY: ifa_name is a NUL-terminated string of the node.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        let name = name.to_string_lossy().into_owned();
        if name != "lo" && !found.contains(&name) {
            found.push(name);
        }
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(first) };
    found.sort();
    Some(found)
}

/// The networks this host's interfaces are on, loopback left out, each
/// with its interface: a packet forwarded to an address in one of them
/// leaves by that interface. None when they could not be read.
pub fn networks(family: Family) -> Option<Vec<(String, IpNet)>> {
    let mut first: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills in a list it allocates; freed below.
    if unsafe { libc::getifaddrs(&mut first) } != 0 {
        return None;
    }
    let mut found: Vec<(String, IpNet)> = Vec::new();
    let mut at = first;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs made, not yet freed.
        let entry = unsafe { &*at };
        at = entry.ifa_next;
        // SAFETY: non-null ifa_addr and ifa_netmask point to sockaddrs of
        // the family they name; ifa_name is a NUL-terminated string.
        let (address, mask, name) = unsafe {
            (
                address_of(entry.ifa_addr),
                address_of(entry.ifa_netmask),
                std::ffi::CStr::from_ptr(entry.ifa_name),
            )
        };
        let (Some(address), Some(mask)) = (address, mask) else {
            continue;
        };
        let ours = matches!(
            (family, address),
            (Family::Ipv4, IpAddr::V4(_)) | (Family::Ipv6, IpAddr::V6(_))
        );
        let Ok(net) = IpNet::with_netmask(address, mask) else {
            continue;
        };
        let name = name.to_string_lossy().into_owned();
        let entry = (name, net.trunc());
        if ours && !address.is_loopback() && !found.contains(&entry) {
            found.push(entry);
        }
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(first) };
    found.sort();
    Some(found)
}

/// The address a sockaddr holds, for IPv4 and IPv6.
///
/// # Safety
/// `address` is null or points to a sockaddr as large as its family says.
unsafe fn address_of(address: *const libc::sockaddr) -> Option<IpAddr> {
    if address.is_null() {
        return None;
    }
    // SAFETY: the caller's promise.
    match i32::from(unsafe { (*address).sa_family }) {
        libc::AF_INET => {
            // SAFETY: an AF_INET sockaddr is a sockaddr_in.
            let v4 = unsafe { &*(address as *const libc::sockaddr_in) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6.
            let v6 = unsafe { &*(address as *const libc::sockaddr_in6) };
            Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_never_listed() {
        assert!(
            !interfaces()
                .expect("getifaddrs works")
                .contains(&"lo".to_owned())
        );
        for family in [Family::Ipv4, Family::Ipv6] {
            let found = local_addresses(family).expect("getifaddrs works");
            assert!(
                found.iter().all(|address| !address.is_loopback()),
                "{found:?}"
            );
            let networks = networks(family).expect("getifaddrs works");
            assert!(networks.iter().all(|(name, net)| name != "lo"
                && !net.addr().is_loopback()
                && net.trunc() == *net));
        }
    }
}
