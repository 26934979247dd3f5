//! A minimal blocking HTTP/1.1 server on `std::net`, for the LLM simulator
//! ([`crate::generate::simulate`]) and for in-process test servers.
//!
//! One thread per connection, at most `max_connections` at once (further connections wait in the
//! kernel's listen backlog until a slot frees up). HTTP/1.1 keep-alive and pipelining,
//! `Content-Length` and `Transfer-Encoding: chunked` request bodies, `Expect: 100-continue`,
//! `TCP_NODELAY` on every connection. Idle keep-alive connections are closed after
//! [`IDLE_TIMEOUT`]. Responses always carry `Content-Length` (no chunked responses).
//!
//! Errors the server answers itself, closing the connection afterwards: 400 for a malformed
//! request (bad request line, header or chunk framing, bad or conflicting `Content-Length`),
//! 413 for a body over [`MAX_BODY`], 431 for a request head over [`MAX_HEAD`], 501 for a
//! transfer coding other than `chunked`, 417 for an `Expect` other than `100-continue`, 500 when
//! the handler panics.
//!
//! The handler decides each answer with a [`Reply`]: a [`Response`], or a fault for testing
//! clients: [`Reply::Drop`] closes the connection without answering (the client sees the
//! connection closed or reset), [`Reply::Hang`] waits and then closes without answering (the
//! client sees a timeout if its own is shorter).
//!
//! Meant for loopback use (`127.0.0.1:0`); it is not hardened for untrusted networks.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Largest request body accepted (64 MiB); larger ones get 413.
pub const MAX_BODY: usize = 64 << 20;
/// Largest request head (request line plus headers) accepted; larger ones get 431.
pub const MAX_HEAD: usize = 64 << 10;
/// Most header lines accepted in one request; more get 431.
pub const MAX_HEADERS: usize = 256;
/// How long an idle keep-alive connection (or a stalled one) stays open.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often blocked reads wake up to check the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// How long a connection that is being closed is drained so that the client can read our last
/// response instead of getting a reset.
const LINGER: Duration = Duration::from_secs(2);

/// One parsed request.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    /// The request target as sent, query string included (`/v1/models?x=1`).
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Request {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split(['?', '#']).next().unwrap_or("")
    }
}

/// One response. `Content-Length`, `Connection` and `Transfer-Encoding` headers set by the
/// handler are ignored; the server writes its own.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with this status.
    pub fn empty(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: Vec::new() }
    }
    /// A JSON response (`Content-Type: application/json`).
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        let body = serde_json::to_vec(v).expect("a serde_json::Value serialises");
        Response { status, headers: vec![("Content-Type".into(), "application/json".into())], body }
    }
    /// A plain-text response (`Content-Type: text/plain; charset=utf-8`).
    pub fn text(status: u16, s: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: s.as_bytes().to_vec(),
        }
    }
    /// Set a header, replacing any of the same name (case-insensitive).
    pub fn with_header(mut self, k: &str, v: &str) -> Response {
        self.headers.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the handler wants done with a request.
#[derive(Clone, Debug)]
pub enum Reply {
    Respond(Response),
    /// Close the connection without answering (a connection reset for the client).
    Drop,
    /// Sleep, then close without answering (a client timeout). Cut short by [`Server::stop`].
    Hang(Duration),
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::Respond(r)
    }
}

/// The request handler, shared by all connection threads.
pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

struct Shared {
    stop: AtomicBool,
    /// Open connections; the accept loop waits while this is at `max`.
    active: Mutex<usize>,
    freed: Condvar,
    max: usize,
    idle: Duration,
    handler: Handler,
    conns: Mutex<Vec<JoinHandle<()>>>,
    accepted: AtomicU64,
    served: AtomicU64,
}

