//! Another account's files in root's way: links planted where portlocker
//! writes the status page, the metrics and the log, and a state directory
//! someone else can change. Each must leave the victim untouched, or stop
//! the run before any firewall call.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};

use common::TestEnv;

/// A file only root may read, that a followed link would overwrite.
fn victim(env: &TestEnv) -> PathBuf {
    let victim = env.path("shadow");
    fs::write(&victim, "root:$y$secret:20000::::::\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    victim
}

#[track_caller]
fn assert_untouched(victim: &Path) {
    assert_eq!(
        fs::read_to_string(victim).unwrap(),
        "root:$y$secret:20000::::::\n",
        "the victim was written"
    );
    assert_eq!(fs::metadata(victim).unwrap().mode() & 0o7777, 0o600);
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Plants links to `victim` in `dir`: at the temporary name portlocker once
/// used for `name`, at `name` itself, and at a few other guesses.
fn plant_links(dir: &Path, name: &str, victim: &Path) -> Vec<String> {
    let mut planted = vec![
        format!(".{name}.tmp"),
        name.to_owned(),
        format!(".{name}.new"),
        format!("{name}.tmp"),
        ".tmp".to_owned(),
    ];
    for link in &planted {
        symlink(victim, dir.join(link)).unwrap();
    }
    planted.sort();
    planted
}

/// The written file is a plain file now, every other planted link is as
/// it was, and no temporary is left.
#[track_caller]
fn assert_written_past_links(dir: &Path, name: &str, planted: &[String], victim: &Path) {
    assert!(fs::symlink_metadata(dir.join(name)).unwrap().is_file());
    for link in planted.iter().filter(|link| *link != name) {
        assert_eq!(fs::read_link(dir.join(link)).unwrap(), victim, "{link}");
    }
    assert_eq!(names_in(dir), planted, "a temporary was left behind");
}

#[test]
fn links_planted_in_the_status_directory_are_never_followed() {
    let env = TestEnv::with_fake_iptables();
    let victim = victim(&env);
    // A web root www-data can write.
    let www = env.path("www");
    fs::create_dir(&www).unwrap();
    fs::set_permissions(&www, fs::Permissions::from_mode(0o777)).unwrap();
    let page = www.join("status.html");
    env.write_config(&env.local_config("", "").replace(
        &format!("status_file = {:?}", env.path("status.html")),
        &format!("status_file = {page:?}"),
    ));
    let planted = plant_links(&www, "status.html", &victim);
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert_untouched(&victim);
    assert_written_past_links(&www, "status.html", &planted, &victim);
    let text = fs::read_to_string(&page).unwrap();
    assert!(text.contains("OK: the firewall matches"), "{text}");
    assert_eq!(fs::metadata(&page).unwrap().mode() & 0o777, 0o644);
    // Again, now that the page exists as a file.
    env.run(&[]).expect(0);
    assert_untouched(&victim);
    assert_written_past_links(&www, "status.html", &planted, &victim);
}

#[test]
fn links_planted_in_the_metrics_directory_are_never_followed() {
    let env = TestEnv::with_fake_iptables();
    let victim = victim(&env);
    // node_exporter's textfile directory, which prometheus can write.
    let textfiles = env.path("node-exporter");
    fs::create_dir(&textfiles).unwrap();
    fs::set_permissions(&textfiles, fs::Permissions::from_mode(0o777)).unwrap();
    let metrics = textfiles.join("portlocker.prom");
    env.write_config(&format!(
        "metrics_file = {metrics:?}\n{}",
        env.local_config("", "")
    ));
    let planted = plant_links(&textfiles, "portlocker.prom", &victim);
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert_untouched(&victim);
    assert_written_past_links(&textfiles, "portlocker.prom", &planted, &victim);
    let text = fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("portlocker_last_run_success 1"), "{text}");
}

#[test]
fn a_log_file_that_is_a_link_is_refused_and_the_run_still_does_its_work() {
    let env = TestEnv::with_fake_iptables();
    let victim = victim(&env);
    let log = env.path("portlocker.log");
    symlink(&victim, &log).unwrap();
    env.control("close ssh\n");
    let run = env.run(&[]);
    run.expect(0);
    run.says(&format!(
        "cannot open log file {}: it is a symbolic link, which portlocker never follows: remove it; logging to stderr only",
        log.display()
    ));
    assert_untouched(&victim);
    assert_eq!(fs::read_link(&log).unwrap(), victim);
    assert!(
        env.fake_table("iptables").contains("--dport 22"),
        "{:?}",
        env.calls()
    );

    // A link to nowhere: followed, it would make root create a file there.
    fs::remove_file(&log).unwrap();
    let elsewhere = env.path("cron.d-portlocker");
    symlink(&elsewhere, &log).unwrap();
    env.run(&[]).expect(0).says("cannot open log file");
    assert!(!elsewhere.exists(), "the log link was followed");
}

/// Runs every command that reads the state, each of which must stop with
/// exit 2 saying `needle`, before any firewall call.
#[track_caller]
fn assert_refused(env: &TestEnv, needle: &str) {
    let control = env.path("control.txt");
    let commands: [&[&str]; 6] = [
        &[],
        &["--offline"],
        &["--dry-run"],
        &["reset"],
        &["status", "--json"],
        &["check", "--source", control.to_str().unwrap()],
    ];
    for args in commands {
        env.forget_calls();
        let run = env.run(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:#?}");
        run.says(needle);
        assert_eq!(
            env.calls(),
            Vec::<String>::new(),
            "{args:?} touched the firewall"
        );
    }
}

#[test]
fn a_state_dir_another_account_could_change_is_refused() {
    if !common::require_root("a_state_dir_another_account_could_change_is_refused") {
        return;
    }
    let env = TestEnv::with_fake_iptables();
    env.control("close ssh\n");
    let state = env.path("state");
    let shown = state.display();
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();

    chown(&state, Some(65534), None).unwrap();
    assert_refused(
        &env,
        &format!(
            "state_dir {shown} is owned by uid 65534, not root: fix with `chown root {shown}`"
        ),
    );
    chown(&state, Some(0), None).unwrap();

    fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
    assert_refused(
        &env,
        &format!(
            "state_dir {shown} is writable by group or others (mode 777): fix with `chmod go-w {shown}`"
        ),
    );
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    env.run(&[]).expect(0);
}

#[test]
fn a_state_file_another_account_planted_is_refused() {
    if !common::require_root("a_state_file_another_account_planted_is_refused") {
        return;
    }
    let env = TestEnv::with_fake_iptables();
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    // Someone else's state.toml, whose last good file opens ssh: with a 304
    // or --offline, the run would enforce it.
    let file = env.path("state/state.toml");
    let shown = file.display();
    let planted = fs::read_to_string(&file)
        .unwrap()
        .replace("close ssh", "open ssh");
    assert!(planted.contains("open ssh"), "{planted}");
    fs::write(&file, &planted).unwrap();
    chown(&file, Some(65534), None).unwrap();
    assert_refused(
        &env,
        &format!(
            "state_dir file {shown} is owned by uid 65534, not root: fix with `chown root {shown}`"
        ),
    );

    chown(&file, Some(0), None).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
    assert_refused(&env, &format!("fix with `chmod go-w {shown}`"));

    // A link where the state file should be.
    let elsewhere = env.path("elsewhere.toml");
    fs::write(&elsewhere, &planted).unwrap();
    fs::remove_file(&file).unwrap();
    symlink(&elsewhere, &file).unwrap();
    assert_refused(&env, &format!("state_dir holds a symbolic link {shown}"));

    // Any other file in it counts too: it could be renamed into place.
    fs::remove_file(&file).unwrap();
    let other = env.path("state/notes");
    fs::write(&other, "").unwrap();
    chown(&other, Some(65534), None).unwrap();
    assert_refused(&env, &format!("fix with `chown root {}`", other.display()));
    fs::remove_file(&other).unwrap();
    env.run(&[]).expect(0);
    assert!(env.fake_table("iptables").contains("--dport 22"));
}

#[test]
fn a_root_owned_state_dir_right_under_tmp_works() {
    let env = TestEnv::with_fake_iptables();
    // /tmp itself is world-writable (sticky): only state_dir and its files are checked.
    let state = tempfile::Builder::new()
        .prefix("portlocker-state")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(state.path(), fs::Permissions::from_mode(0o700)).unwrap();
    env.write_config(&env.local_config("", "").replace(
        &format!("state_dir = {:?}", env.path("state")),
        &format!("state_dir = {:?}", state.path()),
    ));
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert!(state.path().join("state.toml").is_file());
    env.forget_calls();
    env.run(&[]).expect(0);
    assert_eq!(env.changing_calls(), Vec::<String>::new());
    env.run(&["--offline"]).expect(0);
    env.run(&["status", "--json"]).expect(0);
}

#[test]
fn a_chain_that_is_a_target_or_another_tools_is_refused_before_any_firewall_call() {
    let env = TestEnv::with_fake_iptables();
    env.control("close ssh\n");
    for chain in [
        "ACCEPT",
        "DROP",
        "DOCKER-USER",
        "KUBE-SERVICES",
        "f2b-sshd",
        "DNPT",
        "SNPT",
        "nixos-fw",
        "IN_public_allow",
        "FWD_public",
    ] {
        env.write_config(&env.local_config("", &format!("chain = {chain:?}")));
        for args in [&[][..], &["check"]] {
            env.forget_calls();
            let run = env.run(args);
            assert_eq!(run.code, Some(2), "{chain} {args:?}: {run:#?}");
            run.says("firewall.chain").says(&format!("{chain:?}"));
            assert_eq!(
                env.calls(),
                Vec::<String>::new(),
                "{chain} {args:?} touched the firewall"
            );
        }
    }
    assert!(
        !env.path("state/state.toml").exists(),
        "a refused config ran"
    );
    env.write_default_config();
    env.run(&[]).expect(0);
    assert!(env.fake_table("iptables").contains("--dport 22"));
}

/// A FIFO planted at the log's path held every run, `--offline` and `reset`
/// for ever on its open, before the lock and the firewall work.
#[test]
fn a_fifo_at_the_log_path_is_refused_and_the_run_still_does_its_work() {
    let env = TestEnv::with_fake_iptables();
    let log = env.path("portlocker.log");
    let made = std::process::Command::new("mkfifo")
        .arg(&log)
        .status()
        .unwrap();
    assert!(made.success());
    env.control("close ssh\n");
    for args in [&[][..], &["--offline"], &["reset"]] {
        let mut child = env
            .command()
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A guard, not a timing assertion: a hung run fails the test.
        let mut ended = None;
        for _ in 0..600 {
            if let Some(status) = child.try_wait().unwrap() {
                ended = Some(status);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let Some(status) = ended else {
            let _ = child.kill();
            panic!("{args:?} hung on the FIFO");
        };
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains("it is not a regular file"),
            "{args:?}: {stderr}"
        );
    }
    assert!(fs::symlink_metadata(&log).unwrap().file_type().is_fifo());
}

/// A directory on the way to the status page, the metrics or the log that
/// another account swapped for a link: root never writes through it.
#[test]
fn a_link_another_account_planted_on_the_way_to_a_written_file_is_refused() {
    if !common::require_root(
        "a_link_another_account_planted_on_the_way_to_a_written_file_is_refused",
    ) {
        return;
    }
    let env = TestEnv::with_fake_iptables();
    let rootonly = env.path("rootonly");
    fs::create_dir(&rootonly).unwrap();
    fs::write(rootonly.join("status.html"), "precious\n").unwrap();
    let shared = env.path("shared");
    fs::create_dir(&shared).unwrap();
    let www = shared.join("www");
    symlink(&rootonly, &www).unwrap();
    std::os::unix::fs::lchown(&www, Some(65534), Some(65534)).unwrap();
    let config = env
        .local_config("", "")
        .replace(
            &format!("status_file = {:?}", env.path("status.html")),
            &format!("status_file = {:?}", www.join("status.html")),
        )
        .replace(
            &format!("log_file = {:?}", env.path("portlocker.log")),
            &format!("log_file = {:?}", www.join("portlocker.log")),
        );
    env.write_config(&config);
    env.control("close ssh\n");
    let run = env.run(&[]);
    run.expect(0).says("is a symbolic link owned by uid 65534");
    assert_eq!(
        fs::read_to_string(rootonly.join("status.html")).unwrap(),
        "precious\n"
    );
    assert!(
        !rootonly.join("portlocker.log").exists(),
        "the log was created through the link"
    );
    assert!(env.fake_table("iptables").contains("--dport 22"));
}

/// Root runs the configured iptables: one another account can change is
/// that account's root shell. And one binary for both families leaves one
/// family unmanaged while status reads the other twice.
#[test]
fn an_iptables_another_account_can_change_or_one_binary_for_both_families_is_refused() {
    if !common::require_root(
        "an_iptables_another_account_can_change_or_one_binary_for_both_families_is_refused",
    ) {
        return;
    }
    let env = TestEnv::with_fake_iptables();
    env.control("close ssh\n");
    chown(&env.iptables, Some(65534), None).unwrap();
    // Never run; the other family's closes are made all the same.
    let run = env.run(&[]);
    run.expect(1)
        .says("IPv4: firewall.iptables")
        .says("chown root");
    let never = |env: &TestEnv| {
        let calls = env.calls();
        assert!(
            calls.iter().all(|call| !call.starts_with("iptables")),
            "{calls:?}"
        );
    };
    never(&env);
    assert!(env.fake_table("ip6tables").contains("portlocker:ssh"));
    chown(&env.iptables, Some(0), None).unwrap();
    fs::set_permissions(&env.iptables, fs::Permissions::from_mode(0o777)).unwrap();
    env.run(&[]).expect(1).says("chmod go-w");
    never(&env);
    // A restore tool another account can change is never run either.
    fs::set_permissions(&env.iptables, fs::Permissions::from_mode(0o755)).unwrap();
    let restore = env.path("bin/ip6tables-restore");
    chown(&restore, Some(65534), None).unwrap();
    env.forget_calls();
    env.control("close web\n");
    env.run(&[]).expect(0).says("firewall.ip6tables_restore");
    assert!(
        !env.calls()
            .iter()
            .any(|call| call.starts_with("ip6tables-restore"))
    );
    assert!(env.fake_table("ip6tables").contains("portlocker:web"));
    chown(&restore, Some(0), None).unwrap();
    env.forget_calls();

    let same = env.local_config("", "").replace(
        &format!("ip6tables = {:?}", env.ip6tables),
        &format!("ip6tables = {:?}", env.iptables),
    );
    env.write_config(&same);
    // Refused; a run enforces the last config it could use instead, and fails.
    env.run(&[])
        .expect(1)
        .says("firewall.iptables and firewall.ip6tables are both")
        .says("the last config a run could use");
    env.forget_calls();
    env.run(&["check"])
        .expect(2)
        .says("firewall.iptables and firewall.ip6tables are both");
    assert_eq!(env.calls(), Vec::<String>::new());
}

/// Root runs nft too — the nftables backend, and the iptables backend's
/// look for leftovers there: one another account can change is refused.
#[test]
fn an_nft_another_account_can_change_is_refused() {
    if !common::require_root("an_nft_another_account_can_change_is_refused") {
        return;
    }
    let env = TestEnv::with_fake_iptables();
    env.control("close ssh\n");
    let nft = env.path("bin/nft");
    common::write_program(&nft, "#!/bin/sh\nexit 0\n");
    chown(&nft, Some(65534), None).unwrap();
    env.run(&[])
        .expect(2)
        .says("firewall.nft")
        .says("chown root");
    assert_eq!(env.calls(), Vec::<String>::new());
}
