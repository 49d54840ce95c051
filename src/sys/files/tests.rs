//! The files root reads and writes: links, swaps, FIFOs, hard links and
//! other accounts' directories on the way, each against the real calls.

use super::*;
use std::fs;
use std::os::unix::fs::{PermissionsExt, chown, lchown, symlink};

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A file someone else owns, that a followed link would overwrite.
fn victim(dir: &Path) -> PathBuf {
    let victim = dir.join("victim");
    fs::write(&victim, "precious\n").unwrap();
    chmod(&victim, 0o600);
    victim
}

/// A temporary directory whose path has no link in it (`/tmp` may be one).
fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = fs::canonicalize(dir.path()).unwrap();
    (dir, path)
}

#[test]
fn atomic_write_replaces_whole_file_with_its_mode_and_leaves_no_temporary() {
    let (_dir, dir) = tempdir();
    let path = dir.join("status.html");
    write_atomic(&path, b"old", 0o600).unwrap();
    write_atomic(&path, b"new page", 0o644).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new page");
    assert_eq!(names_in(&dir), ["status.html"]);
    assert_eq!(mode_of(&path), 0o644);
    write_atomic(&path, b"secret", 0o640).unwrap();
    assert_eq!(mode_of(&path), 0o640);
}

#[test]
fn a_link_at_the_old_fixed_temporary_name_is_not_followed() {
    let (_dir, dir) = tempdir();
    let victim = victim(&dir);
    let planted = dir.join(".status.html.tmp");
    symlink(&victim, &planted).unwrap();
    let path = dir.join("status.html");
    write_atomic(&path, b"page", 0o644).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(mode_of(&victim), 0o600);
    assert_eq!(fs::read_link(&planted).unwrap(), victim);
    assert_eq!(fs::read(&path).unwrap(), b"page");
    assert_eq!(
        names_in(&dir),
        [".status.html.tmp", "status.html", "victim"]
    );
}

#[test]
fn a_link_at_the_target_is_replaced_not_followed() {
    let (_dir, dir) = tempdir();
    let victim = victim(&dir);
    let path = dir.join("status.html");
    symlink(&victim, &path).unwrap();
    write_atomic(&path, b"page", 0o644).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(mode_of(&victim), 0o600);
    assert!(fs::symlink_metadata(&path).unwrap().is_file());
    assert_eq!(fs::read(&path).unwrap(), b"page");
}

#[test]
fn temporary_names_are_new_each_time_and_never_the_fixed_one() {
    let name = OsStr::new("status.html");
    let first = temporary_name(name).unwrap();
    let second = temporary_name(name).unwrap();
    assert_ne!(first, second);
    for temporary in [&first, &second] {
        let temporary = temporary.to_string_lossy();
        assert!(
            temporary.starts_with(".status.html.") && temporary.ends_with(".tmp"),
            "{temporary}"
        );
        assert_eq!(temporary.len(), ".status.html.".len() + 12 + ".tmp".len());
    }
}

#[test]
fn a_failed_write_leaves_no_temporary() {
    let (_dir, dir) = tempdir();
    // A non-empty directory where the file should go: the rename fails.
    let path = dir.join("status.html");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("keep"), "").unwrap();
    let error = write_atomic(&path, b"page", 0o644).unwrap_err();
    assert!(format!("{error:#}").contains("cannot write"), "{error:#}");
    assert_eq!(names_in(&dir), ["status.html"]);
}

#[test]
fn atomic_write_into_a_missing_directory_fails_and_says_where() {
    let error = write_atomic(Path::new("/nonexistent-dir/x.html"), b"x", 0o644).unwrap_err();
    let error = format!("{error:#}");
    assert!(
        error.contains("cannot write /nonexistent-dir/x.html: /nonexistent-dir: No such file"),
        "{error}"
    );
}

/// The class behind a raced page or log: once a directory is reached, what
/// is written goes there, whatever is renamed above it meanwhile.
#[test]
fn a_directory_once_reached_is_written_even_if_its_path_is_swapped() {
    let (_dir, dir) = tempdir();
    let shared = dir.join("shared");
    let www = shared.join("www");
    fs::create_dir_all(&www).unwrap();
    let rootonly = dir.join("rootonly");
    fs::create_dir(&rootonly).unwrap();
    let held = walk::directory(&www, rules(false), Missing::Stop).unwrap();
    // The swap another account owning `shared` would make.
    fs::rename(&www, shared.join("moved")).unwrap();
    symlink(&rootonly, &www).unwrap();
    replace(&held, OsStr::new("status.html"), b"page", 0o644).unwrap();
    let log = create(&held, OsStr::new("portlocker.log"), OFlags::WRONLY, 0o640).unwrap();
    drop(log);
    assert_eq!(names_in(&rootonly), Vec::<String>::new());
    assert_eq!(
        names_in(&shared.join("moved")),
        ["portlocker.log", "status.html"]
    );
}

