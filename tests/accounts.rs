//! What another local account (here `nobody`, uid 65534) can set in root's
//! way, and what each run must do about it: a control file, a config or a
//! program it could change or replace is refused before root reads a byte
//! of it or runs it; a directory it owns above the page and the log, swapped
//! for a link while runs go on, never makes root write outside it. Needs
//! root, to give files to another account; skips visibly without.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, chown, lchown, symlink};
use std::path::{Path, PathBuf};

use common::{Run, TestEnv};

const NOBODY: u32 = 65534;

/// A password line and the start of a private key: what `/root/secret`
/// holds, and what must never appear anywhere a run writes or prints.
const SECRET: &str = "password: hunter2-SECRET\n-----BEGIN OPENSSH PRIVATE KEY-----\n\
                      b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n";

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn give_to_nobody(path: &Path) {
    lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

fn secret(env: &TestEnv) -> PathBuf {
    let secret = env.path("secret");
    fs::write(&secret, SECRET).unwrap();
    chmod(&secret, 0o600);
    secret
}

/// Nothing of the secret in what `run` printed, nor in the log, the page,
/// the state or the notices.
#[track_caller]
fn assert_never_quoted(env: &TestEnv, run: &Run) {
    let state = fs::read_to_string(env.path("state/state.toml")).unwrap_or_default();
    let notices: String = env.notices().into_iter().map(|(_, text)| text).collect();
    let places = [
        ("stdout", run.stdout.clone()),
        ("stderr", run.stderr.clone()),
        ("log", env.log()),
        ("page", env.status_page().unwrap_or_default()),
        ("state", state),
        ("notices", notices),
    ];
    for (place, text) in places {
        for word in ["hunter2", "b3BlbnNzaC1rZXkt", "PRIVATE"] {
            assert!(!text.contains(word), "{word} in the {place}:\n{text}");
        }
    }
}

/// A local source another account could replace — through a directory it
/// owns, a link it owns, a directory anyone can write, or the file itself —
/// is refused before a byte of it is read; a link to a root-only file
/// quoted its lines on the page, in the log, in cron's mail, the state and
/// the notices.
#[test]
fn a_local_source_another_account_could_replace_is_refused_before_it_is_read() {
    if !common::require_root("a_local_source_another_account_could_replace_is_refused") {
        return;
    }
    let env = TestEnv::with_fake_iptables();
    let secret = secret(&env);
    // The layouts another account could have made, each with what is refused.
    let drop = env.path("drop");
    fs::create_dir(&drop).unwrap();
    symlink(&secret, drop.join("ctl.txt")).unwrap();
    give_to_nobody(&drop.join("ctl.txt"));
    give_to_nobody(&drop);
    let etc = env.path("etc");
    fs::create_dir(&etc).unwrap();
    symlink(&secret, etc.join("linked.txt")).unwrap();
    give_to_nobody(&etc.join("linked.txt"));
    fs::write(etc.join("theirs.txt"), SECRET).unwrap();
    give_to_nobody(&etc.join("theirs.txt"));
    let www = env.path("www");
    fs::create_dir(&www).unwrap();
    chmod(&www, 0o777);
    symlink(&secret, www.join("ctl.txt")).unwrap();
    let cases = [
        (
            drop.join("ctl.txt"),
            format!(
                "{shown} is owned by uid 65534, not root, so that account could replace what is \
                 in it: fix with `chown root {shown}`",
                shown = drop.display()
            ),
        ),
        (
            etc.join("linked.txt"),
            "linked.txt is a symbolic link owned by uid 65534".to_owned(),
        ),
        (
            etc.join("theirs.txt"),
            "theirs.txt is owned by uid 65534, not root".to_owned(),
        ),
        (
            www.join("ctl.txt"),
            format!(
                "{} is writable by group or others (mode 777)",
                www.display()
            ),
        ),
    ];
    let notify = env.recording_command(0);
    for (source, needle) in cases {
        let config = env.config_text(source.to_str().unwrap(), "", "");
        env.write_config(&format!("{config}{notify}"));
        let run = env.run(&[]);
        run.expect(1).says(&needle).says("control file");
        assert_never_quoted(&env, &run);
        for args in [&["--dry-run"][..], &["check", "--fetch"]] {
            let run = env.run(args);
            run.expect(1).says(&needle);
            assert_never_quoted(&env, &run);
        }
        assert_eq!(env.changing_calls(), Vec::<String>::new());
    }
    assert_eq!(fs::read_to_string(&secret).unwrap(), SECRET);
}

/// A config another account could change or replace is refused (exit 2)
/// before a byte of it is read: a link of theirs to a root-only file had
/// the TOML error quote its first line.
#[test]
fn a_config_another_account_could_change_or_replace_is_refused() {
    if !common::require_root("a_config_another_account_could_change_or_replace_is_refused") {
        return;
    }
    let env = TestEnv::with_fake_iptables();
    env.control("close ssh\n");
    let secret = secret(&env);
    let etc = env.path("etc");
    fs::create_dir(&etc).unwrap();
    let config = etc.join("config.toml");
    fs::copy(env.path("config.toml"), &config).unwrap();
    chmod(&config, 0o600);
    let linked = env.path("linked.toml");
    symlink(&secret, &linked).unwrap();
    give_to_nobody(&linked);
    let run_with = |path: &Path| {
        Run::from(
            std::process::Command::new(env!("CARGO_BIN_EXE_portlocker"))
                .arg("-c")
                .arg(path)
                .arg("check")
                .output()
                .unwrap(),
        )
    };
    let run = run_with(&linked);
    run.expect(2)
        .says("config")
        .says("linked.toml is a symbolic link owned by uid 65534");
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    run_with(&config).expect(0);
    give_to_nobody(&etc);
    run_with(&config).expect(2).says(&format!(
        "config {}: {} is owned by uid 65534",
        config.display(),
        etc.display()
    ));
    chown(&etc, Some(0), Some(0)).unwrap();
    chmod(&etc, 0o775);
    run_with(&config)
        .expect(2)
        .says("is writable by group or others (mode 775)");
    chmod(&etc, 0o755);
    // A link root made, in a directory only root can change, is followed.
    let admin = env.path("admin.toml");
    symlink(&config, &admin).unwrap();
    run_with(&admin).expect(0);
    assert_eq!(env.changing_calls(), Vec::<String>::new());
}

/// Root runs no program another account could change: not the notify
/// command (it ran as uid 0 when mode 777 and nobody's), not one in their
/// directory, not a script whose interpreter is theirs; nor an iptables in
/// their directory. A trusted script still runs, by its path.
#[test]
fn a_program_another_account_could_change_is_never_run() {
    if !common::require_root("a_program_another_account_could_change_is_never_run") {
        return;
    }
    let env = TestEnv::with_fake_iptables();
    let notify = env.recording_command(0);
    let script = env.path("tell-owner");
    env.write_config(&format!("{}{notify}", env.local_config("", "")));
    // Each run changes the firewall, so each has a notice to tell.
    let mut lines = ["close ssh\n", "open ssh\n"].into_iter().cycle();
    let mut change = || env.control(lines.next().unwrap());

    give_to_nobody(&script);
    chmod(&script, 0o777);
    let fix = format!(
        "notify.command {shown} is owned by uid 65534, not root: fix with `chown root {shown}`",
        shown = script.display()
    );
    change();
    env.run(&[])
        .expect(0)
        .says("the notice (changed) was not told: the command was not run, since")
        .says(&fix);
    env.run(&["check"]).expect(1).says(&fix);
    chown(&script, Some(0), Some(0)).unwrap();
    change();
    env.run(&[])
        .expect(0)
        .says("(mode 777): fix with `chmod go-w");
    chmod(&script, 0o755);

    // The script is root's; the interpreter its #! line names is not.
    let shell = env.path("sh");
    common::install_program(Path::new("/bin/sh"), &shell);
    give_to_nobody(&shell);
    let body = fs::read_to_string(&script).unwrap();
    common::write_program(
        &script,
        &body.replacen("#!/bin/sh", &format!("#!{}", shell.display()), 1),
    );
    change();
    env.run(&[])
        .expect(0)
        .says(&format!("is a script for {}", shell.display()));
    assert_eq!(env.notices(), Vec::new(), "an untrusted command ran");
    // Nor through env: `#!/usr/bin/env -S THEIR-SHELL` runs their shell.
    common::write_program(
        &script,
        &body.replacen(
            "#!/bin/sh",
            &format!("#!/usr/bin/env -S {}", shell.display()),
            1,
        ),
    );
    change();
    env.run(&[])
        .expect(0)
        .says(&format!("is a script env runs with {}", shell.display()));
    assert_eq!(
        env.notices(),
        Vec::new(),
        "an untrusted command ran through env"
    );
    // Nor through env's own escapes: `\_` is a space to it.
    let escaped = format!("#!/usr/bin/env -S /usr/bin/env\\_{}", shell.display());
    common::write_program(&script, &body.replacen("#!/bin/sh", &escaped, 1));
    change();
    env.run(&[]).expect(0).says("has env unescape or expand");
    assert_eq!(
        env.notices(),
        Vec::new(),
        "an untrusted command ran through env's escapes"
    );
    common::write_program(
        &script,
        &body.replacen("#!/bin/sh", &format!("#!{}", shell.display()), 1),
    );

    // Trusted again: it runs, #! line and all.
    chown(&shell, Some(0), Some(0)).unwrap();
    change();
    let run = env.run(&[]);
    run.expect(0);
    assert_eq!(run.stderr, "");
    assert_eq!(env.notices().len(), 1);

    // An iptables in a directory another account owns: each family's
    // program is refused by itself (a run fails, naming both; `check` says
    // runs would fail), and never run.
    let bin = env.path("bin");
    give_to_nobody(&bin);
    env.forget_calls();
    for args in [&[][..], &["check"]] {
        env.run(args)
            .expect(1)
            .says("firewall.iptables")
            .says("firewall.ip6tables")
            .says(&format!("{} is owned by uid 65534", bin.display()));
    }
    assert_eq!(env.calls(), Vec::<String>::new());
}

/// `check` tells when every account can read the config and it holds a
/// secret URL; 640 (a group) and 600 are fine, and so is a URL with no path.
#[test]
fn check_tells_when_every_account_can_read_the_secret_url() {
    let env = TestEnv::with_fake_iptables();
    // So that others can reach the config at all.
    chmod(env.dir.path(), 0o711);
    let config = env.path("config.toml");
    let secret = env.config_text(
        "https://www.dropbox.com/s/TOKEN/portlocker.txt?dl=1",
        "",
        "",
    );
    env.write_config(&secret);
    chmod(&config, 0o644);
    let note = format!(
        "note: config {shown} is readable by every account on this machine (mode 644), and \
         source holds a secret",
        shown = config.display()
    );
    let run = env.run(&["check"]);
    run.expect(0);
    assert!(run.stdout.contains(&note), "{}", run.stdout);
    let fix = format!("fix with `chmod o-r {}`", config.display());
    assert!(run.stdout.contains(&fix), "{}", run.stdout);
    assert!(!run.stdout.contains("TOKEN"), "{}", run.stdout);
    for mode in [0o640, 0o600] {
        chmod(&config, mode);
        let run = env.run(&["check"]);
        assert!(
            !run.expect(0).stdout.contains("readable by"),
            "{}",
            run.stdout
        );
    }
    chmod(&config, 0o644);
    env.write_config(&env.config_text("https://example.org", "", ""));
    let run = env.run(&["check"]);
    assert!(
        !run.expect(0).stdout.contains("readable by"),
        "{}",
        run.stdout
    );
}

/// Another account owning the directory above the page, the metrics and
/// the log swaps its real directory and a link to a root-only directory
/// (renameat2 RENAME_EXCHANGE), as fast as it can, while 20 runs go on.
/// Each file was checked, then opened or renamed by its whole path: the
/// first run or so appended root's log to, or renamed its page over, a file
/// in the root-only directory. Now no run may ever touch it.
#[test]
fn a_directory_swapped_above_the_page_and_the_log_never_redirects_root() {
    if !common::require_root("a_directory_swapped_above_the_page_and_the_log_never_redirects") {
        return;
    }
    let env = TestEnv::with_fake_iptables();
    // nobody must reach its own directory inside the test's.
    chmod(env.dir.path(), 0o711);
    let rootonly = env.path("rootonly");
    fs::create_dir(&rootonly).unwrap();
    chmod(&rootonly, 0o700);
    let names = ["portlocker.log", "portlocker.prom", "status.html"];
    for name in names {
        fs::write(rootonly.join(name), "precious\n").unwrap();
    }
    let shared = env.path("shared");
    fs::create_dir(&shared).unwrap();
    let www = shared.join("www");
    fs::create_dir(&www).unwrap();
    give_to_nobody(&www);
    let link = shared.join("link");
    symlink(&rootonly, &link).unwrap();
    give_to_nobody(&link);
    give_to_nobody(&shared);
    let config = env
        .local_config("", "")
        .replace(
            &format!("{:?}", env.path("portlocker.log")),
            &format!("{:?}", www.join(names[0])),
        )
        .replace(
            &format!("{:?}", env.path("status.html")),
            &format!("{:?}", www.join(names[2])),
        );
    env.write_config(&format!(
        "metrics_file = {:?}\n{config}",
        www.join(names[1])
    ));

    let swapper = Swapper::start(&www, &link);
    swapper.wait_until_swapping(&www);
    for (n, control) in ["close ssh\n", "open ssh\n"]
        .iter()
        .cycle()
        .take(60)
        .enumerate()
    {
        env.control(control);
        let run = env.run(&[]);
        assert_eq!(run.code, Some(0), "run {n}: {run:#?}");
        for name in names {
            assert_eq!(
                fs::read_to_string(rootonly.join(name)).unwrap(),
                "precious\n",
                "run {n} wrote {name} in the root-only directory"
            );
        }
        let mut found: Vec<String> = fs::read_dir(&rootonly)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        found.sort();
        assert_eq!(
            found, names,
            "run {n} left a file in the root-only directory"
        );
    }
    drop(swapper);
}

/// A child that, as uid 65534, exchanges two entries of a directory it
/// owns in a loop until dropped.
struct Swapper {
    pid: libc::pid_t,
}

impl Swapper {
    fn start(a: &Path, b: &Path) -> Swapper {
        let a = CString::new(a.as_os_str().as_bytes()).unwrap();
        let b = CString::new(b.as_os_str().as_bytes()).unwrap();
        let id = NOBODY as libc::uid_t;
        // SAFETY: the child makes only async-signal-safe system calls on
        // memory allocated before the fork, and never returns.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(id) != 0
                    || libc::setuid(id) != 0
                {
                    libc::_exit(3);
                }
                loop {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    );
                    // Fair to the runs on a small machine; still thousands of swaps a run.
                    libc::sched_yield();
                }
            }
            Swapper { pid }
        }
    }

    /// Returns once `path` was seen both as a directory and as a link: the
    /// swapper runs. A bounded look, not a timing assertion.
    fn wait_until_swapping(&self, path: &Path) {
        let (mut dir, mut link) = (false, false);
        for _ in 0..10_000_000 {
            match fs::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => dir = true,
                Ok(meta) if meta.file_type().is_symlink() => link = true,
                _ => {}
            }
            if dir && link {
                return;
            }
        }
        panic!("the swapper never swapped (dir seen: {dir}, link seen: {link})");
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        // SAFETY: signals and reaps the child this value started.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// A config another account could write, rewritten by it to name a state
/// directory with no kept copy: the run still finds the config's own copy
/// in the default state directory, and enforces it (at boot too). The
/// default state directory is on a tmpfs of this test's mount namespace.
#[test]
fn a_config_rewritten_to_name_another_state_dir_still_finds_its_own_copy() {
    if !common::netns::enter_with_mounts(
        "a_config_rewritten_to_name_another_state_dir_still_finds_its_own_copy",
    ) {
        return;
    }
    let status = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "mode=755,size=1m",
            "portlocker-test",
            "/var/lib",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "mount a tmpfs on /var/lib");
    let env = TestEnv::with_fake_iptables();
    let text = env.local_config("", "");
    let state_line = format!("state_dir = {:?}\n", env.path("state"));
    assert!(text.contains(&state_line));
    env.write_config(&text.replace(&state_line, ""));
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    let good = env.fake_table("iptables");
    assert!(Path::new("/var/lib/portlocker/config.last-good.toml").exists());

    // Mode 666, and another account names a state directory of its own.
    let config = env.path("config.toml");
    chmod(&config, 0o666);
    fs::write(
        &config,
        text.replace(&state_line, "state_dir = \"/nonexistent\"\n"),
    )
    .unwrap();
    // A reboot: the firewall is empty again.
    env.reboot_fake();
    env.run(&["--offline"])
        .expect(1)
        .says("is writable by group or others")
        .says("/var/lib/portlocker/config.last-good.toml) is enforced instead");
    assert_eq!(
        env.fake_table("iptables"),
        good,
        "the close was not restored"
    );
}
