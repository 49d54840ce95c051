//! The mirror (`firewall/forward.rs`) in iptables: a chain of portlocker's
//! (`PORTLOCKER-FWD`) jumped to first from Docker's DOCKER-USER, which
//! Docker calls first from FORWARD and never rewrites. Its rules are
//! portlocker's, each matching the port the connection was sent to
//! (`-m conntrack --ctstate DNAT --ctorigdstport P --ctdir ORIGINAL`)
//! instead of the port it meets: a source let in returns to DOCKER-USER, a
//! drop drops. Written whole, with its jump, in one `iptables-restore
//! --noflush` transaction (declaring the chain empties it), only when what
//! is listed differs; removed the same way when Docker or the rules go.

use crate::config::{Family, Protocol};
use crate::firewall::forward::{Forwarded, Mirror, closes_only, place_name};
use crate::firewall::model::{ChainRules, Rule};

use super::{
    Command, CommandError, Failure, Firewall, Runner, XTABLES_WAIT_SECS, refusal_named,
    refused_line, restore_line,
};

/// Docker's chain for its users' rules.
const DOCKER_USER: &str = "DOCKER-USER";

/// `rule` as it filters forwarded connections, in the words `iptables -S`
/// lists it with (which are also the words it is written with).
pub fn spec(rule: &Rule) -> Vec<String> {
    let protocol = rule.ports.protocol.as_str();
    let mut spec = Vec::new();
    if let Some(source) = rule.source {
        spec.extend(["-s".to_owned(), source.to_string()]);
    }
    spec.extend(["-p".to_owned(), protocol.to_owned()]);
    let new_only = rule.keep_established && rule.source.is_none();
    if new_only && rule.ports.protocol == Protocol::Tcp {
        spec.extend(["-m", "tcp", "--tcp-flags", "FIN,SYN,RST,ACK", "SYN"].map(String::from));
    }
    spec.extend(["-m", "conntrack", "--ctstate", "DNAT", "--ctorigdstport"].map(String::from));
    spec.push(rule.ports.dport());
    spec.extend(["--ctdir", "ORIGINAL"].map(String::from));
    if new_only && rule.ports.protocol == Protocol::Udp {
        spec.extend(["-m", "conntrack", "--ctstate", "NEW"].map(String::from));
    }
    spec.extend(rule.time_match());
    spec.extend(["-m", "comment", "--comment"].map(String::from));
    spec.push(rule.tag());
    let target = match rule.source {
        Some(_) => "RETURN",
        None => "DROP",
    };
    spec.extend(["-j".to_owned(), target.to_owned()]);
    spec
}

