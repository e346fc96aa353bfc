//! The public status page in a real headless Chromium: served over loopback HTTP, the DOM as
//! the browser built it has the incident and its timeline (and no script from hostile input),
//! and a phone-sized screenshot is saved to `target/test-artifacts/status-page.png`.

#[path = "../../tests/support/chromium.rs"]
mod chromium;
mod page_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use notifier::page::{IncidentStatus, PAGE_PATH, Update, render_html, sample_model};
use page_support::now;

/// Serves `html` at [`PAGE_PATH`] (404 elsewhere) on a loopback port, recording request paths.
fn serve(html: String) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let _ = respond(conn, &html, &log);
        }
    });
    (addr, seen)
}

fn respond(conn: TcpStream, html: &str, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    log.lock().unwrap().push(path.clone());
    let (status, kind, body) = if path == PAGE_PATH {
        ("200 OK", "text/html; charset=utf-8", html)
    } else {
        ("404 Not Found", "text/plain", "not found")
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

#[test]
fn status_page_renders_in_headless_chromium() {
    let mut model = sample_model(now());
    // Hostile input: if it were not escaped, Chromium would run it and change the title.
    let current = model.current.as_mut().unwrap();
    current.updates.push(Update {
        at: now() - TimeDelta::minutes(2),
        status: IncidentStatus::Monitoring,
        body: "Failover done <script>document.title='pwned'</script> & watching.".into(),
    });
    current.status = IncidentStatus::Monitoring;
    let (addr, seen) = serve(render_html(&model).unwrap());
    let url = format!("http://{addr}{PAGE_PATH}");
    let profile = tempfile::tempdir().unwrap();

    let dom = chromium::run(profile.path(), &["--dump-dom", &url]);
    assert!(
        seen.lock().unwrap().contains(&PAGE_PATH.to_owned()),
        "Chromium fetched the page"
    );
    assert!(
        dom.contains("<title>Example Corp status: Partial outage</title>"),
        "{dom}"
    );
    assert!(
        dom.contains("<h3>Service Degradation - DR Activated</h3>"),
        "{dom}"
    );
    assert!(
        !dom.contains("<script"),
        "a script element made it into the DOM:\n{dom}"
    );
    assert!(!dom.contains("pwned</title>"));
    // The timeline, newest first, each entry with its status, time and body as rendered.
    let entries = [
        (
            "Monitoring",
            "2026-11-26T14:03:00Z",
            "Failover done &lt;script&gt;document.title='pwned'&lt;/script&gt; &amp; watching.",
        ),
        (
            "Identified",
            "2026-11-26T13:53:00Z",
            "Traffic is moving to the DR region (us-west-2).\nExpect",
        ),
        (
            "Investigating",
            "2026-11-26T13:30:00Z",
            "We are experiencing issues in our primary region. DR site activated.",
        ),
    ];
    let mut last = 0;
    for (status, at, body) in entries {
        let head = format!(
            "<p class=\"update-head\"><strong>{status}</strong> · <time datetime=\"{at}\">"
        );
        let pos = dom
            .find(&head)
            .unwrap_or_else(|| panic!("no timeline entry {head}\n{dom}"));
        assert!(pos > last, "{status} is out of order");
        let body_pos = dom[pos..]
            .find(body)
            .unwrap_or_else(|| panic!("no body {body:?}\n{dom}"));
        assert!(body_pos < 300, "{status}'s body follows its heading");
        last = pos;
    }
    // Past incidents and evidence are there too.
    assert!(dom.contains("<h3>Elevated API error rates</h3>"));
    assert!(dom.contains("Targets met"));

    // A phone-sized screenshot, kept as a test artifact. A blank 390×844 PNG compresses to a
    // few kB; a page full of text does not.
    let png = chromium::artifact_dir().join("status-page.png");
    let bytes = chromium::screenshot(profile.path(), &url, &png, (390, 844), 20_000);
    eprintln!("screenshot: {} ({bytes} bytes)", png.display());
}
