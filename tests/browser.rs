//! The status page and the signer page in a real browser: headless
//! Chromium, driven over the DevTools protocol, renders pages written by
//! real runs at a phone's 390×844 and a desktop's 1280×800, light and dark,
//! and makes a key and signs with dist/sign.html, whose output portlocker
//! and minisign check. Assertions come from the live DOM; screenshots go to
//! target/browser/.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::TestEnv;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const CHROMIUM: &str = "/usr/bin/chromium";
const REQUIRE: &str = "PORTLOCKER_REQUIRE_BROWSER";

/// A headless Chromium and one page in it, spoken to over DevTools.
struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Events that arrived while waiting for an answer.
    events: Vec<Value>,
    /// The viewport's width, as last emulated.
    width: u32,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes its port and path here once it listens.
        let active = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let endpoint = loop {
            if let Ok(text) = std::fs::read_to_string(&active)
                && let Some((port, path)) = text.split_once('\n')
                && !path.trim().is_empty()
            {
                break format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "chromium did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let (socket, _) = tungstenite::connect(endpoint).expect("connect to chromium");
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            // A browser that stops answering fails the test instead of hanging it.
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
        }
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            width: 800,
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.call("Page.enable", json!({}));
        browser
    }

    /// Sends a command and waits for its answer, keeping events for later.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let mut message = json!({"id": self.next_id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap();
        loop {
            let answer = self.next_message();
            if answer["id"] == json!(self.next_id) {
                assert!(answer.get("error").is_none(), "{method} failed: {answer}");
                return answer["result"].clone();
            }
            self.events.push(answer);
        }
    }

    fn next_message(&mut self) -> Value {
        match self.socket.read().unwrap() {
            Message::Text(text) => serde_json::from_str(text.as_str()).unwrap(),
            _ => Value::Null,
        }
    }

    /// Sets the viewport, as a phone (`mobile`) or a desktop, and the colour scheme.
    fn emulate(&mut self, width: u32, height: u32, mobile: bool, scheme: &str) {
        self.width = width;
        let scale = if mobile { 3 } else { 1 };
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile}),
        );
        self.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        );
    }

    fn open(&mut self, page: &Path) {
        self.call(
            "Page.navigate",
            json!({"url": format!("file://{}", page.display())}),
        );
        loop {
            let event = self.next_message();
            if event["method"] == json!("Page.loadEventFired") {
                break;
            }
            self.events.push(event);
        }
    }

    fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` and waits for the promise it gives to settle;
    /// a rejection fails the test.
    fn evaluate_async(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression} threw: {result}"
        );
        result["result"]["value"].clone()
    }

    /// The events of `method` that arrived so far.
    fn events_of(&self, method: &str) -> Vec<Value> {
        self.events
            .iter()
            .filter(|event| event["method"] == json!(method))
            .cloned()
            .collect()
    }

    /// The whole page, `height` CSS pixels tall, not only what the viewport shows.
    fn screenshot_whole(&mut self, path: &Path, height: u64) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page looks like from inside the browser.
const MEASURE: &str = r#"(() => {
  const width = window.innerWidth;
  const shown = el => {
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    return box.width > 0 && box.height > 0 && box.left >= 0 && box.right <= width + 0.5
      && style.display !== 'none' && style.visibility !== 'hidden' && style.color !== style.backgroundColor;
  };
  const lines = el => {
    const style = getComputedStyle(el);
    return Math.round(el.getBoundingClientRect().height / parseFloat(style.lineHeight));
  };
  const outcome = document.getElementById('outcome');
  const headline = outcome ? outcome.querySelector('.headline') : null;
  const rows = [...document.querySelectorAll('.service')];
  const h1 = document.querySelector('h1');
  const terms = [...document.querySelectorAll('dt')];
  const next = terms.find(dt => dt.textContent === 'Next run');
  return {
    title: document.title,
    heading: h1 ? h1.innerText : null,
    text: document.body.innerText,
    chips: [...document.querySelectorAll('.state')].map(el => ({ text: el.innerText,
      state: el.classList[1], surprise: el.classList[2], color: getComputedStyle(el).color,
      background: getComputedStyle(el).backgroundColor, outline: getComputedStyle(el).outlineStyle,
      service: el.closest('.service').dataset.service })),
    width,
    height: window.innerHeight,
    scrollWidth: document.documentElement.scrollWidth,
    scrollHeight: document.documentElement.scrollHeight,
    outcome: outcome ? outcome.textContent : null,
    outcomeClass: outcome ? outcome.classList[1] : null,
    outcomeShown: !!outcome && shown(outcome),
    outcomeTop: outcome ? outcome.getBoundingClientRect().top : null,
    outcomeColor: headline ? getComputedStyle(headline).color : null,
    outcomeBackground: outcome ? getComputedStyle(outcome).backgroundColor : null,
    firstRowTop: rows.length ? rows[0].getBoundingClientRect().top : null,
    rows: rows.map(row => ({ name: row.dataset.service, shown: shown(row), text: row.innerText,
      states: [...row.querySelectorAll('.state')].filter(shown).length })),
    background: getComputedStyle(document.body).backgroundColor,
    scripts: document.scripts.length,
    // What must stay on one line: a flag and its value, a time and its offset.
    broken: [...document.querySelectorAll('.nobr, .time')].filter(el => el.getClientRects().length > 1)
      .map(el => el.textContent),
    // The commas between pills are for a copy only.
    visibleSeparators: [...document.querySelectorAll('.sep')].filter(el => el.getBoundingClientRect().width > 1).length,
    nextRunLines: next ? lines(next.nextElementSibling) : null,
    codeWordsBroken: [...document.querySelectorAll('code')].flatMap(code => {
      const range = document.createRange();
      const broken = [];
      for (const node of code.querySelectorAll('*').length ? [...code.childNodes] : [code.firstChild]) {
        if (!node || node.nodeType !== Node.TEXT_NODE) continue;
        let at = 0;
        for (const word of node.textContent.split(' ')) {
          if (word.startsWith('-')) {
            range.setStart(node, at);
            range.setEnd(node, at + word.length);
            if (range.getClientRects().length > 1) broken.push(word);
          }
          at += word.length + 1;
        }
      }
      return broken;
    }),
  };
})()"#;

/// The services of the pages, in the config's order (not by name).
const ORDER: [&str; 4] = ["ssh", "web", "mosh", "wireguard-for-the-whole-family"];

/// Status pages written by real runs, each with the start of its headline:
/// after a good run with long notes; after a failure with a long reason and
/// a family that cannot be read; after a run that finds a rule of others
/// closing a port the file opens (a lockout); and after `reset`.
fn pages(env: &TestEnv) -> Vec<(&'static str, PathBuf, &'static str)> {
    let services = "[services]\nssh = 22\nweb = [80, \"443/tcp\", \"8000-8999/tcp\"]\n\
                    mosh = \"60000-61000/udp\"\nwireguard-for-the-whole-family = \"51820/udp\"\n";
    let config = env
        .local_config("", "")
        .replace(&format!("[services]\n{}", common::SERVICES), services);
    env.write_config(&format!("host_name = \"web-1\"\n{config}"));
    env.control(
        "close ssh\nopen web from 2001:db8:1234:5678:9abc::/80 until 2099-12-31 23:59\n\
         open web from 198.51.100.0/24 for 2h\nclose mosh\nopen wireguard-for-the-whole-family for 90m\n",
    );
    env.run(&[]).expect(0);
    let copy = |name: &str| {
        let path = env.path(name);
        std::fs::copy(env.path("status.html"), &path).unwrap();
        path
    };
    let ok = copy("ok.html");

    let good = env.fake_table("iptables");
    let good_file = std::fs::read_to_string(env.path("control.txt")).unwrap();
    env.control(&format!(
        "close ssh\nopen {}\nopen vnp\nshut web\n",
        "averyveryveryverylongservicenamethatdoesnotexistanywhere".repeat(3)
    ));
    // An ip6tables that cannot read its table: IPv6 is unknown.
    let ip6tables = env.path("bin/ip6tables");
    let fake = std::fs::read_to_string(&ip6tables).unwrap();
    common::write_program(
        &ip6tables,
        "#!/bin/sh\necho \"ip6tables: can't initialize ip6tables table\" >&2\nexit 3\n",
    );
    env.run(&[]).expect(1);
    let failed = copy("failed.html");
    common::write_program(&ip6tables, &fake);
    env.control(&good_file);

    // Someone else's DROP after portlocker's jump closes wireguard over IPv4.
    std::fs::write(
        env.path("state-iptables"),
        format!("{good}-A INPUT -p udp -m udp --dport 51820 -j DROP\n"),
    )
    .unwrap();
    env.run(&[]).expect(1).says(
        "IPv4: wireguard-for-the-whole-family 51820/udp is closed, but the control file opens it",
    );
    let lockout = copy("lockout.html");

    env.run(&["reset"]).expect(0);
    let reset = copy("reset.html");
    vec![
        ("ok", ok, "OK: "),
        ("failed", failed, "Failed: "),
        (
            "lockout",
            lockout,
            "Not as asked: wireguard-for-the-whole-family closed over IPv4",
        ),
        ("reset", reset, "Reset: portlocker enforces nothing"),
    ]
}

/// Whether `test` can run: Chromium and each of `tools` (a path and its
/// Debian package) are there; otherwise says why it skips, or fails when
/// CI forbids skipping.
fn can_run(test: &str, tools: &[(&str, &str)]) -> bool {
    let missing = [(CHROMIUM, "chromium")]
        .iter()
        .chain(tools)
        .find(|(path, _)| !Path::new(path).exists());
    let Some((path, package)) = missing else {
        return true;
    };
    let reason = format!("{path} is missing (apt-get install {package})");
    if std::env::var(REQUIRE).as_deref() == Ok("1") {
        panic!("{test} cannot run and {REQUIRE}=1 forbids skipping it: {reason}");
    }
    common::skipped(test, &reason);
    false
}

/// The chip of `service` in `family` as the browser shows it.
fn chip<'a>(seen: &'a Value, service: &str, family: &str) -> &'a Value {
    seen["chips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|chip| {
            chip["service"] == json!(service) && chip["text"].as_str().unwrap().starts_with(family)
        })
        .unwrap_or_else(|| panic!("no {family} chip for {service}: {seen}"))
}

/// What every page must be at every size and scheme.
fn check_status_page(seen: &Value, at: &str, width: u32, height: u32, outcome: &str) {
    assert_eq!(seen["width"], json!(width), "{at}");
    assert!(
        seen["scrollWidth"].as_u64().unwrap() <= u64::from(width),
        "scrolls sideways: {at}"
    );
    assert!(
        seen["outcome"].as_str().unwrap().starts_with(outcome),
        "{at}"
    );
    assert_eq!(seen["outcomeShown"], json!(true), "{at}");
    assert!(
        seen["outcomeTop"].as_f64().unwrap() < seen["firstRowTop"].as_f64().unwrap(),
        "{at}"
    );
    assert!(
        seen["outcomeTop"].as_f64().unwrap() < f64::from(height) / 3.0,
        "outcome not at the top: {at}"
    );
    let rows = seen["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ORDER, "{at}");
    assert!(
        seen["title"].as_str().unwrap().starts_with("web-1: "),
        "{at}"
    );
    assert_eq!(seen["heading"], json!("web-1 · portlocker"), "{at}");
    for row in rows {
        assert_eq!(
            row["shown"],
            json!(true),
            "row {} hidden or cut: {at}",
            row["name"]
        );
        assert_eq!(
            row["states"],
            json!(2),
            "row {} lacks a family: {at}",
            row["name"]
        );
    }
    assert_eq!(seen["scripts"], json!(0), "{at}");
    // At a phone's width: no dangling comma, no backquote, no flag or time
    // broken over two lines, and the next run in at most two lines.
    assert_eq!(seen["visibleSeparators"], json!(0), "{at}");
    assert!(!seen["text"].as_str().unwrap().contains('`'), "{at}");
    assert_eq!(seen["broken"], json!([]), "{at}");
    assert_eq!(seen["codeWordsBroken"], json!([]), "{at}");
    let next = seen["nextRunLines"].as_u64().unwrap();
    assert!((1..=2).contains(&next), "Next run takes {next} lines: {at}");
}

