//! The status page in a real browser: Debian's chromium, headless, loads `GET /` from the
//! admin listener, and the page it rendered must show the backends, their states and the
//! chart; a screenshot at a phone's width must show more than an empty page does. Skipped
//! (with a note) where chromium is not installed, except in CI, which installs it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{chat_request, roundtrip};
use crate::harness::{Proxy, TempDir, config_yaml};
use crate::mock::Mock;
use crate::operations::admin_get;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// Runs headless chromium with `args` (at most 60 s); its stdout.
fn headless(browser: &str, profile: &Path, args: &[&str]) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox", // CI runs as root
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "chromium did not finish: {args:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    out
}

/// Width and height from a PNG's header.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

#[test]
fn the_status_page_renders_in_a_browser_with_backends_states_and_the_chart() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have chromium for this test"
        );
        eprintln!("chromium not installed: status page not rendered in a browser");
        return;
    };
    let mock = Mock::start();
    let apis = format!(
        "  - {{name: main, endpoint: \"{{UPSTREAM}}\", custom_model_id: gpt-4o, target_model_id: chat}}\n  \
         - {{name: down, endpoint: \"http://127.0.0.1:{}\", custom_model_id: other, target_model_id: chat}}",
        crate::closed_port()
    );
    let proxy = Proxy::start(&config_yaml(
        &mock.url(),
        &apis,
        "  admin_bind: 127.0.0.1:0\n",
    ));
    let ca = proxy.ca_path();
    for body in [
        json!({"model": "gpt-4o", "messages": []}),
        json!({"model": "gpt-4o", "stream": true, "messages": []}),
        json!({"model": "other", "messages": []}),
    ] {
        roundtrip(proxy.port, &ca, &chat_request(&body.to_string(), ""));
    }
    let admin = proxy.logged_port("admin listener");
    // Every request counted before the browser looks.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !admin_get(admin, "/status.json")
        .1
        .contains("\"in_flight\":0}")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("http://127.0.0.1:{admin}/");
    let profile = TempDir::new("chromium");

    let dom = headless(browser, profile.path(), &["--dump-dom", &url]);
    for shown in [
        "<td>main</td>",
        "<td>down</td>",
        "<span class=\"ok\">healthy</span>",
        "id=\"chart-requests\"",
        "id=\"chart-tokens\"",
        "<td>gpt-4o</td>",
    ] {
        assert!(dom.contains(shown), "{shown} not on the page:\n{dom}");
    }
    assert!(
        dom.contains("class=\"bad\">failing") || dom.contains("class=\"warn\">cooling"),
        "the unreachable backend's state: {dom}"
    );
    assert!(dom.contains("last error"), "{dom}");
    assert_eq!(dom.matches("<rect").count(), 48, "24 hours, two charts");
    // Two requests this hour: the last requests bar has height, the others none.
    assert!(dom.contains("2 requests</title>"), "{dom}");

    // At a phone's width, the page is drawn: a screenshot holds far more than a blank page's.
    let shot = profile.path().join("status.png");
    let blank = profile.path().join("blank.png");
    for (file, page) in [(&shot, url.as_str()), (&blank, "about:blank")] {
        headless(
            browser,
            profile.path(),
            &[
                &format!("--screenshot={}", file.display()),
                "--window-size=412,1600",
                page,
            ],
        );
    }
    let (shot, blank) = (std::fs::read(shot).unwrap(), std::fs::read(blank).unwrap());
    assert_eq!(png_size(&shot), (412, 1600));
    assert!(
        shot.len() > 4 * blank.len() && shot.len() > 20_000,
        "screenshot {} bytes, blank page {} bytes",
        shot.len(),
        blank.len()
    );
}
