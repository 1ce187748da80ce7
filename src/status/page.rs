//! The status report as one HTML page: no script, no external asset (it works offline and on
//! a phone), refreshed by the browser every 10 s. Everything shown is escaped: model ids
//! come from clients.

use std::fmt::Write as _;

use serde_json::Value;

use crate::usage::day;

const REFRESH_SECONDS: u32 = 10;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:980px;\
padding:12px;color:#1b1f24;background:#fafafa}h1{font-size:20px;margin:0}h2{font-size:16px;\
margin:22px 0 6px}.sub{color:#57606a}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{padding:4px 6px;border-bottom:1px solid #e4e7eb;text-align:right;white-space:nowrap}\
th:first-child,td:first-child,.names td:nth-child(-n+3),.names th:nth-child(-n+3){text-align:left}th{background:#f0f2f4;font-weight:600}\
.wrap{overflow-x:auto}.ok{color:#1a7f37}.warn{color:#9a6700}.bad{color:#cf222e}\
.err{white-space:normal;text-align:left;color:#57606a;font-size:12px}\
.cards{display:flex;flex-wrap:wrap;gap:8px}.card{background:#fff;border:1px solid #e4e7eb;\
border-radius:6px;padding:8px 12px;min-width:120px}.card b{display:block;font-size:20px}\
svg{background:#fff;border:1px solid #e4e7eb;border-radius:6px}";

pub fn render(report: &Value) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=refresh content={REFRESH_SECONDS}><title>trae-proxy status</title>\
         <style>{STYLE}</style></head><body>"
    );
    header(&mut out, report);
    backends(&mut out, &report["backends"]);
    chart(
        &mut out,
        &report["hours"],
        report["now"].as_u64().unwrap_or(0),
    );
    let usage = &report["usage"];
    for (title, period) in [
        (
            format!("Usage today ({} UTC)", text(&usage["today"]["day"])),
            &usage["today"],
        ),
        (
            format!("Usage this month (since {})", text(&usage["month"]["from"])),
            &usage["month"],
        ),
    ] {
        let _ = write!(out, "<h2>{}</h2>", esc(&title));
        usage_table(&mut out, "model", &period["by_model"]);
        usage_table(&mut out, "key", &period["by_key"]);
    }
    out.push_str(
        "<p class=sub>Also as JSON: <a href=\"/status.json\">/status.json</a>; \
                  Prometheus: <a href=\"/metrics\">/metrics</a>.</p></body></html>",
    );
    out
}

fn header(out: &mut String, r: &Value) {
    let requests = &r["requests"];
    let _ = write!(
        out,
        "<h1>trae-proxy</h1><div class=sub>version {} ({}, {}) · up {} · page of {} UTC</div>\
         <div class=cards style=\"margin-top:10px\">",
        esc(text(&r["version"])),
        esc(text(&r["commit"])),
        esc(text(&r["target"])),
        duration(r["uptime_seconds"].as_u64().unwrap_or(0)),
        clock(r["now"].as_u64().unwrap_or(0)),
    );
    for (label, value) in [
        ("requests", &requests["total"]),
        ("errors (5xx)", &requests["errors"]),
        ("in flight", &requests["in_flight"]),
    ] {
        let _ = write!(out, "<div class=card><b>{}</b>{label}</div>", number(value));
    }
    out.push_str("</div>");
}

fn backends(out: &mut String, list: &Value) {
    out.push_str(
        "<h2>Backends</h2><div class=wrap><table class=names><tr><th>backend</th><th>model</th><th>state</th>\
         <th>in flight</th><th>requests</th><th>errors</th><th>p50</th><th>p95</th>\
         <th>first token</th><th>tokens</th></tr>",
    );
    for b in list.as_array().map_or(&[][..], Vec::as_slice) {
        let state = match text(&b["state"]) {
            "cooling" => format!(
                "<span class=warn>cooling until {}</span>",
                clock(b["cooling_until"].as_u64().unwrap_or(0))
            ),
            "failing" => format!(
                "<span class=bad>failing ({} in a row)</span>",
                number(&b["consecutive_failures"])
            ),
            _ => "<span class=ok>healthy</span>".to_owned(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{state}</td><td>{} / {}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(text(&b["name"])),
            esc(text(&b["model"])),
            number(&b["in_flight"]),
            number(&b["max_in_flight"]),
            number(&b["requests"]),
            number(&b["errors"]),
            millis(&b["latency_p50_ms"]),
            millis(&b["latency_p95_ms"]),
            millis(&b["first_token_p50_ms"]),
            number(&b["tokens"]),
        );
        if let Some(why) = b["last_error"].as_str() {
            let ago = b["last_failure_seconds_ago"].as_u64().unwrap_or(0);
            let _ = write!(
                out,
                "<tr><td></td><td class=err colspan=9>last error {} ago: {}</td></tr>",
                duration(ago),
                esc(why)
            );
        }
    }
    out.push_str("</table></div>");
}

/// Two bar charts, requests and tokens per hour, oldest hour left. Whole-number coordinates:
/// float formatting would cost the binary 4 KiB for nothing a screen shows.
fn chart(out: &mut String, hours: &Value, now: u64) {
    let hours = hours.as_array().map_or(&[][..], Vec::as_slice);
    out.push_str("<h2>Last 24 hours</h2>");
    for (series, color) in [("requests", "#0969da"), ("tokens", "#8250df")] {
        let values: Vec<u64> = hours
            .iter()
            .map(|h| h[series].as_u64().unwrap_or(0))
            .collect();
        let max = values.iter().copied().max().unwrap_or(0).max(1);
        // Text sized for a phone, where the chart is drawn at about 0.4 of these units.
        let (w, h, top, bottom) = (960u64, 200u64, 30u64, 30u64);
        let slot = w / (values.len().max(1) as u64);
        let _ = write!(
            out,
            "<svg id=chart-{series} viewBox=\"0 0 {w} {h}\" width=100% role=img \
             aria-label=\"{series} per hour\"><text x=6 y=22 font-size=22 fill=#57606a>\
             {series} per hour (max {max})</text>"
        );
        for (i, v) in values.iter().enumerate() {
            let x = i as u64 * slot;
            // Rounded up: an hour with any traffic shows at least a pixel.
            let bar = ((h - top - bottom) * v).div_ceil(max);
            let start = hours[i]["start"].as_u64().unwrap_or(0);
            let _ = write!(
                out,
                "<rect x={} y={} width={} height={bar} fill={color}>\
                 <title>{} UTC: {v} {series}</title></rect>",
                x + 1,
                h - bottom - bar,
                slot - 2,
                hour(start),
            );
            if i % 6 == 0 {
                let _ = write!(
                    out,
                    "<text x={} y={} font-size=20 fill=#57606a>{}</text>",
                    x + 2,
                    h - 6,
                    hour(start)
                );
            }
        }
        let _ = write!(
            out,
            "<text x={} y={} font-size=20 fill=#57606a text-anchor=end>now {}</text></svg>",
            w - 4,
            h - 6,
            hour(now)
        );
    }
}

fn usage_table(out: &mut String, by: &str, rows: &Value) {
    let rows = rows.as_array().map_or(&[][..], Vec::as_slice);
    let _ = write!(
        out,
        "<div class=wrap><table><tr><th>{by}</th><th>requests</th><th>prompt</th>\
         <th>completion</th><th>reasoning</th><th>cached</th>\
         <th title=\"requests whose backend reported no usage\">unknown</th></tr>"
    );
    if rows.is_empty() {
        out.push_str("<tr><td colspan=7 class=sub>nothing yet</td></tr>");
    }
    for r in rows {
        let _ = write!(out, "<tr><td>{}</td>", esc(text(&r["name"])));
        for field in [
            "requests",
            "prompt",
            "completion",
            "reasoning",
            "cached",
            "unknown",
        ] {
            let _ = write!(out, "<td>{}</td>", number(&r[field]));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table></div>");
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// 1234567 -> "1 234 567" (thin spaces read well in every locale).
fn number(v: &Value) -> String {
    let digits = v.as_u64().unwrap_or(0).to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

fn millis(v: &Value) -> String {
    match v.as_u64() {
        Some(ms) if ms >= 10_000 => format!("{} s", (ms + 500) / 1000),
        Some(ms) if ms >= 1000 => {
            let tenths = (ms + 50) / 100;
            format!("{}.{} s", tenths / 10, tenths % 10)
        }
        Some(ms) => format!("{ms} ms"),
        None => "–".to_owned(),
    }
}

fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < day::SECONDS => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / day::SECONDS, s % day::SECONDS / 3600),
    }
}

/// `HH:MM:SS` of a Unix time (UTC).
fn clock(unix: u64) -> String {
    let s = unix % day::SECONDS;
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

fn hour(unix: u64) -> String {
    format!("{:02}:00", unix % day::SECONDS / 3600)
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_backends_chart_and_usage_escaped() {
        let report = json!({
            "version": "0.1.0", "commit": "abc", "target": "x86_64", "now": 90_000,
            "uptime_seconds": 3700,
            "requests": {"total": 1234567, "errors": 1, "in_flight": 0},
            "backends": [
                {"name": "deep<seek>", "model": "m", "state": "cooling", "cooling_until": 90_060,
                 "consecutive_failures": 3, "last_error": "answered 503",
                 "last_failure_seconds_ago": 5, "in_flight": 0, "max_in_flight": 32,
                 "requests": 10, "errors": 3, "latency_p50_ms": 420, "latency_p95_ms": 1800,
                 "first_token_p50_ms": null, "tokens": 900},
                {"name": "ok", "model": "n", "state": "healthy", "in_flight": 1, "max_in_flight": 32}
            ],
            "usage": {"today": {"day": "1970-01-02", "by_model": [
                {"name": "gpt-4o", "requests": 2, "prompt": 10, "completion": 5, "reasoning": 0,
                 "cached": 0, "unknown": 0}], "by_key": []},
                      "month": {"from": "1970-01-01", "by_model": [], "by_key": []}},
            "hours": (0..24).map(|i| json!({"start": 3600 * (i + 1), "requests": i, "tokens": 10 * i}))
                .collect::<Vec<_>>(),
        });
        let html = render(&report);
        assert!(html.contains("deep&lt;seek&gt;") && !html.contains("deep<seek>"));
        assert!(html.contains("cooling until 01:01:00"), "{html}");
        assert!(html.contains("last error 5s ago: answered 503"));
        assert!(html.contains("<span class=ok>healthy</span>"));
        assert!(html.contains("1\u{2009}234\u{2009}567"));
        assert_eq!(html.matches("<svg").count(), 2);
        assert_eq!(html.matches("<rect").count(), 48);
        assert!(html.contains("requests per hour (max 23)"));
        assert!(html.contains("<td>gpt-4o</td><td>2</td><td>10</td><td>5</td>"));
        assert!(html.contains("nothing yet"));
        assert!(
            html.contains("<td>420 ms</td><td>1.8 s</td><td>–</td>"),
            "{html}"
        );
        assert!(html.contains("http-equiv=refresh") && !html.contains("<script"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external asset"
        );
    }
}
