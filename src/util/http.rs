//! HTTP downloads. Proxies come from the environment as apt and curl read them:
//! `http_proxy`/`HTTP_PROXY` for http:// URLs (sent to the proxy as `GET http://…`, which
//! every forward proxy accepts), `https_proxy` for https:// (tunnelled with CONNECT),
//! `all_proxy`, and `no_proxy` to bypass.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// HTTP client with a 30 s connect timeout and no overall one. A request is tried up to
/// 3 times on network or server errors; other HTTP errors fail at once.
#[derive(Clone)]
pub struct Http {
    client: reqwest::blocking::Client,
}

impl Http {
    /// Builds the client, identifying as `kiln/<version>`; proxies are taken from the environment.
    pub fn new() -> Result<Http> {
        let client = reqwest::blocking::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .timeout(None)
            .build()
            .context("setting up the HTTP client")?;
        Ok(Http { client })
    }

    fn send(&self, url: &str) -> Result<reqwest::blocking::Response> {
        let mut last = None;
        // A few retries for flaky networks; a 404 is final.
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500 * attempt));
            }
            match self.client.get(url).send() {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) if r.status().is_server_error() => {
                    last = Some(format!("HTTP {}", r.status()))
                }
                Ok(r) => bail!("GET {url}: HTTP {}", r.status()),
                Err(e) => last = Some(chain(&e)),
            }
        }
        bail!(
            "GET {url}: {} (check the mirror, and {}/no_proxy if you are behind a proxy)",
            last.unwrap_or_default(),
            if url.starts_with("https:") {
                "https_proxy"
            } else {
                "http_proxy"
            }
        )
    }

    /// The whole response body of `url`, held in memory.
    pub fn get_bytes(&self, url: &str) -> Result<Vec<u8>> {
        let mut r = self.send(url)?;
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)
            .with_context(|| format!("reading {url}"))?;
        Ok(buf)
    }

    /// Streams the body into `w`, calling `progress` with each chunk's size.
    pub fn get_to(&self, url: &str, w: &mut dyn Write, progress: &dyn Fn(u64)) -> Result<u64> {
        let mut r = self.send(url)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = r.read(&mut buf).with_context(|| format!("reading {url}"))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])?;
            total += n as u64;
            progress(n as u64);
        }
        Ok(total)
    }
}

/// An error and its causes, `a: b: c`: reqwest's own message leaves out why a request
/// failed (a refused tunnel, a TLS error).
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cause = c.source();
    }
    msg
}