#[test]
fn the_log_is_never_opened_through_a_link_a_fifo_or_a_second_name() {
    let (_dir, dir) = tempdir();
    let victim = victim(&dir);
    let link = dir.join("portlocker.log");
    symlink(&victim, &link).unwrap();
    let error = open_append(&link, 0o640).unwrap_err().to_string();
    assert_eq!(
        error,
        "it is a symbolic link, which portlocker never follows: remove it"
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");

    let plain = dir.join("plain.log");
    open_append(&plain, 0o640).unwrap();
    assert!(plain.is_file());
    assert_eq!(mode_of(&plain) & 0o027, 0);

    // A file everyone may read (root's page, moved here by whoever owns the
    // directory) is made root's and its group's alone.
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
    open_append(&plain, 0o640).unwrap();
    assert_eq!(mode_of(&plain) & 0o777, 0o640);

    // A hard link to a file of root's, where protected_hardlinks is off.
    let second = dir.join("second.log");
    fs::hard_link(&victim, &second).unwrap();
    let error = open_append(&second, 0o640).unwrap_err().to_string();
    assert!(error.starts_with("it has 2 names (hard links)"), "{error}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");

    let fifo = dir.join("fifo.log");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let error = open_append(&fifo, 0o640).unwrap_err().to_string();
    assert_eq!(error, "it is not a regular file (a FIFO): remove it");
    let error = format!("{:#}", open_trusted(&fifo, "control file").unwrap_err());
    assert_eq!(
        error,
        format!(
            "control file {} is a FIFO, not a regular file",
            fifo.display()
        )
    );
}

/// Links root (here: this process) made in directories only it can
/// change are followed, relative ones and `..` included; a loop is not.
#[test]
fn own_links_in_closed_directories_are_followed_and_loops_refused() {
    let (_dir, dir) = tempdir();
    chmod(&dir, 0o755);
    let real = dir.join("real");
    fs::create_dir(&real).unwrap();
    fs::write(real.join("config.toml"), "text").unwrap();
    chmod(&real.join("config.toml"), 0o600);
    symlink("real", dir.join("etc")).unwrap();
    symlink("../real/config.toml", real.join("link.toml")).unwrap();
    let mut text = String::new();
    open_trusted(&dir.join("etc/link.toml"), "config")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "text");
    write_atomic(&dir.join("etc/page.html"), b"page", 0o644).unwrap();
    assert!(real.join("page.html").is_file());

    symlink("b", dir.join("a")).unwrap();
    symlink("a", dir.join("b")).unwrap();
    let error = format!("{:#}", open_trusted(&dir.join("a"), "config").unwrap_err());
    assert!(error.contains("more than 40 symbolic links"), "{error}");
}

/// Even a link this process owns is not followed where another account
/// could have put it: in a directory others can write.
#[test]
fn a_link_in_a_directory_others_can_write_is_never_followed() {
    let (_dir, dir) = tempdir();
    let victim = victim(&dir);
    let elsewhere = dir.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let shared = dir.join("shared");
    fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o777);
    symlink(&elsewhere, shared.join("www")).unwrap();
    symlink(&victim, shared.join("control.txt")).unwrap();
    let error = format!(
        "{:#}",
        write_atomic(&shared.join("www/status.html"), b"page", 0o644).unwrap_err()
    );
    assert!(
        error.contains(&format!(
            "{}/www is a symbolic link in {}, which another account can change",
            shared.display(),
            shared.display()
        )),
        "{error}"
    );
    assert_eq!(names_in(&elsewhere), Vec::<String>::new());
    let error = format!(
        "{:#}",
        open_trusted(&shared.join("control.txt"), "control file").unwrap_err()
    );
    // As root the directory itself is refused first.
    assert!(
        error.contains("which another account can change")
            || error.contains("is writable by group or others (mode 777)"),
        "{error}"
    );
    assert!(!error.contains("precious"), "{error}");
}