/// The restore input that makes the mirror hold `wanted` in chain `name`,
/// given what DOCKER-USER and the chain hold; None when they hold it
/// already. With Docker gone (and not to be made ready for: `make`) or
/// nothing to mirror, the chain goes.
fn transaction(
    name: &str,
    wanted: &[Vec<String>],
    (docker_user, make): (Option<&ChainRules>, bool),
    ours: Option<&ChainRules>,
) -> Option<String> {
    let jump = ["-j".to_owned(), name.to_owned()];
    let jumps: Vec<usize> = docker_user.map_or(Vec::new(), |chain| {
        let at = chain.rules.iter().enumerate();
        at.filter(|(_, rule)| rule.spec == jump)
            .map(|(index, _)| index)
            .collect()
    });
    let held: Option<Vec<&Vec<String>>> =
        ours.map(|chain| chain.rules.iter().map(|rule| &rule.spec).collect());
    // First, or after other configs' mirrors only (they drop or return
    // alike): never after a rule that could let a port past it.
    let first = docker_user.is_some_and(|chain| {
        let above = |index: usize| &chain.rules[..index];
        let mirror = |spec: &[String]| matches!(spec, [j, to] if j == "-j" && to.ends_with("-FWD"));
        jumps.len() == 1 && above(jumps[0]).iter().all(|rule| mirror(&rule.spec))
    });
    let keep = (docker_user.is_some() || make) && !wanted.is_empty();
    let in_place = match keep {
        true => held.is_some_and(|held| held.iter().copied().eq(wanted)) && first,
        false => held.is_none() && jumps.is_empty(),
    };
    if in_place {
        return None;
    }
    let mut lines = vec!["*filter".to_owned()];
    // Docker keeps a DOCKER-USER it finds when it starts.
    if docker_user.is_none() && keep {
        lines.push(format!(":{DOCKER_USER} - [0:0]"));
    }
    lines.push(format!(":{name} - [0:0]"));
    let unjump = restore_line(&[&["-D".to_owned(), DOCKER_USER.to_owned()][..], &jump].concat());
    lines.extend(jumps.iter().map(|_| unjump.clone()));
    match keep {
        true => {
            for spec in wanted {
                let words = [&["-A".to_owned(), name.to_owned()][..], spec].concat();
                lines.push(restore_line(&words));
            }
            lines.push(format!("-I {DOCKER_USER} 1 -j {name}"));
        }
        false => lines.push(format!("-X {name}")),
    }
    lines.push("COMMIT".to_owned());
    Some(lines.join("\n") + "\n")
}

