//! Fetching over real HTTPS: a TLS server on loopback with a certificate
//! made for the test, trusted through `ca_file`.

mod common;

use std::time::Instant;

use common::TestEnv;
use common::https::{Reply, TlsServer};

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

#[test]
fn an_html_page_is_refused_with_a_hint_about_dl_1() {
    let page = Reply::Body {
        body: b"<!DOCTYPE html><html><body>close ssh</body></html>".to_vec(),
        content_type: "text/html; charset=utf-8",
    };
    assert_refused(page.clone(), "", "Content-Type text/html");
    // The hint comes with the header too, not only from the parser.
    assert_refused(page, "", "must end in dl=1");
    let disguised = Reply::Body {
        body: b"\n<html><body>close ssh</body></html>".to_vec(),
        content_type: "text/plain",
    };
    assert_refused(disguised, "", "dl=1");
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
    for binary in ["iptables", "ip6tables"] {
        std::fs::remove_file(env.path(&format!("state-{binary}"))).unwrap();
    }
    let before = env.notices().len();
    env.run(&["--offline"]).expect(0);
    assert_eq!(env.notices().len(), before + 1);
    assert_eq!(ntfy.requests.load(std::sync::atomic::Ordering::SeqCst), 3);
}
