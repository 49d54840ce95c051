//! Which proxy, if any, an HTTPS request goes through: the environment read
//! as reqwest (hyper-util) read it before ureq (HTTPS_PROXY, else ALL_PROXY;
//! NO_PROXY's domains, addresses and networks go direct; none at all under
//! CGI, where HTTP_PROXY-style names come from a request). Reads only the
//! environment; never connects.

use std::net::IpAddr;

use ipnet::IpNet;

/// The proxy the environment names for an HTTPS request to `host`.
pub fn for_host(host: &str) -> Option<String> {
    // httpoxy: under CGI, a request's `Proxy:` header arrives as HTTP_PROXY.
    if std::env::var_os("REQUEST_METHOD").is_some() {
        return None;
    }
    let first = |names: [&str; 2]| {
        names
            .into_iter()
            .find_map(|name| std::env::var(name).ok())
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    };
    let proxy =
        first(["HTTPS_PROXY", "https_proxy"]).or_else(|| first(["ALL_PROXY", "all_proxy"]))?;
    let no_proxy = first(["NO_PROXY", "no_proxy"]).unwrap_or_default();
    (!bypasses(&no_proxy, host)).then_some(proxy)
}

/// Whether the NO_PROXY list `no_proxy` sends `host` direct: `*`; an
/// address or a network holding it; a domain (with or without a leading
/// dot) that is it or ends it after a dot.
fn bypasses(no_proxy: &str, host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let address = bare.parse::<IpAddr>().ok();
    let entries = no_proxy.split(',').map(str::trim);
    entries.filter(|entry| !entry.is_empty()).any(|entry| {
        if entry == "*" {
            return true;
        }
        match address {
            Some(address) => match entry.parse::<IpNet>() {
                Ok(network) => network.contains(&address),
                Err(_) => entry.parse::<IpAddr>() == Ok(address),
            },
            None => {
                let domain = entry.strip_prefix('.').unwrap_or(entry);
                let ends = bare.len() > domain.len()
                    && bare.is_char_boundary(bare.len() - domain.len())
                    && bare[bare.len() - domain.len()..].eq_ignore_ascii_case(domain)
                    && bare.as_bytes()[bare.len() - domain.len() - 1] == b'.';
                bare.eq_ignore_ascii_case(domain) || ends
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_names_domains_with_their_subdomains_addresses_and_networks() {
        let list = "localhost, .internal.example, example.org,10.0.0.0/8, ::1,192.0.2.7";
        for direct in [
            "localhost",
            "EXAMPLE.org",
            "files.example.org",
            "internal.example",
            "a.b.internal.example",
            "10.1.2.3",
            "[::1]",
            "192.0.2.7",
        ] {
            assert!(bypasses(list, direct), "{direct}");
        }
        for proxied in [
            "notexample.org",
            "example.org.evil",
            "192.0.2.8",
            "11.0.0.1",
            "[::2]",
            "localhost.example",
        ] {
            assert!(!bypasses(list, proxied), "{proxied}");
        }
        assert!(bypasses("*", "example.org") && bypasses("*", "127.0.0.1"));
        assert!(!bypasses("", "example.org"));
        assert!(!bypasses(" , ", "example.org"));
    }
}