#[test]
fn a_link_another_account_owns_is_never_followed_anywhere() {
    if !root_for_test("files::tests::a_link_another_account_owns_is_never_followed_anywhere") {
        return;
    }
    let (_dir, dir) = tempdir();
    let victim = victim(&dir);
    let rootonly = dir.join("rootonly");
    fs::create_dir(&rootonly).unwrap();
    let planted = [("www", &rootonly), ("ctl.txt", &victim), ("tool", &victim)];
    for (name, target) in planted {
        symlink(target, dir.join(name)).unwrap();
        lchown(dir.join(name), Some(65534), Some(65534)).unwrap();
    }
    let needle = "is a symbolic link owned by uid 65534";
    let page = write_atomic(&dir.join("www/status.html"), b"page", 0o644).unwrap_err();
    assert!(format!("{page:#}").contains(needle), "{page:#}");
    let log = open_append(&dir.join("www/portlocker.log"), 0o640).unwrap_err();
    assert!(log.to_string().contains(needle), "{log}");
    let read = open_trusted(&dir.join("ctl.txt"), "control file").unwrap_err();
    assert_eq!(
        format!("{read:#}"),
        format!(
            "control file {} {needle}: portlocker, as root, never follows another account's \
             link (make it a directory or a file, or a link root owns in a directory only root \
             can change)",
            dir.join("ctl.txt").display()
        )
    );
    let program = check_program(&dir.join("tool"), "notify.command").unwrap_err();
    assert!(format!("{program:#}").contains(needle), "{program:#}");
    assert_eq!(names_in(&rootonly), Vec::<String>::new());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
}

/// OpenSSH's StrictModes for what root trusts: the file and every directory
/// above it root's and writable by no one else; a sticky directory of root's
/// (/tmp) holds an entry of root's firmly.
#[test]
fn as_root_what_root_trusts_must_be_roots_all_the_way_down() {
    if !root_for_test("files::tests::as_root_what_root_trusts_must_be_roots_all_the_way_down") {
        return;
    }
    let (_dir, dir) = tempdir();
    chmod(&dir, 0o755);
    let etc = dir.join("etc");
    fs::create_dir(&etc).unwrap();
    let config = etc.join("config.toml");
    fs::write(&config, "source = \"-\"\n").unwrap();
    chmod(&config, 0o600);
    let (shown, etc_shown) = (config.display(), etc.display());
    open_trusted(&config, "config").unwrap();
    check_trusted(&config, "fetch.ca_file").unwrap();

    let refusal = |expected: String| {
        let error = format!("{:#}", open_trusted(&config, "config").unwrap_err());
        assert_eq!(error, expected);
        let error = format!("{:#}", check_trusted(&config, "fetch.ca_file").unwrap_err());
        assert!(error.starts_with("fetch.ca_file "), "{error}");
    };
    chown(&etc, Some(65534), None).unwrap();
    let elsewhere = "or keep what root trusts in directories only root can change";
    refusal(format!(
        "config {shown}: {etc_shown} is owned by uid 65534, not root, so that account could \
         replace what is in it: fix with `chown root {etc_shown}`, {elsewhere}"
    ));
    chown(&etc, Some(0), None).unwrap();
    chmod(&etc, 0o775);
    refusal(format!(
        "config {shown}: {etc_shown} is writable by group or others (mode 775), so they could \
         replace what is in it: fix with `chmod go-w {etc_shown}`, {elsewhere}"
    ));
    // Sticky and root's: others may add entries, not replace root's.
    chmod(&etc, 0o1777);
    open_trusted(&config, "config").unwrap();
    chown(&config, Some(65534), None).unwrap();
    refusal(format!(
        "config {shown} is owned by uid 65534, not root: fix with `chown root {shown}`"
    ));
    chown(&config, Some(0), None).unwrap();
    chmod(&etc, 0o755);
    chmod(&config, 0o620);
    refusal(format!(
        "config {shown} is writable by group or others (mode 620): fix with `chmod go-w {shown}`"
    ));
}