/// A running server. Stops (and joins its threads) on [`Server::stop`] or when dropped.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Bind `addr` (e.g. "127.0.0.1:0"), serve with one thread per connection (up to
    /// `max_connections`, further connections wait in the backlog), HTTP/1.1 keep-alive,
    /// Content-Length bodies (also `Transfer-Encoding: chunked` request bodies), 413 for bodies
    /// over 64 MiB, 400 for malformed requests.
    pub fn start(addr: &str, max_connections: usize, handler: Handler) -> io::Result<Server> {
        Server::start_with_idle_timeout(addr, max_connections, IDLE_TIMEOUT, handler)
    }

    /// [`Server::start`] with another idle keep-alive timeout (tests).
    pub fn start_with_idle_timeout(
        addr: &str,
        max_connections: usize,
        idle_timeout: Duration,
        handler: Handler,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            active: Mutex::new(0),
            freed: Condvar::new(),
            max: max_connections.max(1),
            idle: idle_timeout,
            handler,
            conns: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            served: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let accept = thread::Builder::new().name("httpd-accept".into()).spawn(move || accept_loop(listener, sh))?;
        Ok(Server { addr, shared, accept: Some(accept) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Requests answered (or dropped) by the handler so far.
    pub fn requests_served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// Stop accepting, close idle connections, join threads. A request being handled is
    /// finished and answered (with `Connection: close`) first; a [`Reply::Hang`] is cut short.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else { return };
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.freed.notify_all();
        // Wake the accept loop if it is blocked in accept().
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let _ = accept.join();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, sh: Arc<Shared>) {
    loop {
        {
            let mut n = sh.active.lock().unwrap();
            while *n >= sh.max && !sh.stop.load(Ordering::SeqCst) {
                n = sh.freed.wait_timeout(n, POLL).unwrap().0;
            }
        }
        if sh.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) => {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                // EMFILE and friends: back off briefly rather than spin.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if sh.stop.load(Ordering::SeqCst) {
            break;
        }
        sh.accepted.fetch_add(1, Ordering::Relaxed);
        *sh.active.lock().unwrap() += 1;
        let sh2 = sh.clone();
        let spawned = thread::Builder::new().name("httpd-conn".into()).spawn(move || {
            let _ = catch_unwind(AssertUnwindSafe(|| serve_connection(stream, &sh2)));
            *sh2.active.lock().unwrap() -= 1;
            sh2.freed.notify_all();
        });
        let mut conns = sh.conns.lock().unwrap();
        match spawned {
            Ok(h) => conns.push(h),
            Err(_) => {
                *sh.active.lock().unwrap() -= 1;
            }
        }
        // Reap finished connection threads so the list stays short.
        let mut i = 0;
        while i < conns.len() {
            if conns[i].is_finished() {
                let _ = conns.swap_remove(i).join();
            } else {
                i += 1;
            }
        }
    }
    drop(listener);
    let conns = std::mem::take(&mut *sh.conns.lock().unwrap());
    for h in conns {
        let _ = h.join();
    }
}

/// Why reading a request stopped.
enum Fail {
    /// Close quietly: EOF, I/O error, idle timeout, server stopping.
    Close,
    /// Answer with this status and message, then close.
    Status(u16, &'static str),
}

struct Conn<'a> {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    sh: &'a Shared,
}

struct Head {
    req: Request,
    keep_alive: bool,
    http10: bool,
}

fn serve_connection(stream: TcpStream, sh: &Shared) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_write_timeout(Some(sh.idle.max(Duration::from_secs(1))));
    let mut c = Conn { stream, buf: Vec::with_capacity(8192), pos: 0, sh };
    loop {
        let head = match c.read_request() {
            Ok(h) => h,
            Err(Fail::Close) => return,
            Err(Fail::Status(status, msg)) => {
                let _ = c.write_response(&Response::text(status, msg), false, false, false);
                c.linger();
                return;
            }
        };
        let reply = match catch_unwind(AssertUnwindSafe(|| (sh.handler)(&head.req))) {
            Ok(r) => r,
            Err(_) => Reply::Respond(Response::text(500, "internal server error (handler panicked)")),
        };
        sh.served.fetch_add(1, Ordering::Relaxed);
        match reply {
            Reply::Respond(resp) => {
                let wants_close = resp
                    .header("connection")
                    .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
                let keep = head.keep_alive && !wants_close && !sh.stop.load(Ordering::SeqCst);
                let head_only = head.req.method.eq_ignore_ascii_case("HEAD");
                if c.write_response(&resp, keep, head.http10, head_only).is_err() {
                    return;
                }
                if !keep {
                    c.linger();
                    return;
                }
            }
            Reply::Drop => {
                let _ = c.stream.shutdown(Shutdown::Both);
                return;
            }
            Reply::Hang(d) => {
                let until = Instant::now() + d;
                while !sh.stop.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    thread::sleep((until - now).min(POLL));
                }
                let _ = c.stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

impl Conn<'_> {
    /// Read more bytes into the buffer. Fails on EOF, error, stop, or `idle` without data.
    fn fill(&mut self) -> Result<(), Fail> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 1 << 16 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let started = Instant::now();
        let mut chunk = [0u8; 1 << 16];
        loop {
            if self.sh.stop.load(Ordering::SeqCst) {
                return Err(Fail::Close);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(Fail::Close),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if started.elapsed() >= self.sh.idle {
                        return Err(Fail::Close);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Fail::Close),
            }
        }
    }

    /// One line without its CRLF (or bare LF). Longer than `limit` bytes: `too_long`.
    fn read_line(&mut self, limit: usize, too_long: Fail) -> Result<Vec<u8>, Fail> {
        let mut scanned = 0;
        loop {
            let avail = &self.buf[self.pos..];
            if let Some(i) = avail[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i;
                if end > limit {
                    return Err(too_long);
                }
                let mut line = avail[..end].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.pos += end + 1;
                return Ok(line);
            }
            scanned = avail.len();
            if scanned > limit {
                return Err(too_long);
            }
            self.fill()?;
        }
    }

    /// Append exactly `n` bytes to `out`.
    fn read_exact_into(&mut self, n: usize, out: &mut Vec<u8>) -> Result<(), Fail> {
        let mut left = n;
        loop {
            let take = left.min(self.buf.len() - self.pos);
            out.extend_from_slice(&self.buf[self.pos..self.pos + take]);
            self.pos += take;
            left -= take;
            if left == 0 {
                return Ok(());
            }
            self.fill()?;
        }
    }

    fn read_request(&mut self) -> Result<Head, Fail> {
        let bad = |m: &'static str| Fail::Status(400, m);
        // Request line (a few stray empty lines before it are tolerated, RFC 9112 §2.2).
        let mut line = Vec::new();
        for _ in 0..8 {
            line = self.read_line(MAX_HEAD, Fail::Status(431, "request line too long"))?;
            if !line.is_empty() {
                break;
            }
        }
        let mut head_bytes = line.len();
        let line = String::from_utf8(line).map_err(|_| bad("request line is not UTF-8"))?;
        let mut parts = line.split(' ');
        let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("malformed request line"));
        };
        if method.is_empty() || !method.bytes().all(is_tchar) {
            return Err(bad("malformed method"));
        }
        if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("malformed request target"));
        }
        let http10 = match version {
            "HTTP/1.1" => false,
            "HTTP/1.0" => true,
            _ => return Err(bad("unsupported HTTP version")),
        };
        // Headers.
        let mut headers: Vec<(String, String)> = Vec::new();
        loop {
            let l = self.read_line(MAX_HEAD, Fail::Status(431, "request header too large"))?;
            head_bytes += l.len() + 2;
            if head_bytes > MAX_HEAD {
                return Err(Fail::Status(431, "request header too large"));
            }
            if l.is_empty() {
                break;
            }
            if headers.len() >= MAX_HEADERS {
                return Err(Fail::Status(431, "too many request headers"));
            }
            if l[0] == b' ' || l[0] == b'\t' {
                return Err(bad("obsolete header line folding"));
            }
            let l = String::from_utf8(l).map_err(|_| bad("header is not UTF-8"))?;
            let Some((name, value)) = l.split_once(':') else { return Err(bad("malformed header line")) };
            if name.is_empty() || !name.bytes().all(is_tchar) {
                return Err(bad("malformed header name"));
            }
            headers.push((name.to_string(), value.trim_matches([' ', '\t']).to_string()));
        }
        let get_all = |n: &'static str| headers.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_str());
        let tokens = |n: &'static str| -> Vec<String> {
            get_all(n).flat_map(|v| v.split(',')).map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()).collect()
        };
        let conn = tokens("connection");
        let keep_alive = if http10 {
            conn.iter().any(|t| t == "keep-alive")
        } else {
            !conn.iter().any(|t| t == "close")
        };
        let te = tokens("transfer-encoding");
        let cls: Vec<&str> = get_all("content-length").collect();
        let expect = tokens("expect");
        if !expect.is_empty() && expect != ["100-continue"] {
            return Err(Fail::Status(417, "unsupported Expect"));
        }
        let continue_ok = !expect.is_empty() && !http10;
        let mut body = Vec::new();
        if !te.is_empty() {
            if !cls.is_empty() {
                return Err(bad("both Transfer-Encoding and Content-Length"));
            }
            if te != ["chunked"] {
                return Err(Fail::Status(501, "unsupported transfer coding (only chunked)"));
            }
            if continue_ok {
                self.send_continue()?;
            }
            self.read_chunked(&mut body)?;
        } else if !cls.is_empty() {
            let mut len: Option<usize> = None;
            for v in cls.iter().flat_map(|v| v.split(',')) {
                let v = v.trim();
                if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("malformed Content-Length"));
                }
                let n: usize = v.parse().map_err(|_| bad("malformed Content-Length"))?;
                if len.is_some_and(|l| l != n) {
                    return Err(bad("conflicting Content-Length"));
                }
                len = Some(n);
            }
            let len = len.unwrap_or(0);
            if len > MAX_BODY {
                return Err(Fail::Status(413, "request body too large (limit 64 MiB)"));
            }
            if continue_ok && len > 0 && self.pos == self.buf.len() {
                self.send_continue()?;
            }
            body.reserve(len.min(1 << 20));
            self.read_exact_into(len, &mut body)?;
        }
        let req = Request { method: method.to_string(), path: target.to_string(), headers, body };
        Ok(Head { req, keep_alive, http10 })
    }

    fn read_chunked(&mut self, body: &mut Vec<u8>) -> Result<(), Fail> {
        let bad = |m: &'static str| Fail::Status(400, m);
        loop {
            let line = self.read_line(4096, bad("chunk size line too long"))?;
            let size = line.split(|&b| b == b';').next().unwrap_or(&[]);
            let size = std::str::from_utf8(size).map_err(|_| bad("malformed chunk size"))?.trim_matches([' ', '\t']);
            if size.is_empty() || size.len() > 16 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("malformed chunk size"));
            }
            let size = u64::from_str_radix(size, 16).map_err(|_| bad("malformed chunk size"))?;
            if size == 0 {
                // Trailer section, ignored.
                let mut trailer = 0usize;
                loop {
                    let t = self.read_line(MAX_HEAD, Fail::Status(431, "trailer too large"))?;
                    trailer += t.len() + 2;
                    if trailer > MAX_HEAD {
                        return Err(Fail::Status(431, "trailer too large"));
                    }
                    if t.is_empty() {
                        return Ok(());
                    }
                }
            }
            if size > (MAX_BODY - body.len()) as u64 {
                return Err(Fail::Status(413, "request body too large (limit 64 MiB)"));
            }
            self.read_exact_into(size as usize, body)?;
            let crlf = self.read_line(2, bad("missing CRLF after chunk"))?;
            if !crlf.is_empty() {
                return Err(bad("missing CRLF after chunk"));
            }
        }
    }

    fn send_continue(&mut self) -> Result<(), Fail> {
        self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map_err(|_| Fail::Close)
    }

    fn write_response(&mut self, r: &Response, keep: bool, http10: bool, head_only: bool) -> io::Result<()> {
        let mut out = Vec::with_capacity(256 + r.body.len());
        write!(out, "HTTP/1.1 {} {}\r\n", r.status, reason(r.status))?;
        for (k, v) in &r.headers {
            if ["content-length", "connection", "transfer-encoding"].iter().any(|h| k.eq_ignore_ascii_case(h)) {
                continue;
            }
            // Never let a handler's header break the framing.
            if k.is_empty() || k.bytes().any(|b| !is_tchar(b)) || v.bytes().any(|b| b == b'\r' || b == b'\n') {
                continue;
            }
            write!(out, "{k}: {v}\r\n")?;
        }
        let no_body = r.status == 204 || r.status == 304 || (100..200).contains(&r.status);
        if r.status != 204 && !(100..200).contains(&r.status) {
            write!(out, "Content-Length: {}\r\n", if no_body { 0 } else { r.body.len() })?;
        }
        if !keep {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !no_body && !head_only {
            out.extend_from_slice(&r.body);
        }
        self.stream.write_all(&out)?;
        self.stream.flush()
    }

    /// Close gracefully: stop writing, then discard what the client still sends (for a while) so
    /// that closing with unread data does not reset the connection before the client has read
    /// our last response.
    fn linger(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let started = Instant::now();
        let mut last_data = Instant::now();
        let mut chunk = [0u8; 1 << 16];
        while started.elapsed() < LINGER * 4 && last_data.elapsed() < LINGER {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(_) => last_data = Instant::now(),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {
                    if self.sh.stop.load(Ordering::SeqCst) && last_data.elapsed() >= POLL * 4 {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
}

/// RFC 9110 token character.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// A tiny blocking HTTP/1.1 client for this crate's unit tests (raw `TcpStream`, keep-alive,
/// `Content-Length` or read-to-EOF bodies).
#[cfg(test)]
pub(crate) mod testclient {
    use std::io::{self, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    #[derive(Debug)]
    pub(crate) struct Resp {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Resp {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
        }
    }

    pub(crate) struct Client {
        pub stream: TcpStream,
        buf: Vec<u8>,
    }

    impl Client {
        pub fn connect(addr: SocketAddr) -> Client {
            let stream = TcpStream::connect(addr).expect("connect");
            stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            stream.set_nodelay(true).unwrap();
            Client { stream, buf: Vec::new() }
        }

        pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.stream.write_all(bytes)
        }

        pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Resp> {
            let mut out = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            if !body.is_empty() || method == "POST" {
                out.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            out.push_str("\r\n");
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(body);
            self.send_raw(&bytes)?;
            self.read_response()
        }

        pub fn post_json(&mut self, path: &str, v: &serde_json::Value) -> io::Result<Resp> {
            let body = serde_json::to_vec(v).unwrap();
            self.request("POST", path, &[("Content-Type", "application/json")], &body)
        }

        fn fill(&mut self) -> io::Result<usize> {
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk)?;
            self.buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }

        pub fn read_response(&mut self) -> io::Result<Resp> {
            let end = loop {
                if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
                if self.fill()? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response"));
                }
            };
            let head = String::from_utf8(self.buf[..end].to_vec()).expect("UTF-8 head");
            self.buf.drain(..end + 4);
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap();
            let status: u16 = status_line.split(' ').nth(1).expect("status").parse().expect("numeric status");
            let headers: Vec<(String, String)> = lines
                .map(|l| {
                    let (k, v) = l.split_once(':').expect("header line");
                    (k.to_string(), v.trim().to_string())
                })
                .collect();
            let mut r = Resp { status, headers, body: Vec::new() };
            if let Some(len) = r.header("content-length") {
                let len: usize = len.parse().unwrap();
                while self.buf.len() < len {
                    if self.fill()? == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
                    }
                }
                r.body = self.buf.drain(..len).collect();
            } else if status >= 200 && status != 204 && status != 304 {
                while self.fill()? > 0 {}
                r.body = std::mem::take(&mut self.buf);
            }
            Ok(r)
        }

        /// True when the server has closed the connection (EOF or reset) within the read timeout.
        pub fn is_closed(&mut self) -> bool {
            let mut b = [0u8; 1];
            match self.stream.read(&mut b) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testclient::Client;
    use super::*;
    use serde_json::json;

    /// Echo: reports method, path, body length and the body as text; special paths for faults.
    fn echo() -> Handler {
        Arc::new(|r: &Request| match r.path_only() {
            "/drop" => Reply::Drop,
            "/hang" => Reply::Hang(Duration::from_millis(300)),
            "/panic" => panic!("test panic"),
            "/close" => Reply::Respond(Response::text(200, "bye").with_header("Connection", "close")),
            _ => Reply::Respond(Response::json(
                200,
                &json!({
                    "method": r.method, "path": r.path, "len": r.body.len(),
                    "body": String::from_utf8_lossy(&r.body), "x": r.header("x-test"),
                }),
            )),
        })
    }

    fn server() -> Server {
        Server::start("127.0.0.1:0", 128, echo()).unwrap()
    }

    #[test]
    fn url_and_addr() {
        let s = server();
        assert!(s.addr().ip().is_loopback());
        assert_eq!(s.url(), format!("http://127.0.0.1:{}", s.addr().port()));
        s.stop();
    }

    #[test]
    fn keep_alive_several_requests_on_one_connection() {
        let s = server();
        let mut c = Client::connect(s.addr());
        for i in 0..10 {
            let body = format!("hello {i}");
            let r = c.request("POST", &format!("/p/{i}?q=1"), &[("X-Test", "yes")], body.as_bytes()).unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.header("connection"), None, "keep-alive responses carry no Connection: close");
            let v = r.json();
            assert_eq!(v["path"], format!("/p/{i}?q=1"));
            assert_eq!(v["body"], body);
            assert_eq!(v["x"], "yes", "header lookup is case-insensitive");
        }
        let r = c.request("GET", "/get", &[], b"").unwrap();
        assert_eq!(r.json()["method"], "GET");
        assert_eq!(s.connections_accepted(), 1, "all requests went over one connection");
        assert_eq!(s.requests_served(), 11);
        s.stop();
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let s = server();
        let mut c = Client::connect(s.addr());
        c.send_raw(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\n\r\n")
            .unwrap();
        assert_eq!(c.read_response().unwrap().json()["path"], "/a");
        let b = c.read_response().unwrap().json();
        assert_eq!((b["path"].as_str(), b["body"].as_str()), (Some("/b"), Some("abc")));
        assert_eq!(c.read_response().unwrap().json()["path"], "/c");
    }

    #[test]
    fn chunked_request_body() {
        let s = server();
        let mut c = Client::connect(s.addr());
        c.send_raw(
            b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
        )
        .unwrap();
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["body"], "hello 0123456789");
        // The connection is still usable afterwards.
        let r = c.request("GET", "/after", &[], b"").unwrap();
        assert_eq!(r.json()["path"], "/after");
    }

    #[test]
    fn malformed_chunk_is_400() {
        let s = server();
        let mut c = Client::connect(s.addr());
        c.send_raw(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n").unwrap();
        assert_eq!(c.read_response().unwrap().status, 400);
        assert!(c.is_closed());
    }

    #[test]
    fn body_over_64_mib_is_413() {
        let s = server();
        let mut c = Client::connect(s.addr());
        c.send_raw(format!("POST /big HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1).as_bytes()).unwrap();
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 413);
        assert_eq!(r.header("connection"), Some("close"));
        // A chunk announcing more than the limit is refused before it is read.
        let mut c = Client::connect(s.addr());
        c.send_raw(format!("POST /big HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", MAX_BODY + 1).as_bytes())
            .unwrap();
        assert_eq!(c.read_response().unwrap().status, 413);
        // Exactly at the limit is accepted.
        let mut c = Client::connect(s.addr());
        let body = vec![b'a'; MAX_BODY];
        let r = c.request("POST", "/limit", &[], &body).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["len"], MAX_BODY);
    }

    #[test]
    fn body_over_limit_sent_in_full_still_gets_413() {
        // A client that writes its whole (too large) body before reading still sees the 413.
        let s = server();
        let mut c = Client::connect(s.addr());
        let mut req = format!("POST /big HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 10).into_bytes();
        req.resize(req.len() + MAX_BODY + 10, b'x');
        c.send_raw(&req).unwrap();
        assert_eq!(c.read_response().unwrap().status, 413);
    }

    #[test]
    fn malformed_requests_are_400() {
        let s = server();
        for raw in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            let mut c = Client::connect(s.addr());
            c.send_raw(raw).unwrap();
            let r = c.read_response().unwrap();
            assert_eq!(r.status, 400, "for {:?}", String::from_utf8_lossy(raw));
            assert!(c.is_closed());
        }
        let mut c = Client::connect(s.addr());
        c.send_raw(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap();
        assert_eq!(c.read_response().unwrap().status, 501);
        let mut c = Client::connect(s.addr());
        let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD + 10));
        c.send_raw(huge.as_bytes()).unwrap();
        assert_eq!(c.read_response().unwrap().status, 431);
        // The server is still fine.
        let mut c = Client::connect(s.addr());
        assert_eq!(c.request("GET", "/", &[], b"").unwrap().status, 200);
    }

    #[test]
    fn drop_reply_closes_without_answer() {
        let s = server();
        let mut c = Client::connect(s.addr());
        assert_eq!(c.request("GET", "/ok", &[], b"").unwrap().status, 200);
        let err = c.request("GET", "/drop", &[], b"").unwrap_err();
        assert!(
            matches!(err.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe),
            "{err:?}"
        );
    }

    #[test]
    fn hang_reply_waits_then_closes_without_answer() {
        let s = server();
        let mut c = Client::connect(s.addr());
        let t = Instant::now();
        let err = c.request("GET", "/hang", &[], b"").unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
        assert!(matches!(err.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset), "{err:?}");
        // A client with a shorter timeout sees a timeout.
        let mut c = Client::connect(s.addr());
        c.stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let err = c.request("GET", "/hang", &[], b"").unwrap_err();
        assert!(matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{err:?}");
    }

    #[test]
    fn handler_panic_is_500() {
        let s = server();
        let mut c = Client::connect(s.addr());
        assert_eq!(c.request("GET", "/panic", &[], b"").unwrap().status, 500);
        assert_eq!(c.request("GET", "/fine", &[], b"").unwrap().status, 200);
    }

    #[test]
    fn connection_close_http10_and_head() {
        let s = server();
        let mut c = Client::connect(s.addr());
        let r = c.request("GET", "/x", &[("Connection", "close")], b"").unwrap();
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.is_closed());
        let mut c = Client::connect(s.addr());
        let r = c.request("GET", "/close", &[], b"").unwrap();
        assert_eq!((r.status, r.header("connection")), (200, Some("close")));
        assert!(c.is_closed());
        let mut c = Client::connect(s.addr());
        c.send_raw(b"GET /old HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(c.read_response().unwrap().json()["path"], "/old");
        assert!(c.is_closed());
        let mut c = Client::connect(s.addr());
        c.send_raw(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert_eq!(c.read_response().unwrap().header("connection"), Some("keep-alive"));
        assert_eq!(c.request("GET", "/again", &[], b"").unwrap().json()["path"], "/again");
    }

    #[test]
    fn head_response_has_no_body() {
        let s = server();
        let mut c = Client::connect(s.addr());
        c.send_raw(b"HEAD /h HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n").unwrap();
        // Read the HEAD response head by hand: a Content-Length but no body bytes follow.
        c.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut all = Vec::new();
        let mut chunk = [0u8; 4096];
        while all.windows(4).filter(|w| *w == b"\r\n\r\n").count() < 2 {
            let n = c.stream.read(&mut chunk).unwrap();
            assert!(n > 0);
            all.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&all);
        let second = text.find("\r\n\r\n").unwrap() + 4;
        assert!(text[second..].starts_with("HTTP/1.1 200 OK"), "{text}");
    }

    #[test]
    fn expect_100_continue() {
        let s = server();
        let mut c = Client::connect(s.addr());
        c.send_raw(b"POST /e HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n").unwrap();
        let mut got = [0u8; 25];
        c.stream.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"HTTP/1.1 100 Continue\r\n\r\n");
        c.send_raw(b"data").unwrap();
        assert_eq!(c.read_response().unwrap().json()["body"], "data");
    }

    #[test]
    fn many_concurrent_keep_alive_clients() {
        let s = Server::start("127.0.0.1:0", 256, echo()).unwrap();
        let addr = s.addr();
        let t = Instant::now();
        let threads: Vec<_> = (0..80)
            .map(|i| {
                thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    for j in 0..25 {
                        let body = format!("client {i} request {j}");
                        let r = c.request("POST", "/echo", &[], body.as_bytes()).unwrap();
                        assert_eq!(r.status, 200);
                        assert_eq!(r.json()["body"], body);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let el = t.elapsed();
        eprintln!("2000 requests over 80 keep-alive connections in {el:?} ({:.0}/s)", 2000.0 / el.as_secs_f64());
        assert_eq!(s.connections_accepted(), 80);
        assert_eq!(s.requests_served(), 2000);
        s.stop();
    }

    #[test]
    fn connections_over_the_limit_wait_in_the_backlog() {
        let s = Server::start("127.0.0.1:0", 4, echo()).unwrap();
        let addr = s.addr();
        let threads: Vec<_> = (0..32)
            .map(|i| {
                thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    let r = c.request("GET", &format!("/{i}"), &[("Connection", "close")], b"").unwrap();
                    assert_eq!(r.json()["path"], format!("/{i}"));
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(s.connections_accepted(), 32);
    }

    #[test]
    fn limit_holds_while_connections_stay_open() {
        let s = Server::start("127.0.0.1:0", 2, echo()).unwrap();
        let mut a = Client::connect(s.addr());
        let mut b = Client::connect(s.addr());
        assert_eq!(a.request("GET", "/a", &[], b"").unwrap().status, 200);
        assert_eq!(b.request("GET", "/b", &[], b"").unwrap().status, 200);
        // A third connection is not served while the two stay open...
        let mut c = Client::connect(s.addr());
        c.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        c.send_raw(b"GET /c HTTP/1.1\r\n\r\n").unwrap();
        let err = c.read_response().unwrap_err();
        assert!(matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{err:?}");
        // ...and is once one closes.
        drop(a);
        c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(c.read_response().unwrap().json()["path"], "/c");
    }

    #[test]
    fn idle_connections_time_out() {
        let s = Server::start_with_idle_timeout("127.0.0.1:0", 8, Duration::from_millis(200), echo()).unwrap();
        let mut c = Client::connect(s.addr());
        assert_eq!(c.request("GET", "/", &[], b"").unwrap().status, 200);
        let t = Instant::now();
        assert!(c.is_closed());
        assert!(t.elapsed() >= Duration::from_millis(150));
    }

    #[test]
    fn stop_closes_idle_connections_and_joins() {
        let s = server();
        let addr = s.addr();
        let mut c = Client::connect(addr);
        assert_eq!(c.request("GET", "/", &[], b"").unwrap().status, 200);
        let mut hanging = Client::connect(addr);
        hanging.send_raw(b"GET /hang HTTP/1.1\r\n\r\n").unwrap();
        thread::sleep(Duration::from_millis(50));
        s.stop();
        assert!(c.is_closed(), "idle connection closed by stop");
        assert!(hanging.read_response().is_err());
        assert!(TcpStream::connect(addr).is_err(), "listener closed");
    }

    #[test]
    fn drop_stops_the_server() {
        let addr = {
            let s = server();
            s.addr()
        };
        assert!(TcpStream::connect(addr).is_err());
    }
}
