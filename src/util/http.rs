//! HTTP downloads, bounded in time and size. Proxies come from the environment as apt and
//! curl read them: `http_proxy`/`HTTP_PROXY` for http:// URLs (sent to the proxy as
//! `GET http://…`, which every forward proxy accepts), `https_proxy` for https://
//! (tunnelled with CONNECT), `all_proxy`, and `no_proxy` to bypass.
//!
//! A mirror that accepts the connection and never answers, or stops sending half way, is
//! given up on after the idle timeout; a body longer than the caller allows is cut off
//! there; either is tried again a bounded number of times, from the start.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a request may go without a byte, for the response's head or its body: a
/// working mirror is never silent this long, a hung one is given up on.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of one request, counting the first.
const ATTEMPTS: u32 = 3;
/// The environment variable that sets both timeouts, in seconds (for slow links, and for
/// tests that do not want to wait).
pub const TIMEOUT_ENV: &str = "KILN_HTTP_TIMEOUT";

/// An HTTP client. A request is tried up to 3 times, with backoff, on network errors,
/// timeouts and server errors; other HTTP errors (a 404) fail at once. Offline, every
/// request is an error that says what was not in the cache.
#[derive(Clone)]
pub struct Http {
    /// Made at the first request: making one reads every certificate the host trusts
    /// (on a thread of its own, which dropping the client waits for), about 10 ms that
    /// a build from the cache has no use for.
    client: std::sync::Arc<std::sync::OnceLock<reqwest::blocking::Client>>,
    idle: Duration,
    offline: bool,
}

/// Why one attempt failed, and whether another may do better.
struct Failure {
    message: String,
    retry: bool,
}

impl Http {
    /// A client identifying as `kiln/<version>`; proxies are taken from the environment,
    /// and `$KILN_HTTP_TIMEOUT` replaces the connect and idle timeouts.
    pub fn new() -> Result<Http> {
        let idle = match std::env::var(TIMEOUT_ENV) {
            Ok(v) => Duration::from_secs_f64(
                v.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .with_context(|| format!("${TIMEOUT_ENV}=`{v}` is not a number of seconds"))?,
            ),
            Err(_) => IDLE_TIMEOUT,
        };
        Ok(Http {
            client: Default::default(),
            idle,
            offline: false,
        })
    }

    fn client(&self) -> Result<&reqwest::blocking::Client> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = reqwest::blocking::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.idle.min(CONNECT_TIMEOUT))
            // Blocking reqwest applies this to the response's head and to each read of
            // its body: an idle timeout, not a limit on a long download.
            .timeout(self.idle)
            .build()
            .context("setting up the HTTP client")?;
        Ok(self.client.get_or_init(|| c))
    }

    /// This client, refusing every request (`--offline`).
    pub fn offline(mut self, offline: bool) -> Http {
        self.offline = offline;
        self
    }

    /// The whole body of `url`, which may be at most `limit` bytes.
    pub fn get_bytes(&self, url: &str, limit: u64) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        self.with_retries(url, |attempt| {
            body.clear();
            attempt.read_into(&mut body, limit, &|_| {})
        })?;
        Ok(body)
    }

    /// Streams the body of `url` into `file` (from its start, truncating it on each
    /// attempt), calling `progress` with each chunk's size; at most `limit` bytes.
    pub fn get_to(
        &self,
        url: &str,
        file: &mut File,
        limit: u64,
        progress: &dyn Fn(u64),
    ) -> Result<u64> {
        self.with_retries(url, |attempt| {
            let reset = file.set_len(0).and_then(|_| file.rewind());
            if let Err(e) = reset {
                return Err(Failure {
                    message: format!("emptying the download's file: {e}"),
                    retry: false,
                });
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut *file);
            let n = attempt.read_into(&mut out, limit, progress)?;
            out.flush().map_err(|e| Failure {
                message: format!("writing the download: {e}"),
                retry: false,
            })?;
            Ok(n)
        })
    }

    /// Runs `body` on a response of `url`, again on a failure that may pass.
    fn with_retries<T>(
        &self,
        url: &str,
        mut body: impl FnMut(Attempt) -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        if self.offline {
            bail!("GET {url}: offline (--offline), and it is not in the cache");
        }
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500 << attempt));
            }
            let failure = match self.client()?.get(url).send() {
                Ok(r) if r.status().is_success() => match body(Attempt {
                    response: r,
                    url,
                    idle: self.idle,
                }) {
                    Ok(v) => return Ok(v),
                    Err(f) => f,
                },
                Ok(r) if r.status().is_server_error() => Failure {
                    message: format!("HTTP {}", r.status()),
                    retry: true,
                },
                Ok(r) => {
                    return Err(Status {
                        url: url.to_string(),
                        code: r.status().as_u16(),
                    }
                    .into())
                }
                Err(e) => Failure {
                    message: describe(&e, self.idle),
                    retry: true,
                },
            };
            last = failure.message;
            if !failure.retry {
                break;
            }
        }
        bail!(
            "GET {url}: {last} (check the mirror, and {}/no_proxy if you are behind a proxy; ${TIMEOUT_ENV} sets the timeouts)",
            if url.starts_with("https:") {
                "https_proxy"
            } else {
                "http_proxy"
            }
        )
    }
}

