//! Fetching over real HTTPS: a TLS server on loopback with a certificate
//! made for the test, trusted through `ca_file`; files that carry their
//! signature, against real iptables in a private network namespace.

mod common;

use std::time::{Duration, Instant};

use common::TestEnv;
use common::https::{Reply, TlsServer};
use common::netns;
use common::signer::Signer;

/// The secret part of every test URL: it must never show in any output.
const SECRET: &str = "/s/SECRET-share-id/portlocker.txt";

/// An environment fetching `SECRET` from `server`, with extra `[fetch]` lines.
fn env_for(server: &TlsServer, fetch: &str) -> TestEnv {
    let env = TestEnv::with_fake_iptables();
    server.write_ca(&env.path("ca.pem"));
    let fetch = format!("ca_file = {:?}\n{fetch}", env.path("ca.pem"));
    env.write_config(&env.config_text(&server.url(SECRET), &fetch, ""));
    env
}

fn text(body: &str) -> Reply {
    Reply::Body {
        body: body.as_bytes().to_vec(),
        content_type: "text/plain; charset=utf-8",
    }
}

/// Asserts nothing the run left behind shows the secret URL.
fn assert_secret_kept(env: &TestEnv, run: &common::Run) {
    for (what, text) in [
        ("stdout", run.stdout.clone()),
        ("stderr", run.stderr.clone()),
        ("log", env.log()),
        ("status page", env.status_page().unwrap_or_default()),
    ] {
        assert!(
            !text.contains("SECRET"),
            "{what} shows the secret URL: {text}"
        );
    }
}

#[test]
fn a_file_over_https_is_applied_and_the_url_stays_secret() {
    let server = TlsServer::start(text("close ssh\n"));
    let env = env_for(&server, "");
    let run = env.run(&["-v"]);
    run.expect(0);
    assert!(
        env.fake_table("iptables").contains("portlocker:ssh"),
        "{:?}",
        env.calls()
    );
    assert!(
        env.log()
            .contains(&format!("run ok from https://127.0.0.1:{}:", server.port)),
        "{}",
        env.log()
    );
    assert_secret_kept(&env, &run);
}

#[test]
fn a_body_without_content_length_is_read_to_the_end() {
    let server = TlsServer::start(Reply::Unsized(b"close web\n".to_vec()));
    let env = env_for(&server, "");
    env.run(&[]).expect(0);
    assert!(env.fake_table("iptables").contains("portlocker:web"));
}

/// A body with no length ends only where the server says so: a connection
/// that stops without TLS's close_notify was cut (a FIN forged on the path
/// turned `open ssh from 203.0.113.7` into `open ssh`).
#[test]
fn a_body_without_content_length_cut_without_close_notify_is_refused() {
    let whole = b"open ssh from 203.0.113.7\n";
    let server = TlsServer::start(Reply::Unsized(whole.to_vec()));
    let env = env_for(&server, "");
    env.run(&[]).expect(0);
    assert!(env.fake_table("iptables").contains("203.0.113.7"));
    server.set_reply(Reply::Cut(whole[..9].to_vec()));
    env.run(&[])
        .expect(1)
        .says("the connection was cut before the server ended its answer");
    assert!(env.fake_table("iptables").contains("203.0.113.7"));
}

#[test]
fn an_untrusted_certificate_is_refused() {
    let server = TlsServer::start(text("close ssh\n"));
    let env = TestEnv::with_fake_iptables();
    env.write_config(&env.config_text(&server.url(SECRET), "", ""));
    let run = env.run(&[]);
    eprintln!("STDERR {}", run.stderr);
    run.expect(1);
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "{}",
        run.stderr
    );
    assert_eq!(env.calls(), Vec::<String>::new());
    assert_secret_kept(&env, &run);
}

/// Each refusal: exit 1, a clear reason, no firewall call, no secret shown.
fn assert_refused(reply: Reply, fetch: &str, needle: &str) {
    let server = TlsServer::start(reply);
    let env = env_for(&server, fetch);
    let run = env.run(&[]);
    eprintln!("STDERR {}", run.stderr);
    run.expect(1);
    run.says(needle);
    run.says("nothing was changed");
    assert_eq!(
        env.calls(),
        Vec::<String>::new(),
        "a refused fetch touched the firewall"
    );
    assert!(env.status_page().unwrap().contains("Failed: "));
    assert_secret_kept(&env, &run);
}

