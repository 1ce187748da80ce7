//! Usage accounting through the real binary: what is counted for each endpoint and mode, what
//! a streaming client sees when the proxy asked for usage on its behalf, per-key limits, the
//! usage file across SIGTERM, restarts, reloads and damage, and `trae-proxy usage`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{Response, post_request, roundtrip};
use crate::harness::{Proxy, config_yaml, run};
use crate::mock::{Mock, canonical_chunks};
use crate::operations::admin_get;

const PLAIN_KEY: &str = "plain-secret-key-1";
const KEYS: &str = "access_keys:
  - plain-secret-key-1
  - {key: alice-secret-key, name: alice, requests_per_minute: 2}
  - {key: bob-secret-key, name: bob, tokens_per_day: 40}
";

fn yaml(mock: &Mock, keys: &str) -> String {
    let apis = "  - {name: main, endpoint: \"{UPSTREAM}\", custom_model_id: gpt-4o, target_model_id: chat}";
    format!(
        "{keys}{}",
        config_yaml(&mock.url(), apis, "  admin_bind: 127.0.0.1:0\n")
    )
}

fn post(proxy: &Proxy, path: &str, key: &str, body: &Value) -> Response {
    let raw = post_request(path, key, &body.to_string(), "");
    roundtrip(proxy.port, &proxy.ca_path(), &raw)
}

fn chat(proxy: &Proxy, key: &str, extra: Value) -> Response {
    let mut body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post(proxy, "/v1/chat/completions", key, &body)
}