#[test]
fn the_status_page_reads_well_on_a_phone_and_a_desktop() {
    if !can_run("the_status_page_reads_well_on_a_phone_and_a_desktop", &[]) {
        return;
    }
    let env = TestEnv::with_fake_iptables();
    let pages = pages(&env);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../browser");
    std::fs::create_dir_all(&shots).unwrap();
    let mut browser = Browser::start();
    for (width, height, mobile) in [(390, 844, true), (1280, 800, false)] {
        let mut backgrounds = Vec::new();
        for scheme in ["light", "dark"] {
            browser.emulate(width, height, mobile, scheme);
            for (name, page, outcome) in &pages {
                browser.open(page);
                let seen = browser.evaluate(MEASURE);
                let at = format!("{name} page at {width}x{height} {scheme}: {seen}");
                check_status_page(&seen, &at, width, height, outcome);
                backgrounds.push(seen["background"].clone());
                browser.screenshot_whole(
                    &shots.join(format!("status-{name}-{width}x{height}-{scheme}.png")),
                    seen["scrollHeight"].as_u64().unwrap(),
                );
            }
        }
        assert_ne!(
            backgrounds[0],
            backgrounds[pages.len()],
            "dark mode looks like light mode at {width}x{height}"
        );
    }
    let page = |name: &str| &pages.iter().find(|(n, ..)| *n == name).unwrap().1;

    // The failed page says why, in its colour, above the rows.
    browser.emulate(390, 844, true, "light");
    browser.open(page("failed"));
    let seen = browser.evaluate(MEASURE);
    assert!(
        seen["outcome"]
            .as_str()
            .unwrap()
            .contains("unknown service vnp"),
        "{seen}"
    );
    assert_ne!(seen["outcomeColor"], json!("rgb(0, 0, 0)"), "{seen}");
    // A family that could not be read stands out, and is never calm.
    let unknown = chip(&seen, "ssh", "IPv6");
    assert_eq!(unknown["text"], json!("IPv6 unknown"), "{seen}");
    assert_eq!(unknown["surprise"], json!("unknown"), "{seen}");
    assert_ne!(
        unknown["color"],
        chip(&seen, "ssh", "IPv4")["color"],
        "{seen}"
    );

    // Open and closed differ at a glance, in light and dark, whether asked
    // or not; what differs from the file is marked apart, in the colour of
    // a failure, and says so in words; the headline names it.
    for scheme in ["light", "dark"] {
        browser.emulate(390, 844, true, scheme);
        browser.open(page("failed"));
        let alarm = browser.evaluate(MEASURE)["outcomeColor"].clone();
        browser.open(page("ok"));
        let seen = browser.evaluate(MEASURE);
        let closed = chip(&seen, "ssh", "IPv4");
        assert_eq!(closed["text"], json!("IPv4 closed"), "{seen}");
        assert_eq!(closed["surprise"], json!("calm"), "{seen}");
        let open = chip(&seen, "wireguard-for-the-whole-family", "IPv4");
        assert_eq!(open["text"], json!("IPv4 open"), "{seen}");
        assert_ne!(
            (&open["color"], &open["background"]),
            (&closed["color"], &closed["background"]),
            "open looks like closed ({scheme}): {seen}"
        );
        for (service, family, text, like) in [
            ("ssh", "IPv6", "IPv6 closed", closed),
            ("mosh", "IPv4", "IPv4 closed", closed),
            ("wireguard-for-the-whole-family", "IPv6", "IPv6 open", open),
        ] {
            let other = chip(&seen, service, family);
            assert_eq!(other["text"], json!(text), "{seen}");
            assert_eq!(
                (&other["color"], &other["background"]),
                (&like["color"], &like["background"]),
                "{service} {family} ({scheme}): {seen}"
            );
        }
        let sources = chip(&seen, "web", "IPv4");
        assert_eq!(sources["text"], json!("IPv4 open to sources"), "{seen}");
        assert_ne!(sources["background"], closed["background"], "{seen}");
        assert!(
            seen["chips"]
                .as_array()
                .unwrap()
                .iter()
                .all(|chip| chip["outline"] == json!("none")),
            "a calm page marks nothing: {seen}"
        );
        assert!(seen["outcome"].as_str().unwrap().starts_with("OK: "));

        browser.open(page("lockout"));
        let seen = browser.evaluate(MEASURE);
        let drift = chip(&seen, "wireguard-for-the-whole-family", "IPv4");
        assert_eq!(drift["text"], json!("IPv4 closed (asked: open)"), "{seen}");
        assert_eq!(drift["state"], json!("is-closed"), "{seen}");
        assert_ne!(drift["outline"], json!("none"), "{scheme}: {seen}");
        assert_eq!(
            chip(&seen, "ssh", "IPv4")["outline"],
            json!("none"),
            "{scheme}: {seen}"
        );
        assert_eq!(seen["outcomeColor"], alarm, "{scheme}: {seen}");
        assert_eq!(seen["outcomeClass"], json!("not_as_asked"), "{seen}");
        let outcome = seen["outcome"].as_str().unwrap();
        assert!(
            outcome.contains(
                "dropped by -A INPUT -p udp -m udp --dport 51820 -j DROP; it is not portlocker's: \
                 remove it with "
            ),
            "{outcome}"
        );
        assert!(!seen["title"].as_str().unwrap().contains("OK"), "{seen}");

        // After a reset: not OK, not calm, and it says why.
        browser.open(page("reset"));
        let seen = browser.evaluate(MEASURE);
        assert_eq!(seen["outcomeClass"], json!("reset"), "{seen}");
        assert!(
            seen["outcome"]
                .as_str()
                .unwrap()
                .contains("portlocker enforces nothing until the next run"),
            "{seen}"
        );
        assert_ne!(seen["outcomeColor"], alarm, "a reset is no alarm: {seen}");
        assert_eq!(
            chip(&seen, "ssh", "IPv4")["text"],
            json!("IPv4 open"),
            "{seen}"
        );
    }

    // As plain text (a copy, a screen reader): words apart, times with
    // their offset, the next run due, the grammar at the end, no URL.
    browser.open(page("ok"));
    let seen = browser.evaluate(MEASURE);
    let text = seen["text"].as_str().unwrap();
    for row in seen["rows"].as_array().unwrap() {
        let row_text = row["text"].as_str().unwrap();
        let name = row["name"].as_str().unwrap();
        let ports = match name {
            "ssh" => "22/tcp",
            "web" => "80/tcp, 443/tcp, 8000-8999/tcp",
            "mosh" => "60000-61000/udp",
            _ => "51820/udp",
        };
        assert!(
            row_text.starts_with(&format!("{name} {ports}\n")),
            "{row_text:?}"
        );
    }
    assert!(
        text.contains("ssh 22/tcp\nIPv4 closed, IPv6 closed\n"),
        "{text}"
    );
    assert!(!text.contains("ssh22/tcp"), "{text}");
    assert!(
        time_with_offset_after(text, "This run"),
        "no time with its offset after `This run`: {text}"
    );
    assert!(text.contains("due by "), "{text}");
    assert!(
        text.trim_end().ends_with(
            "Control file lines: open ssh, close ssh, open ssh for 1h, open ssh from 203.0.113.7, close ssh on web-*"
        ),
        "{text}"
    );
    assert!(!text.contains("://"), "{text}");
}

