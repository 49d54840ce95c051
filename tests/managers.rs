//! Next to the firewall managers real hosts run: their own rulesets, as
//! the real tools make them in a namespace, judged by portlocker's
//! evaluator and checked against real connections through a veth pair.
//!
//! Each scenario sets a manager up (ufw, fail2ban with either banaction,
//! firewalld on either backend, Debian's nftables.conf in server form, a
//! Docker-style and a Kubernetes-style host built by hand in their real
//! chain layouts), reads the host with portlocker's own reader, and checks
//! each line of `tests/fixtures/managers/NAME/expected` — the evaluator's
//! answer, and what connections from the client namespace find. With
//! PORTLOCKER_RECORD_FIXTURES=1 it first writes the ruleset it made to
//! that directory (`iptables-save.v4`, `iptables-save.v6`, `nft.json`), from
//! which `recorded_rulesets_give_the_expected_answers` checks the same
//! answers without root, namespaces or managers.

mod common;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::Utc;
use common::managers::Managers;
use common::netns;
use common::peer::{self, Peer};
use portlocker::config::{Config, Family, PortSpec};
use portlocker::firewall::eval::{Answer, Question, evaluate};
use portlocker::firewall::host::{self, Recorded};
use portlocker::firewall::model::PortState;
use portlocker::firewall::ruleset::Host;
use portlocker::sys::runner::SystemRunner;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/managers")
}

/// One line of an `expected` file: `ipv4 22/tcp [from NET] => STATE [~ TEXT]`.
#[derive(Debug)]
struct Expected {
    family: Family,
    ports: PortSpec,
    from: Option<ipnet::IpNet>,
    state: PortState,
    /// Words the reason must hold.
    says: Option<String>,
    line: String,
}

fn expected(name: &str) -> Vec<Expected> {
    let text = fs::read_to_string(fixtures().join(name).join("expected")).unwrap();
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (asked, answer) = line.split_once(" => ").expect("ASKED => ANSWER");
            let words: Vec<&str> = asked.split_whitespace().collect();
            let family = match words[0] {
                "ipv4" => Family::Ipv4,
                "ipv6" => Family::Ipv6,
                other => panic!("no family {other} in {line}"),
            };
            let from = match words.get(2..) {
                Some(["from", net]) => Some(net.parse().unwrap()),
                Some([]) => None,
                _ => panic!("{line}"),
            };
            let (state, says) = match answer.split_once(" ~ ") {
                Some((state, says)) => (state, Some(says.to_owned())),
                None => (answer, None),
            };
            let state = PortState::ALL
                .into_iter()
                .find(|candidate| candidate.as_str() == state.trim())
                .unwrap_or_else(|| panic!("no state {state} in {line}"));
            Expected {
                family,
                ports: PortSpec::parse(words[1]).unwrap(),
                from,
                state,
                says,
                line: line.to_owned(),
            }
        })
        .collect()
}

/// The evaluator's answer to one expected line, about `host`.
fn answer(host: &Host, expected: &Expected) -> Answer {
    let path = host
        .family(expected.family)
        .unwrap_or_else(|| panic!("{:?} not read: {host:?}", expected.family));
    let question = Question {
        family: expected.family,
        ports: expected.ports,
        from: expected.from,
    };
    evaluate(path, &question, Utc::now())
}

#[track_caller]
fn assert_answers(name: &str, host: &Host) -> Vec<(Expected, Answer)> {
    let mut found = Vec::new();
    for line in expected(name) {
        let answer = answer(host, &line);
        assert_eq!(
            answer.state, line.state,
            "{name}: {}: {}",
            line.line, answer.reason
        );
        if let Some(says) = &line.says {
            assert!(
                answer.reason.contains(says.as_str()),
                "{name}: {}: {}",
                line.line,
                answer.reason
            );
        }
        found.push((line, answer));
    }
    found
}

#[test]
fn recorded_rulesets_give_the_expected_answers() {
    let mut names: Vec<String> = fs::read_dir(fixtures())
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        let dir = fixtures().join(&name);
        let read = |file: &str| fs::read_to_string(dir.join(file)).ok();
        let recorded = Recorded {
            iptables_save: read("iptables-save.v4"),
            ip6tables_save: read("iptables-save.v6"),
            nft_ruleset: read("nft.json"),
            local: [peer::SERVER_V4, peer::SERVER_V6]
                .iter()
                .map(|address| address.parse().unwrap())
                .collect(),
            interfaces: read("interfaces")
                .map(|text| text.split_whitespace().map(String::from).collect()),
            networks: read("networks").map(|text| {
                text.lines()
                    .filter_map(|line| line.split_once(' '))
                    .map(|(name, net)| (name.to_owned(), net.parse().unwrap()))
                    .collect()
            }),
        };
        let host = host::from_recorded(&recorded, &[Family::Ipv4, Family::Ipv6]).unwrap();
        assert_answers(&name, &host);
    }
}

/// The host as portlocker reads it here (through the real tools), for new
/// connections to `ports`.
fn read_host(ports: &[&str]) -> Host {
    let services: String = ports
        .iter()
        .enumerate()
        .map(|(index, ports)| format!("s{index} = \"{ports}\"\n"))
        .collect();
    let config = Config::parse(&format!("source = \"-\"\n[services]\n{services}")).unwrap();
    let (host, errors) = host::read(&config, SystemRunner::new(&config), &mut Vec::new());
    assert!(errors.is_empty(), "{errors:?}");
    host
}

