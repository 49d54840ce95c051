//! The status page in a real browser: headless Chromium, driven over the
//! DevTools protocol, renders pages written by real runs at a phone's
//! 390×844 and a desktop's 1280×800, light and dark. Assertions come from
//! the live DOM; screenshots go to target/browser/.

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
        while self.next_message()["method"] != json!("Page.loadEventFired") {}
    }

    fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        result["result"]["value"].clone()
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
  const outcome = document.getElementById('outcome');
  const rows = [...document.querySelectorAll('.service')];
  const h1 = document.querySelector('h1');
  return {
    title: document.title,
    heading: h1 ? h1.innerText : null,
    text: document.body.innerText,
    chips: [...document.querySelectorAll('.state')].map(el => ({ text: el.innerText,
      surprise: el.classList[1], color: getComputedStyle(el).color,
      background: getComputedStyle(el).backgroundColor, service: el.closest('.service').dataset.service })),
    width,
    height: window.innerHeight,
    scrollWidth: document.documentElement.scrollWidth,
    outcome: outcome ? outcome.textContent : null,
    outcomeShown: !!outcome && shown(outcome),
    outcomeTop: outcome ? outcome.getBoundingClientRect().top : null,
    outcomeColor: outcome ? getComputedStyle(outcome).color : null,
    firstRowTop: rows.length ? rows[0].getBoundingClientRect().top : null,
    rows: rows.map(row => ({ name: row.dataset.service, shown: shown(row), text: row.innerText,
      states: [...row.querySelectorAll('.state')].filter(shown).length })),
    background: getComputedStyle(document.body).backgroundColor,
    scripts: document.scripts.length,
  };
})()"#;

/// The services of the pages, in the config's order (not by name).
const ORDER: [&str; 4] = ["ssh", "web", "mosh", "wireguard-for-the-whole-family"];

/// Status pages written by real runs: one after a good run with long notes
/// and a rule of others that closes a port the file opens (drift), one
/// after a failure with a long reason and a family that cannot be read.
fn pages(env: &TestEnv) -> Vec<(&'static str, PathBuf, String)> {
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
    // Someone else's DROP after portlocker's jump closes wireguard over IPv4.
    let table = env.path("state-iptables");
    let mut rules = std::fs::read_to_string(&table).unwrap();
    rules.push_str("-A INPUT -p udp -m udp --dport 51820 -j DROP\n");
    std::fs::write(&table, rules).unwrap();
    env.run(&[])
        .expect(0)
        .says("is not portlocker's and closes wireguard");
    let ok = env.path("ok.html");
    std::fs::copy(env.path("status.html"), &ok).unwrap();
    env.control(&format!(
        "close ssh\nopen {}\nopen vnp\nshut web\n",
        "averyveryveryverylongservicenamethatdoesnotexistanywhere".repeat(3)
    ));
    // An ip6tables that cannot read its table: IPv6 is unknown.
    std::fs::write(
        env.path("bin/ip6tables"),
        "#!/bin/sh\necho \"ip6tables: can't initialize ip6tables table\" >&2\nexit 3\n",
    )
    .unwrap();
    env.run(&[]).expect(1);
    let failed = env.path("failed.html");
    std::fs::copy(env.path("status.html"), &failed).unwrap();
    vec![
        ("ok", ok, "OK: ".to_owned()),
        ("failed", failed, "Failed: ".to_owned()),
    ]
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

#[test]
fn the_status_page_reads_well_on_a_phone_and_a_desktop() {
    if !Path::new(CHROMIUM).exists() {
        let reason = format!("{CHROMIUM} is missing (apt-get install chromium)");
        if std::env::var(REQUIRE).as_deref() == Ok("1") {
            panic!("the browser test cannot run and {REQUIRE}=1 forbids skipping it: {reason}");
        }
        common::skipped(
            "the_status_page_reads_well_on_a_phone_and_a_desktop",
            &reason,
        );
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
                assert_eq!(seen["width"], json!(width), "{at}");
                assert!(
                    seen["scrollWidth"].as_u64().unwrap() <= u64::from(width),
                    "scrolls sideways: {at}"
                );
                assert!(
                    seen["outcome"]
                        .as_str()
                        .unwrap()
                        .starts_with(outcome.as_str()),
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
                backgrounds.push(seen["background"].clone());
                browser.screenshot(
                    &shots.join(format!("status-{name}-{width}x{height}-{scheme}.png")),
                );
            }
        }
        assert_ne!(
            backgrounds[0], backgrounds[2],
            "dark mode looks like light mode at {width}x{height}"
        );
    }
    // The failed page says why, in its colour, above the rows.
    browser.emulate(390, 844, true, "light");
    browser.open(&pages[1].1);
    let seen = browser.evaluate(MEASURE);
    assert!(
        seen["outcome"]
            .as_str()
            .unwrap()
            .contains("unknown service `vnp`"),
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

    // Colours by surprise, in light and dark: what the file asks is calm,
    // whether it asked open or closed; what differs stands out in the
    // colour of a failed run, and says so in words.
    for scheme in ["light", "dark"] {
        browser.emulate(390, 844, true, scheme);
        browser.open(&pages[1].1);
        let alarm_here = browser.evaluate(MEASURE)["outcomeColor"].clone();
        browser.open(&pages[0].1);
        let seen = browser.evaluate(MEASURE);
        let calm = chip(&seen, "ssh", "IPv4");
        assert_eq!(calm["text"], json!("IPv4 closed"), "{seen}");
        assert_eq!(calm["surprise"], json!("calm"), "{seen}");
        for (service, family, text) in [
            ("ssh", "IPv6", "IPv6 closed"),
            ("web", "IPv4", "IPv4 open to sources"),
            ("web", "IPv6", "IPv6 open to sources"),
            ("mosh", "IPv4", "IPv4 closed"),
            ("wireguard-for-the-whole-family", "IPv6", "IPv6 open"),
        ] {
            let other = chip(&seen, service, family);
            assert_eq!(other["text"], json!(text), "{seen}");
            assert_eq!(
                (&other["color"], &other["background"]),
                (&calm["color"], &calm["background"]),
                "{service} {family} is not as calm as ssh closed ({scheme}): {seen}"
            );
        }
        let drift = chip(&seen, "wireguard-for-the-whole-family", "IPv4");
        assert_eq!(drift["text"], json!("IPv4 closed (asked: open)"), "{seen}");
        assert_ne!(drift["color"], calm["color"], "{scheme}: {seen}");
        assert_ne!(drift["background"], calm["background"], "{scheme}: {seen}");
        assert_eq!(drift["color"], alarm_here, "{scheme}: {seen}");
    }

    // As plain text (a copy, a screen reader): words apart, times with
    // their offset, the next run due, the grammar at the end, no URL.
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
    assert!(text.contains("due by about 20"), "{text}");
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
