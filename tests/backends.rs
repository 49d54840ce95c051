//! Both iptables backends at once, for real, in a private network namespace:
//! rules portlocker left in the backend the config no longer names (the
//! kernel applies both) are found and removed, and the owner's are not.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::TestEnv;
use common::connect::{reachable, ssh_listeners};
use common::netns::{self, LEGACY, NFT, rules};

/// An environment whose config names the binaries of one backend.
fn env_on(backend: [&str; 2]) -> TestEnv {
    let mut env = TestEnv::with_real_iptables();
    switch(&mut env, backend);
    env
}

/// Points the config at the other backend, as an owner switching does.
fn switch(env: &mut TestEnv, backend: [&str; 2]) {
    env.iptables = backend[0].into();
    env.ip6tables = backend[1].into();
    env.write_default_config();
}

/// Whether a listing holds anything of portlocker's.
fn holds_ours(table: &str) -> bool {
    table.contains("portlocker:") || table.contains("PORTLOCKER")
}

fn both(backend: [&str; 2]) -> String {
    format!("{}{}", rules(backend[0]), rules(backend[1]))
}

/// Copies each family's whole table from one backend to the other, as
/// `iptables-legacy-save | iptables-nft-restore` does for an owner migrating.
fn copy_tables(from: [&str; 2], to: [&str; 2]) {
    for (source, target) in from.into_iter().zip(to) {
        let saved = Command::new(format!("{source}-save")).output().unwrap();
        assert!(saved.status.success(), "{source}-save");
        let mut restore = Command::new(format!("{target}-restore"))
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        restore
            .stdin
            .take()
            .unwrap()
            .write_all(&saved.stdout)
            .unwrap();
        assert!(restore.wait().unwrap().success(), "{target}-restore");
    }
}

/// The legacy tables loaded in this namespace, per family.
fn legacy_tables() -> (String, String) {
    let read =
        |name: &str| std::fs::read_to_string(format!("/proc/net/{name}")).unwrap_or_default();
    (read("ip_tables_names"), read("ip6_tables_names"))
}