/// The status report once no request is in flight: a request is counted just after its
/// client has the last byte, so the report may otherwise be a request behind.
fn status_json(proxy: &Proxy) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = admin_get(proxy.logged_port("admin listener"), "/status.json");
        assert_eq!(status, "HTTP/1.1 200 OK");
        let report: Value = serde_json::from_str(&body).unwrap();
        if report["requests"]["in_flight"] == 0 || std::time::Instant::now() > deadline {
            return report;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status report's usage row for `name` today, grouped `by` model or key.
fn today(report: &Value, by: &str, name: &str) -> Value {
    report["usage"]["today"][by]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {by} row {name}: {report}"))
}

#[test]
fn every_endpoint_and_mode_is_counted_and_clients_see_the_stream_they_asked_for() {
    let mock = Mock::start();
    let proxy = Proxy::start(&yaml(&mock, KEYS));

    // A stream whose client did not ask for usage: the backend is asked, the client sees
    // exactly the chunks it would have without (no "usage": null, no usage-only chunk).
    let r = chat(&proxy, PLAIN_KEY, json!({"stream": true}));
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = mock.requests()[0].json();
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    let chunks = r.sse_chunks();
    let mut expected = canonical_chunks(false);
    for c in &mut expected {
        c["model"] = json!("gpt-4o");
    }
    assert_eq!(chunks, expected, "{}", r.text());

    // A client that asked gets what the backend sent: usage null on each chunk, then the counts.
    let r = chat(
        &proxy,
        PLAIN_KEY,
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let chunks = r.sse_chunks();
    let last = chunks.last().unwrap();
    assert_eq!(last["usage"]["total_tokens"], 33, "{}", r.text());
    let first = &chunks[0];
    assert!(first.get("usage").is_some_and(Value::is_null));

    // Plain JSON, embeddings, a Responses stream (usage inside response.completed), and a
    // Responses reply without usage (counted, tokens unknown).
    assert_eq!(chat(&proxy, PLAIN_KEY, json!({})).status, 200);
    let embed = json!({"model": "gpt-4o", "input": "hello"});
    assert_eq!(
        post(&proxy, "/v1/embeddings", PLAIN_KEY, &embed).status,
        200
    );
    let respond = json!({"model": "gpt-4o", "input": "hello", "stream": true});
    let r = post(&proxy, "/v1/responses", PLAIN_KEY, &respond);
    assert!(r.text().contains("response.completed"), "{}", r.text());
    let respond = json!({"model": "gpt-4o", "input": "hello"});
    assert_eq!(
        post(&proxy, "/v1/responses", PLAIN_KEY, &respond).status,
        200
    );

    let report = status_json(&proxy);
    let row = today(&report, "by_model", "gpt-4o");
    // Chat: 3 x (11 prompt, 22 completion); the two streams also reported 8 cached and 5
    // reasoning each (the mock adds details to stream usage). Embeddings 2 prompt. Responses
    // stream 5 in, 7 out, 3 reasoning. The Responses reply reported none.
    assert_eq!(
        row,
        json!({"name": "gpt-4o", "requests": 6, "prompt": 3 * 11 + 2 + 5,
               "completion": 3 * 22 + 7, "reasoning": 2 * 5 + 3, "cached": 2 * 8, "unknown": 1}),
        "{report}"
    );
    let keys = report["usage"]["today"]["by_key"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{report}");
    // A plain key's stable name: key- and six hex digits of its hash.
    let name = keys[0]["name"].as_str().unwrap();
    assert!(name.starts_with("key-") && name.len() == 10, "{name}");

    // Prometheus has them by key name; nothing anywhere shows a key.
    let (_, metrics) = admin_get(proxy.logged_port("admin listener"), "/metrics");
    let line = format!(
        "trae_proxy_tokens_total{{backend=\"main\",model=\"gpt-4o\",key=\"{name}\",kind=\"reasoning\"}} 13"
    );
    assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    let (_, page) = admin_get(proxy.logged_port("admin listener"), "/");
    for shown in [&metrics, &page, &report.to_string(), &proxy.log()] {
        assert!(!shown.contains("secret-key"), "a key leaked: {shown}");
    }
}

#[test]
fn key_limits_answer_429_with_retry_after_and_a_reload_keeps_counts_and_applies_new_limits() {
    let mock = Mock::start();
    let proxy = Proxy::start(&yaml(&mock, KEYS));

    // alice: 2 requests per minute.
    for _ in 0..2 {
        assert_eq!(chat(&proxy, "alice-secret-key", json!({})).status, 200);
    }
    let r = chat(&proxy, "alice-secret-key", json!({}));
    assert_eq!(r.status, 429, "{}", r.text());
    let error = &r.json()["error"];
    assert_eq!(error["code"], "rate_limit_exceeded", "{error}");
    assert_eq!(error["type"], "requests");
    assert!(error["message"].as_str().unwrap().contains("alice"));
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "one request every 30 s: {wait}");

    // bob: 40 tokens a day; each reply uses 33. The second request starts under the budget.
    for _ in 0..2 {
        assert_eq!(chat(&proxy, "bob-secret-key", json!({})).status, 200);
    }
    let r = chat(&proxy, "bob-secret-key", json!({}));
    assert_eq!(r.status, 429, "{}", r.text());
    let error = &r.json()["error"];
    assert_eq!(error["code"], "daily_token_limit_exceeded", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("66 of its 40"),
        "{error}"
    );
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&wait), "until midnight UTC: {wait}");
    // The refused requests reached no backend and used nothing.
    assert_eq!(mock.requests().len(), 4);
    let report = status_json(&proxy);
    assert_eq!(today(&report, "by_key", "alice")["requests"], 2);
    assert_eq!(today(&report, "by_key", "bob")["prompt"], 22);

    // A reload: alice may make 100 a minute now; bob's spent tokens are still spent.
    // (`trae-proxy reload`, which works on every OS, with the admin port the proxy got.)
    let admin = proxy.logged_port("admin listener");
    let raised = KEYS.replace("requests_per_minute: 2", "requests_per_minute: 100");
    proxy.write_config(&yaml(&mock, &raised).replace(
        "admin_bind: 127.0.0.1:0",
        &format!("admin_bind: 127.0.0.1:{admin}"),
    ));
    let config = proxy.dir().join("config.yaml");
    let (code, out, err) = run(
        &["reload", "--config", config.to_str().unwrap()],
        proxy.dir(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(chat(&proxy, "alice-secret-key", json!({})).status, 200);
    assert_eq!(chat(&proxy, "bob-secret-key", json!({})).status, 429);
    assert_eq!(
        today(&status_json(&proxy), "by_key", "alice")["requests"],
        3
    );
}

/// SIGTERM right after the requests: well within the 5 s between writes, so only the
/// shutdown writes them. Windows has no SIGTERM: there the periodic write must have them
/// when the process is killed, as a crash would.
fn stop(proxy: &mut Proxy) {
    if crate::harness::windows() {
        std::thread::sleep(crate::harness::USAGE_WRITE_EVERY + Duration::from_millis(700));
    } else {
        proxy.signal("TERM");
        assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0));
    }
}

