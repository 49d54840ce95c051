//! The firewall backends a namespace test can run against, and what each
//! test needs to look at and meddle with either one. A scenario written
//! once runs on both with `on_both_backends!`, each in a namespace of its own.

use std::process::Command;

use super::TestEnv;
use super::netns;

pub const IPT: &str = "/sbin/iptables";
pub const IP6T: &str = "/sbin/ip6tables";
pub const NFT: &str = "/usr/sbin/nft";

/// Which firewall portlocker drives in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Iptables,
    Nftables,
}

impl Backend {
    /// A test environment whose config drives this backend, for real.
    pub fn env(self) -> TestEnv {
        match self {
            Backend::Iptables => TestEnv::with_real_iptables(),
            Backend::Nftables => TestEnv::with_real_nftables(),
        }
    }

    /// Everything a test compares before and after: `iptables -S` and
    /// `ip6tables -S`, and with nftables portlocker's table too.
    pub fn snapshot(self) -> String {
        let mut text = format!("{}{}", netns::rules(IPT), netns::rules(IP6T));
        if self == Backend::Nftables {
            text.push_str(&nft_table());
        }
        text
    }

    /// portlocker's rules for `ipv6` or not, one line each, as the backend lists them.
    pub fn ours(self, ipv6: bool) -> Vec<String> {
        match self {
            Backend::Iptables => {
                let table = netns::rules(if ipv6 { IP6T } else { IPT });
                table
                    .lines()
                    .filter(|line| line.starts_with("-A PORTLOCKER "))
                    .map(String::from)
                    .collect()
            }
            Backend::Nftables => {
                let family = if ipv6 {
                    ["meta nfproto ipv6", "ip6 saddr"]
                } else {
                    ["meta nfproto ipv4", "ip saddr"]
                };
                nft_table()
                    .lines()
                    .map(str::trim)
                    .filter(|line| family.iter().any(|word| line.starts_with(word)))
                    .map(String::from)
                    .collect()
            }
        }
    }

    /// How many ways in to portlocker's rules each family has: jumps from
    /// INPUT, or base chains in portlocker's table.
    pub fn ways_in(self, ipv6: bool) -> usize {
        match self {
            Backend::Iptables => netns::rules(if ipv6 { IP6T } else { IPT })
                .lines()
                .filter(|line| line.starts_with("-A INPUT ") && line.ends_with(" -j PORTLOCKER"))
                .count(),
            Backend::Nftables => nft_table().matches("hook input").count(),
        }
    }

    /// Wipes portlocker's part, as a reboot or an admin's cleanup does:
    /// both filter tables flushed and their chains deleted, or the table deleted.
    pub fn wipe(self) {
        match self {
            Backend::Iptables => {
                for binary in [IPT, IP6T] {
                    netns::iptables(binary, &["-F"]);
                    netns::iptables(binary, &["-X"]);
                }
            }
            Backend::Nftables => nft(&["delete", "table", "inet", "portlocker"]),
        }
    }

    /// Empties portlocker's chain, leaving the way in.
    pub fn flush(self) {
        match self {
            Backend::Iptables => {
                for binary in [IPT, IP6T] {
                    netns::iptables(binary, &["-F", "PORTLOCKER"]);
                }
            }
            Backend::Nftables => nft(&["flush", "chain", "inet", "portlocker", "input"]),
        }
    }

    /// Adds by hand a rule that is drift for the backend, first in
    /// portlocker's chain: in iptables a rule tagged as ssh's that
    /// portlocker does not make (an untagged one is the owner's, and stays);
    /// in portlocker's own nftables table anything not portlocker's, here
    /// an accept of :22 for everyone that would defeat a close.
    pub fn meddle(self) {
        match self {
            Backend::Iptables => netns::iptables(
                IPT,
                &[
                    "-I",
                    "PORTLOCKER",
                    "1",
                    "-p",
                    "tcp",
                    "--dport",
                    "2222",
                    "-m",
                    "comment",
                    "--comment",
                    "portlocker:ssh",
                    "-j",
                    "DROP",
                ],
            ),
            Backend::Nftables => nft(&[
                "insert",
                "rule",
                "inet",
                "portlocker",
                "input",
                "tcp",
                "dport",
                "22",
                "accept",
            ]),
        }
    }