/// Writes what the namespace holds to `tests/fixtures/managers/NAME`, when
/// PORTLOCKER_RECORD_FIXTURES=1: each tool's listing, dates left out.
fn record(name: &str) {
    if std::env::var("PORTLOCKER_RECORD_FIXTURES").as_deref() != Ok("1") {
        return;
    }
    let dir = fixtures().join(name);
    fs::create_dir_all(&dir).unwrap();
    let interfaces = portlocker::sys::net::interfaces().unwrap();
    fs::write(dir.join("interfaces"), interfaces.join("\n") + "\n").unwrap();
    let networks: String = [Family::Ipv4, Family::Ipv6]
        .into_iter()
        .flat_map(|family| portlocker::sys::net::networks(family).unwrap())
        .map(|(name, net)| format!("{name} {net}\n"))
        .collect();
    fs::write(dir.join("networks"), networks).unwrap();
    let listing = |argv: &[&str]| {
        let output = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
        assert!(output.status.success(), "{argv:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| format!("{line}\n"))
            .collect::<String>()
    };
    for (file, argv) in [
        ("iptables-save.v4", &["/usr/sbin/iptables-nft-save"][..]),
        ("iptables-save.v6", &["/usr/sbin/ip6tables-nft-save"][..]),
        ("nft.json", &["/usr/sbin/nft", "-j", "list", "ruleset"][..]),
    ] {
        let text = listing(argv);
        let empty = text.trim().is_empty()
            || text.contains("\"nftables\": [{\"metainfo\"") && !text.contains("\"table\"");
        match empty {
            true => {
                let _ = fs::remove_file(dir.join(file));
            }
            false => fs::write(dir.join(file), text).unwrap(),
        }
    }
}

/// Checks every expected answer of `name` on the host as read here, and
/// what a real connection from the client finds: never closed where one
/// gets through, never open where every one is dropped.
fn check_live(name: &str, peer: &Peer) {
    record(name);
    let ports: Vec<String> = expected(name)
        .iter()
        .map(|line| line.ports.to_string())
        .collect();
    let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
    let host = read_host(&ports);
    for (line, answer) in assert_answers(name, &host) {
        if line.ports.protocol != portlocker::config::Protocol::Tcp {
            continue;
        }
        let (server, clients): (&str, &[&str]) = match line.family {
            Family::Ipv4 => (peer::SERVER_V4, &peer::CLIENTS_V4),
            Family::Ipv6 => (peer::SERVER_V6, &peer::CLIENTS_V6),
        };
        let from: Vec<&str> = clients
            .iter()
            .copied()
            .filter(|client| {
                line.from
                    .is_none_or(|net| net.contains(&client.parse::<IpAddr>().unwrap()))
            })
            .collect();
        // Where a connection should get through, a miss is tried again patiently.
        let patient = matches!(answer.state, PortState::Open | PortState::RateLimited);
        let through: Vec<&str> = from
            .iter()
            .copied()
            .filter(|client| match patient {
                true => peer.reaches(client, server, line.ports.first),
                false => peer.connects(client, server, line.ports.first),
            })
            .collect();
        match answer.state {
            PortState::Closed => assert!(
                through.is_empty(),
                "{name}: {}: but {through:?} got through",
                line.line
            ),
            PortState::Open | PortState::RateLimited => {
                assert!(
                    !through.is_empty(),
                    "{name}: {}: but none of {from:?} got through",
                    line.line
                )
            }
            _ => {}
        }
    }
}

/// A private tmpfs on a temporary directory, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// Enters the test's namespaces (network and mount: the managers' files
/// go on a private tmpfs), with the managers `needs` names; None when it
/// must not run here.
fn enter(test: &str, needs: &[&str]) -> Option<(Managers, Tmpfs)> {
    if !netns::inside()
        && let Err(reason) = Managers::find(needs)
    {
        Managers::skip(test, &reason);
        return None;
    }
    if !netns::enter_with_mounts(test) {
        return None;
    }
    let managers = Managers::find(needs).unwrap();
    let work = tempfile::tempdir().unwrap();
    mount_tmpfs(work.path());
    Some((managers, Tmpfs(work)))
}

fn mount_tmpfs(path: &Path) {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=755,size=64m", "portlocker-test"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mount a tmpfs on {}", path.display());
}

#[test]
fn ufw() {
    let Some((managers, work)) = enter("ufw", &["usr/sbin/ufw"]) else {
        return;
    };
    let peer = Peer::new();
    peer::listen(&[22, 23, 80, 443, 8080]);
    let ufw = managers.ufw(work.path());
    ufw.run(&["allow", "80/tcp"]);
    ufw.run(&["deny", "23/tcp"]);
    ufw.run(&["limit", "22/tcp"]);
    ufw.run(&[
        "allow",
        "from",
        "192.0.2.64/26",
        "to",
        "any",
        "port",
        "8080",
        "proto",
        "tcp",
    ]);
    ufw.run(&["allow", "60000:61000/udp"]);
    // As after a reboot: on a fresh install ufw 0.36.2 leaves IPv6's limit
    // chains empty until its rules are loaded again (the packaged
    // user6.rules lacks them), and a limited port is then closed on IPv6.
    ufw.run(&["reload"]);
    check_live("ufw", &peer);
}

fn fail2ban(test: &str, banaction: &str) {
    let Some((managers, work)) = enter(test, &["usr/bin/fail2ban-server"]) else {
        return;
    };
    let peer = Peer::new();
    peer::listen(&[22, 80]);
    let fail2ban = managers.fail2ban(work.path(), banaction);
    fail2ban.ban(&["192.0.2.7", "198.51.100.9", "2001:db8::7"]);
    check_live(test, &peer);
    drop(fail2ban);
}

#[test]
fn fail2ban_iptables() {
    fail2ban("fail2ban_iptables", "iptables-multiport");
}

#[test]
fn fail2ban_nftables() {
    fail2ban("fail2ban_nftables", "nftables-multiport");
}

/// firewalld's public zone in these tests: ssh, 8080/tcp, and 9090/tcp
/// from 192.0.2.64/26 only.
const PUBLIC_ZONE: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone>\n  <short>Public</short>\n  \
    <service name=\"ssh\"/>\n  <port protocol=\"tcp\" port=\"8080\"/>\n  <rule family=\"ipv4\">\
    <source address=\"192.0.2.64/26\"/><port protocol=\"tcp\" port=\"9090\"/><accept/></rule>\n</zone>\n";

fn firewalld(test: &str, backend: &str) {
    let needs = [
        "usr/sbin/firewalld",
        "usr/lib/python3/dist-packages/nftables",
    ];
    let Some((managers, work)) = enter(test, &needs) else {
        return;
    };
    // Its bus socket: on a /run of this namespace's own.
    mount_tmpfs(Path::new("/run"));
    let peer = Peer::new();
    peer::listen(&[22, 443, 8080, 9090]);
    let firewalld = managers.firewalld(work.path(), backend, PUBLIC_ZONE);
    check_live(test, &peer);
    drop(firewalld);
}

