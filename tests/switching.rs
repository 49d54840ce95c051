//! Switching `[firewall] backend` between iptables and nftables, for real,
//! in a private network namespace: the kernel applies both, so what
//! portlocker left in the backend the config no longer names is removed —
//! but only once the configured one holds what the owner asked.

mod common;

use std::net::SocketAddr;

use common::TestEnv;
use common::backend::{self, Backend, IP6T, IPT};
use common::connect::{reachable, ssh_listeners};
use common::netns::rules;

/// portlocker's chains and jumps in both iptables families, as listed.
fn iptables_ours() -> bool {
    let listed = format!("{}{}", rules(IPT), rules(IP6T));
    listed.contains("PORTLOCKER") || listed.contains("portlocker:")
}

/// Points the config at `backend`, through a wrapper around nft that
/// records each call in `nft.calls` and, while `nft.fail` exists, refuses
/// every script.
fn switch(env: &mut TestEnv, backend: Backend) {
    let wrapper = env.path("nft-wrapper");
    common::write_program(
        &wrapper,
        &format!(
            "#!/bin/sh\n\
             echo \"$*\" >> '{calls}'\n\
             case \" $* \" in *' -f '*) [ -e '{fail}' ] && {{ echo 'Error: refused' >&2; exit 1; }};; esac\n\
             exec {nft} \"$@\"\n",
            calls = env.path("nft.calls").display(),
            fail = env.path("nft.fail").display(),
            nft = backend::NFT,
        ),
    );
    let named = match backend {
        Backend::Iptables => "",
        Backend::Nftables => "backend = \"nftables\"\n",
    };
    env.backend = format!("{named}nft = {wrapper:?}\n");
    env.write_default_config();
}

/// An environment on `backend` whose first run closed ssh, and the
/// addresses of ssh's listeners.
fn closed_on(backend: Backend) -> (TestEnv, [SocketAddr; 2]) {
    let mut env = TestEnv::with_real_iptables();
    switch(&mut env, backend);
    let listeners = ssh_listeners();
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert!(!reachable(listeners[0]) && !reachable(listeners[1]));
    (env, listeners)
}

/// How many times runs looked into nftables, beyond the list of hooked
/// chains every run's evaluator reads.
fn nft_calls(env: &TestEnv) -> usize {
    std::fs::read_to_string(env.path("nft.calls")).map_or(0, |calls| {
        calls
            .lines()
            .filter(|call| !call.ends_with("-j list chains"))
            .count()
    })
}

#[test]
fn switching_from_nftables_to_iptables_removes_the_table_and_the_port_opens() {
    let test = "switching_from_nftables_to_iptables_removes_the_table_and_the_port_opens";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let (mut env, [v4, v6]) = closed_on(Backend::Nftables);
    assert!(backend::nft_table().contains("portlocker:ssh"));
    assert!(!reachable(v4) && !reachable(v6));

    switch(&mut env, Backend::Iptables);
    env.control("open ssh\n");
    let dry = env.run(&["--dry-run"]);
    dry.expect(0);
    assert!(
        dry.stdout
            .contains("portlocker's rules are left in nftables")
            && dry.stdout.contains("delete table inet portlocker"),
        "the dry run does not show the removal a run makes:\n{}",
        dry.stdout
    );
    assert!(
        backend::nft_table().contains("portlocker:ssh"),
        "the dry run changed nftables"
    );
    let switched = env.run(&[]);
    switched
        .expect(0)
        .says("portlocker's rules were still where the config no longer puts them")
        .says("Removed from nftables (table inet portlocker): ");
    assert_eq!(backend::nft_table(), "", "the old backend's table stayed");
    assert!(
        reachable(v4) && reachable(v6),
        "ssh opened with iptables but nftables still drops it"
    );
    let page = env.status_page().unwrap();
    assert!(page.contains("Removed from nftables"), "{page}");

    // Once known clean, later runs neither look again nor tell it again.
    let looked = nft_calls(&env);
    let later = env.run(&[]);
    later.expect(0);
    assert_eq!((later.stdout.as_str(), later.stderr.as_str()), ("", ""));
    assert_eq!(nft_calls(&env), looked, "a later run ran nft");
}

#[test]
fn switching_from_iptables_to_nftables_removes_the_chains_and_the_port_opens() {
    let test = "switching_from_iptables_to_nftables_removes_the_chains_and_the_port_opens";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let (mut env, [v4, v6]) = closed_on(Backend::Iptables);
    assert!(iptables_ours());

    switch(&mut env, Backend::Nftables);
    env.control("open ssh\n");
    env.run(&[])
        .expect(0)
        .says("Removed from iptables (portlocker's chain and its jump from INPUT): IPv4: remove rule portlocker:ssh");
    assert!(!iptables_ours(), "{}{}", rules(IPT), rules(IP6T));
    assert!(
        reachable(v4) && reachable(v6),
        "ssh opened with nftables but iptables still drops it"
    );
}