/// Dropbox's `dl=1` is named only for Dropbox (see fetch.rs's tests);
/// elsewhere the hint says what link to look for.
#[test]
fn an_html_page_is_refused_with_a_hint_about_the_link() {
    let page = Reply::Body {
        body: b"<!DOCTYPE html><html><body>close ssh</body></html>".to_vec(),
        content_type: "text/html; charset=utf-8",
    };
    let hint = "(use the link that gives the file itself, often called a raw or download link, \
                not the page that shows it)";
    assert_refused(page.clone(), "", "Content-Type text/html");
    // The hint comes with the header too, not only from the parser.
    assert_refused(page, "", hint);
    let disguised = Reply::Body {
        body: b"\n<html><body>close ssh</body></html>".to_vec(),
        content_type: "text/plain",
    };
    assert_refused(disguised, "", hint);
    let server = TlsServer::start(text("<html>"));
    let run = env_for(&server, "").run(&[]);
    assert!(!run.stderr.contains("dl=1"), "{}", run.stderr);
}

/// `body` compressed as `encoding` (`gzip` or `deflate`, zlib-wrapped).
fn compressed(encoding: &str, body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let level = flate2::Compression::default();
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            let mut encoder = flate2::write::GzEncoder::new(&mut out, level);
            encoder.write_all(body).unwrap();
            encoder.finish().unwrap();
        }
        _ => {
            let mut encoder = flate2::write::ZlibEncoder::new(&mut out, level);
            encoder.write_all(body).unwrap();
            encoder.finish().unwrap();
        }
    }
    out
}

/// A 200 whose body is `body` sent with `Content-Encoding: {encoding}`.
fn encoded(encoding: &'static str, body: Vec<u8>) -> Reply {
    let headers = match encoding {
        "gzip" => "Content-Encoding: gzip\r\n",
        "deflate" => "Content-Encoding: deflate\r\n",
        "br" => "Content-Encoding: br\r\n",
        other => panic!("no header for {other}"),
    };
    Reply::StatusBody {
        status: "200 OK",
        headers,
        body,
    }
}

/// nginx's `gzip_static always`, an S3 object stored gzip-encoded: the file
/// comes compressed though portlocker asked for it as it is.
#[test]
fn a_file_sent_compressed_unasked_is_decoded_and_applied() {
    for encoding in ["gzip", "deflate"] {
        let server = TlsServer::start(encoded(encoding, compressed(encoding, b"close ssh\n")));
        let env = env_for(&server, "");
        let run = env.run(&[]);
        run.expect(0);
        assert!(
            env.fake_table("iptables").contains("portlocker:ssh"),
            "{encoding}: {:?}",
            env.calls()
        );
        assert!(
            server
                .last_head()
                .contains("\r\naccept-encoding: identity\r\n"),
            "{}",
            server.last_head()
        );
        assert_secret_kept(&env, &run);
    }
}

/// `max_bytes` bounds the decoded file: a small body that decodes to a
/// flood is refused; an encoding portlocker cannot decode is named.
#[test]
fn a_gzip_bomb_and_an_unknown_encoding_are_refused_by_name() {
    let bomb = compressed("gzip", &vec![b'#'; 5_000_000]);
    assert!(bomb.len() < 65536, "{}", bomb.len());
    assert_refused(
        encoded("gzip", bomb),
        "",
        "decoding the gzip body the server sent: the control file is larger than \
         fetch.max_bytes (65536 bytes)",
    );
    assert_refused(
        encoded("br", b"close ssh\n".to_vec()),
        "",
        "the server sent the file encoded as \"br\" (Content-Encoding), which portlocker \
         cannot decode",
    );
    assert_refused(
        encoded("gzip", b"close ssh\n".to_vec()),
        "",
        "the compressed body is damaged",
    );
}

/// An unsigned file with a key set: its detached signature is missing,
/// and the message says so, not that the control file answered 404.
#[test]
fn an_unsigned_file_whose_signature_answers_404_is_named_for_what_it_is() {
    let source = TlsServer::start(text("open ssh\n"));
    let signatures = TlsServer::start(Reply::Status("404 Not Found"));
    let env = TestEnv::with_fake_iptables();
    std::fs::write(
        env.path("ca.pem"),
        format!("{}{}", source.ca_pem(), signatures.ca_pem()),
    )
    .unwrap();
    let fetch = format!("ca_file = {:?}", env.path("ca.pem"));
    let signer = Signer::new();
    let section = format!(
        "[signature]\npublic_key = {:?}\nurl = {:?}\n[services]",
        signer.public_key(),
        signatures.url("/s/SECRET-signature/portlocker.txt.minisig")
    );
    env.write_config(
        &env.config_text(&source.url(SECRET), &fetch, "")
            .replace("[services]", &section),
    );
    let run = env.run(&[]);
    run.expect(1).says(&format!(
        "this file carries no #minisig lines, and its detached signature at \
         https://127.0.0.1:{}/… answered 404 Not Found: sign the file on the signer page",
        signatures.port
    ));
    assert!(
        !run.stderr.contains("fetching the control file"),
        "{}",
        run.stderr
    );
    assert_eq!(env.calls(), Vec::<String>::new());
    assert_secret_kept(&env, &run);
}