#[test]
fn firewalld_nftables() {
    firewalld("firewalld_nftables", "nftables");
}

#[test]
fn firewalld_iptables() {
    firewalld("firewalld_iptables", "iptables");
}

/// Debian's shipped `workstation.nft` (nftables, GPL-2) in server form: its
/// `tcp dport { 22, 80, 443 }` line active, everything else dropped.
const DEBIAN_SERVER: &str = "flush ruleset\n\
table inet filter {\n\
\tchain input {\n\
\t\ttype filter hook input priority 0; policy drop;\n\
\t\tiif lo accept\n\
\t\tct state established,related accept\n\
\t\ttcp dport { 22, 80, 443 } ct state new accept\n\
\t\tmeta nfproto ipv6 icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-reply, echo-request, nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, 148, 149 } accept\n\
\t\tip6 saddr fe80::/10 icmpv6 type { 130, 131, 132, 143, 151, 152, 153 } accept\n\
\t\tcounter drop\n\
\t}\n\
\tchain forward {\n\t\ttype filter hook forward priority 0; policy drop;\n\t}\n\
\tchain output {\n\t\ttype filter hook output priority 0; policy accept;\n\t}\n\
}\n";

#[test]
fn debian_nftables_conf_server() {
    let test = "debian_nftables_conf_server";
    if !netns::enter(test) {
        return;
    }
    let peer = Peer::new();
    peer::listen(&[22, 80, 443, 8080]);
    load("/usr/sbin/nft", &["-f", "-"], DEBIAN_SERVER);
    check_live(test, &peer);
}

/// Feeds `input` to `program ARGS`.
fn load(program: &str, args: &[&str], input: &str) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{program} {args:?}");
}

/// A host where Docker publishes a container's port 80 as 8080, in
/// Docker's own chain layout (as `dockerd` 26 writes it with iptables-nft).
const DOCKER: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n\
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n\
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE\n\
-A DOCKER -i docker0 -j RETURN\n\
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\n\
COMMIT\n\
*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n\
:DOCKER-ISOLATION-STAGE-1 - [0:0]\n:DOCKER-ISOLATION-STAGE-2 - [0:0]\n:DOCKER-USER - [0:0]\n\
-A FORWARD -j DOCKER-USER\n\
-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
-A FORWARD -o docker0 -j DOCKER\n\
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n\
-A FORWARD -i docker0 -o docker0 -j ACCEPT\n\
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT\n\
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2\n\
-A DOCKER-ISOLATION-STAGE-1 -j RETURN\n\
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP\n\
-A DOCKER-ISOLATION-STAGE-2 -j RETURN\n\
-A DOCKER-USER -j RETURN\n\
COMMIT\n";

#[test]
fn docker_style() {
    let test = "docker_style";
    if !netns::enter(test) {
        return;
    }
    let peer = Peer::new();
    // 8080 too: over IPv6, nothing publishes it.
    peer::listen(&[22, 8080]);
    let _container = peer::Container::new("docker0", "172.17.0.1/16", "172.17.0.2/16", 80);
    load("/usr/sbin/iptables-restore", &["-w", "5"], DOCKER);
    check_live(test, &peer);
}

/// nftables statements that work on some packets only, or translate to
/// a destination a map decides (hostile tester 8): in an `inet` table,
/// `dnat ip to` translates IPv4 alone and `reject with icmp …` rejects IPv4
/// alone (`with icmpv6 …`, IPv6 alone); a redirect through a map may send a
/// port anywhere; a range of one port is that port. 2200, 2300 and 2400
/// are dropped where they reach input as they are.
const NFT_TRANSLATIONS: &str = "flush ruleset\n\
table inet t {\n\
\tchain pre {\n\
\t\ttype nat hook prerouting priority dstnat; policy accept;\n\
\t\ttcp dport 2200 redirect to tcp dport map { 2200 : 22 }\n\
\t\ttcp dport 2300 dnat ip to 192.0.2.1:22\n\
\t\ttcp dport 2400 dnat ip to 192.0.2.1:22-22\n\
\t}\n\
\tchain input {\n\
\t\ttype filter hook input priority filter; policy accept;\n\
\t\ttcp dport { 2200, 2300, 2400 } drop\n\
\t\ttcp dport 23 reject with icmp type admin-prohibited\n\
\t\ttcp dport 24 reject with icmpv6 type admin-prohibited\n\
\t}\n\
}\n";

#[test]
fn nft_translations() {
    let test = "nft_translations";
    if !netns::enter(test) {
        return;
    }
    let peer = Peer::new();
    peer::listen(&[22, 23, 24]);
    load("/usr/sbin/nft", &["-f", "-"], NFT_TRANSLATIONS);
    check_live(test, &peer);
}

