//! Writes the man pages and the bash, zsh and fish completions from the
//! command line in `src/cli.rs` (included as it is, so the definition stays
//! one file), the man page's configuration reference from the documented
//! `config.example.toml` (through `src/reference.rs`), into `OUT_DIR`, and
//! copies them, the man pages gzipped as Debian ships them, to
//! `target/<profile>/assets/` for cargo-deb. Writes nothing else.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

#[path = "src/cli.rs"]
#[allow(dead_code)]
mod cli;

#[path = "src/reference.rs"]
#[allow(dead_code)]
mod reference;

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-changed=src/reference.rs");
    println!("cargo:rerun-if-changed=config.example.toml");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let man = fresh_dir(out.join("man"))?;
    let completions = fresh_dir(out.join("completions"))?;

    // `portlocker help` is clap's, and has no page of its own.
    let mut pages = cli::Cli::command().disable_help_subcommand(true);
    pages.build();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let sections = reference::parse(&fs::read_to_string(&example)?)
        .map_err(|error| io::Error::other(format!("config.example.toml: {error}")))?;
    write_man_pages(&pages, &man, &sections)?;
    let mut command = cli::Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, "portlocker", &completions)?;
    }

    if let Some(assets) = assets_dir(&out) {
        for dir in [&man, &completions] {
            let into = fresh_dir(assets.join(dir.file_name().expect("named above")))?;
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                if dir == &man {
                    gzip(&entry.path(), &into)?;
                } else {
                    fs::copy(entry.path(), into.join(entry.file_name()))?;
                }
            }
        }
    }
    Ok(())
}

/// `NAME.gz` in `into`, as Debian ships man pages; no name or time inside,
/// so the same page gives the same bytes.
fn gzip(path: &Path, into: &Path) -> io::Result<()> {
    let mut name = path.file_name().expect("a file").to_os_string();
    name.push(".gz");
    let file = fs::File::create(into.join(name))?;
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, flate2::Compression::best());
    encoder.write_all(&fs::read(path)?)?;
    encoder.finish()?.sync_all()
}