/// Whether `term` is followed, on the next line, by a time like
/// `2026-11-25 14:05:00 +01:00`.
fn time_with_offset_after(text: &str, term: &str) -> bool {
    let Some(at) = text.find(&format!("{term}\n")) else {
        return false;
    };
    let value = text[at + term.len() + 1..]
        .lines()
        .next()
        .unwrap_or_default();
    let words: Vec<&str> = value.split(' ').collect();
    words.len() >= 3
        && chrono::NaiveDateTime::parse_from_str(
            &format!("{} {}", words[0], words[1]),
            "%Y-%m-%d %H:%M:%S",
        )
        .is_ok()
        && (words[2].starts_with('+') || words[2].starts_with('-'))
        && words[2].len() == 6
}

// The signer page, dist/sign.html.

const MINISIGN: &str = "/usr/bin/minisign";

fn signer_page() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/sign.html")
}

/// What the page's Content-Security-Policy allows, directive by directive.
fn policy(page: &str) -> Vec<(String, Vec<String>)> {
    let marker = "<meta http-equiv=\"Content-Security-Policy\" content=\"";
    let start = page.find(marker).expect("the page has a CSP meta tag") + marker.len();
    let content = &page[start..start + page[start..].find('"').unwrap()];
    content
        .split(';')
        .map(|directive| {
            let mut words = directive.split_whitespace().map(str::to_owned);
            (words.next().unwrap_or_default(), words.collect())
        })
        .collect()
}

