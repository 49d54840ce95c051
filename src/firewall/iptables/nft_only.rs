//! A chain of iptables-nft's that holds a rule only nft can print (one
//! `nft insert rule ip filter INPUT …` put there): iptables refuses to list
//! it whole, yet prints each other rule by its number and still inserts
//! above it. Read one rule at a time, it is known except for those rules,
//! which decide nothing portlocker can tell — so a run can still put its
//! jump back on top instead of leaving a port open behind such a rule.
//! Only reads, through the runner.

use std::path::PathBuf;

use crate::config::Family;
use crate::firewall::model::split_listed;
use crate::firewall::ruleset::{Rule, Verdict, family_word};
use crate::firewall::run_command;
use crate::sys::runner::{Command, CommandError, Runner, Termination};

/// How many rules are read one at a time at most (each is a process); a
/// longer chain stays unread, as before.
const MOST: usize = 200;

/// A chain read one rule at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piecemeal {
    /// `ACCEPT` or `DROP` for a built-in chain, as iptables printed it
    /// before it stopped.
    pub policy: Option<String>,
    /// Each rule's words after `-A CHAIN`, in order; None for one only nft
    /// can print.
    pub rules: Vec<Option<Vec<String>>>,
}

/// What this says about a rule only nft can print, naming where nft shows
/// it: rule `number` (from 1) of `chain` in `table` of `family`.
pub fn described(number: usize, family: Family, table: &str, chain: &str) -> String {
    let word = family_word(family);
    format!("rule {number} of {chain} (only `nft -a list chain {word} {table} {chain}` prints it)")
}

/// Reads `listing` (`iptables … -S CHAIN`, which failed with
/// `error`) one rule at a time, when `error` says a rule in the chain is
/// one only nft can print; otherwise, or past `MOST` rules, Err(`error`).
pub fn read<R: Runner>(
    runner: &mut R,
    hung: &mut Vec<PathBuf>,
    listing: &Command,
    error: CommandError,
) -> Result<Piecemeal, CommandError> {
    if !error.only_nft_can_print() {
        return Err(error);
    }
    let chain = listing.args.last().cloned().unwrap_or_default();
    let prefix = format!("-A {chain} ");
    let mut rules = Vec::new();
    for number in 1..=MOST + 1 {
        if number > MOST {
            return Err(error);
        }
        let mut one = listing.clone();
        one.args.push(number.to_string());
        match run_command(runner, hung, one) {
            // Past the last rule iptables prints nothing, and succeeds.
            Ok(done) => match done.stdout.lines().find_map(|l| l.strip_prefix(&prefix)) {
                Some(rest) => rules.push(Some(split_listed(rest))),
                None => break,
            },
            Err(failed) if failed.only_nft_can_print() => rules.push(None),
            Err(failed) => return Err(failed),
        }
    }
    Ok(Piecemeal {
        policy: policy(runner, listing, &chain),
        rules,
    })
}

/// The policy line iptables prints before it meets the rule it cannot.
fn policy<R: Runner>(runner: &mut R, listing: &Command, chain: &str) -> Option<String> {
    let done = runner.run(listing).ok()?;
    if matches!(done.termination, Termination::TimedOut { .. }) {
        return None;
    }
    let prefix = format!("-P {chain} ");
    let line = done.stdout.lines().find_map(|l| l.strip_prefix(&prefix))?;
    Some(line.trim().to_owned())
}

/// A rule only nft can print, as the evaluator meets it: what it does is
/// unknown, so nothing past it is told as closed or open.
pub fn unknown(described: &str) -> Rule {
    Rule {
        steps: Vec::new(),
        verdict: Verdict::Unknown("what iptables cannot print".to_owned()),
        text: described.to_owned(),
        handle: None,
        comment: None,
    }
}