    /// An environment whose config drives this backend through wrappers of
    /// the real tools that refuse every rule holding the text given to
    /// `TestEnv::refuse`: the real restore tool or nft is fed that line
    /// with a word it does not know, so it refuses it and names it, and
    /// iptables refuses an -A or -I that holds it. While the file `longest`
    /// of the test directory holds a number, an input of more lines is
    /// refused as netlink refuses a batch too big for it, naming no line;
    /// while `unreadable` exists, nft lists what no one can read.
    pub fn refusing_env(self) -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let wrap = |name: &str, real: &str| {
            let path = bin.join(name);
            let script = format!(
                "#!/bin/bash\n\
                 if [ -e {dir}/unreadable ] && [[ \" $* \" == *' list '* ]]; then echo 'not json'; exit 0; fi\n\
                 text=$(cat {dir}/refuse 2>/dev/null)\n\
                 most=$(cat {dir}/longest 2>/dev/null)\n\
                 [ -z \"$text$most\" ] && exec {real} \"$@\"\n\
                 case \" $* \" in *' -A '* | *' -I '*)\n\
                 \x20   [[ -n \"$text\" && \"$*\" == *\"$text\"* ]] && {{ echo \"{name}: refused (test)\" >&2; exit 2; }} ;;\n\
                 esac\n\
                 input=$(mktemp -p {dir})\n\
                 if [ -n \"$text\" ]; then sed \"s|.*${{text}}.*|& no-such-word|\"; else cat; fi >\"$input\"\n\
                 if [ -n \"$most\" ] && [ $(wc -l <\"$input\") -gt \"$most\" ]; then\n\
                 \x20   echo 'netlink: Error: Could not process rule: Message too long' >&2; exit 1\n\
                 fi\n\
                 exec {real} \"$@\" <\"$input\"\n",
                dir = dir.path().display(),
            );
            super::write_program(&path, &script);
            path
        };
        let env = match self {
            Backend::Iptables => TestEnv {
                iptables: wrap("iptables", IPT),
                ip6tables: wrap("ip6tables", IP6T),
                backend: format!(
                    "iptables_restore = {:?}\nip6tables_restore = {:?}\n",
                    wrap("iptables-restore", "/sbin/iptables-restore"),
                    wrap("ip6tables-restore", "/sbin/ip6tables-restore"),
                ),
                dir,
            },
            Backend::Nftables => TestEnv {
                iptables: IPT.into(),
                ip6tables: IP6T.into(),
                backend: format!("backend = \"nftables\"\nnft = {:?}\n", wrap("nft", NFT)),
                dir,
            },
        };
        env.write_default_config();
        env
    }

    /// What the last line of the first `reset` says.
    pub fn reset_ends(self) -> &'static str {
        match self {
            Backend::Iptables => "IPv6: delete chain PORTLOCKER",
            Backend::Nftables => "delete table inet portlocker",
        }
    }
}

/// `nft list table inet portlocker`, empty when there is none.
pub fn nft_table() -> String {
    let output = Command::new(NFT)
        .args(["list", "table", "inet", "portlocker"])
        .env("TZ", "UTC0")
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap()
}

/// Runs nft inside the namespace, asserting success.
pub fn nft(args: &[&str]) {
    let status = Command::new(NFT).args(args).status().unwrap();
    assert!(status.success(), "nft {args:?}");
}

/// Feeds `script` to `nft -f -` inside the namespace, asserting success.
pub fn nft_script(script: &str) {
    use std::io::Write;
    let mut child = Command::new(NFT)
        .args(["-f", "-"])
        .env("TZ", "UTC0")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f -:\n{script}");
}

/// Like `netns::enter`, for a test of `backend`: an nftables test skips
/// where nft is missing or does not work in a private namespace.
pub fn enter(test: &str, backend: Backend) -> bool {
    if backend == Backend::Nftables
        && !netns::inside()
        && let Err(reason) = nft_works()
    {
        netns::skip(test, &reason);
        return false;
    }
    netns::enter(test)
}

/// Like `enter`, with a private mount namespace as well.
pub fn enter_with_mounts(test: &str, backend: Backend) -> bool {
    if backend == Backend::Nftables
        && !netns::inside()
        && let Err(reason) = nft_works()
    {
        netns::skip(test, &reason);
        return false;
    }
    netns::enter_with_mounts(test)
}

fn nft_works() -> Result<(), String> {
    if !std::path::Path::new(NFT).exists() {
        return Err(format!("{NFT} is missing (apt-get install nftables)"));
    }
    let probe = Command::new("unshare")
        .args(["--net", "--map-root-user", "--", NFT, "list", "ruleset"])
        .output()
        .map_err(|error| format!("cannot run unshare: {error}"))?;
    if !probe.status.success() {
        return Err(format!(
            "nft does not work in a private network namespace here: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    Ok(())
}

/// Writes a scenario once and runs it on both backends, each in a namespace
/// of its own: `fn NAME(backend: Backend) { … }` becomes the tests
/// `NAME::iptables` and `NAME::nftables`.
#[macro_export]
macro_rules! on_both_backends {
    ($(#[$meta:meta])* fn $name:ident($backend:ident: Backend) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::common::backend::{self, Backend};

            fn scenario($backend: Backend) $body

            #[test]
            fn iptables() {
                let test = concat!(stringify!($name), "::iptables");
                if backend::enter(test, Backend::Iptables) {
                    scenario(Backend::Iptables);
                }
            }

            #[test]
            fn nftables() {
                let test = concat!(stringify!($name), "::nftables");
                if backend::enter(test, Backend::Nftables) {
                    scenario(Backend::Nftables);
                }
            }
        }
    };
}