/// The text of every `<tag>` element of the page, in order.
fn elements<'a>(page: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut found = Vec::new();
    let mut rest = page;
    while let Some(at) = rest.find(&open) {
        let body = &rest[at + open.len()..];
        let end = body.find(&close).unwrap();
        found.push(&body[..end]);
        rest = &body[end..];
    }
    found
}

fn csp_hash(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

/// The page, read as a file: it loads nothing, and its policy forbids every
/// request and allows exactly its own script and style, by hash.
#[test]
fn the_signer_page_loads_nothing_and_its_policy_allows_only_its_own_code() {
    let page = std::fs::read_to_string(signer_page()).unwrap();
    let policy = policy(&page);
    let allowed = |name: &str| {
        policy
            .iter()
            .find(|(directive, _)| directive == name)
            .map(|(_, sources)| sources.clone())
            .unwrap_or_else(|| panic!("the policy has no {name}: {policy:?}"))
    };
    assert_eq!(allowed("default-src"), ["'none'"]);
    assert_eq!(allowed("connect-src"), ["'none'"]);
    assert_eq!(allowed("form-action"), ["'none'"]);
    assert_eq!(allowed("base-uri"), ["'none'"]);
    let scripts: Vec<String> = elements(&page, "script")
        .into_iter()
        .map(csp_hash)
        .collect();
    let styles: Vec<String> = elements(&page, "style").into_iter().map(csp_hash).collect();
    assert_eq!(scripts.len(), 2, "the vendored BLAKE2b and the page's own");
    let stale = (allowed("script-src"), allowed("style-src")) != (scripts.clone(), styles.clone());
    if stale && std::env::var("PORTLOCKER_BLESS").as_deref() == Ok("1") {
        // The hashes are computed here, never typed in by hand.
        let mut fresh = page.clone();
        for (directive, hashes) in [("script-src", &scripts), ("style-src", &styles)] {
            let old = format!("{directive} {}", allowed(directive).join(" "));
            fresh = fresh.replacen(&old, &format!("{directive} {}", hashes.join(" ")), 1);
        }
        std::fs::write(signer_page(), fresh).unwrap();
        return;
    }
    assert!(
        !stale,
        "the policy does not allow exactly the page's code: run PORTLOCKER_BLESS=1 cargo test \
         --test browser the_signer_page_loads_nothing to put script-src {} and style-src {} in it",
        scripts.join(" "),
        styles.join(" ")
    );
    for source in policy.iter().flat_map(|(_, sources)| sources) {
        assert!(
            source == "'none'" || source.starts_with("'sha256-"),
            "the policy allows {source}"
        );
    }
    for loads in [
        "src=", "<link", "url(", "@import", "<iframe", "<object", "<embed",
    ] {
        assert!(!page.contains(loads), "the page has {loads}");
    }
    // The vendored library comes with its licence.
    assert!(page.contains("@noble/hashes 2.4.0"));
    assert!(page.contains("Copyright (c) 2022 Paul Miller"));
    assert!(page.contains("Permission is hereby granted, free of charge"));
}

/// Helpers for driving the page from inside it.
const HELPERS: &str = r#"
const $ = (id) => document.getElementById(id);
const type = (id, value) => { $(id).value = value; $(id).dispatchEvent(new Event('input', { bubbles: true })); };
const idle = () => new Promise((resolve, reject) => {
  const start = Date.now();
  const tick = () => {
    if (!document.documentElement.dataset.busy) resolve();
    else if (Date.now() - start > 30000) reject(new Error('the page stayed busy'));
    else setTimeout(tick, 10);
  };
  tick();
});
"#;

/// Runs `script` in the page (typing, clicks), waits until the page's work
/// is done, and returns its status line.
fn act(browser: &mut Browser, script: &str) -> String {
    let expression = format!(
        "(async () => {{ {HELPERS} await idle(); {script}; await idle(); return $('status').textContent; }})()"
    );
    browser
        .evaluate_async(&expression)
        .as_str()
        .unwrap()
        .to_owned()
}

/// What the signer page shows at this size: nothing scrolls sideways, and
/// every control shown fits the width.
const MEASURE_SIGNER: &str = r#"(() => {
  const width = window.innerWidth;
  const controls = [...document.querySelectorAll('button, input, textarea, a.button, pre')]
    .filter(el => el.getClientRects().length > 0);
  return {
    width,
    scrollWidth: document.documentElement.scrollWidth,
    cut: controls.filter(el => { const b = el.getBoundingClientRect(); return b.left < 0 || b.right > width + 0.5; })
      .map(el => el.id || el.tagName),
    small: controls.filter(el => el.matches('button') && el.getBoundingClientRect().height < 44).map(el => el.id),
    shown: controls.length,
    background: getComputedStyle(document.body).backgroundColor,
    color: getComputedStyle(document.body).color,
    // Every section that folds shows that it does (its marker), and is easy to tap.
    summaries: [...document.querySelectorAll('summary')].filter(el => el.getClientRects().length > 0)
      .map(el => ({ text: el.textContent, display: getComputedStyle(el).display,
        height: el.getBoundingClientRect().height })),
    // A path breaks after a `/`, never inside a name.
    pathBreaks: [...document.querySelectorAll('code.path')].filter(el => el.getClientRects().length > 0)
      .flatMap(code => {
        const text = code.textContent;
        const range = document.createRange();
        const tops = [];
        const walker = document.createTreeWalker(code, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
          for (let i = 0; i < node.length; i++) {
            range.setStart(node, i);
            range.setEnd(node, i + 1);
            tops.push(range.getBoundingClientRect().top);
          }
        }
        const wrong = [];
        for (let i = 1; i < tops.length; i++) {
          if (tops[i] > tops[i - 1] + 1 && text[i - 1] !== '/') wrong.push(text.slice(0, i));
        }
        return wrong;
      }),
    summary: { text: document.getElementById('summary').textContent,
      shown: document.getElementById('summary').getClientRects().length > 0 },
    order: ['nokey', 'key', 'sign'].map(id => document.getElementById(id))
      .filter(el => !el.hidden).map(el => [el.id, el.getBoundingClientRect().top])
      .sort((a, b) => a[1] - b[1]),
    configLinesTop: document.getElementById('config-lines').getClientRects().length
      ? document.getElementById('config-lines').getBoundingClientRect().top : null,
  };
})()"#;