/// Until the configured backend holds the closes, the old backend's are
/// all that keep the port closed: they stay.
#[test]
fn the_old_backends_closes_stay_while_the_new_one_fails() {
    if !backend::enter(
        "the_old_backends_closes_stay_while_the_new_one_fails",
        Backend::Nftables,
    ) {
        return;
    }
    let (mut env, [v4, v6]) = closed_on(Backend::Iptables);

    switch(&mut env, Backend::Nftables);
    std::fs::write(env.path("nft.fail"), "").unwrap();
    env.run(&[]).expect(1);
    assert!(iptables_ours(), "the only closes there are were removed");
    assert!(
        !reachable(v4) && !reachable(v6),
        "ssh opened by a failed switch"
    );

    std::fs::remove_file(env.path("nft.fail")).unwrap();
    env.run(&[]).expect(0).says("Removed from iptables");
    assert!(!iptables_ours());
    assert!(backend::nft_table().contains("portlocker:ssh"));
    assert!(!reachable(v4) && !reachable(v6));
}

#[test]
fn reset_removes_portlockers_rules_from_both_kinds_of_backend() {
    if !backend::enter(
        "reset_removes_portlockers_rules_from_both_kinds_of_backend",
        Backend::Nftables,
    ) {
        return;
    }
    let mut env = TestEnv::with_real_iptables();
    switch(&mut env, Backend::Iptables);
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    // A state that says nothing was left in iptables (as one written by
    // another portlocker on this host might): runs do not look, reset does.
    env.edit_state(|state| state.backend = Some("nftables".into()));
    switch(&mut env, Backend::Nftables);
    env.run(&[]).expect(0);
    assert!(iptables_ours());
    assert!(backend::nft_table().contains("portlocker:ssh"));

    let reset = env.run(&["reset"]);
    reset.expect(0);
    assert!(!iptables_ours(), "{}{}", rules(IPT), rules(IP6T));
    assert_eq!(backend::nft_table(), "");
    assert!(
        reset.stdout.contains("delete table inet portlocker")
            && reset
                .stdout
                .contains("IPv4: remove rule portlocker:ssh, in iptables"),
        "{}",
        reset.stdout
    );
    let again = env.run(&["reset"]);
    assert!(
        again.expect(0).stdout.contains("nothing to remove"),
        "{again:?}"
    );
}

/// With `default = "keep"`, a service the lost state named and the new file
/// does not is known only from the old backend's rules: they stay, the port
/// stays closed, and the page says why.
#[test]
fn a_switch_with_the_state_lost_keeps_what_only_the_old_backend_says() {
    let test = "a_switch_with_the_state_lost_keeps_what_only_the_old_backend_says";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let (mut env, [v4, v6]) = closed_on(Backend::Iptables);
    std::fs::remove_dir_all(env.path("state")).unwrap();
    switch(&mut env, Backend::Nftables);
    env.control("close web\n");
    env.run(&[]).expect(0).says("ssh: its rules in iptables");
    assert!(iptables_ours(), "the only record of ssh closed was removed");
    assert!(!reachable(v4) && !reachable(v6), "ssh opened by a switch");

    // A file that names ssh again moves it, and the old backend is cleared.
    env.control("close ssh\nclose web\n");
    env.run(&[])
        .expect(0)
        .says("were still where the config no longer puts them");
    assert!(!iptables_ours(), "{}{}", rules(IPT), rules(IP6T));
    assert!(backend::nft_table().contains("portlocker:ssh"));
    assert!(!reachable(v4) && !reachable(v6));
}

/// A chain the config no longer names, and IPv6 it no longer manages, hold
/// drops nothing looks at any more: they go, once.
#[test]
fn a_renamed_chain_and_ipv6_switched_off_leave_nothing_behind() {
    let test = "a_renamed_chain_and_ipv6_switched_off_leave_nothing_behind";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let (env, [v4, v6]) = closed_on(Backend::Iptables);
    env.write_config(&env.local_config("", "chain = \"GATE\""));
    env.control("open ssh\n");
    env.run(&[])
        .expect(0)
        .says("chain PORTLOCKER, which the config no longer names");
    assert!(!rules(IPT).contains("PORTLOCKER") && !rules(IP6T).contains("PORTLOCKER"));
    assert!(
        reachable(v4) && reachable(v6),
        "the old chain still drops ssh"
    );

    env.control("close ssh\n");
    env.run(&[]).expect(0);
    env.write_config(&env.local_config("", "chain = \"GATE\"\nipv6 = false"));
    env.run(&[])
        .expect(0)
        .says("ip6tables, which the config no longer manages");
    assert!(!rules(IP6T).contains("portlocker:"), "{}", rules(IP6T));
    assert!(rules(IPT).contains("portlocker:ssh"));
    assert!(!reachable(v4) && reachable(v6));
}

