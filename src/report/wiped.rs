//! Wipes: portlocker's place in the firewall (its chain and the jump to it,
//! or its nftables table) found gone or emptied by someone else — a
//! manager's reload, a flush — and how a run tells it: a warning and a
//! notice once per episode, naming what was reachable and since when at
//! most. Pure: reads holdings and the kept state, never the firewall.

use chrono::{DateTime, FixedOffset, TimeDelta};

use crate::config::{BackendKind, Config, Family};
use crate::firewall::model::{FamilyHoldings, Holdings, PortState};
use crate::intake::state::{InPlace, WipeEpisode};
use crate::report::quiet::shown;
use crate::report::status::Report;

/// What is missing of portlocker's place in one family, in words; None
/// when its way in and at least one of its rules are there.
pub fn gone(config: &Config, held: &FamilyHoldings) -> Option<String> {
    let chain = &config.firewall.chain;
    let nft = config.firewall.backend == BackendKind::Nftables;
    if !held.chain_exists(config) {
        return Some(match nft {
            true => "table inet portlocker is gone".to_owned(),
            false => format!("chain {chain} is gone"),
        });
    }
    if !chain.is_input() && held.jumps(config).is_empty() {
        return Some(match nft {
            true => "table inet portlocker has no input chain".to_owned(),
            false => format!("the jump from INPUT to {chain} is gone"),
        });
    }
    if held.tagged(config).next().is_none() {
        return Some(match nft {
            true => "table inet portlocker holds none of its rules".to_owned(),
            false => format!("{chain} holds none of portlocker's rules"),
        });
    }
    None
}

/// `gone` for every family that was read.
pub fn gone_in(config: &Config, holdings: &Holdings) -> Vec<(Family, String)> {
    holdings
        .families
        .iter()
        .filter_map(|(&family, held)| Some((family, gone(config, held.as_ref()?)?)))
        .collect()
}

/// Where portlocker's rules are, for `InPlace::place`: a wipe is only one
/// where the last run left them in this same place.
pub fn place(config: &Config) -> String {
    match config.firewall.backend {
        BackendKind::Nftables => "nftables inet portlocker".to_owned(),
        BackendKind::Iptables => format!("iptables {}", config.firewall.chain),
    }
}

/// What a run leaves in place, read back at `at`: the services it keeps
/// closed (wholly or for some sources) in every family, when its place is
/// whole in every family; None when there is nothing a wipe could expose
/// or a family could not be read.
pub fn left(
    config: &Config,
    holdings: &Holdings,
    report: &Report,
    at: DateTime<FixedOffset>,
    boot: Option<&str>,
) -> Option<InPlace> {
    let families = config.families();
    let whole = families.iter().all(|&family| {
        holdings
            .family(family)
            .is_some_and(|held| gone(config, held).is_none())
    });
    // Closed as read, or asked closed: portlocker's rules, whole, close what
    // is asked even where the host, read a moment after the commit, has
    // already lost them (a wipe then is told by the next run).
    let closing = |state: Option<PortState>| {
        matches!(
            state,
            Some(PortState::Closed | PortState::OpenToSources | PortState::Partial)
        )
    };
    let services: Vec<String> = report
        .services
        .iter()
        .filter(|row| {
            row.families
                .iter()
                .any(|view| closing(Some(view.state)) || closing(view.asked))
        })
        .map(|row| row.name.clone())
        .collect();
    (whole && !services.is_empty()).then(|| InPlace {
        at,
        boot: boot.map(str::to_owned),
        place: place(config),
        families: families.iter().map(ToString::to_string).collect(),
        services,
    })
}