fn check_layout(browser: &mut Browser, shots: &Path, name: &str) {
    let mut backgrounds = Vec::new();
    // A small phone too, where a path must wrap.
    for (width, height, mobile) in [(390, 844, true), (320, 640, true), (1280, 800, false)] {
        for scheme in ["light", "dark"] {
            browser.emulate(width, height, mobile, scheme);
            let seen = browser.evaluate(MEASURE_SIGNER);
            let at = format!("signer page ({name}) at {width}x{height} {scheme}: {seen}");
            assert_eq!(seen["width"], json!(width), "{at}");
            assert!(
                seen["scrollWidth"].as_u64().unwrap() <= u64::from(width),
                "scrolls sideways: {at}"
            );
            assert_eq!(seen["cut"], json!([]), "{at}");
            assert_eq!(seen["small"], json!([]), "buttons too small to tap: {at}");
            assert_eq!(
                seen["pathBreaks"],
                json!([]),
                "a path broken inside a name: {at}"
            );
            for summary in seen["summaries"].as_array().unwrap() {
                assert_eq!(
                    summary["display"],
                    json!("list-item"),
                    "a section that folds hides its marker: {at}"
                );
                assert!(summary["height"].as_f64().unwrap() >= 44.0, "{at}");
            }
            assert!(seen["shown"].as_u64().unwrap() >= 3, "{at}");
            assert_ne!(seen["background"], seen["color"], "{at}");
            backgrounds.push(seen["background"].clone());
            browser.screenshot(&shots.join(format!("sign-{name}-{width}x{height}-{scheme}.png")));
        }
    }
    assert_ne!(
        backgrounds[0], backgrounds[1],
        "dark mode looks like light mode"
    );
}