impl<R: Runner> Firewall<'_, R> {
    /// Makes each family's forward path hold the mirror (`dry`: says what
    /// it would do instead).
    pub fn forward(&mut self, mirror: &Mirror, dry: bool) -> Forwarded {
        let mut forwarded = Forwarded::default();
        for (&family, rules) in &mirror.families {
            if self.unusable.contains_key(&family) {
                continue;
            }
            let known = mirror.docker_known;
            if let Err(error) = self.forward_family(family, rules, known, dry, &mut forwarded) {
                forwarded.errors.push(error);
            }
        }
        forwarded
    }

    fn forward_family(
        &mut self,
        family: Family,
        rules: &[Rule],
        docker_known: bool,
        dry: bool,
        forwarded: &mut Forwarded,
    ) -> Result<(), CommandError> {
        let name = place_name(self.config);
        let docker_user = self.list(family, DOCKER_USER)?;
        let ours = match docker_user.is_some() || docker_known {
            true => self.list(family, &name)?,
            // Where Docker never was, neither was the mirror.
            false => None,
        };
        forwarded.docker |= docker_user.is_some();
        // A chain of that name holding rules of others is someone else's:
        // never emptied, never used (the run fails on it, naming it).
        if let Some(foreign) = ours
            .as_ref()
            .and_then(|chain| chain.rules.iter().find(|rule| rule.tag().is_none()))
        {
            let shown = foreign.shown(&name);
            return Err(CommandError {
                command: Command::iptables(self.config, family, vec!["-S".into(), name.clone()]),
                failure: Failure::NotOurs(format!(
                    "`{shown}`, which is not portlocker's: chain {name} is where portlocker \
                     keeps its rules for the ports Docker publishes, so it leaves that chain \
                     alone and those ports are not closed there; rename it, or set another \
                     firewall.chain"
                )),
            });
        }
        let wanted: Vec<Vec<String>> = rules.iter().map(spec).collect();
        let docker = (docker_user.as_ref(), docker_known);
        let Some(text) = transaction(&name, &wanted, docker, ours.as_ref()) else {
            return Ok(());
        };
        let command = Command {
            program: self.config.restore_binary(family).to_owned(),
            args: ["--noflush", "-w", &XTABLES_WAIT_SECS.to_string()]
                .map(String::from)
                .to_vec(),
            stdin: Some(text.clone()),
        };
        let what = match wanted.is_empty() {
            false => format!(
                "{family}: ports Docker publishes: {name} holds portlocker's {} rules, first in \
                 {DOCKER_USER}",
                wanted.len()
            ),
            true => format!("{family}: ports Docker publishes: {name} removed"),
        };
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let about = |line: usize| {
            let text = lines.get(line.wrapping_sub(1)).map_or("", String::as_str);
            format!("`{text}`")
        };
        let committed = forwarded.commit(what, command, dry, |command| {
            let done = self.run(command);
            done.map_err(|error| refusal_named(error, refused_line, about))
        });
        match committed {
            Ok(()) => {
                forwarded.restored |= !dry && docker_user.is_some() && !wanted.is_empty();
                Ok(())
            }
            // Refused, or the restore tool hung: what the mirror closes goes
            // in rule by rule, each open a close, as the chain's do.
            Err(error) if !wanted.is_empty() => {
                let made = docker_user.is_some();
                self.closes_by_rule(family, &name, rules, made, forwarded);
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// The mirror's closes in `name`, each with its own iptables call (a
    /// source let in, or an open that ends, is closed now): after its
    /// transaction failed. Each failure is told; the others go on.
    fn closes_by_rule(
        &mut self,
        family: Family,
        name: &str,
        rules: &[Rule],
        docker_user: bool,
        forwarded: &mut Forwarded,
    ) {
        let closes = closes_only(rules);
        let mut run = |args: Vec<&str>| {
            let args = args.into_iter().map(String::from).collect();
            self.run(Command::iptables(self.config, family, args))
        };
        if !docker_user {
            let _ = run(vec!["-N", DOCKER_USER]);
        }
        // Made, or there already: whichever, emptied next.
        let _ = run(vec!["-N", name]);
        let mut steps: Vec<Vec<String>> = vec![vec!["-F".into(), name.into()]];
        for close in &closes {
            steps.push([vec!["-A".to_owned(), name.to_owned()], spec(close)].concat());
        }
        for step in steps {
            let args = step.iter().map(String::as_str).collect();
            if let Err(error) = run(args) {
                forwarded.errors.push(error);
            }
        }
        // Every jump goes, one goes back on top.
        for _ in 0..super::MAX_DUPLICATES {
            if run(vec!["-D", DOCKER_USER, "-j", name]).is_err() {
                break;
            }
        }
        match run(vec!["-I", DOCKER_USER, "1", "-j", name]) {
            Ok(_) => {
                forwarded.changes += 1;
                let said = format!(
                    "{family}: ports Docker publishes: {name} holds portlocker's {} closes, \
                     made rule by rule (every open there closed)",
                    closes.len()
                );
                log::warn!("{said}");
                forwarded.said.push(said);
            }
            Err(error) => forwarded.errors.push(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChainName, PortSpec, ServiceName};
    use crate::firewall::model::{KernelTime, Listed};

    fn rule(ports: &str, keep_established: bool) -> Rule {
        Rule {
            family: Family::Ipv4,
            chain: ChainName::new("PORTLOCKER").unwrap(),
            service: ServiceName::new("web").unwrap(),
            ports: PortSpec::parse(ports).unwrap(),
            keep_established,
            source: None,
            deadline: None,
        }
    }

    fn chain(lines: &[&str]) -> ChainRules {
        ChainRules {
            policy: None,
            rules: lines
                .iter()
                .map(|line| Listed::new(line.split(' ').map(String::from).collect()))
                .collect(),
        }
    }

    #[test]
    fn rules_match_the_port_a_connection_was_sent_to() {
        let words = |rule: &Rule| spec(rule).join(" ");
        assert_eq!(
            words(&rule("8080", true)),
            "-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate DNAT \
             --ctorigdstport 8080 --ctdir ORIGINAL -m comment --comment portlocker:web -j DROP"
        );
        assert_eq!(
            words(&rule("8000-8010/udp", true)),
            "-p udp -m conntrack --ctstate DNAT --ctorigdstport 8000:8010 --ctdir ORIGINAL \
             -m conntrack --ctstate NEW -m comment --comment portlocker:web -j DROP"
        );
        let deadline = KernelTime::from_listed("2026-12-08T12:00:00");
        let letting = rule("8080", true)
            .letting("198.51.100.0/24".parse().unwrap())
            .until(deadline);
        assert_eq!(
            words(&letting),
            "-s 198.51.100.0/24 -p tcp -m conntrack --ctstate DNAT --ctorigdstport 8080 \
             --ctdir ORIGINAL -m time --datestop 2026-12-08T12:00:00 -m comment --comment \
             portlocker:web -j RETURN"
        );
    }

    #[test]
    fn the_chain_is_written_whole_with_its_jump_first_only_when_it_differs() {
        let wanted = vec![spec(&rule("8080", false))];
        let wanted_line = format!("-A PORTLOCKER-FWD {}", wanted[0].join(" "));
        let docker = chain(&["-j RETURN"]);
        let made = transaction("PORTLOCKER-FWD", &wanted, (Some(&docker), false), None).unwrap();
        assert_eq!(
            made,
            format!(
                "*filter\n:PORTLOCKER-FWD - [0:0]\n{wanted_line}\n\
                 -I DOCKER-USER 1 -j PORTLOCKER-FWD\nCOMMIT\n"
            )
        );
        // In place: nothing to do.
        let jumped = chain(&["-j PORTLOCKER-FWD", "-j RETURN"]);
        let ours = ChainRules {
            policy: None,
            rules: vec![Listed::new(wanted[0].clone())],
        };
        assert_eq!(
            transaction(
                "PORTLOCKER-FWD",
                &wanted,
                (Some(&jumped), false),
                Some(&ours)
            ),
            None
        );
        // A jump not first (an owner's RETURN above it would let a port
        // past): every jump goes, one goes back on top.
        let late = chain(&["-s 10.0.0.0/8 -j RETURN", "-j PORTLOCKER-FWD"]);
        let made =
            transaction("PORTLOCKER-FWD", &wanted, (Some(&late), false), Some(&ours)).unwrap();
        assert!(
            made.contains(
                "-D DOCKER-USER -j PORTLOCKER-FWD\n{wanted_line}\n-I DOCKER-USER 1 -j PORTLOCKER-FWD"
                    .replace("{wanted_line}", &wanted_line)
                    .as_str()
            ),
            "{made}"
        );
        // After another config's mirror: in place (the two never swap).
        let second = chain(&["-j OTHER-FWD", "-j PORTLOCKER-FWD", "-j RETURN"]);
        assert_eq!(
            transaction(
                "PORTLOCKER-FWD",
                &wanted,
                (Some(&second), false),
                Some(&ours)
            ),
            None
        );
        // Nothing to mirror: the chain and its jump go.
        let gone = transaction("PORTLOCKER-FWD", &[], (Some(&jumped), false), Some(&ours)).unwrap();
        assert_eq!(
            gone,
            "*filter\n:PORTLOCKER-FWD - [0:0]\n-D DOCKER-USER -j PORTLOCKER-FWD\n\
             -X PORTLOCKER-FWD\nCOMMIT\n"
        );
        assert_eq!(
            transaction("PORTLOCKER-FWD", &[], (Some(&docker), false), None),
            None
        );
        assert_eq!(
            transaction("PORTLOCKER-FWD", &wanted, (None, false), None),
            None
        );
        // Docker was here before and is not yet (at boot): its chain is
        // made, with the mirror first in it, for Docker to find.
        let ready = transaction("PORTLOCKER-FWD", &wanted, (None, true), None).unwrap();
        assert_eq!(
            ready,
            format!(
                "*filter\n:DOCKER-USER - [0:0]\n:PORTLOCKER-FWD - [0:0]\n{wanted_line}\n\
                 -I DOCKER-USER 1 -j PORTLOCKER-FWD\nCOMMIT\n"
            )
        );
    }
}