/// What a run found missing of what the last run left in place, in words
/// (`portlocker's rules were missing (IPv4: chain PORTLOCKER is gone); ssh
/// was reachable since at most …`); None when nothing it left is missing.
/// `seen_at`: a later moment the caller saw them in place (watch's last
/// look); `boot`: the kernel's boot now (rules left in another are gone
/// with it, not wiped).
pub fn found(
    config: &Config,
    left: Option<&InPlace>,
    gone: &[(Family, String)],
    seen_at: Option<DateTime<FixedOffset>>,
    boot: Option<&str>,
) -> Option<String> {
    let left = left.filter(|left| left.place == place(config) && left.boot.as_deref() == boot)?;
    let missing: Vec<String> = gone
        .iter()
        .filter(|(family, _)| left.families.contains(&family.to_string()))
        .map(|(family, what)| format!("{family}: {what}"))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let since = seen_at.map_or(left.at, |seen| seen.max(left.at));
    let (names, were) = match left.services.as_slice() {
        [one] => (one.clone(), "was"),
        many => (and_list(many), "were"),
    };
    // A service the config no longer has (renamed, say) is not put back.
    let (kept, dropped): (Vec<String>, Vec<String>) =
        (left.services.iter().cloned()).partition(|name| {
            config
                .services
                .keys()
                .any(|service| service.as_str() == name)
        });
    let back = match (&kept[..], &dropped[..]) {
        (_, []) => "this run puts them back".to_owned(),
        ([], _) => String::new(),
        (kept, _) => format!("this run puts back {}", and_list(kept)),
    };
    let lost = match &dropped[..] {
        [] => String::new(),
        [one] => format!("{one} is no longer in the config: nothing closes its ports now"),
        many => format!(
            "{} are no longer in the config: nothing closes their ports now",
            and_list(many)
        ),
    };
    let then: Vec<String> = [back, lost].into_iter().filter(|s| !s.is_empty()).collect();
    Some(format!(
        "portlocker's rules were missing ({}); {names} {were} reachable since at most {}, when \
         they were last seen in place; {}",
        missing.join("; "),
        shown(since),
        then.join("; ")
    ))
}

/// Whether a wipe found at `at` is told, given the episode `before`, and
/// the episode after it. An episode lasts while wipes keep coming less
/// than `quiet_for` apart: its first is told, the rest only logged.
pub fn decide(
    before: Option<&WipeEpisode>,
    found: bool,
    at: DateTime<FixedOffset>,
    quiet_for: TimeDelta,
) -> (bool, Option<WipeEpisode>) {
    // A clock set back ends the episode rather than keep it quiet.
    let ongoing = before.filter(|episode| at >= episode.last && at - episode.last < quiet_for);
    match (found, ongoing) {
        (false, ongoing) => (false, ongoing.cloned()),
        (true, Some(episode)) => (
            false,
            Some(WipeEpisode {
                last: at,
                wipes: episode.wipes + 1,
                ..episode.clone()
            }),
        ),
        (true, None) => (
            true,
            Some(WipeEpisode {
                since: at,
                last: at,
                wipes: 1,
            }),
        ),
    }
}

fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [only] => only.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::model::{ChainRules, Listed, split_listed};

    fn config(extra: &str) -> Config {
        Config::parse(&format!(
            "source = \"-\"\n[firewall]\niptables = \"/sbin/iptables\"\n{extra}\n\
             [services]\nssh = 22\nweb = 80\n"
        ))
        .unwrap()
    }

    const JUMP: &str = "-m comment --comment portlocker:jump.a -j PORTLOCKER";
    const SSH: &str = "-p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment portlocker:ssh -j DROP";

    fn held(input: &[&str], chain: Option<&[&str]>) -> FamilyHoldings {
        let rules = |lines: &[&str]| ChainRules {
            policy: None,
            rules: lines.iter().map(|l| Listed::new(split_listed(l))).collect(),
        };
        FamilyHoldings {
            input: ChainRules {
                policy: Some("ACCEPT".into()),
                ..rules(input)
            },
            chain: chain.map(rules),
            docker_user: false,
        }
    }

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    #[test]
    fn a_place_is_gone_without_its_chain_its_jump_or_any_of_its_rules() {
        let c = config("");
        assert_eq!(gone(&c, &held(&[JUMP], Some(&[SSH]))), None);
        assert_eq!(
            gone(&c, &held(&[], None)).unwrap(),
            "chain PORTLOCKER is gone"
        );
        assert_eq!(
            gone(&c, &held(&[], Some(&[SSH]))).unwrap(),
            "the jump from INPUT to PORTLOCKER is gone"
        );
        assert_eq!(
            gone(&c, &held(&[JUMP], Some(&[]))).unwrap(),
            "PORTLOCKER holds none of portlocker's rules"
        );
        let input = config("chain = \"INPUT\"");
        assert_eq!(gone(&input, &held(&[SSH], None)), None);
        assert_eq!(
            gone(&input, &held(&[], None)).unwrap(),
            "INPUT holds none of portlocker's rules"
        );
        let nft = config("backend = \"nftables\"");
        assert_eq!(
            gone(&nft, &held(&[], None)).unwrap(),
            "table inet portlocker is gone"
        );
    }

    #[test]
    fn only_what_the_last_run_left_in_the_same_place_is_a_wipe() {
        let c = config("");
        let boot = Some("b1");
        let left = InPlace {
            at: at("2026-11-25T14:05:00+01:00"),
            boot: boot.map(str::to_owned),
            place: "iptables PORTLOCKER".into(),
            families: vec!["IPv4".into()],
            services: vec!["ssh".into()],
        };
        let gone = vec![
            (Family::Ipv4, "chain PORTLOCKER is gone".to_owned()),
            (Family::Ipv6, "chain PORTLOCKER is gone".to_owned()),
        ];
        assert_eq!(
            found(&c, Some(&left), &gone, None, boot).unwrap(),
            "portlocker's rules were missing (IPv4: chain PORTLOCKER is gone); ssh was reachable \
             since at most 2026-11-25 14:05:00 +01:00, when they were last seen in place; this \
             run puts them back"
        );
        // Watch saw them later than the last run.
        let seen = at("2026-11-25T14:07:30+01:00");
        assert!(
            found(&c, Some(&left), &gone, Some(seen), boot)
                .unwrap()
                .contains("since at most 2026-11-25 14:07:30 +01:00")
        );
        let two = InPlace {
            services: vec!["ssh".into(), "web".into(), "vpn".into()],
            ..left.clone()
        };
        assert!(
            found(&c, Some(&two), &gone, None, boot)
                .unwrap()
                .contains("ssh, web and vpn were reachable")
        );
        assert_eq!(found(&c, None, &gone, None, boot), None, "a first run");
        assert_eq!(
            found(&c, Some(&left), &gone, None, Some("b2")),
            None,
            "a reboot"
        );
        assert_eq!(
            found(&c, Some(&left), &gone[1..], None, boot),
            None,
            "IPv6 was not left"
        );
        // A service renamed in the config since is not put back, and says so.
        let renamed = InPlace {
            services: vec!["ssh".into(), "sshd".into()],
            ..left.clone()
        };
        assert!(
            found(&c, Some(&renamed), &gone, None, boot)
                .unwrap()
                .ends_with(
                    "; this run puts back ssh; sshd is no longer in the config: nothing closes \
                     its ports now"
                )
        );
        let moved = InPlace {
            place: "iptables OLDCHAIN".into(),
            ..left
        };
        assert_eq!(
            found(&c, Some(&moved), &gone, None, boot),
            None,
            "a chain renamed"
        );
    }

    #[test]
    fn a_wipe_is_told_once_per_episode() {
        let quiet = TimeDelta::hours(1);
        let t0 = at("2026-11-25T14:00:00+01:00");
        let (tell, episode) = decide(None, true, t0, quiet);
        assert!(tell);
        let episode = episode.unwrap();
        assert_eq!((episode.since, episode.last, episode.wipes), (t0, t0, 1));
        // Wipes every few seconds, then every 50 minutes: one episode.
        let mut current = episode;
        for seconds in [2, 4, 6, 3000, 6000] {
            let moment = t0 + TimeDelta::seconds(seconds);
            let (tell, next) = decide(Some(&current), true, moment, quiet);
            assert!(!tell, "at +{seconds}s");
            current = next.unwrap();
            assert_eq!(current.since, t0);
        }
        assert_eq!(current.wipes, 6);
        // Runs that find nothing missing keep the episode.
        let later = t0 + TimeDelta::seconds(6010);
        assert_eq!(
            decide(Some(&current), false, later, quiet),
            (false, Some(current.clone()))
        );
        // An hour without a wipe: the next is told again.
        let next_day = t0 + TimeDelta::seconds(6000 + 3600);
        assert!(decide(Some(&current), true, next_day, quiet).0);
        // A clock set back is told, not kept quiet.
        assert!(decide(Some(&current), true, t0 - TimeDelta::seconds(1), quiet).0);
        // An episode over is forgotten by a run that finds nothing missing.
        assert_eq!(
            decide(Some(&current), false, next_day, quiet),
            (false, None)
        );
    }
}