/// A Kubernetes node as kube-proxy (iptables mode, 1.28) writes it: a
/// NodePort service 30080 to a pod's 8080, ClusterIP services, and its
/// filter chains on INPUT.
const KUBERNETES: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
:KUBE-EXTERNAL-SERVICES - [0:0]\n:KUBE-FIREWALL - [0:0]\n:KUBE-FORWARD - [0:0]\n\
:KUBE-KUBELET-CANARY - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-PROXY-CANARY - [0:0]\n\
:KUBE-PROXY-FIREWALL - [0:0]\n:KUBE-SERVICES - [0:0]\n\
-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n\
-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
-A INPUT -j KUBE-FIREWALL\n\
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A OUTPUT -j KUBE-FIREWALL\n\
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n\
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
-A KUBE-SERVICES -d 10.96.0.99/32 -p tcp -m comment --comment \"default/no-endpoints:http has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable\n\
COMMIT\n\
*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
:KUBE-EXT-LWV6ZGYA6UOGRP4B - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-NODEPORTS - [0:0]\n\
:KUBE-POSTROUTING - [0:0]\n:KUBE-SEP-IJBRZ6ZAEUW2LXXE - [0:0]\n:KUBE-SEP-QAHO3FFLB4ZE3ZYV - [0:0]\n\
:KUBE-SERVICES - [0:0]\n:KUBE-SVC-LWV6ZGYA6UOGRP4B - [0:0]\n:KUBE-SVC-NPX46M4PTMTKRN6Y - [0:0]\n\
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
-A KUBE-EXT-LWV6ZGYA6UOGRP4B -m comment --comment \"masquerade traffic for default/web:http external destinations\" -j KUBE-MARK-MASQ\n\
-A KUBE-EXT-LWV6ZGYA6UOGRP4B -j KUBE-SVC-LWV6ZGYA6UOGRP4B\n\
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
-A KUBE-NODEPORTS -p tcp -m comment --comment \"default/web:http\" -m tcp --dport 30080 -j KUBE-EXT-LWV6ZGYA6UOGRP4B\n\
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
-A KUBE-SEP-IJBRZ6ZAEUW2LXXE -s 10.244.1.5/32 -m comment --comment \"default/web:http\" -j KUBE-MARK-MASQ\n\
-A KUBE-SEP-IJBRZ6ZAEUW2LXXE -p tcp -m comment --comment \"default/web:http\" -m tcp -j DNAT --to-destination 10.244.1.5:8080\n\
-A KUBE-SEP-QAHO3FFLB4ZE3ZYV -s 172.18.0.2/32 -m comment --comment \"default/kubernetes:https\" -j KUBE-MARK-MASQ\n\
-A KUBE-SEP-QAHO3FFLB4ZE3ZYV -p tcp -m comment --comment \"default/kubernetes:https\" -m tcp -j DNAT --to-destination 172.18.0.2:6443\n\
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment \"default/kubernetes:https cluster IP\" -m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y\n\
-A KUBE-SERVICES -d 10.96.12.34/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-LWV6ZGYA6UOGRP4B\n\
-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n\
-A KUBE-SVC-LWV6ZGYA6UOGRP4B ! -s 10.244.0.0/16 -d 10.96.12.34/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ\n\
-A KUBE-SVC-LWV6ZGYA6UOGRP4B -m comment --comment \"default/web:http -> 10.244.1.5:8080\" -j KUBE-SEP-IJBRZ6ZAEUW2LXXE\n\
-A KUBE-SVC-NPX46M4PTMTKRN6Y ! -s 10.244.0.0/16 -d 10.96.0.1/32 -p tcp -m comment --comment \"default/kubernetes:https cluster IP\" -m tcp --dport 443 -j KUBE-MARK-MASQ\n\
-A KUBE-SVC-NPX46M4PTMTKRN6Y -m comment --comment \"default/kubernetes:https -> 172.18.0.2:6443\" -j KUBE-SEP-QAHO3FFLB4ZE3ZYV\n\
COMMIT\n";

#[test]
fn kubernetes_style() {
    let test = "kubernetes_style";
    if !netns::enter(test) {
        return;
    }
    let peer = Peer::new();
    peer::listen(&[22, 443, 10250]);
    let _pod = peer::Container::new("cni0", "10.244.1.1/24", "10.244.1.5/24", 8080);
    load("/usr/sbin/iptables-restore", &["-w", "5"], KUBERNETES);
    check_live(test, &peer);
}

// portlocker itself next to the managers: what status, the JSON, the page
// and the metrics say, and what runs and `check` advise.

use common::TestEnv;
use common::backend::{self, Backend};