#[test]
fn totals_survive_sigterm_and_restarts_and_a_damaged_file_is_set_aside() {
    let mock = Mock::start();
    let yaml = yaml(&mock, "");
    let mut proxy = Proxy::start(&yaml);
    for _ in 0..2 {
        assert_eq!(chat(&proxy, "sk-any", json!({})).status, 200);
    }
    stop(&mut proxy);
    let dir = proxy.stop_keep_dir();
    let file = dir.path().join("ca/usage.tsv");
    let text = std::fs::read_to_string(&file).unwrap();
    let day = text
        .lines()
        .find(|l| l.starts_with("D\t"))
        .unwrap_or_else(|| panic!("{text}"))
        .split('\t')
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(
        text.contains(&format!("D\t{day}\tgpt-4o\tmain\t-\t2\t0\t22\t44\t0\t0\n")),
        "{text}"
    );
    #[cfg(unix)]
    if !crate::harness::windows() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // The command reads it, grouped as asked.
    let config = dir.path().join("config.yaml");
    let config = config.to_str().unwrap();
    let (code, out, err) = run(&["usage", "--config", config], dir.path());
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("gpt-4o"))
        .unwrap_or_else(|| panic!("{out}"));
    let numbers: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(numbers, ["gpt-4o", "2", "22", "44", "0", "0", "0"], "{out}");
    assert!(out.lines().any(|l| l.starts_with(&day)), "{out}");
    let (code, out, _) = run(
        &[
            "usage", "--by", "backend", "--config", config, "--days", "1",
        ],
        dir.path(),
    );
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with("main ")), "{out}");
    for bad in [&["usage", "--by", "colour"][..], &["usage", "--days", "0"]] {
        let mut args = bad.to_vec();
        args.extend(["--config", config]);
        assert_eq!(run(&args, dir.path()).0, 2, "{bad:?}");
    }

    // A restart adds to what was kept.
    let mut proxy = Proxy::start_in(dir, &yaml, &[]);
    assert_eq!(chat(&proxy, "sk-any", json!({})).status, 200);
    assert_eq!(
        today(&status_json(&proxy), "by_model", "gpt-4o")["requests"],
        3
    );
    stop(&mut proxy);
    let dir = proxy.stop_keep_dir();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\tgpt-4o\tmain\t-\t3\t0\t33\t66\t"), "{text}");

    // Damage: reported, set aside, never fatal.
    std::fs::write(&file, "# trae-proxy usage 1\nD\tgarbage\n").unwrap();
    let proxy = Proxy::start_in(dir, &yaml, &[]);
    let log = proxy.wait_for_log("is damaged");
    assert!(log.contains("started afresh"), "{log}");
    let aside: Vec<_> = std::fs::read_dir(proxy.dir().join("ca"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("usage.tsv.damaged-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(chat(&proxy, "sk-any", json!({})).status, 200);
    assert_eq!(
        today(&status_json(&proxy), "by_model", "gpt-4o")["requests"],
        1
    );
}
