//! Ports Docker publishes. A connection to one is translated to a container
//! in nat prerouting and goes through forwarding, where portlocker's drops on
//! input never see it — ufw's most famous gap. Where Docker is (its
//! DOCKER-USER chain exists), portlocker mirrors its own rules where Docker
//! says filtering belongs, matched by the port the connection was first sent
//! to (before the translation) and only for translated connections, so what
//! the containers reach elsewhere, on the same port numbers, is left alone.
//!
//! This is the backend-neutral half — which rules, per family: each backend
//! renders them into one transaction of its own (`iptables/forward.rs`: a
//! chain jumped to first from DOCKER-USER; `nft/forward.rs`: a table of its
//! own with a chain on the forward hook, where a drop is final).

use std::collections::BTreeMap;

use crate::config::{Config, Family};
use crate::firewall::model::{Holdings, Rule, rule_of};
use crate::sys::runner::{Command, CommandError, Completion};

/// What the forward path should hold: per family whose place was read,
/// portlocker's rules as its place holds them (source rules first, then the
/// drops, deadlines as written). A family left out is not touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirror {
    pub families: BTreeMap<Family, Vec<Rule>>,
    /// Docker was seen here before: its place is made if it is missing (at
    /// boot, before Docker starts, which keeps a DOCKER-USER it finds), and
    /// the mirror is looked for even where Docker's chain is gone.
    pub docker_known: bool,
}

impl Mirror {
    /// portlocker's rules as `holdings` say its place holds them now.
    pub fn of(config: &Config, holdings: &Holdings) -> Mirror {
        let mut families = BTreeMap::new();
        for (&family, held) in &holdings.families {
            let Some(held) = held else { continue };
            let rules = held
                .tagged(config)
                .filter_map(|listed| rule_of(config, family, &listed.spec))
                .collect();
            families.insert(family, rules);
        }
        Mirror {
            families,
            docker_known: false,
        }
    }

    /// The same, for a host where an earlier run found Docker, if `seen`.
    pub fn knowing_docker(self, seen: bool) -> Mirror {
        Mirror {
            docker_known: seen,
            ..self
        }
    }

    /// Nothing anywhere, looked for wherever it may be: what `reset` leaves.
    pub fn nothing(config: &Config) -> Mirror {
        let families = config
            .families()
            .into_iter()
            .map(|family| (family, Vec::new()))
            .collect();
        Mirror {
            families,
            docker_known: true,
        }
    }
}

/// What making the forward path hold the mirror did, or would do.
#[derive(Debug, Default)]
pub struct Forwarded {
    /// How many transactions changed it.
    pub changes: usize,
    /// What was done, one line each (for a dry run: what would be, and the
    /// transaction as its tool reads it).
    pub said: Vec<String>,
    pub errors: Vec<CommandError>,
    /// Docker's chain was found.
    pub docker: bool,
    /// Where Docker's chain was, the mirror had to be written again: it
    /// was not whole (removed or changed, or Docker new here).
    pub restored: bool,
}

impl Forwarded {
    /// Carries out `command`, one transaction that does `what`, through
    /// `run`; for a `dry` run, says what it would do and the transaction
    /// as its tool reads it instead.
    pub fn commit(
        &mut self,
        what: String,
        command: Command,
        dry: bool,
        run: impl FnOnce(Command) -> Result<Completion, CommandError>,
    ) -> Result<(), CommandError> {
        let shown = command.to_string();
        if dry {
            let text = command.stdin.as_deref().unwrap_or_default();
            let said = format!("# {what}; all of it in one transaction, as `{shown}` reads it:");
            self.said.push(said);
            self.said
                .extend(text.lines().map(|line| format!("#   {line}")));
            return Ok(());
        }
        run(command)?;
        log::info!("{what}: {shown}");
        self.said.push(what);
        self.changes += 1;
        Ok(())
    }
}

/// The closes of `rules`, each once: a source let in is left out, and an
/// open that ends is closed now.
pub fn closes_only(rules: &[Rule]) -> Vec<Rule> {
    let mut closes: Vec<Rule> = Vec::new();
    for rule in rules.iter().filter(|rule| rule.source.is_none()) {
        let close = rule.until(None);
        if !closes.contains(&close) {
            closes.push(close);
        }
    }
    closes
}

/// The name of the chain that holds the mirror with iptables: the config's
/// chain's name and `-FWD` (`PORTLOCKER-FWD` with `chain = "INPUT"`),
/// within the 28 characters iptables allows (see `ChainName::mirror`).
pub fn place_name(config: &Config) -> String {
    config.firewall.chain.mirror()
}