/// What `status`, `status --json`, the page and the metrics say of
/// `service` in `family` ("IPv4"), each as `status` spells states.
fn said(env: &TestEnv, service: &str, family: &str) -> [String; 4] {
    let column = if family == "IPv4" { 2 } else { 3 };
    let text = env.run(&["status"]).stdout;
    let row: Vec<&str> = text
        .lines()
        .map(|line| {
            line.split("  ")
                .filter(|cell| !cell.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first() == Some(&service))
        .unwrap_or_else(|| panic!("no {service} in status:\n{text}"));
    // A state not as asked is shown with what was asked: the state alone.
    let status = row[column]
        .split(" (asked: ")
        .next()
        .unwrap()
        .replace('-', " ");
    let document: serde_json::Value =
        serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    let entry = document["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["name"] == service)
        .unwrap()
        .clone();
    let json = entry["state"][family.to_lowercase()]
        .as_str()
        .unwrap()
        .to_owned();
    let page = env.status_page().unwrap();
    let marker = format!("data-family=\"{family}\">{family} ");
    let item = page
        .split("<li class=\"service\"")
        .find(|item| item.starts_with(&format!(" data-service=\"{service}\"")))
        .unwrap();
    let shown = item
        .split_once(&marker)
        .unwrap()
        .1
        .split("</span>")
        .next()
        .unwrap();
    let page = shown
        .split(" <span")
        .next()
        .unwrap()
        .split(" (asked: ")
        .next()
        .unwrap()
        .to_owned();
    let metrics = fs::read_to_string(env.path("portlocker.prom")).unwrap_or_default();
    let sample = format!(
        "portlocker_service_closed{{service=\"{service}\",family=\"{}\"}} ",
        family.to_lowercase()
    );
    let metric = metrics
        .lines()
        .find_map(|line| line.strip_prefix(&sample))
        .unwrap_or("absent")
        .to_owned();
    [status, json, page, metric]
}

/// The JSON's reason for `service` in `family` ("ipv4").
fn reason(env: &TestEnv, service: &str, family: &str) -> String {
    let document: serde_json::Value =
        serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    let entry = document["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == service)
        .unwrap()
        .clone();
    entry["families"][family]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// An environment on the real firewall with `backend`, metrics, `firewall`
/// lines and these services.
fn portlocker(backend: Backend, firewall: &str, services: &str) -> TestEnv {
    let env = backend.env();
    let text = format!(
        "metrics_file = {:?}\n{}",
        env.path("portlocker.prom"),
        env.local_config("", firewall)
    )
    .replace(common::SERVICES, services);
    env.write_config(&text);
    env
}

fn next_to_ufw(test: &str, backend: Backend) {
    let Some((managers, work)) = enter(test, &["usr/sbin/ufw"]) else {
        return;
    };
    let peer = Peer::new();
    peer::listen(&[22, 23, 80]);
    let ufw = managers.ufw(work.path());
    ufw.run(&["limit", "22/tcp"]);
    ufw.run(&["deny", "23/tcp"]);
    ufw.run(&["reload"]);
    let env = portlocker(backend, "", "ssh = 22\ntelnet = 23\nweb = 80\n");
    env.control("close ssh\nopen telnet\nopen web\n");
    // Closed more than asked is not as asked: the run fails, and says why.
    let run = env.run(&[]);
    run.expect(1);
    for family in ["IPv4", "IPv6"] {
        assert_eq!(
            said(&env, "ssh", family),
            ["closed", "closed", "closed", "1"],
            "{family}"
        );
        assert_eq!(
            said(&env, "telnet", family),
            ["closed", "closed", "closed", "1"],
            "{family}"
        );
    }
    assert!(!peer.connects("192.0.2.2", peer::SERVER_V4, 22));
    // ufw's rules are ufw's to change: named, never advised away.
    run.says(
        "telnet 23/tcp is closed, but the control file opens it: dropped by `-A ufw-user-input -p \
         tcp -m tcp --dport 23 -j DROP`; it is ufw's: let 23/tcp in through ufw",
    );
    run.says(
        "web 80/tcp is closed, but the control file opens it: dropped by the policy drop of chain \
         INPUT (iptables filter); let 80/tcp in through ufw",
    );
    assert!(!run.stderr.contains(" -D "), "{}", run.stderr);
    assert!(
        reason(&env, "telnet", "ipv4")
            .contains("-A ufw-user-input -p tcp -m tcp --dport 23 -j DROP")
    );

    env.control("open ssh\nclose telnet\nclose web\n");
    env.run(&[]).expect(0);
    for family in ["IPv4", "IPv6"] {
        let expected = [
            "open (rate limited)",
            "open (rate-limited)",
            "open (rate-limited)",
            "0",
        ];
        assert_eq!(said(&env, "ssh", family), expected, "{family}");
    }
    assert!(peer.reaches("192.0.2.2", peer::SERVER_V4, 22));
    assert!(peer.reaches("2001:db8::2", peer::SERVER_V6, 22));
    let check = env.run(&["check"]);
    assert!(
        !check.stdout.contains(" -D ") && !check.stderr.contains(" -D "),
        "{check:?}"
    );
}

#[test]
fn next_to_ufw_with_iptables() {
    next_to_ufw("next_to_ufw_with_iptables", Backend::Iptables);
}

#[test]
fn next_to_ufw_with_nftables() {
    next_to_ufw("next_to_ufw_with_nftables", Backend::Nftables);
}

/// fail2ban's jump ahead of portlocker's drops in INPUT itself: closes
/// hold, bans show as bans, and nothing ever advises removing fail2ban's
/// jump (which would switch its bans off).
fn next_to_fail2ban(test: &str, banaction: &str) {
    let Some((managers, work)) = enter(test, &["usr/bin/fail2ban-server"]) else {
        return;
    };
    let peer = Peer::new();
    peer::listen(&[22]);
    let fail2ban = managers.fail2ban(work.path(), banaction);
    fail2ban.ban(&["192.0.2.7"]);
    let env = portlocker(Backend::Iptables, "chain = \"INPUT\"", "ssh = 22\n");
    env.control("close ssh\n");
    for _ in 0..2 {
        let run = env.run(&[]);
        assert_eq!((run.code, run.stderr.as_str()), (Some(0), ""), "{run:?}");
    }
    assert_eq!(
        said(&env, "ssh", "IPv4"),
        ["closed", "closed", "closed", "1"]
    );
    assert!(!peer.connects("192.0.2.2", peer::SERVER_V4, 22));
    let check = env.run(&["check"]);
    check.expect(0);
    assert!(!format!("{check:?}").contains("f2b"), "{check:?}");

    env.control("open ssh\n");
    env.run(&[]).expect(0);
    assert_eq!(said(&env, "ssh", "IPv4"), ["open", "open", "open", "0"]);
    assert!(
        reason(&env, "ssh", "ipv4").contains("1 source is dropped by"),
        "{}",
        reason(&env, "ssh", "ipv4")
    );
    assert!(peer.reaches("192.0.2.2", peer::SERVER_V4, 22));
    assert!(!peer.connects("192.0.2.7", peer::SERVER_V4, 22));

    // A source is let in below the bans: a banned address in it stays out.
    env.control("open ssh from 192.0.2.0/24\n");
    env.run(&[]).expect(0);
    assert!(peer.reaches("192.0.2.2", peer::SERVER_V4, 22));
    assert!(!peer.connects("192.0.2.7", peer::SERVER_V4, 22));
    drop(fail2ban);
}

#[test]
fn next_to_fail2ban_with_iptables_bans() {
    next_to_fail2ban("next_to_fail2ban_with_iptables_bans", "iptables-multiport");
}

#[test]
fn next_to_fail2ban_with_nftables_bans() {
    next_to_fail2ban("next_to_fail2ban_with_nftables_bans", "nftables-multiport");
}

/// firewalld empties iptables' tables on every start and reload: with the
/// iptables backend, check and every run say so, and what to use instead.
#[test]
fn next_to_firewalld_the_iptables_backend_is_warned_against() {
    let test = "next_to_firewalld_the_iptables_backend_is_warned_against";
    let needs = [
        "usr/sbin/firewalld",
        "usr/lib/python3/dist-packages/nftables",
    ];
    let Some((managers, work)) = enter(test, &needs) else {
        return;
    };
    mount_tmpfs(Path::new("/run"));
    let firewalld = managers.firewalld(work.path(), "nftables", PUBLIC_ZONE);
    let warning = "firewalld is running here: every start and reload of firewalld empties \
                   iptables' tables";
    let env = portlocker(Backend::Iptables, "", "ssh = 22\n");
    env.control("close ssh\n");
    env.run(&[])
        .expect(0)
        .says(warning)
        .says("set backend = \"nftables\"");
    // Told once, as a problem (hostile tester 8: once as a warning too).
    let check = env.run(&["check"]);
    check.expect(1).says(warning);
    assert_eq!(check.stderr.matches(warning).count(), 1, "{check:?}");
    assert!(
        env.status_page()
            .unwrap()
            .contains("firewalld is running here")
    );
    let env = portlocker(Backend::Nftables, "", "ssh = 22\n");
    env.control("close ssh\n");
    let run = env.run(&[]);
    run.expect(0);
    assert!(!run.stderr.contains("firewalld"), "{run:?}");
    assert_eq!(
        said(&env, "ssh", "IPv4"),
        ["closed", "closed", "closed", "1"]
    );
    drop(firewalld);
}

/// Another table's `policy drop` (Debian's nftables.conf, server form):
/// what it drops is closed, and why is said; what it accepts is open.
#[test]
fn next_to_debians_nftables_conf_a_port_it_drops_is_closed_and_why() {
    let test = "next_to_debians_nftables_conf_a_port_it_drops_is_closed_and_why";
    if !backend::enter(test, Backend::Iptables) {
        return;
    }
    let peer = Peer::new();
    peer::listen(&[22, 8080]);
    load("/usr/sbin/nft", &["-f", "-"], DEBIAN_SERVER);
    let env = portlocker(Backend::Iptables, "", "ssh = 22\nalt = 8080\n");
    env.control("open ssh\nopen alt\n");
    let run = env.run(&[]);
    run.expect(1).says(
        "alt 8080/tcp is closed, but the control file opens it: dropped by `counter drop`; it is \
         not portlocker's: it drops every port no rule before it accepts, so accept 8080/tcp in a \
         rule of your own before it",
    );
    assert_eq!(said(&env, "ssh", "IPv4"), ["open", "open", "open", "0"]);
    assert_eq!(
        said(&env, "alt", "IPv4"),
        ["closed", "closed", "closed", "1"]
    );
    assert!(reason(&env, "alt", "ipv4").contains("counter drop"));
    assert!(peer.reaches("192.0.2.2", peer::SERVER_V4, 22));
    assert!(!peer.connects("192.0.2.2", peer::SERVER_V4, 8080));
}

/// In the test's namespace (None where it must not run here): a client, a
/// container on docker0 listening on 80, and Docker's rules publishing it
/// as 8080.
fn docker_host(test: &str) -> Option<(Peer, peer::Container)> {
    if !backend::enter(test, Backend::Iptables) {
        return None;
    }
    let peer = Peer::new();
    let container = peer::Container::new("docker0", "172.17.0.1/16", "172.17.0.2/16", 80);
    load(
        "/usr/sbin/iptables-restore",
        &["-w", "5", "--noflush"],
        DOCKER,
    );
    Some((peer, container))
}

/// A port Docker publishes is reached through forwarding, where
/// portlocker's drops on input never see it: they are mirrored there (in
/// DOCKER-USER, or a forward chain of nftables), by the port a connection
/// was sent to, so a close closes it, a source let in gets through, an
/// open opens it, and `reset` takes the mirror away. Before, the close left
/// it open ("partly closed", exit 1, every run).
#[test]
fn a_port_docker_publishes_is_closed_where_docker_forwards_it() {
    let test = "a_port_docker_publishes_is_closed_where_docker_forwards_it";
    let Some((peer, _container)) = docker_host(test) else {
        return;
    };
    let mirrored = [
        (Backend::Iptables, "-A PORTLOCKER-FWD -p tcp"),
        (Backend::Nftables, "ct original proto-dst 8080"),
    ];
    for (backend, cited) in mirrored {
        let env = portlocker(backend, "ipv6 = false", "web = 8080\n");
        env.control("close web\n");
        env.run(&[]).expect(0);
        assert_eq!(
            said(&env, "web", "IPv4"),
            ["closed", "closed", "closed", "1"],
            "{backend:?}"
        );
        let why = reason(&env, "web", "ipv4");
        assert!(why.contains(cited), "{backend:?}: {why}");
        assert!(
            !peer.connects("192.0.2.2", peer::SERVER_V4, 8080),
            "{backend:?}"
        );
        // In place: a dry run finds nothing to change.
        let dry = env.run(&["--dry-run"]).stdout;
        assert!(dry.contains("nothing to change"), "{backend:?}: {dry}");
        // Taken away: `check` says so (it said all was well), and the run
        // that puts it back says what it found (it said nothing: tester 12).
        match backend {
            Backend::Iptables => run_tool(&[
                "/usr/sbin/iptables",
                "-w",
                "5",
                "-D",
                "DOCKER-USER",
                "-j",
                "PORTLOCKER-FWD",
            ]),
            Backend::Nftables => {
                run_tool(&["/usr/sbin/nft", "delete", "table", "inet", "portlocker-fwd"])
            }
        }
        env.run(&["check"])
            .expect(1)
            .says("portlocker's rules are missing where Docker forwards");
        env.run(&[]).expect(0).says("were put back");
        assert!(
            !peer.connects("192.0.2.2", peer::SERVER_V4, 8080),
            "{backend:?}"
        );

        env.control("open web from 192.0.2.2/32\n");
        env.run(&[]).expect(0);
        assert!(
            peer.reaches("192.0.2.2", peer::SERVER_V4, 8080),
            "{backend:?}"
        );
        assert!(
            !peer.connects("192.0.2.7", peer::SERVER_V4, 8080),
            "{backend:?}"
        );

        env.control("open web\n");
        env.run(&[]).expect(0);
        assert_eq!(said(&env, "web", "IPv4")[0], "open", "{backend:?}");
        // A close would close it there too: `check` does not blame Docker
        // (it did, exit 1: hostile tester 11).
        let check = env.run(&["check"]);
        assert!(
            !check.stderr.contains("would not close"),
            "{backend:?}: {}",
            check.stderr
        );
        assert!(
            peer.reaches("192.0.2.7", peer::SERVER_V4, 8080),
            "{backend:?}"
        );

        env.control("close web\n");
        env.run(&[]).expect(0);
        assert!(
            !peer.connects("192.0.2.2", peer::SERVER_V4, 8080),
            "{backend:?}"
        );
        env.run(&["reset"]).expect(0);
        assert!(
            peer.reaches("192.0.2.2", peer::SERVER_V4, 8080),
            "{backend:?}"
        );
        let left = Command::new("/usr/sbin/nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap();
        let left = String::from_utf8_lossy(&left.stdout);
        assert!(
            !left.contains("portlocker"),
            "{backend:?}: reset left {left}"
        );
    }
}

/// Where forwarding drops a port Docker publishes, it is closed, and the
/// drop is named; where it lets it through, it is open (hostile tester 8,
/// finding 7: it was shown open either way). The drop is Docker's advice,
/// in DOCKER-USER by the port the connection was sent to, or a forward
/// chain of another nftables table; portlocker is asked to open the port,
/// so nothing of its own is there.
#[test]
fn a_port_forwarding_drops_is_closed_where_docker_publishes_it() {
    let test = "a_port_forwarding_drops_is_closed_where_docker_publishes_it";
    let Some((peer, _container)) = docker_host(test) else {
        return;
    };
    let user = "-p tcp -m conntrack --ctorigdstport 8080 --ctdir ORIGINAL -j DROP";
    let table = "table inet guard {\n\tchain forward {\n\t\ttype filter hook forward \
                 priority filter; policy accept;\n\t\tmeta l4proto tcp ct original proto-dst 8080 drop\n\t}\n}\n";
    for backend in [Backend::Iptables, Backend::Nftables] {
        let env = portlocker(backend, "ipv6 = false", "web = 8080\n");
        env.control("open web\n");
        let in_docker_user = |verb: &str| {
            load_rule(
                &["/usr/sbin/iptables", "-w", "5", verb, "DOCKER-USER"],
                user,
            )
        };
        let ways: [(&str, Step, Step); 2] = [
            (user, &|| in_docker_user("-I"), &|| in_docker_user("-D")),
            (
                "ct original proto-dst 8080 drop",
                &|| load("/usr/sbin/nft", &["-f", "-"], table),
                &|| run_tool(&["/usr/sbin/nft", "delete", "table", "inet", "guard"]),
            ),
        ];
        for (cited, add, remove) in ways {
            add();
            // What comes in on docker0 is not translated: it meets input.
            env.run(&[])
                .expect(1)
                .says("web 8080/tcp is partly closed, but the control file opens it");
            assert_eq!(
                said(&env, "web", "IPv4"),
                ["partly closed", "partly closed", "partly closed", "0"],
                "{backend:?} {cited}"
            );
            let why = reason(&env, "web", "ipv4");
            assert!(why.contains(cited), "{backend:?}: {why}");
            assert!(
                !peer.connects("192.0.2.2", peer::SERVER_V4, 8080),
                "{backend:?} {cited}"
            );
            remove();
            env.run(&[]).expect(0);
            let why = reason(&env, "web", "ipv4");
            assert!(
                why.contains("forwarding lets it through"),
                "{backend:?}: {why}"
            );
            assert!(peer.reaches("192.0.2.2", peer::SERVER_V4, 8080));
        }
        env.run(&["reset"]).expect(0);
    }
}

/// Something done to the host's firewall.
type Step<'a> = &'a dyn Fn();

/// Runs `argv` with the words of `rule` after it.
fn load_rule(argv: &[&str], rule: &str) {
    let mut all: Vec<&str> = argv.to_vec();
    all.extend(rule.split_whitespace());
    run_tool(&all);
}

fn run_tool(argv: &[&str]) {
    let status = Command::new(argv[0]).args(&argv[1..]).status().unwrap();
    assert!(status.success(), "{argv:?}");
}

/// `watch` puts the mirror back when it goes: when Docker makes its chain
/// anew (restarting, it empties DOCKER-USER) or the table is deleted.
#[test]
fn watch_puts_back_the_mirror_docker_or_an_admin_took_away() {
    let test = "watch_puts_back_the_mirror_docker_or_an_admin_took_away";
    let Some((peer, _container)) = docker_host(test) else {
        return;
    };
    let takings: [(Backend, Step); 2] = [
        (Backend::Iptables, &|| {
            load(
                "/usr/sbin/iptables-restore",
                &["-w", "5", "--noflush"],
                "*filter\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -j RETURN\nCOMMIT\n",
            )
        }),
        (Backend::Nftables, &|| {
            run_tool(&["/usr/sbin/nft", "delete", "table", "inet", "portlocker-fwd"])
        }),
    ];
    for (backend, take_away) in takings {
        let env = portlocker(backend, "ipv6 = false", "web = 8080\n");
        let config = fs::read_to_string(env.path("config.toml")).unwrap();
        env.write_config(&format!("{config}\n[watch]\nevery = \"1h\"\n"));
        env.control("close web\n");
        let mut watcher = common::watcher::Watcher::start(&env, &[]);
        let shut = || !peer.connects("192.0.2.2", peer::SERVER_V4, 8080);
        common::watcher::wait_for("web closed", shut);
        take_away();
        assert!(
            peer.reaches("192.0.2.2", peer::SERVER_V4, 8080),
            "{backend:?}"
        );
        common::watcher::wait_for("the mirror put back", shut);
        watcher.signal(libc::SIGTERM);
        assert_eq!(watcher.exit_code(), Some(0));
        env.run(&["reset"]).expect(0);
    }
}

/// At boot, the boot unit's run comes before Docker starts: where a run
/// found Docker before, the mirror is made then (with iptables, DOCKER-USER
/// too, which Docker keeps when it starts), so a port Docker publishes is
/// closed from its first packet. It was open until the next run, and said
/// closed (hostile tester 11).
#[test]
fn after_a_reboot_what_docker_publishes_is_closed_from_the_start() {
    let test = "after_a_reboot_what_docker_publishes_is_closed_from_the_start";
    let Some((peer, _container)) = docker_host(test) else {
        return;
    };
    // Docker starting on a host where DOCKER-USER exists: it keeps it.
    let starting = DOCKER.replace(":DOCKER-USER - [0:0]\n", "");
    for backend in [Backend::Iptables, Backend::Nftables] {
        let env = portlocker(backend, "ipv6 = false", "web = 8080\n");
        env.control("close web\n");
        env.run(&[]).expect(0);
        // The reboot: nothing in the firewall, Docker not yet started.
        run_tool(&["/usr/sbin/nft", "flush", "ruleset"]);
        env.as_if_rebooted();
        env.run(&["--offline"]).expect(0);
        match backend {
            Backend::Iptables => load(
                "/usr/sbin/iptables-restore",
                &["-w", "5", "--noflush"],
                &starting,
            ),
            Backend::Nftables => load(
                "/usr/sbin/iptables-restore",
                &["-w", "5", "--noflush"],
                DOCKER,
            ),
        }
        assert!(
            !peer.connects("192.0.2.2", peer::SERVER_V4, 8080),
            "{backend:?}"
        );
        env.run(&["reset"]).expect(0);
    }
}

/// A chain of the owner's that has the mirror's name is left alone, rules
/// and all, and the run fails naming it: it was emptied and taken over, an
/// owner's ban in it lifted, and the run said OK (hostile tester 11).
#[test]
fn a_chain_of_the_owners_with_the_mirrors_name_is_left_alone() {
    let test = "a_chain_of_the_owners_with_the_mirrors_name_is_left_alone";
    let Some((peer, _container)) = docker_host(test) else {
        return;
    };
    let iptables = |args: &[&str]| {
        let mut all = vec!["/usr/sbin/iptables", "-w", "5"];
        all.extend(args);
        run_tool(&all);
    };
    iptables(&["-N", "MY-FWD"]);
    iptables(&["-A", "MY-FWD", "-s", "192.0.2.7", "-j", "DROP"]);
    iptables(&["-I", "DOCKER-USER", "1", "-j", "MY-FWD"]);
    let env = portlocker(
        Backend::Iptables,
        "ipv6 = false\nchain = \"MY\"",
        "web = 8080\n",
    );
    env.control("open web\n");
    env.run(&[])
        .expect(1)
        .says("`-A MY-FWD -s 192.0.2.7/32 -j DROP`, which is not portlocker's");
    let listed = Command::new("/usr/sbin/iptables")
        .args(["-S", "MY-FWD"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("-s 192.0.2.7/32 -j DROP"));
    assert!(!peer.connects("192.0.2.7", peer::SERVER_V4, 8080));
    env.run(&["reset"])
        .expect(1)
        .says("which is not portlocker's");
    assert!(!peer.connects("192.0.2.7", peer::SERVER_V4, 8080));
}

/// The mirror goes with the rules it mirrors: after `ipv6 = false`, the
/// IPv6 one; after a rename of `chain`, the old chain's (they stayed,
/// closing what nobody was told of: hostile tester 11).
#[test]
fn the_mirror_of_a_family_let_go_or_a_chain_renamed_goes_with_it() {
    let test = "the_mirror_of_a_family_let_go_or_a_chain_renamed_goes_with_it";
    let Some((peer, _container)) = docker_host(test) else {
        return;
    };
    run_tool(&["/usr/sbin/ip6tables", "-w", "5", "-N", "DOCKER-USER"]);
    let listed = |program: &str| {
        let out = Command::new(program).arg("-S").output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let env = portlocker(Backend::Iptables, "ipv6 = true", "web = 8080\n");
    env.control("close web\n");
    env.run(&[]).expect(0);
    assert!(listed("/usr/sbin/ip6tables").contains("-A DOCKER-USER -j PORTLOCKER-FWD"));
    let config = fs::read_to_string(env.path("config.toml")).unwrap();
    env.write_config(&config.replace("ipv6 = true", "ipv6 = false"));
    env.run(&[]).expect(0);
    let v6 = listed("/usr/sbin/ip6tables");
    assert!(!v6.contains("PORTLOCKER-FWD"), "{v6}");
    env.write_config(&config.replace("ipv6 = true", "ipv6 = false\nchain = \"PLX\""));
    env.run(&[]).expect(0);
    let v4 = listed("/usr/sbin/iptables");
    assert!(!v4.contains("PORTLOCKER-FWD"), "{v4}");
    assert!(v4.contains("-A DOCKER-USER -j PLX-FWD"), "{v4}");
    assert!(!peer.connects("192.0.2.2", peer::SERVER_V4, 8080));
    env.run(&["reset"]).expect(0);
}

/// A mirror whose transaction the restore tool refuses (here, at the line
/// letting a source in) still closes: its closes go in rule by rule, every
/// open there closed, and the run fails saying why. It was left out
/// whole, the published port open to all (hostile tester 12, F1).
#[test]
fn a_refused_mirror_still_closes_rule_by_rule() {
    let test = "a_refused_mirror_still_closes_rule_by_rule";
    let Some((peer, _container)) = docker_host(test) else {
        return;
    };
    let env = backend::Backend::Iptables.env();
    let refusing = env.path("iptables-restore");
    common::write_program(
        &refusing,
        "#!/bin/sh\n\
         input=$(cat)\n\
         case \"$input\" in\n\
         *PORTLOCKER-FWD*\" -s \"*) echo 'iptables-restore: line 4 failed' >&2; exit 1;;\n\
         esac\n\
         printf '%s\\n' \"$input\" | exec /usr/sbin/iptables-restore \"$@\"\n",
    );
    let firewall = format!("ipv6 = false\niptables_restore = {refusing:?}");
    let text = format!(
        "metrics_file = {:?}\n{}",
        env.path("portlocker.prom"),
        env.local_config("", &firewall)
    )
    .replace(common::SERVICES, "web = 8080\n");
    env.write_config(&text);
    env.control("open web from 192.0.2.2/32\n");
    env.run(&[]).expect(1).says("refused line 4");
    assert!(!peer.connects("192.0.2.7", peer::SERVER_V4, 8080));
    assert!(!peer.connects("192.0.2.2", peer::SERVER_V4, 8080));
    env.run(&["reset"]).expect(0);
}

/// Where Docker keeps no IPv6 chains, the run after the first makes the
/// mirror ready there without a word: nothing was missing (it warned that
/// published ports may have been reachable: hostile tester 12, F3).
#[test]
fn making_the_mirror_ready_where_docker_has_no_chain_is_no_repair() {
    let test = "making_the_mirror_ready_where_docker_has_no_chain_is_no_repair";
    let Some((_peer, _container)) = docker_host(test) else {
        return;
    };
    let env = portlocker(Backend::Iptables, "ipv6 = true", "web = 8080\n");
    env.control("close web\n");
    env.run(&[]).expect(0);
    let second = env.run(&[]);
    second.expect(0);
    assert_eq!(second.stderr, "", "a quiet run prints nothing");
    env.run(&["reset"]).expect(0);
}