/// The signed file's lines and signature, as the Rust verifier reads them.
fn verify_signed(signed: &str, public_key: &str) -> Result<i64, String> {
    let inline = portlocker::intake::signature::split_inline(signed.as_bytes())?
        .ok_or("the page's output carries no signature")?;
    let now = chrono::Utc::now();
    portlocker::intake::signature::verify(
        inline.message,
        &inline.signature,
        public_key,
        None,
        None,
        now,
    )
}

/// `minisign -V` on the detached form: the lines, and the `#minisig` lines
/// without their prefix beside them.
fn minisign_verifies(dir: &Path, message: &[u8], signature: &str, public_key: &str) -> bool {
    let file = dir.join("portlocker.txt");
    std::fs::write(&file, message).unwrap();
    std::fs::write(dir.join("portlocker.txt.minisig"), signature).unwrap();
    let output = Command::new(MINISIGN)
        .args(["-V", "-H", "-P", public_key, "-m"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        assert!(
            stdout.contains("Signature and comment signature verified"),
            "{stdout}"
        );
    }
    output.status.success()
}

#[test]
fn the_signer_page_makes_a_key_and_signs_what_minisign_and_portlocker_accept() {
    let test = "the_signer_page_makes_a_key_and_signs_what_minisign_and_portlocker_accept";
    if !can_run(test, &[(MINISIGN, "minisign")]) {
        return;
    }
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../browser");
    std::fs::create_dir_all(&shots).unwrap();
    let page = signer_page();
    let mut browser = Browser::start();
    browser.call("Network.enable", json!({}));
    browser.call("Log.enable", json!({}));
    browser.emulate(390, 844, true, "light");
    browser.open(&page);
    let status = act(&mut browser, "");
    assert!(status.starts_with("No key in this browser yet"), "{status}");
    check_layout(&mut browser, &shots, "new");
    browser.emulate(390, 844, true, "light");
    let seen = browser.evaluate(MEASURE_SIGNER);
    assert_eq!(
        seen["summaries"][0]["text"],
        json!("Restore a key from its backup"),
        "{seen}"
    );

    // A key, made here; the private key cannot leave the browser.
    let status = act(
        &mut browser,
        "type('new-password', 'short'); type('new-password-again', 'short'); $('create').click()",
    );
    assert!(status.contains("at least 10 characters"), "{status}");
    let password = "correct horse battery";
    let status = act(
        &mut browser,
        &format!(
            "type('new-password', '{password}'); type('new-password-again', '{password}'); $('create').click()"
        ),
    );
    assert!(status.starts_with("Key created."), "{status}");
    // What the status asks to save comes first, on screen; nothing typed is no success.
    let seen = browser.evaluate(MEASURE_SIGNER);
    let order: Vec<&str> = seen["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|section| section[0].as_str().unwrap())
        .collect();
    assert_eq!(order, ["key", "sign"], "{seen}");
    let top = seen["configLinesTop"]
        .as_f64()
        .expect("the config lines are shown");
    assert!(
        (0.0..844.0).contains(&top),
        "the config lines are off screen: {seen}"
    );
    assert_eq!(
        seen["summary"],
        json!({"text": "", "shown": false}),
        "nothing typed yet: {seen}"
    );
    check_layout(&mut browser, &shots, "created");
    browser.emulate(390, 844, true, "light");
    let public_key = browser
        .evaluate("document.getElementById('public-key').textContent")
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        public_key.starts_with("RW") && public_key.len() == 56,
        "{public_key}"
    );
    let config_lines = browser.evaluate("document.getElementById('config-lines').textContent");
    assert_eq!(
        config_lines,
        json!(format!("[signature]\npublic_key = \"{public_key}\""))
    );
    let stored = browser.evaluate_async(
        r#"(async () => {
  const db = await new Promise((ok, fail) => { const r = indexedDB.open('portlocker-signer'); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
  const record = await new Promise((ok, fail) => { const r = db.transaction('keys').objectStore('keys').get('signing'); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
  db.close();
  let exported = 'exported';
  try { await crypto.subtle.exportKey('pkcs8', record.privateKey); } catch (e) { exported = e.name; }
  return { fields: Object.keys(record).sort(), extractable: record.privateKey.extractable,
    algorithm: record.privateKey.algorithm.name, usages: record.privateKey.usages, exported,
    publicKey: record.publicKey };
})()"#,
    );
    assert_eq!(
        stored,
        json!({"fields": ["backup", "created", "privateKey", "publicKey"], "extractable": false,
            "algorithm": "Ed25519", "usages": ["sign"], "exported": "InvalidAccessError",
            "publicKey": public_key})
    );

    // Lines checked as they are typed; signing waits until they are right.
    act(
        &mut browser,
        "type('lines', 'open ssh for 2h\\nshut vpn\\nclose web')",
    );
    let problems = browser.evaluate(
        "[[...document.querySelectorAll('#problems li')].map(li => li.textContent), document.getElementById('do-sign').disabled]",
    );
    assert_eq!(
        problems,
        json!([["line 2: unknown action `shut` (use open or close)"], true])
    );
    let lines = "# from my phone\nopen ssh for 2h\nclose web\n";
    act(
        &mut browser,
        &format!("type('lines', {}); $('do-sign').click()", json!(lines)),
    );
    let signed = browser
        .evaluate("document.getElementById('signed').value")
        .as_str()
        .unwrap()
        .to_owned();
    assert!(signed.starts_with(lines), "{signed}");
    assert_eq!(
        signed
            .lines()
            .filter(|l| l.starts_with("#minisig "))
            .count(),
        4
    );
    let signed_at =
        verify_signed(&signed, &public_key).expect("portlocker refuses the page's signature");
    assert!((chrono::Utc::now().timestamp() - signed_at).abs() < 120);
    check_layout(&mut browser, &shots, "signed");

    // minisign agrees, on the detached form; one changed byte is refused by both.
    let inline = portlocker::intake::signature::split_inline(signed.as_bytes())
        .unwrap()
        .unwrap();
    let algorithm = base64::engine::general_purpose::STANDARD
        .decode(inline.signature.lines().nth(1).unwrap())
        .unwrap();
    assert_eq!(
        &algorithm[..2],
        b"ED",
        "not prehashed: {}",
        inline.signature
    );
    let dir = tempfile::tempdir().unwrap();
    assert!(
        minisign_verifies(dir.path(), inline.message, &inline.signature, &public_key),
        "minisign -V refuses the page's signature"
    );
    let changed = signed.replacen("for 2h", "for 3h", 1);
    let tampered = portlocker::intake::signature::split_inline(changed.as_bytes())
        .unwrap()
        .unwrap();
    assert!(!minisign_verifies(
        dir.path(),
        tampered.message,
        &tampered.signature,
        &public_key
    ));
    let refused = verify_signed(&changed, &public_key).unwrap_err();
    assert!(refused.contains("changed after signing"), "{refused}");

    // Signing again (a file already signed, pasted back) replaces the old block.
    act(
        &mut browser,
        &format!(
            "type('lines', {}); $('do-sign').click()",
            json!(signed.replace("close web", "close web\nclose mosh"))
        ),
    );
    let again = browser
        .evaluate("document.getElementById('signed').value")
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        again.starts_with(&format!("{lines}close mosh\n#minisig ")),
        "{again}"
    );
    verify_signed(&again, &public_key).expect("a file signed again verifies");

    // The key survives a reload, folded below the Sign form, its marker shown;
    // its backup restores it after it is forgotten.
    browser.open(&page);
    assert_eq!(act(&mut browser, ""), "Ready to sign.");
    let seen = browser.evaluate(MEASURE_SIGNER);
    let order: Vec<&str> = seen["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|section| section[0].as_str().unwrap())
        .collect();
    assert_eq!(order, ["sign", "key"], "{seen}");
    assert_eq!(
        seen["summaries"][0]["text"],
        json!("Your key: the server's config lines, and its backup"),
        "{seen}"
    );
    check_layout(&mut browser, &shots, "reloaded");
    browser.emulate(390, 844, true, "light");
    let backup = browser
        .evaluate("document.getElementById('backup').value")
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        backup.contains("\"format\": \"portlocker-signer-backup-1\""),
        "{backup}"
    );
    assert!(backup.contains(&public_key), "{backup}");
    let status = act(&mut browser, "$('forget').click(); $('forget-yes').click()");
    assert_eq!(status, "The key is gone from this browser.");
    let status = act(
        &mut browser,
        &format!(
            "type('restore-text', {}); type('restore-password', 'wrong password!'); $('restore').click()",
            json!(backup)
        ),
    );
    assert_eq!(status, "Failed: wrong password, or the backup was changed");
    let status = act(
        &mut browser,
        &format!(
            "type('restore-text', {}); type('restore-password', '{password}'); $('restore').click()",
            json!(backup)
        ),
    );
    assert_eq!(status, "Key restored from its backup.");
    act(
        &mut browser,
        &format!(
            "type('lines', {}); $('do-sign').click()",
            json!("close ssh\n")
        ),
    );
    let restored = browser
        .evaluate("document.getElementById('signed').value")
        .as_str()
        .unwrap()
        .to_owned();
    verify_signed(&restored, &public_key).expect("the restored key signs as before");
    let restored_inline = portlocker::intake::signature::split_inline(restored.as_bytes())
        .unwrap()
        .unwrap();
    assert!(minisign_verifies(
        dir.path(),
        restored_inline.message,
        &restored_inline.signature,
        &public_key
    ));

    // Nothing was requested but the page itself, and the policy refuses a fetch.
    let requests: Vec<String> = browser
        .events_of("Network.requestWillBeSent")
        .iter()
        .map(|event| {
            event["params"]["request"]["url"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let own = format!("file://{}", page.display());
    assert!(!requests.is_empty(), "the network log saw nothing at all");
    assert!(
        requests.iter().all(|url| *url == own),
        "the page made requests: {requests:?}"
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = browser.evaluate_async(&format!(
        r#"(async () => {{
  const violations = [];
  document.addEventListener('securitypolicyviolation', (e) => violations.push(e.violatedDirective));
  const fetched = await Promise.race([
    fetch('http://127.0.0.1:{port}/').then(() => 'fetched', (e) => 'refused'),
    new Promise((done) => setTimeout(() => done('still waiting'), 5000)),
  ]);
  await new Promise((done) => setTimeout(done, 0));
  return {{ fetched, violations }};
}})()"#
    ));
    assert_eq!(
        probe,
        json!({"fetched": "refused", "violations": ["connect-src"]})
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the fetch reached the listener"
    );
    let errors: Vec<Value> = browser
        .events_of("Log.entryAdded")
        .into_iter()
        .filter(|event| event["params"]["entry"]["level"] == json!("error"))
        .filter(|event| {
            !event["params"]["entry"]["text"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("127.0.0.1:{port}"))
        })
        .collect();
    assert_eq!(errors, Vec::<Value>::new(), "the page logged errors");

    // "Save as file" saves exactly the signed text, under the policy.
    let downloads = tempfile::tempdir().unwrap();
    browser.call(
        "Browser.setDownloadBehavior",
        json!({"behavior": "allow", "downloadPath": downloads.path()}),
    );
    browser.evaluate("document.getElementById('save-signed').click()");
    let saved = downloads.path().join("portlocker.txt");
    let started = Instant::now();
    while !saved.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Save as file saved nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), restored);
}

/// The page's check of a line agrees with portlocker's parser on what is
/// valid (for a server whose services the owner typed in).
#[test]
fn the_signer_page_checks_lines_as_portlocker_does() {
    if !can_run("the_signer_page_checks_lines_as_portlocker_does", &[]) {
        return;
    }
    let valid = [
        "open ssh",
        "close ssh",
        "Open SSH",
        "CLOSE web",
        "open ssh for 2h",
        "open ssh For 90M",
        "open ssh for 3650d",
        "open ssh for 5256000m",
        "open ssh until 2099-12-31 23:59",
        "open ssh until 2024-02-29 12:00",
        "open ssh until 2099-12-31T23:59:00Z",
        "open ssh until 2099-12-31T23:59:00.5+01:00",
        "open ssh from 203.0.113.7",
        "open ssh FROM 198.51.100.0/24",
        "open ssh from 198.51.100.0/24 for 2h",
        "open ssh from 2001:db8::/48",
        "open ssh from ::1",
        "open ssh from ::ffff:192.0.2.1",
        "open web from 2001:db8:1:2:3:4:5:6 until 2099-01-01 00:00",
        "close ssh on web-*",
        "close mosh on web-[12],db1",
        "open nosuch on db-*",
        "open ssh for 2h on web-1",
        "close ssh on [!w]*",
        "# a comment",
        "   \t",
        "",
        "close ssh # back tonight",
        "close\tssh\r",
        "close\u{a0}ssh",
    ];
    let invalid = [
        "shut ssh",
        "open",
        "open nosuch",
        "open ssh now",
        "open ssh for",
        "open ssh for 0h",
        "open ssh for 3651d",
        "open ssh for 2",
        "open ssh for 2.5h",
        "open ssh for -2h",
        "open ssh for 5256001m",
        "open ssh for 10000000m",
        "open ssh until 2099-12-31",
        "open ssh until 2099-12-31 24:00",
        "open ssh until 2099-02-30 12:00",
        "open ssh until 2023-02-29 12:00",
        "open ssh until 2099-1-5 12:00",
        "open ssh until 2099-12-31 8:00",
        "open ssh until tomorrow",
        "open ssh until 2099-12-31T23:59:00",
        "open ssh until 2099-12-31T23:59Z",
        "open ssh from 0.0.0.0/0",
        "open ssh from ::/0",
        "open ssh from 198.51.100.7/24 for 2h",
        "open ssh from 203.0.113.7/2",
        "open ssh from 2001:db8::1/64",
        "open ssh from 256.1.1.1",
        "open ssh from 01.2.3.4",
        "open ssh from example.com",
        "open ssh from 1.2.3.4/33",
        "open ssh from 1:2:3",
        "open ssh from 1.2.3.4 from 5.6.7.8",
        "open ssh for 2h until 2099-12-31 23:59",
        "close ssh for 2h",
        "close ssh from 1.2.3.4",
        "close ssh on web-[12",
        "close ssh on web-[]",
        "close ssh on web!",
        "close ssh on",
        "close ssh on web-1 for 2h",
        "close ssh on db-* web",
        "open 1ssh on db-*",
        "close ssh\u{1}",
        "<html>",
    ];
    let services: std::collections::BTreeSet<portlocker::config::ServiceName> =
        ["ssh", "web", "mosh"]
            .into_iter()
            .map(|name| portlocker::config::ServiceName::new(name).unwrap())
            .collect();
    let context = portlocker::intake::control::Context {
        services: &services,
        host_name: "web-1",
        ipv6: true,
    };
    let mut browser = Browser::start();
    browser.open(&signer_page());
    act(&mut browser, "");
    let mut disagreements = Vec::new();
    for (lines, expected) in [(&valid[..], true), (&invalid[..], false)] {
        for line in lines {
            let rust = portlocker::intake::control::parse(line.as_bytes(), context);
            assert_eq!(
                rust.is_ok(),
                expected,
                "the table is wrong about {line:?}: {rust:?}"
            );
            let page = browser.evaluate(&format!(
                "window.portlocker.checkFile({}, ['ssh', 'web', 'mosh']).errors",
                json!(line)
            ));
            let page_ok = page.as_array().unwrap().is_empty();
            if page_ok != expected {
                disagreements.push(format!("{line:?}: portlocker {rust:?}, the page {page}"));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "the page and portlocker disagree:\n{}",
        disagreements.join("\n")
    );
}