/// A final HTTP error status (a 404): trying again would not help.
#[derive(Debug)]
pub struct Status {
    /// The URL asked for.
    pub url: String,
    /// The status code.
    pub code: u16,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = reqwest::StatusCode::from_u16(self.code)
            .ok()
            .and_then(|c| c.canonical_reason())
            .unwrap_or("");
        write!(f, "GET {}: HTTP {} {reason}", self.url, self.code)
    }
}

impl std::error::Error for Status {}

/// One response being read.
struct Attempt<'a> {
    response: reqwest::blocking::Response,
    url: &'a str,
    idle: Duration,
}

impl Attempt<'_> {
    /// Copies the body into `out`, refusing more than `limit` bytes.
    fn read_into(
        mut self,
        out: &mut dyn Write,
        limit: u64,
        progress: &dyn Fn(u64),
    ) -> std::result::Result<u64, Failure> {
        let too_long = |n: u64| Failure {
            message: format!(
                "the body is {n} bytes or more, and at most {limit} are expected; refusing it"
            ),
            retry: false,
        };
        if let Some(n) = self.response.content_length().filter(|n| *n > limit) {
            return Err(too_long(n));
        }
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = match self.response.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Failure {
                        message: format!(
                            "reading the body after {total} bytes: {}",
                            describe(&e, self.idle)
                        ),
                        retry: true,
                    })
                }
            };
            total += n as u64;
            if total > limit {
                return Err(too_long(total));
            }
            out.write_all(&buf[..n]).map_err(|e| Failure {
                message: format!("writing what {} sent: {e}", self.url),
                retry: false,
            })?;
            progress(n as u64);
        }
    }
}

/// What went wrong, in the words a user looks for: refused, timed out, reset.
fn describe(e: &(dyn std::error::Error + 'static), idle: Duration) -> String {
    let chain = chain(e);
    let timed_out = chain.contains("timed out")
        || chain.contains("deadline")
        || io_kind(e) == Some(std::io::ErrorKind::TimedOut);
    if timed_out {
        return format!(
            "timed out: nothing arrived for {} s ({chain})",
            idle.as_secs_f64()
        );
    }
    match io_kind(e) {
        Some(std::io::ErrorKind::ConnectionRefused) => format!("connection refused ({chain})"),
        Some(std::io::ErrorKind::ConnectionReset) => format!("connection reset ({chain})"),
        _ => chain,
    }
}

/// The kind of the first I/O error among `e` and its causes.
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cause = c.source();
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// Serves each connection with `respond`, on a thread, at a free port.
    fn server(respond: impl Fn(std::net::TcpStream) + Send + 'static) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/f", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                respond(s);
            }
        });
        url
    }

    fn quick() -> Http {
        let mut h = Http::new().unwrap();
        // Before the first request, which makes the client with it.
        h.idle = Duration::from_millis(300);
        h
    }

    #[test]
    fn a_silent_server_times_out_in_bounded_time() {
        let url = server(|s| {
            std::thread::sleep(Duration::from_secs(30));
            drop(s);
        });
        let start = std::time::Instant::now();
        let e = quick().get_bytes(&url, 100).unwrap_err().to_string();
        assert!(e.contains("timed out"), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn an_endless_body_stops_at_the_limit() {
        let url = server(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![b'x'; 65536];
            while s.write_all(&chunk).is_ok() {}
        });
        let mut f = tempfile::tempfile().unwrap();
        let e = quick().get_to(&url, &mut f, 1 << 20, &|_| {}).unwrap_err();
        assert!(e.to_string().contains("at most 1048576"), "{e}");
        assert!(f.metadata().unwrap().len() <= 1 << 20);
        // A declared length over the limit is refused before the body is read.
        let url = server(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\nxx");
        });
        let e = quick().get_bytes(&url, 10).unwrap_err().to_string();
        assert!(e.contains("999999999 bytes"), "{e}");
    }

    #[test]
    fn a_body_cut_short_is_tried_again_from_the_start() {
        let served = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let count = served.clone();
        let url = server(move |mut s| {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
            let _ = s.write_all(if n == 0 { b"01234" } else { b"0123456789" });
        });
        let mut f = tempfile::tempfile().unwrap();
        assert_eq!(quick().get_to(&url, &mut f, 100, &|_| {}).unwrap(), 10);
        let mut got = String::new();
        f.rewind().unwrap();
        f.read_to_string(&mut got).unwrap();
        assert_eq!(got, "0123456789");
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn a_refused_connection_says_so() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = quick()
            .get_bytes(&format!("http://127.0.0.1:{port}/x"), 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("refused"), "{e}");
    }

    #[test]
    fn offline_nothing_is_fetched() {
        let e = quick()
            .offline(true)
            .get_bytes("http://127.0.0.1:9/x", 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--offline"), "{e}");
    }
}