#[test]
fn an_error_status_is_refused() {
    assert_refused(
        Reply::Status("404 Not Found"),
        "",
        "the server answered 404 Not Found",
    );
    assert_refused(
        Reply::Status("500 Internal Server Error"),
        "",
        "500 Internal Server Error",
    );
}

#[test]
fn only_a_200_carries_a_file() {
    assert_refused(
        Reply::NoContent,
        "",
        "the server answered 204 No Content: not a file",
    );
    // A valid control file inside, but never asked for in part: no Range is sent.
    assert_refused(
        Reply::StatusBody {
            status: "206 Partial Content",
            headers: "Content-Range: bytes 0-9/20\r\n",
            body: b"close ssh\n".to_vec(),
        },
        "",
        "the server answered 206 Partial Content: not a file",
    );
    assert_refused(
        Reply::StatusBody {
            status: "203 Non-Authoritative Information",
            headers: "",
            body: b"close ssh\n".to_vec(),
        },
        "",
        "the server answered 203 Non Authoritative Information: not a file",
    );
    // Nothing was asked conditionally: there is no last good file yet.
    assert_refused(
        Reply::Status("304 Not Modified"),
        "",
        "the server answered 304 Not Modified to a request that was not conditional",
    );
}

#[test]
fn an_empty_200_is_an_empty_file() {
    let server = TlsServer::start(text(""));
    let env = env_for(&server, "");
    env.run(&[]).expect(0);
    assert_eq!(env.changing_calls(), Vec::<String>::new());
    assert!(env.status_page().unwrap().contains("OK: "));
}

#[test]
fn a_304_to_a_conditional_request_keeps_the_last_good_file() {
    let server = TlsServer::start(Reply::Etagged {
        body: b"close ssh\n".to_vec(),
        etag: "\"v1\"",
    });
    let env = env_for(&server, "");
    env.run(&[]).expect(0);
    env.forget_calls();
    env.run(&["-v"]).expect(0).says("has not changed (304)");
    assert!(
        server.last_head().contains("if-none-match: \"v1\""),
        "{}",
        server.last_head()
    );
    assert_eq!(env.changing_calls(), Vec::<String>::new());
}

#[test]
fn an_oversized_body_is_refused_with_or_without_a_length() {
    let big = "close ssh\n".repeat(200);
    assert_refused(
        text(&big),
        "max_bytes = 1000",
        "more than fetch.max_bytes (1000)",
    );
    assert_refused(
        Reply::Unsized(big.into_bytes()),
        "max_bytes = 1000",
        "larger than fetch.max_bytes (1000 bytes)",
    );
}

#[test]
fn a_redirect_to_plain_http_is_refused() {
    let location = format!("http://127.0.0.1:1{SECRET}");
    assert_refused(
        Reply::Redirect(location),
        "",
        "refused a redirect from https to plain http",
    );
}