#[test]
fn switching_from_legacy_to_nft_removes_the_legacy_rules() {
    if !netns::enter_with_both_backends("switching_from_legacy_to_nft_removes_the_legacy_rules") {
        return;
    }
    let mut env = env_on(LEGACY);
    let [v4, v6] = ssh_listeners();
    // The owner's own rule in the old backend: never touched.
    let owners = ["-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "DROP"];
    netns::iptables(LEGACY[0], &owners);
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert!(holds_ours(&rules(LEGACY[0])) && holds_ours(&rules(LEGACY[1])));
    assert!(!reachable(v4) && !reachable(v6));

    switch(&mut env, NFT);
    let dry = env.run(&["--dry-run"]);
    dry.expect(0);
    assert!(
        dry.stdout.contains("left in legacy iptables")
            && dry
                .stdout
                .contains("/usr/sbin/iptables-legacy -w 10 -D PORTLOCKER"),
        "the dry run does not show the removal a run makes:\n{}",
        dry.stdout
    );
    let run = env.run(&[]);
    run.expect(0);
    let legacy = both(LEGACY);
    assert!(!holds_ours(&legacy), "left in legacy:\n{legacy}");
    assert!(
        legacy.contains("-A INPUT -p tcp -m tcp --dport 8080 -j DROP"),
        "the owner's rule went:\n{legacy}"
    );
    let nft = both(NFT);
    assert_eq!(nft.matches("portlocker:ssh").count(), 2, "{nft}");
    assert!(!reachable(v4) && !reachable(v6), "closed by the nft rules");
    assert_eq!(
        run.stderr.matches("were still in legacy iptables").count(),
        1,
        "one warning per run:\n{}",
        run.stderr
    );
    run.says("IPv4: remove rule portlocker:ssh")
        .says("IPv6: delete chain PORTLOCKER");
    let page = env.status_page().unwrap();
    assert!(page.contains("were still in legacy iptables"), "{page}");

    env.control("open ssh\n");
    let open = env.run(&[]);
    open.expect(0);
    assert!(open.stderr.is_empty(), "{}", open.stderr);
    assert!(
        reachable(v4) && reachable(v6),
        "still closed after open: a legacy DROP was left"
    );
    assert!(!env.status_page().unwrap().contains("legacy iptables"));
}

#[test]
fn switching_from_nft_to_legacy_removes_the_nft_rules() {
    if !netns::enter_with_both_backends("switching_from_nft_to_legacy_removes_the_nft_rules") {
        return;
    }
    let mut env = env_on(NFT);
    let [v4, v6] = ssh_listeners();
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert!(holds_ours(&rules(NFT[0])) && holds_ours(&rules(NFT[1])));

    switch(&mut env, LEGACY);
    env.run(&[])
        .expect(0)
        .says("were still in nf_tables iptables");
    let nft = both(NFT);
    assert!(!holds_ours(&nft), "left in nf_tables:\n{nft}");
    let legacy = both(LEGACY);
    assert_eq!(legacy.matches("portlocker:ssh").count(), 2, "{legacy}");
    assert!(
        !reachable(v4) && !reachable(v6),
        "closed by the legacy rules"
    );

    env.control("open ssh\n");
    env.run(&[]).expect(0);
    assert!(
        reachable(v4) && reachable(v6),
        "still closed after open: an nft DROP was left"
    );
}

#[test]
fn reset_removes_the_rules_in_both_backends_and_says_so() {
    if !netns::enter_with_both_backends("reset_removes_the_rules_in_both_backends_and_says_so") {
        return;
    }
    let mut env = env_on(LEGACY);
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    copy_tables(LEGACY, NFT);
    switch(&mut env, NFT);
    assert!(holds_ours(&both(NFT)) && holds_ours(&both(LEGACY)));

    let reset = env.run(&["reset"]);
    reset.expect(0);
    assert!(!holds_ours(&both(NFT)), "{}", both(NFT));
    assert!(!holds_ours(&both(LEGACY)), "{}", both(LEGACY));
    let lines: Vec<&str> = reset.stdout.lines().collect();
    for family in ["IPv4", "IPv6"] {
        let plain = format!("{family}: remove rule portlocker:ssh");
        assert!(lines.contains(&plain.as_str()), "{}", reset.stdout);
        assert!(
            lines.iter().any(|line| line.starts_with(&plain)
                && line.contains(", in legacy iptables (/usr/sbin/ip")),
            "{}",
            reset.stdout
        );
    }
    let again = env.run(&["reset"]);
    assert!(
        again.expect(0).stdout.contains("nothing to remove"),
        "{again:?}"
    );
}

#[test]
fn the_owners_rules_keep_the_old_chain_and_only_portlockers_go() {
    if !netns::enter_with_both_backends(
        "the_owners_rules_keep_the_old_chain_and_only_portlockers_go",
    ) {
        return;
    }
    let mut env = env_on(LEGACY);
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    let owners = [
        "-A",
        "PORTLOCKER",
        "-p",
        "tcp",
        "--dport",
        "8081",
        "-j",
        "DROP",
    ];
    netns::iptables(LEGACY[0], &owners);
    switch(&mut env, NFT);
    env.run(&[])
        .expect(0)
        .says("were still in legacy iptables")
        .says("IPv4: remove rule portlocker:ssh");
    let kept = "IPv4: chain PORTLOCKER in legacy iptables (/usr/sbin/iptables-legacy) holds rules that are not portlocker's";
    assert!(env.log().contains(kept), "{}", env.log());
    let page = env.status_page().unwrap();
    assert!(page.contains(&kept[..kept.len() - 2]), "{page}");
    let legacy = rules(LEGACY[0]);
    assert!(!legacy.contains("portlocker:ssh"), "{legacy}");
    assert!(
        legacy.contains("-A PORTLOCKER -p tcp -m tcp --dport 8081 -j DROP")
            && legacy.contains("-j PORTLOCKER"),
        "the owner's rule, its chain or the jump to it went:\n{legacy}"
    );
    assert!(!holds_ours(&rules(LEGACY[1])), "{}", rules(LEGACY[1]));
}

#[test]
fn with_nft_configured_and_no_legacy_table_no_legacy_process_runs() {
    if !netns::enter_with_both_backends(
        "with_nft_configured_and_no_legacy_table_no_legacy_process_runs",
    ) {
        return;
    }
    let env = env_on(NFT);
    let none = legacy_tables();
    assert!(!none.0.contains("filter") && !none.1.contains("filter"));
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    env.run(&["--dry-run"]).expect(0);
    env.run(&["reset"]).expect(0);
    // Any legacy listing would have loaded its filter table.
    assert_eq!(legacy_tables(), none, "a legacy iptables ran");
}

/// Until the configured backend holds the closes, the old backend's are
/// all that keep the port closed: they stay.
#[test]
fn the_legacy_closes_stay_while_the_nft_backend_fails() {
    if !netns::enter_with_both_backends("the_legacy_closes_stay_while_the_nft_backend_fails") {
        return;
    }
    let mut env = env_on(LEGACY);
    let [v4, v6] = ssh_listeners();
    env.control("close ssh\n");
    env.run(&[]).expect(0);

    // iptables-nft whose restore tool refuses every input.
    let bin = env.path("failing");
    std::fs::create_dir(&bin).unwrap();
    for real in NFT {
        let name = std::path::Path::new(real).file_name().unwrap();
        let wrapper = bin.join(name);
        common::write_program(&wrapper, &format!("#!/bin/sh\nexec {real} \"$@\"\n"));
        let restore = bin.join(format!("{}-restore", name.to_str().unwrap()));
        common::write_program(
            &restore,
            "#!/bin/sh\necho 'iptables-restore: line 2 failed' >&2\nexit 1\n",
        );
    }
    let wrappers = [bin.join("iptables-nft"), bin.join("ip6tables-nft")];
    switch(
        &mut env,
        [wrappers[0].to_str().unwrap(), wrappers[1].to_str().unwrap()],
    );
    env.run(&[]).expect(1);
    assert!(
        holds_ours(&rules(LEGACY[0])) && holds_ours(&rules(LEGACY[1])),
        "the only closes there are were removed"
    );
    assert!(
        !reachable(v4) && !reachable(v6),
        "ssh opened by a failed switch"
    );
}
