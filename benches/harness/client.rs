//! What the harness does besides the exporter: a plain HTTP client (the naive script, and the
//! spool of raw page bodies the pipeline and DuckDB share) and the DuckDB reference.

use std::io::Write;
use std::path::Path;

use aos_emulator::EmulatorHandle;
use chrono::{DateTime, Utc};

async fn token(http: &reqwest::Client, emu: &EmulatorHandle) -> String {
    let token: serde_json::Value = http
        .post(emu.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", aos_emulator::DEMO_CLIENT_ID),
            ("client_secret", aos_emulator::DEMO_CLIENT_SECRET),
            ("scope", "audit.read.all"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    token["access_token"].as_str().unwrap().to_string()
}

fn day_url(emu: &EmulatorHandle, day: DateTime<Utc>) -> String {
    format!(
        "{}/aos/audit?startTime={}&endTime={}",
        emu.base_url(),
        day.format("%Y-%m-%dT%H:%M:%SZ"),
        (day + chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// What a user would write first: one request after another, JSON lines to a file.
pub async fn naive(emu: &EmulatorHandle, from: DateTime<Utc>, to: DateTime<Utc>, out: &Path) -> u64 {
    let http = reqwest::Client::new();
    let bearer = token(&http, emu).await;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    let mut n = 0;
    let mut day = from;
    while day < to {
        let mut url = day_url(emu, day);
        loop {
            let page: serde_json::Value = http.get(&url).bearer_auth(&bearer).send().await.unwrap().json().await.unwrap();
            for r in page["data"].as_array().unwrap() {
                serde_json::to_writer(&mut file, r).unwrap();
                file.write_all(b"\n").unwrap();
                n += 1;
            }
            match page["nextLink"].as_str() {
                Some(l) => url = l.to_string(),
                None => break,
            }
        }
        day += chrono::Duration::days(1);
    }
    file.flush().unwrap();
    n
}

/// Fetches every page of `[from, to)` day by day and keeps the raw bodies in `spool`
/// (`day start i64 LE, length u32 LE, body`), and the same records one per line in `ndjson`
/// (for DuckDB). Returns the number of pages.
pub async fn spool_pages(emu: &EmulatorHandle, from: DateTime<Utc>, to: DateTime<Utc>, spool: &Path, ndjson: &Path) -> u64 {
    let http = reqwest::Client::new();
    let bearer = token(&http, emu).await;
    let mut pages = std::io::BufWriter::new(std::fs::File::create(spool).unwrap());
    let mut lines = std::io::BufWriter::new(std::fs::File::create(ndjson).unwrap());
    let mut n = 0;
    let mut day = from;
    while day < to {
        let mut url = day_url(emu, day);
        loop {
            let body = http.get(&url).bearer_auth(&bearer).send().await.unwrap().bytes().await.unwrap();
            pages.write_all(&day.timestamp().to_le_bytes()).unwrap();
            pages.write_all(&(body.len() as u32).to_le_bytes()).unwrap();
            pages.write_all(&body).unwrap();
            n += 1;
            let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
            for r in page["data"].as_array().unwrap() {
                // Only records of the day: the API's inclusive end also returns the next
                // day's midnight records, which the exporter leaves to the next window.
                let t = r["actionTime"].as_str().and_then(aos_audit_export::model::parse_action_time);
                if t.is_some_and(|t| t >= day + chrono::Duration::days(1)) {
                    continue;
                }
                serde_json::to_writer(&mut lines, r).unwrap();
                lines.write_all(b"\n").unwrap();
            }
            match page["nextLink"].as_str() {
                Some(l) => url = l.to_string(),
                None => break,
            }
        }
        day += chrono::Duration::days(1);
    }
    pages.flush().unwrap();
    lines.flush().unwrap();
    n
}

/// DuckDB's result.
pub struct Duck {
    pub rows: u64,
    pub secs: f64,
    pub rss_mib: f64,
}

/// DuckDB converting `ndjson` to Parquet (zstd) at `out`, in its own process (PyPI `duckdb`,
/// every core); `None` when the module is not installed.
pub fn duckdb(ndjson: &Path, out: &Path) -> Option<Duck> {
    let script = format!(
        r#"
import duckdb, json, resource, time
t = time.time()
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute("COPY (SELECT * FROM read_json('{src}', format='newline_delimited')) TO '{dst}' (FORMAT parquet, COMPRESSION zstd)")
secs = time.time() - t
n = con.execute("SELECT count(*) FROM read_parquet('{dst}')").fetchone()[0]
print(json.dumps({{"secs": secs, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "rows": n}}))
"#,
        src = ndjson.display(),
        dst = out.display()
    );
    let o = std::process::Command::new("python3").args(["-c", &script]).output().ok()?;
    if !o.status.success() {
        eprintln!("duckdb: {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or(""));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    Some(Duck {
        rows: v["rows"].as_u64()?,
        secs: v["secs"].as_f64()?,
        rss_mib: v["rss_kib"].as_f64()? / 1024.0,
    })
}

/// A server on 127.0.0.1 answering every request with `body` as a JSON page (the audit API's
/// stand-in for pages no emulator sends); runs until the harness exits.
pub async fn canned(body: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let body = std::sync::Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let header = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(header.as_bytes()).await;
                let _ = conn.write_all(&body).await;
            });
        }
    });
    base
}

/// The worst pages `api.max_page_bytes` (`cap` bytes) admits: as many `{}` records as fit, and
/// one record whose `additionalDetails` is an array filling the page.
pub fn worst_pages(cap: usize) -> [(&'static str, Vec<u8>); 2] {
    let mut empty = b"{\"nextLink\":null,\"data\":[{}".to_vec();
    while empty.len() + 6 < cap {
        empty.extend_from_slice(b",{}");
    }
    empty.extend_from_slice(b"]}");
    let mut big = b"{\"nextLink\":null,\"data\":[{\"actionTime\":\"2024-01-01T01:00:00Z\",\"additionalDetails\":[0".to_vec();
    while big.len() + 8 < cap {
        big.extend_from_slice(b",0");
    }
    big.extend_from_slice(b"]}]}");
    [("records `{}`", empty), ("one record, additionalDetails an array of 0s", big)]
}