#[test]
fn as_root_a_program_and_its_interpreter_must_be_roots_all_the_way_down() {
    if !root_for_test("files::tests::as_root_a_program_and_its_interpreter_must_be_roots") {
        return;
    }
    let (_dir, dir) = tempdir();
    chmod(&dir, 0o755);
    let bin = dir.join("bin");
    fs::create_dir(&bin).unwrap();
    let tool = bin.join("tell-owner");
    fs::write(&tool, "#!/bin/sh\nexit 0\n").unwrap();
    chmod(&tool, 0o755);
    check_program(&tool, "notify.command").unwrap();
    check_program(&bin.join("missing"), "notify.command").unwrap();
    check_program(&bin.join("gone/missing"), "notify.command").unwrap();
    // Missing where another account could put its own before it runs.
    chmod(&bin, 0o1777);
    for missing in ["missing", "gone/missing"] {
        let error = format!(
            "{:#}",
            check_program(&bin.join(missing), "notify.command").unwrap_err()
        );
        assert_eq!(
            error,
            format!(
                "notify.command {} does not exist, and another account could put a program of \
                 its own there before it runs ({} is writable by others): keep programs in \
                 directories only root can change",
                bin.join(missing).display(),
                bin.display()
            )
        );
    }
    check_program(&tool, "notify.command").unwrap();
    chmod(&bin, 0o755);
    // Debian's own, through /sbin -> usr/sbin and the alternatives.
    check_program(Path::new("/sbin/iptables"), "firewall.iptables").unwrap();

    chmod(&tool, 0o777);
    let error = format!("{:#}", check_program(&tool, "notify.command").unwrap_err());
    assert!(
        error.contains("(mode 777): fix with `chmod go-w"),
        "{error}"
    );
    chmod(&tool, 0o755);
    chown(&bin, Some(65534), None).unwrap();
    let error = format!("{:#}", check_program(&tool, "notify.command").unwrap_err());
    assert!(
        error.contains(&format!("{} is owned by uid 65534", bin.display())),
        "{error}"
    );
    chown(&bin, Some(0), None).unwrap();

    // The script is root's; the interpreter its #! line names is not.
    let shell = bin.join("shell");
    fs::copy("/bin/sh", &shell).unwrap();
    chown(&shell, Some(65534), None).unwrap();
    fs::write(&tool, format!("#! {} -e\nexit 0\n", shell.display())).unwrap();
    let error = format!("{:#}", check_program(&tool, "notify.command").unwrap_err());
    assert_eq!(
        error,
        format!(
            "notify.command {} is a script for {shell}: interpreter {shell} is owned by uid \
             65534, not root: fix with `chown root {shell}`",
            tool.display(),
            shell = shell.display()
        )
    );
    fs::write(&tool, "#!sh\nexit 0\n").unwrap();
    let error = format!("{:#}", check_program(&tool, "notify.command").unwrap_err());
    assert!(error.contains("names sh, not an absolute path"), "{error}");
}

#[test]
fn a_trusted_dir_is_root_owned_and_so_are_its_files() {
    if !root_for_test("files::tests::a_trusted_dir_is_root_owned_and_so_are_its_files") {
        return;
    }
    let (_dir, dir) = tempdir();
    let shown = dir.display().to_string();
    chmod(&dir, 0o700);
    let file = dir.join("state.toml");
    fs::write(&file, "").unwrap();
    chmod(&file, 0o600);
    fs::create_dir(dir.join("sub")).unwrap();
    let check = || {
        Directory::open(&dir, "state_dir", None)
            .map_err(anyhow::Error::from)
            .and_then(|opened| opened.check_entries("state_dir"))
            .map_err(|error| format!("{error:#}"))
    };
    check().unwrap();

    chmod(&file, 0o620);
    let error = check().unwrap_err();
    assert!(
        error.contains(&format!("state_dir file {shown}/state.toml is writable by group or others (mode 620): fix with `chmod go-w {shown}/state.toml`")),
        "{error}"
    );
    chmod(&file, 0o600);
    chown(&file, Some(65534), None).unwrap();
    let error = check().unwrap_err();
    assert!(
        error.contains(&format!("fix with `chown root {shown}/state.toml`")),
        "{error}"
    );
    fs::remove_file(&file).unwrap();

    symlink("/etc/passwd", &file).unwrap();
    let error = check().unwrap_err();
    assert!(
        error.contains(&format!("symbolic link {shown}/state.toml")),
        "{error}"
    );
    fs::remove_file(&file).unwrap();

    chmod(&dir, 0o1777);
    let error = check().unwrap_err();
    assert!(
        error.contains(&format!("fix with `chmod go-w {shown}`")),
        "{error}"
    );
}

#[test]
fn a_missing_directory_is_created_component_by_component() {
    let (_dir, dir) = tempdir();
    let state = dir.join("var/lib/portlocker");
    let error = Directory::open(&state, "state_dir", None).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    let opened = Directory::open(&state, "state_dir", Some(0o700)).unwrap();
    assert_eq!(mode_of(&state), 0o700);
    assert_eq!(mode_of(&dir.join("var/lib")) & 0o700, 0o700);
    opened.replace("state.toml", b"x", 0o600).unwrap();
    assert_eq!(opened.read("state.toml").unwrap(), b"x");
    opened.rename("state.toml", "state.toml.damaged").unwrap();
    assert_eq!(names_in(&state), ["state.toml.damaged"]);
}