/// An empty directory at `path`: nothing from an earlier build stays in it.
fn fresh_dir(path: PathBuf) -> io::Result<PathBuf> {
    match fs::remove_dir_all(&path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    fs::create_dir_all(&path)?;
    Ok(path)
}

/// `target/<profile>/assets`, where cargo-deb finds files as
/// `target/release/assets/…`. OUT_DIR is `target/<profile>/build/<pkg>-<hash>/out`;
/// None when it is laid out otherwise (the copies are for packaging only).
fn assets_dir(out: &Path) -> Option<PathBuf> {
    let build = out.parent()?.parent()?;
    (build.file_name()? == "build").then(|| build.parent().map(|p| p.join("assets")))?
}

/// `portlocker.8` and one page per subcommand (`portlocker-check.8`, …).
fn write_man_pages(
    command: &clap::Command,
    dir: &Path,
    sections: &[reference::Section],
) -> io::Result<()> {
    let page = |command: clap::Command| {
        // No date, for reproducible builds; a blank one keeps .TH's fields in place.
        Man::new(command)
            .section("8")
            .date(" ")
            .manual("System Administration")
            .source(format!("portlocker {}", env!("CARGO_PKG_VERSION")))
    };
    let mut main = fs::File::create(dir.join("portlocker.8"))?;
    let man = page(command.clone());
    man.render_title(&mut main)?;
    man.render_name_section(&mut main)?;
    man.render_synopsis_section(&mut main)?;
    man.render_description_section(&mut main)?;
    man.render_options_section(&mut main)?;
    man.render_subcommands_section(&mut main)?;
    main.write_all(extra_sections(sections).render().as_bytes())?;
    man.render_version_section(&mut main)?;

    for sub in command.get_subcommands() {
        let mut file = fs::File::create(dir.join(format!("portlocker-{}.8", sub.get_name())))?;
        let mut roff = Roff::new();
        section(&mut roff, "SEE ALSO");
        roff.text([bold("portlocker"), roman("(8)")]);
        page(sub.clone()).render(&mut file)?;
        file.write_all(roff.render().as_bytes())?;
    }
    Ok(())
}

/// What `--help` cannot say: the control file, the config, the files, the
/// exit codes, and where to look next.
fn extra_sections(config: &[reference::Section]) -> Roff {
    let mut roff = Roff::new();

    section(&mut roff, "CONTROL FILE");
    para(
        &mut roff,
        "Plain UTF-8 text, one order per line. Case does not matter; words are separated by \
         spaces or tabs; # starts a comment; blank lines, a byte-order mark and CRLF line \
         endings are fine. An order is",
    );
    example(
        &mut roff,
        &["ACTION SERVICE [from NET] [until TIME | for DURATION] [on PATTERNS]"],
    );
    term(
        &mut roff,
        "open | close",
        "Open the service's ports, or drop new connections to them (sessions already open \
         survive). SERVICE is a name from [services] in the config.",
    );
    term(
        &mut roff,
        "from NET",
        "With open only: an address or network (203.0.113.7, 198.51.100.0/24, 2001:db8::/48), \
         let through in its own family only; the service stays closed to everyone else. \
         Several from lines for a service add up. No host names; 0.0.0.0/0 and ::/0 are \
         refused (write a plain open).",
    );
    term(
        &mut roff,
        "until TIME",
        "The open ends at TIME: 2026-11-25 18:00 (the server's local time) or RFC 3339 with \
         its offset. The kernel enforces it, even if portlocker never runs again.",
    );
    term(
        &mut roff,
        "for DURATION",
        "The open ends DURATION (90m, 2h, 7d) after the first run that put it into the \
         firewall. Change the line, or close first, to start a new count.",
    );
    term(
        &mut roff,
        "on PATTERNS",
        "Ends the line: comma-separated shell patterns (*, ?, [a-z], [!0-9]) matched against \
         host_name. Lines for other hosts are checked for form only, then ignored.",
    );
    para(
        &mut roff,
        "A service named twice: the last line wins, with a warning. A service the file does not \
         name keeps its state (closed instead with [firewall] default = \"close\"). An empty \
         file changes nothing. One invalid line rejects the whole file: nothing from it is \
         applied, the last good file stays in force, and every bad line is reported with its \
         number.",
    );
    example(
        &mut roff,
        &[
            "# my server",
            "open ssh from 203.0.113.7 for 1h",
            "close vpn            # until I am back",
            "open httpd until 2026-11-25 18:00 on web-*",
        ],
    );

    section(&mut roff, "CONFIGURATION");
    para(
        &mut roff,
        "A TOML file, /etc/portlocker/config.toml unless -c or PORTLOCKER_CONFIG says \
         otherwise; owned by root and writable by nobody else. Only source and [services] are \
         required; an unknown key is an error. Every key, with its default or an example (an \
         optional key is off unless set), as the packaged config documents it:",
    );
    configuration(&mut roff, config);

    section(&mut roff, "FILES");
    for (path, what) in [
        (
            "/etc/portlocker/config.toml",
            "the config (mode 600: it names the secret source).",
        ),
        (
            "/var/lib/portlocker/",
            "state_dir (mode 700): lock, the run lock; state.toml, what was asked of each \
             service and the last good control file, ending in a checksum line; \
             state.toml.damaged, a damaged state file moved aside.",
        ),
        (
            "/var/log/portlocker/portlocker.log",
            "log_file as packaged (the default is /var/log/portlocker.log): every firewall \
             change, every error, one summary line per run. Only ever appended to.",
        ),
        (
            "/lib/systemd/system/portlocker.service, portlocker.timer",
            "a run every five minutes (the timer is not enabled on install).",
        ),
        (
            "/lib/systemd/system/portlocker-boot.service",
            "portlocker --offline at boot, before any network interface is up.",
        ),
        (
            "/etc/cron.d/portlocker",
            "the same schedule for cron, commented out: use it or the timer, not both.",
        ),
    ] {
        term(&mut roff, path, what);
    }

    section(&mut roff, "EXIT STATUS");
    for (code, what) in [
        (
            "0",
            "Every service is as the control file asks (for check: all well, notes only).",
        ),
        (
            "1",
            "The run failed: fetch, validation or firewall, or a service is not as asked, \
             more open or more closed (a rule of others keeping a port shut that the file \
             opens fails the run, so that cron hears of it). Nothing from a bad file was \
             applied; the error says whether the last good file was enforced instead (for \
             check: runs would fail or leave a port other than the control file says).",
        ),
        (
            "2",
            "Usage or config error, including a config or state_dir others can write; nothing \
             was done.",
        ),
        (
            "75",
            "Another run holds the lock; this one changed nothing.",
        ),
    ] {
        term(&mut roff, code, what);
    }

    section(&mut roff, "ENVIRONMENT");
    term(
        &mut roff,
        "PORTLOCKER_CONFIG",
        "The config file, as -c PATH (which wins).",
    );

    section(&mut roff, "EXAMPLES");
    example(
        &mut roff,
        &[
            "printf 'close ssh\\n' | portlocker --dry-run --source -",
            "portlocker check --fetch",
            "systemctl enable --now portlocker-boot.service portlocker.timer",
            "portlocker status --json",
        ],
    );

    section(&mut roff, "SEE ALSO");
    roff.text([
        bold("iptables"),
        roman("(8), "),
        bold("systemd.timer"),
        roman("(5), "),
        bold("minisign"),
        roman("(1), /usr/share/doc/portlocker/README.md"),
    ]);
    roff
}

/// Each section of the config, and each of its keys with what it does.
fn configuration(roff: &mut Roff, sections: &[reference::Section]) {
    for section in sections {
        let title = match &section.name {
            Some(name) => format!("[{name}]"),
            None => "Top level".to_owned(),
        };
        roff.control("SS", [title.as_str()]);
        if !section.about.is_empty() {
            para(roff, &section.about);
        }
        if section.name.as_deref() == Some("services") {
            let examples: Vec<String> = section
                .keys
                .iter()
                .map(|key| format!("{} = {}", key.name, key.value))
                .collect();
            let examples: Vec<&str> = examples.iter().map(String::as_str).collect();
            example(roff, &examples);
            continue;
        }
        for key in &section.keys {
            let value = match key.optional {
                true => format!("{} = {} (optional)", key.name, key.value),
                false => format!("{} = {}", key.name, key.value),
            };
            term(roff, &value, &key.about);
        }
    }
}

fn section(roff: &mut Roff, title: &str) {
    roff.control("SH", [title]);
}

fn para(roff: &mut Roff, text: &str) {
    roff.control("PP", []).text([roman(text)]);
}

/// A tagged paragraph: the term in bold, its text indented below it.
fn term(roff: &mut Roff, name: &str, text: &str) {
    roff.control("TP", [])
        .text([bold(name)])
        .text([roman(text)]);
}

/// Lines shown as they are, in a monospace block.
fn example(roff: &mut Roff, lines: &[&str]) {
    roff.control("PP", [])
        .control("RS", ["4"])
        .control("nf", []);
    for line in lines {
        roff.text([roman(*line)]);
    }
    roff.control("fi", []).control("RE", []);
}