/// `reset` is the emergency "open all I closed": a configured backend that
/// cannot run does not stop it clearing the other.
#[test]
fn reset_clears_the_other_backend_when_the_configured_one_is_missing() {
    let test = "reset_clears_the_other_backend_when_the_configured_one_is_missing";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let (mut env, [v4, v6]) = closed_on(Backend::Iptables);
    env.backend = format!("backend = \"nftables\"\nnft = {:?}\n", env.path("no-nft"));
    env.write_default_config();
    let reset = env.run(&["reset"]);
    reset
        .expect(1)
        .says("not found")
        .says("only what portlocker left elsewhere was removed");
    assert!(!iptables_ours(), "{}{}", rules(IPT), rules(IP6T));
    assert!(reachable(v4) && reachable(v6));
}

/// The iptables programs gone (the package removed after the switch) do not
/// mean iptables holds nothing: the kernel keeps what they loaded. The owner
/// is told, once, and the rules go once the programs are back.
#[test]
fn rules_left_by_programs_no_longer_installed_are_told_not_forgotten() {
    let test = "rules_left_by_programs_no_longer_installed_are_told_not_forgotten";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let (mut env, [v4, v6]) = closed_on(Backend::Iptables);
    let (iptables, ip6tables) = (env.iptables.clone(), env.ip6tables.clone());
    env.iptables = env.path("gone/iptables");
    env.ip6tables = env.path("gone/ip6tables");
    switch(&mut env, Backend::Nftables);
    env.control("open ssh\n");
    env.run(&[])
        .expect(0)
        .says("the state says they were in iptables")
        .says("no run can remove them");
    assert!(
        env.status_page()
            .unwrap()
            .contains("no run can remove them")
    );
    assert!(
        !reachable(v4) && !reachable(v6),
        "the kernel still holds the drops"
    );
    let quiet = env.run(&[]);
    assert_eq!(
        (quiet.expect(0).stdout.as_str(), quiet.stderr.as_str()),
        ("", "")
    );

    (env.iptables, env.ip6tables) = (iptables, ip6tables);
    switch(&mut env, Backend::Nftables);
    env.run(&[]).expect(0).says("Removed from iptables");
    assert!(reachable(v4) && reachable(v6));
}

/// `chain = "INPUT"` after portlocker's own chain, with the state lost: the
/// old jump leads to the only closes of a service no line names. It stays.
#[test]
fn moving_to_chain_input_with_the_state_lost_keeps_the_old_jump() {
    let test = "moving_to_chain_input_with_the_state_lost_keeps_the_old_jump";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let (env, [v4, v6]) = closed_on(Backend::Iptables);
    std::fs::remove_dir_all(env.path("state")).unwrap();
    env.write_config(&env.local_config("", "chain = \"INPUT\""));
    env.control("close web\n");
    env.run(&[]).expect(0);
    assert!(
        !reachable(v4) && !reachable(v6),
        "ssh opened by the move to INPUT"
    );
    assert!(rules(IPT).contains("-j PORTLOCKER") && rules(IP6T).contains("-j PORTLOCKER"));
    // The evaluator follows the old jump: both services are closed there.
    let status = env.run(&["status"]);
    for service in ["ssh", "web"] {
        assert!(
            status
                .stdout
                .lines()
                .any(|line| line.starts_with(service) && line.matches("closed").count() == 2),
            "{}",
            status.stdout
        );
    }
}

/// The same move with the state kept: every service the old chain closed
/// is asked of anew, so the old jump and chain go in that run.
#[test]
fn moving_to_chain_input_with_the_state_kept_leaves_nothing_behind() {
    let test = "moving_to_chain_input_with_the_state_kept_leaves_nothing_behind";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let (env, [v4, v6]) = closed_on(Backend::Iptables);
    env.write_config(&env.local_config("", "chain = \"INPUT\""));
    env.control("close web\n");
    env.run(&[])
        .expect(0)
        .says("chain PORTLOCKER, which the config no longer names");
    assert!(!rules(IPT).contains("PORTLOCKER") && !rules(IP6T).contains("PORTLOCKER"));
    assert!(
        !reachable(v4) && !reachable(v6),
        "ssh opened by the move to INPUT"
    );
    assert_eq!(env.run(&[]).expect(0).stderr, "");
}

/// What stays in nftables (one table for both families) stays quietly:
/// later runs neither rewrite it nor tell it again.
#[test]
fn what_stays_in_the_old_table_stays_quietly() {
    let test = "what_stays_in_the_old_table_stays_quietly";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let mut env = TestEnv::with_real_iptables();
    switch(&mut env, Backend::Nftables);
    env.write_config(&env.local_config("", "ipv6 = false"));
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    std::fs::remove_dir_all(env.path("state")).unwrap();
    switch(&mut env, Backend::Iptables);
    env.control("close web\n");
    env.run(&[]).expect(0).says("ssh: its rules in nftables");
    let table = backend::nft_table();
    assert!(table.contains("portlocker:ssh"), "{table}");
    let again = env.run(&[]);
    assert_eq!(
        (again.expect(0).stdout.as_str(), again.stderr.as_str()),
        ("", "")
    );
    assert_eq!(backend::nft_table(), table, "the old table was rewritten");
    assert!(
        env.log().lines().last().unwrap().contains("no change"),
        "{}",
        env.log()
    );
}