#[test]
fn redirects_within_https_are_followed() {
    let server = TlsServer::start(Reply::RedirectUnless {
        path: "/final/portlocker.txt",
        then: Box::new(text("close ssh\n")),
    });
    let env = env_for(&server, "");
    env.run(&[]).expect(0);
    assert_eq!(server.requests.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(env.fake_table("iptables").contains("portlocker:ssh"));
}

#[test]
fn a_redirect_loop_ends() {
    assert_refused(
        Reply::Redirect("/again".into()),
        "",
        "more than 10 redirects",
    );
}

#[test]
fn a_server_that_never_answers_ends_the_run_within_the_timeout() {
    let server = TlsServer::start(Reply::Hang);
    let env = env_for(&server, "timeout_secs = 1");
    let started = Instant::now();
    let run = env.run(&[]);
    let took = started.elapsed();
    eprintln!("STDERR {} {took:?}", run.stderr);
    run.expect(1);
    assert!(
        run.stderr.contains("fetch.timeout_secs (1 s)") || run.stderr.contains("timed out"),
        "{}",
        run.stderr
    );
    // The bound the owner relies on: timeout_secs plus start-up, not for ever.
    assert!(
        took.as_secs() < 10,
        "the run took {took:?} against a 1 s timeout"
    );
    assert!(
        server.requests.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the server was never reached"
    );
    assert_eq!(env.calls(), Vec::<String>::new());
}

/// A server that sends its answer one byte a second never holds a fetch
/// past fetch.timeout_secs: not while the head drips, nor the body.
#[test]
fn a_server_that_drips_its_answer_ends_the_run_within_the_timeout() {
    for head in [false, true] {
        let body = "close ssh\n".repeat(6).into_bytes();
        let server = TlsServer::start(Reply::Drip { body, head });
        let env = env_for(&server, "timeout_secs = 2");
        let started = Instant::now();
        let run = env.run(&[]);
        let took = started.elapsed();
        eprintln!("STDERR (head dripping: {head}) {} {took:?}", run.stderr);
        run.expect(1);
        run.says("nothing was changed");
        assert!(
            run.stderr.contains("fetch.timeout_secs"),
            "head dripping: {head}: {}",
            run.stderr
        );
        // The whole answer would take a minute; the bound is the timeout plus start-up.
        assert!(
            took < Duration::from_secs(10),
            "head dripping: {head}: the run took {took:?} against a 2 s timeout"
        );
        assert_eq!(env.calls(), Vec::<String>::new());
        assert_secret_kept(&env, &run);
    }
}

/// `check --fetch` fetches the configured secret URL, so the owner never
/// types it on a command line, and shows only its host, whatever happens.
#[test]
fn check_fetch_uses_the_configured_url_and_keeps_it_secret() {
    let server = TlsServer::start(text("close ssh\n"));
    let env = env_for(&server, "");
    let run = env.run(&["check", "--fetch"]);
    run.expect(0);
    assert!(
        run.stdout.contains(&format!(
            "control file from https://127.0.0.1:{}: ok (close ssh)\n",
            server.port
        )),
        "{}",
        run.stdout
    );
    let head = server.last_head();
    assert!(head.contains(&SECRET.to_lowercase()), "{head}");
    assert_secret_kept(&env, &run);
    server.set_reply(Reply::Status("404 Not Found"));
    let run = env.run(&["check", "--fetch"]);
    run.expect(1);
    run.says("the server answered 404 Not Found");
    assert_secret_kept(&env, &run);
    assert_eq!(env.changing_calls(), Vec::<String>::new());
}

// Signatures carried inside the control file (`#minisig` lines).

/// Whether a new connection to port 22 gets through, over IPv4 and IPv6.
fn ssh_reachable() -> (bool, bool) {
    let reaches = |address: &str| {
        let address: std::net::SocketAddr = address.parse().unwrap();
        match std::net::TcpStream::connect_timeout(&address, Duration::from_millis(700)) {
            Ok(_) => true,
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => false,
            Err(error) => panic!("{address}: unexpected {error}"),
        }
    };
    (reaches("127.0.0.1:22"), reaches("[::1]:22"))
}

fn listen_ssh() {
    for address in ["127.0.0.1:22", "[::1]:22"] {
        let listener = std::net::TcpListener::bind(address).unwrap();
        std::thread::spawn(move || for _ in listener.incoming() {});
    }
}

#[track_caller]
fn assert_ssh(open: bool, when: &str) {
    assert_eq!(
        ssh_reachable(),
        (open, open),
        "ssh is not {} over IPv4 and IPv6 {when}",
        if open { "open" } else { "closed" }
    );
}

/// Real iptables (inside a namespace), the file from `server`, and the
/// signer's key in `[signature]` with `extra` lines, and no `url`.
fn inline_env(server: &TlsServer, signer: &Signer, extra: &str) -> TestEnv {
    let env = TestEnv::with_real_iptables();
    write_inline_config(&env, server, signer, extra);
    env
}

fn write_inline_config(env: &TestEnv, server: &TlsServer, signer: &Signer, extra: &str) {
    server.write_ca(&env.path("ca.pem"));
    let fetch = format!("ca_file = {:?}", env.path("ca.pem"));
    let section = format!(
        "[signature]\npublic_key = {:?}\n{extra}[services]",
        signer.public_key()
    );
    let config = env
        .config_text(&server.url(SECRET), &fetch, "")
        .replace("[services]", &section);
    env.write_config(&config);
}

fn iptables_both() -> (String, String) {
    (
        netns::rules("/sbin/iptables"),
        netns::rules("/sbin/ip6tables"),
    )
}

/// Wipes the filter table of both families, as a reboot does, then runs
/// `--offline` as the boot unit does.
fn boot(env: &TestEnv) -> common::Run {
    for binary in ["/sbin/iptables", "/sbin/ip6tables"] {
        netns::iptables(binary, &["-F"]);
        netns::iptables(binary, &["-X"]);
    }
    env.run(&["--offline"])
}

/// Every request went to the control file: no detached signature was fetched.
#[track_caller]
fn assert_no_detached_fetch(server: &TlsServer) {
    let heads = server.heads.lock().unwrap();
    assert!(!heads.is_empty());
    for head in heads.iter() {
        assert!(
            head.starts_with(&format!("get {} ", SECRET.to_lowercase())),
            "a request for something else than the control file: {head}"
        );
    }
}

#[test]
fn an_inline_signed_file_is_obeyed_and_every_bad_one_refused_with_the_firewall_kept() {
    if !netns::enter(
        "an_inline_signed_file_is_obeyed_and_every_bad_one_refused_with_the_firewall_kept",
    ) {
        return;
    }
    listen_ssh();
    assert_ssh(true, "before any run");
    let signer = Signer::new();
    let hour = 3600;
    let server = TlsServer::start(Reply::Etagged {
        body: signer.inline("close ssh\n", 3 * hour).into_bytes(),
        etag: "\"v1\"",
    });
    let env = inline_env(&server, &signer, "");
    let run = env.run(&[]);
    run.expect(0);
    assert_eq!(run.stderr, "", "a good run printed something");
    assert_ssh(false, "after a signed close ssh");
    // The kept copy, checked again, stands for the file through a 304.
    env.run(&["-v"]).expect(0).says("has not changed (304)");
    assert_ssh(false, "through a 304");

    let opened = signer.inline("open ssh\n", 2 * hour);
    server.set_reply(text(&opened));
    env.run(&[]).expect(0);
    assert_ssh(true, "after a signed open ssh");
    server.set_reply(text(&signer.inline("close ssh\n", hour)));
    env.run(&[]).expect(0);
    assert_ssh(false, "after a newer signed close ssh");
    assert_no_detached_fetch(&server);

    let closed = iptables_both();
    let open_now = |signer: &Signer| signer.inline("open ssh\n", 0);
    let block = |file: String| file.lines().skip(1).collect::<Vec<_>>().join("\n");
    let legacy = common::signer::inline("open ssh\n", &signer.sign_legacy("open ssh\n", 0));
    let cases = [
        (
            signer.inline("close ssh\n", 0).replacen("close", "open", 1),
            "the file was changed after signing",
        ),
        (
            open_now(&Signer::new()),
            "it was made with another key than signature.public_key",
        ),
        (opened.clone(), "before the file accepted last"),
        (
            legacy,
            "legacy format (algorithm Ed, made with `minisign -S -l`), which is not accepted: \
             sign again without -l",
        ),
        (signer.inline("open ssh\n", -2 * hour), "in the future"),
        (
            format!("{}open ssh\n", signer.inline("close ssh\n", 0)),
            "line 6 comes after the signature, so it is not signed",
        ),
        (
            format!(
                "open ssh\n{}\n",
                block(open_now(&signer)).replacen("#minisig ", "", 1)
            ),
            "is 3 #minisig lines, not four",
        ),
        (
            open_now(&signer).replace("#minisig RU", "#minisig RX"),
            "not a minisign signature",
        ),
    ];
    for (file, needle) in cases {
        server.set_reply(text(&file));
        let run = env.run(&[]);
        run.expect(1);
        run.says(needle);
        run.says("enforced the last good control file instead");
        assert_secret_kept(&env, &run);
        assert_eq!(
            iptables_both(),
            closed,
            "a refused file ({needle}) changed the firewall"
        );
        assert_ssh(false, &format!("after a refused file ({needle})"));
    }
    assert_no_detached_fetch(&server);
    // The boot run fails as the last fetch did (a refused file), and keeps the closes.
    boot(&env).expect(1);
    assert_ssh(false, "after the refusals, a reboot and --offline");

    // A newer signed file is obeyed, and its kept copy stands in at boot
    // until it is older than max_age.
    server.set_reply(text(&signer.inline("open ssh\n", 30 * 60)));
    env.run(&[]).expect(0);
    assert_ssh(true, "after a newer signed open ssh");
    boot(&env).expect(0);
    assert_ssh(true, "through a reboot and --offline");
    write_inline_config(&env, &server, &signer, "max_age = \"10m\"\n");
    boot(&env).says(
        "the kept control file is not in force (the file was signed 30 minutes ago, \
         longer than signature.max_age (10 minutes)",
    );
    assert_ssh(false, "once the kept copy is older than max_age");
}

/// Without a key, `#minisig` lines are comments: the file is obeyed whole,
/// with one warning that nothing checks its signature.
#[test]
fn an_inline_signature_without_a_key_is_a_comment_and_one_warning() {
    let signer = Signer::new();
    let server = TlsServer::start(text(&signer.inline("close ssh\n", 60)));
    let env = env_for(&server, "");
    let run = env.run(&[]);
    run.expect(0);
    let warning = "it is signed (#minisig lines), but nothing checks the signature: \
                   set [signature] public_key in the config to the signer's key";
    assert_eq!(run.stderr.matches(warning).count(), 1, "{}", run.stderr);
    assert!(env.fake_table("iptables").contains("portlocker:ssh"));
}

/// With a key, a file that carries its signature needs no second file, in
/// a run and in `check --fetch` alike; only the file is requested.
#[test]
fn an_inline_signature_needs_no_second_file() {
    let signer = Signer::new();
    let server = TlsServer::start(text(&signer.inline("close ssh\n", 60)));
    let env = TestEnv::with_fake_iptables();
    write_inline_config(&env, &server, &signer, "");
    let run = env.run(&["check", "--fetch"]);
    run.expect(0);
    assert!(run.stdout.contains(": ok (close ssh)\n"), "{}", run.stdout);
    env.run(&[]).expect(0);
    assert!(env.fake_table("iptables").contains("portlocker:ssh"));
    assert_no_detached_fetch(&server);
    assert_eq!(server.requests.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// The README's laptop recipe, with Debian's minisign: a file signed and
/// signed again in place is obeyed.
#[test]
fn the_laptop_recipe_of_the_readme_makes_files_portlocker_obeys() {
    let minisign = "/usr/bin/minisign";
    if !std::path::Path::new(minisign).exists() {
        let reason = format!("{minisign} is missing (apt-get install minisign)");
        if std::env::var("PORTLOCKER_REQUIRE_NETNS").as_deref() == Ok("1") {
            panic!("this test cannot run and CI forbids skipping it: {reason}");
        }
        common::skipped(
            "the_laptop_recipe_of_the_readme_makes_files_portlocker_obeys",
            &reason,
        );
        return;
    }
    let env = TestEnv::with_fake_iptables();
    let shell = |script: &str| {
        let output = std::process::Command::new("/bin/sh")
            .args(["-ec", script])
            .current_dir(env.dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    shell("minisign -G -W -p minisign.pub -s minisign.key >/dev/null");
    // As the README has them, with the key's path.
    let sign = "sed -i '/^#minisig /d' portlocker.txt\n\
                minisign -S -s minisign.key -m portlocker.txt >/dev/null && \
                sed 's/^/#minisig /' portlocker.txt.minisig >> portlocker.txt";
    let file = env.path("portlocker.txt");
    std::fs::write(&file, "close ssh\n").unwrap();
    shell(sign);
    let public_key = std::fs::read_to_string(env.path("minisign.pub")).unwrap();
    let public_key = public_key.lines().nth(1).unwrap();
    let server = TlsServer::start(text(&std::fs::read_to_string(&file).unwrap()));
    server.write_ca(&env.path("ca.pem"));
    let fetch = format!("ca_file = {:?}", env.path("ca.pem"));
    let config = env.config_text(&server.url(SECRET), &fetch, "").replace(
        "[services]",
        &format!("[signature]\npublic_key = {public_key:?}\n[services]"),
    );
    env.write_config(&config);
    env.run(&[]).expect(0);
    assert!(env.fake_table("iptables").contains("portlocker:ssh"));

    // Edited where it lies, old signature and all, and signed again.
    let signed = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("close web\n{signed}")).unwrap();
    shell(sign);
    let again = std::fs::read_to_string(&file).unwrap();
    assert_eq!(again.matches("#minisig ").count(), 4, "{again}");
    server.set_reply(text(&again));
    env.run(&[]).expect(0);
    assert!(env.fake_table("iptables").contains("portlocker:web"));
    assert_no_detached_fetch(&server);
}

/// From stdin there is nowhere to fetch a signature from: a file that
/// carries its own needs no `signature.url`, and one that does not is told so.
#[test]
fn a_file_on_stdin_that_carries_its_signature_needs_no_url() {
    use std::io::Write;
    let signer = Signer::new();
    let env = TestEnv::with_fake_iptables();
    let config = env.config_text("-", "", "").replace(
        "[services]",
        &format!(
            "[signature]\npublic_key = {:?}\n[services]",
            signer.public_key()
        ),
    );
    env.write_config(&config);
    let run_with = |input: &str| {
        let mut child = env
            .command()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        common::Run::from(child.wait_with_output().unwrap())
    };
    run_with(&signer.inline("close ssh\n", 60)).expect(0);
    assert!(env.fake_table("iptables").contains("portlocker:ssh"));
    run_with("close web\n")
        .expect(1)
        .says("signature.url must be set when the control file comes from stdin (or the file must carry its signature as #minisig lines)");
    assert!(!env.fake_table("iptables").contains("portlocker:web"));
}

/// An environment fetching `SECRET` from `source` that tells notices to a
/// recording command and POSTs them to `/SECRET-topic` on `ntfy`.
fn env_with_notices(source: &TlsServer, ntfy: &TlsServer) -> TestEnv {
    let env = TestEnv::with_fake_iptables();
    let bundle = format!("{}{}", source.ca_pem(), ntfy.ca_pem());
    std::fs::write(env.path("ca.pem"), bundle).unwrap();
    let fetch = format!("ca_file = {:?}\n", env.path("ca.pem"));
    let notify = env.recording_command(0).replace(
        "[notify]\n",
        &format!("[notify]\nurl = {:?}\n", ntfy.url("/SECRET-topic")),
    );
    let config = format!(
        "host_name = \"web-1\"\n{}{notify}",
        env.config_text(&source.url(SECRET), &fetch, "")
    );
    env.write_config(&config);
    env
}

#[test]
fn notices_are_posted_once_per_change_failure_series_and_recovery_and_never_show_the_url() {
    let source = TlsServer::start(text("close ssh\n"));
    let ntfy = TlsServer::start(Reply::Status("200 OK"));
    let env = env_with_notices(&source, &ntfy);
    let mut runs = Vec::new();
    let mut run = |code| {
        let run = env.run(&[]);
        run.expect(code);
        runs.push(run);
    };
    run(0);
    run(0);
    assert_eq!(ntfy.bodies().len(), 1, "{:?}", ntfy.bodies());
    let head = ntfy.last_head();
    assert!(
        head.starts_with("post /secret-topic http/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains("content-type: text/plain; charset=utf-8\r\n"),
        "{head}"
    );
    source.set_reply(Reply::Status("404 Not Found"));
    run(1);
    run(1);
    source.set_reply(text("close ssh\nclose web\n"));
    run(0);
    run(0);
    let bodies = ntfy.bodies();
    assert_eq!(bodies.len(), 3, "{bodies:#?}");
    assert!(
        bodies[0].starts_with("web-1: the firewall changed\nssh closed\nat 20"),
        "{}",
        bodies[0]
    );
    assert!(
        bodies[1].starts_with(
            "web-1: portlocker failed\nfetching the control file from https://127.0.0.1:"
        ) && bodies[1].contains("the server answered 404 Not Found"),
        "{}",
        bodies[1]
    );
    assert!(
        bodies[2].starts_with("web-1: portlocker works again\nafter 2 failed runs since")
            && bodies[2].contains("\nchanged:\nweb closed\n"),
        "{}",
        bodies[2]
    );
    // The command got the same text, and neither ever saw the secret URL.
    let told = env.notices();
    let texts: Vec<&str> = told.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(texts, bodies.iter().map(String::as_str).collect::<Vec<_>>());
    for (vars, text) in &told {
        assert!(
            !text.contains("SECRET") && !vars.concat().contains("SECRET"),
            "{vars:?} {text}"
        );
    }
    for run in &runs {
        assert_secret_kept(&env, run);
    }
    assert!(
        env.log().contains("notice (failed) posted to notify.url"),
        "{}",
        env.log()
    );
}

#[test]
fn a_notice_the_server_refuses_is_a_warning_that_hides_the_topic() {
    let source = TlsServer::start(text("close ssh\n"));
    let ntfy = TlsServer::start(Reply::Status("403 Forbidden"));
    let env = env_with_notices(&source, &ntfy);
    let run = env.run(&[]);
    run.expect(0).says(&format!(
        "the notice (changed) was not posted: posting the notice to https://127.0.0.1:{}: the \
             server answered 403 Forbidden",
        ntfy.port
    ));
    assert_secret_kept(&env, &run);
    // A redirect would drop the body: it is not followed.
    ntfy.set_reply(Reply::Redirect(ntfy.url("/SECRET-elsewhere")));
    source.set_reply(text("close web\n"));
    let run = env.run(&[]);
    run.expect(0).says("redirects are not followed");
    assert_eq!(ntfy.requests.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_secret_kept(&env, &run);
    // An --offline run (at boot: no network yet) posts nothing; the command still runs.
    source.set_reply(text("close mosh\n"));
    env.run(&[]).expect(0);
    env.reboot_fake();
    let before = env.notices().len();
    env.run(&["--offline"]).expect(0);
    assert_eq!(env.notices().len(), before + 1);
    assert_eq!(ntfy.requests.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// A minimal Debian without ca-certificates, as SSL_CERT_FILE and
/// SSL_CERT_DIR pointing at nothing make it: every fetch fails and `check`
/// says why; with `ca_file` set, fetches work and `check` is content.
#[test]
fn an_empty_trust_store_fails_check_unless_ca_file_is_set() {
    let server = TlsServer::start(text("close ssh\n"));
    let env = env_for(&server, "");
    std::fs::write(env.path("empty.pem"), "").unwrap();
    std::fs::create_dir(env.path("no-certs")).unwrap();
    let bare = |args: &[&str]| {
        let output = env
            .command()
            .args(args)
            .env("SSL_CERT_FILE", env.path("empty.pem"))
            .env("SSL_CERT_DIR", env.path("no-certs"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        common::Run::from(output)
    };
    bare(&["check", "--fetch"]).expect(0);
    bare(&[]).expect(0);
    // Without ca_file: the public server's certificate cannot be checked.
    env.write_config(&env.config_text(&server.url(SECRET), "", ""));
    let check = bare(&["check"]);
    check.expect(1).says(
        "the system's trust store holds no CA certificate, so every HTTPS fetch fails: install \
         the ca-certificates package (`apt-get install ca-certificates`), or set fetch.ca_file",
    );
    bare(&[]).expect(1);
    // With the system's store as it is here, no word of it.
    let check = env.run(&["check"]);
    assert!(!check.stderr.contains("trust store"), "{}", check.stderr);
}

/// An HTTP proxy on loopback that tunnels CONNECT requests, keeping each
/// CONNECT's head (lowercased) so a test sees what went through it.
struct ConnectProxy {
    port: u16,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start() -> ConnectProxy {
        use std::io::{BufRead, BufReader, Write};
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(client.try_clone().unwrap());
                    let mut head = String::new();
                    while reader.read_line(&mut head).unwrap_or(0) > 2 {}
                    seen.lock().unwrap().push(head.to_lowercase());
                    let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let Ok(server) = TcpStream::connect(&target) else {
                        return;
                    };
                    let mut answer = client.try_clone().unwrap();
                    answer
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .unwrap();
                    let (mut up, mut down) = (server.try_clone().unwrap(), server);
                    // What the client sent after its head, then the rest, both ways.
                    up.write_all(reader.buffer()).unwrap();
                    std::thread::spawn(move || std::io::copy(&mut reader, &mut up));
                    let _ = std::io::copy(&mut down, &mut answer);
                });
            }
        });
        ConnectProxy { port, heads }
    }

    fn connects(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// HTTPS_PROXY (else ALL_PROXY) from the environment carries the fetch
/// through a CONNECT tunnel, with the proxy's own credentials; NO_PROXY's
/// networks go direct.
#[test]
fn the_environments_proxy_carries_the_fetch_unless_no_proxy_names_the_host() {
    let server = TlsServer::start(text("close ssh\n"));
    let proxy = ConnectProxy::start();
    let env = env_for(&server, "");
    let target = format!("connect 127.0.0.1:{} ", server.port);
    let run_with = |vars: &[(&str, String)]| {
        let mut command = env.command();
        for name in [
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
        ] {
            command.env_remove(name);
        }
        command.env_remove("no_proxy").env_remove("REQUEST_METHOD");
        let output = command
            .envs(vars.iter().map(|(name, value)| (name, value)))
            .arg("check")
            .arg("--fetch")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        common::Run::from(output)
    };
    let address = format!("http://user:pa%20ss@127.0.0.1:{}", proxy.port);
    run_with(&[("HTTPS_PROXY", address.clone())]).expect(0);
    let connects = proxy.connects();
    assert_eq!(connects.len(), 1, "{connects:?}");
    assert!(connects[0].starts_with(&target), "{connects:?}");
    // user:pa ss in base64.
    assert!(
        connects[0].contains("proxy-authorization: basic dxnlcjpwysbzcw=="),
        "{connects:?}"
    );
    run_with(&[("ALL_PROXY", address.clone())]).expect(0);
    assert_eq!(proxy.connects().len(), 2, "{:?}", proxy.connects());
    for no_proxy in ["127.0.0.0/8", "localhost, 127.0.0.1"] {
        run_with(&[
            ("HTTPS_PROXY", address.clone()),
            ("NO_PROXY", no_proxy.to_owned()),
        ])
        .expect(0);
        assert_eq!(
            proxy.connects().len(),
            2,
            "{no_proxy}: {:?}",
            proxy.connects()
        );
    }
    assert_eq!(server.requests.load(std::sync::atomic::Ordering::SeqCst), 4);
}
