//! Swagger UI in a real browser: headless Chromium, driven over WebDriver by
//! chromedriver, against the built binary. The page renders every operation
//! of the spec, "Try it out" works for `GET /api/v1/info` and for
//! `POST /api/v1/echo` (a valid and an invalid body), nothing is requested
//! from outside the machine, and the console shows no error.
//!
//! It leaves a screenshot in `target/swagger-ui.png`; with
//! `UPDATE_SCREENSHOT=1` it also refreshes `docs/swagger-ui.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; `cargo test -- --ignored`
//! runs it.

mod common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use common::{DEADLINE, free_port, raw, scratch_dir, spawn_binary};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The browser's viewport, and so the screenshot.
const WINDOW: (u32, u32) = (1280, 1600);
/// The whole walk through the page may take this long, however it hangs.
const WALK_DEADLINE: Duration = Duration::from_secs(120);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);

/// A session on chromedriver, for what WebDriver has no standard command
/// for: chromedriver's own log endpoint.
#[derive(Clone)]
struct Session {
    driver: SocketAddr,
    id: String,
}

/// One request to chromedriver: its status and JSON body, or None when it
/// could not be reached.
fn driver_http(
    driver: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {driver}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let res = raw(driver, request.as_bytes()).ok()?;
    let json = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
    Some((res.status, json))
}

impl Session {
    /// Takes the entries of a log (`browser`, `performance`) gathered since
    /// the last call.
    fn take_log(&self, kind: &str) -> Vec<Value> {
        let path = format!("/session/{}/se/log", self.id);
        let (status, body) = driver_http(self.driver, "POST", &path, Some(&json!({"type": kind})))
            .expect("chromedriver answers");
        assert_eq!(status, 200, "reading the {kind} log: {body}");
        body["value"].as_array().cloned().unwrap_or_default()
    }
}

/// chromedriver on a free loopback port, in its own process group so that
/// the browser it starts goes with it. When dropped it ends the session
/// (closing the browser) and kills the group.
struct ChromeDriver {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    session: Option<String>,
}

impl ChromeDriver {
    fn start(dir: &Path) -> Self {
        let log = dir.join("chromedriver.log");
        // chromedriver has no "--port=0": a free port from the OS, and
        // another one if some other process takes it first.
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("start {CHROMEDRIVER}: {e}"));
            let mut driver = ChromeDriver {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                log: log.clone(),
                session: None,
            };
            if driver.wait_ready() {
                return driver;
            }
        }
        panic!(
            "chromedriver exited at start three times; {}",
            read_log(&log)
        );
    }

    /// Polls `/status` until the driver is ready (true) or has exited
    /// (false: its port was taken).
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if self.child.try_wait().expect("try_wait").is_some() {
                return false;
            }
            if driver_http(self.addr, "GET", "/status", None)
                .is_some_and(|(code, v)| code == 200 && v["value"]["ready"] == true)
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer /status within {DEADLINE:?}; {}",
                read_log(&self.log)
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = driver_http(self.addr, "DELETE", &format!("/session/{id}"), None);
        }
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn read_log(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(log) => format!("chromedriver's log:\n{log}"),
        Err(e) => format!("no chromedriver log ({e})"),
    }
}

/// Headless Chromium with a fresh profile and nothing running in the
/// background that would call out, logging its console and network events.
fn capabilities(profile: &Path) -> fantoccini::wd::Capabilities {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        // /dev/shm is small in many containers.
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-quic",
        "--hide-scrollbars",
        &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        &format!("--user-data-dir={}", profile.display()),
    ];
    let deadline_ms = DEADLINE.as_millis() as u64;
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
        "timeouts": {"pageLoad": deadline_ms, "script": deadline_ms, "implicit": 0},
    });
    match caps {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object"),
    }
}

/// Runs `probe` until it returns `Ok`; fails the test after `DEADLINE` with
/// the last thing it saw.
async fn poll<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {DEADLINE:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// The element `css` finds inside `parent`, once it is there.
async fn wait_in(parent: &Element, css: &str) -> Element {
    poll(css, async || {
        parent
            .find(Locator::Css(css))
            .await
            .map_err(|e| e.to_string())
    })
    .await
}

/// The number of operations in the spec: what Swagger UI must render.
fn operations_in_spec() -> usize {
    let spec =
        serde_json::to_value(portbound_service::app::service().openapi_doc()).expect("the spec");
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    spec["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| methods.iter().filter(|m| item.get(**m).is_some()).count())
        .sum()
}

/// The rendered block of one operation.
async fn operation(client: &Client, method: &str, path: &str) -> Element {
    let xpath = format!(
        "//div[contains(concat(' ', @class, ' '), ' opblock-{method} ')]\
         [.//*[@data-path='{path}']]"
    );
    poll(&format!("the block of {method} {path}"), async || {
        client
            .find(Locator::XPath(&xpath))
            .await
            .map_err(|e| e.to_string())
    })
    .await
}

/// Expands an operation and presses "Try it out".
async fn try_it_out(block: &Element) {
    wait_in(block, ".opblock-summary-control")
        .await
        .click()
        .await
        .expect("expand the operation");
    wait_in(block, ".try-out__btn")
        .await
        .click()
        .await
        .expect("press Try it out");
    wait_in(block, ".btn.execute").await;
}

/// Types `body` into the operation's request body editor, as a person would.
async fn set_body(block: &Element, body: &str) {
    let textarea = wait_in(block, "textarea.body-param__text").await;
    textarea.clear().await.expect("clear the request body");
    textarea
        .send_keys(body)
        .await
        .expect("type the request body");
    poll("the typed request body", async || {
        match textarea.prop("value").await {
            Ok(Some(value)) if value == body => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// What the page shows of a live response.
#[derive(Debug)]
struct Shown {
    status: u16,
    body: Value,
    headers: String,
    curl: String,
}

/// Presses "Execute" and reads the response as the page renders it. A
/// response shown before is cleared first, so the one read is the new one.
async fn execute(block: &Element) -> Shown {
    if let Ok(clear) = block.find(Locator::Css(".btn-clear")).await {
        clear.click().await.expect("press Clear");
        poll("the previous response cleared", async || {
            match block.find_all(Locator::Css(".live-responses-table")).await {
                Ok(tables) if tables.is_empty() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    wait_in(block, ".btn.execute")
        .await
        .click()
        .await
        .expect("press Execute");
    let row = wait_in(block, ".live-responses-table tbody tr.response").await;
    let status = wait_in(&row, ".response-col_status").await;
    let status = status.text().await.expect("the status code");
    let body = wait_in(&row, ".highlight-code pre").await;
    let body = body.text().await.expect("the response body");
    let headers = wait_in(&row, ".headerline").await;
    let headers = headers
        .find(Locator::XPath(".."))
        .await
        .expect("the response headers")
        .text()
        .await
        .expect("the response headers' text");
    let curl = wait_in(block, ".curl-command pre").await;
    let curl = curl.text().await.expect("the curl command");
    Shown {
        status: status
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("a status code, not {status:?}")),
        body: serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("the shown body is not JSON ({e}): {body}")),
        headers,
        curl,
    }
}

/// Console entries at level SEVERE.
fn severe(entries: &[Value]) -> Vec<&Value> {
    entries.iter().filter(|e| e["level"] == "SEVERE").collect()
}

/// The host of a URL the page requested, or None for a URL that carries its
/// own content (`data:`). Any other scheme's "host" is not a loopback name,
/// so a `chrome://` or `about:` request fails the check too.
fn host_of(url: &str) -> Option<&str> {
    if url.starts_with("data:") {
        return None;
    }
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    Some(if host_port.starts_with('[') {
        host_port.split_inclusive(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    })
}

/// Every URL the page requested, from Chromium's network events and from
/// the page's own resource timing.
async fn requested_urls(client: &Client, session: &Session) -> Vec<String> {
    let mut urls = Vec::new();
    for entry in session.take_log("performance") {
        let Some(message) = entry["message"].as_str() else {
            continue;
        };
        let event: Value = serde_json::from_str(message).unwrap_or(Value::Null);
        let params = &event["message"]["params"];
        match event["message"]["method"].as_str() {
            Some("Network.requestWillBeSent") => {
                urls.extend(params["request"]["url"].as_str().map(str::to_owned));
            }
            Some("Network.webSocketCreated") => {
                urls.extend(params["url"].as_str().map(str::to_owned));
            }
            _ => {}
        }
    }
    let seen_by_page = client
        .execute(
            "return [location.href].concat(\
             performance.getEntriesByType('resource').map(e => e.name))",
            vec![],
        )
        .await
        .expect("resource timing");
    urls.extend(
        seen_by_page
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().map(str::to_owned)),
    );
    urls.sort();
    urls.dedup();
    urls
}

/// Where screenshots go: `target/`.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .to_owned()
}

/// The page, the way a person uses it.
async fn walk_through(client: Client, session: Session, base: String) {
    // The browser opens its own chrome:// new tab page first; what that
    // loads is not the page's doing.
    client.goto("about:blank").await.expect("open about:blank");
    // The viewport, not the window, is what the screenshot shows.
    let frame = client
        .execute("return window.outerHeight - window.innerHeight", vec![])
        .await
        .expect("the window's frame");
    let frame = frame.as_u64().unwrap_or(0) as u32;
    client
        .set_window_size(WINDOW.0, WINDOW.1 + frame)
        .await
        .expect("size the window");
    session.take_log("performance");
    session.take_log("browser");
    client
        .goto(&format!("{base}/docs"))
        .await
        .expect("open /docs");
    let url = client.current_url().await.expect("the current URL");
    assert_eq!(
        url.as_str(),
        format!("{base}/docs/"),
        "/docs redirects to /docs/"
    );

    let expected = operations_in_spec();
    assert!(expected >= 5, "the spec has {expected} operations");
    poll("Swagger UI to render every operation", async || {
        let rendered = client
            .find_all(Locator::Css(".opblock"))
            .await
            .map_err(|e| e.to_string())?
            .len();
        if rendered == expected {
            Ok(())
        } else {
            Err(format!("{rendered} of {expected} operations rendered"))
        }
    })
    .await;
    let title = client
        .find(Locator::Css(".info .title"))
        .await
        .expect("title");
    let title = title.text().await.expect("the title's text");
    assert!(title.starts_with("portbound"), "{title}");

    // GET /api/v1/info
    let info = operation(&client, "get", "/api/v1/info").await;
    try_it_out(&info).await;
    let shown = execute(&info).await;
    assert_eq!(shown.status, 200, "{shown:?}");
    assert_eq!(shown.body["service"], "portbound", "{shown:?}");
    assert_eq!(shown.body["platform"], "local", "{shown:?}");
    assert!(
        shown.headers.contains("content-type: application/json"),
        "{shown:?}"
    );

    // POST /api/v1/echo, valid
    let echo = operation(&client, "post", "/api/v1/echo").await;
    try_it_out(&echo).await;
    set_body(&echo, r#"{"message":"hello"}"#).await;
    let shown = execute(&echo).await;
    assert_eq!(shown.status, 200, "{shown:?}");
    assert_eq!(shown.body["message"], "hello", "{shown:?}");
    assert_eq!(shown.body["length"], 5, "{shown:?}");
    assert_eq!(shown.body["request"]["path"], "/api/v1/echo", "{shown:?}");
    assert!(shown.curl.contains(r#"{"message":"hello"}"#), "{shown:?}");

    // Nothing so far may have put an error on the console.
    let console = session.take_log("browser");
    eprintln!("console after rendering and two 200s: {console:#?}");
    assert!(severe(&console).is_empty(), "console errors: {console:#?}");

    // POST /api/v1/echo, invalid: a problem document pointing at /message.
    set_body(&echo, r#"{"message":""}"#).await;
    let shown = execute(&echo).await;
    assert_eq!(shown.status, 422, "{shown:?}");
    assert!(
        shown
            .headers
            .contains("content-type: application/problem+json"),
        "{shown:?}"
    );
    assert_eq!(shown.body["status"], 422, "{shown:?}");
    assert_eq!(shown.body["errors"][0]["pointer"], "/message", "{shown:?}");
    assert!(shown.curl.contains(r#"{"message":""}"#), "{shown:?}");

    // The browser reports the 422 it was asked to provoke; nothing else.
    let console = session.take_log("browser");
    eprintln!("console after the 422: {console:#?}");
    let unexpected: Vec<_> = severe(&console)
        .into_iter()
        .filter(|e| {
            let message = e["message"].as_str().unwrap_or_default();
            !(e["source"] == "network"
                && message.contains(&format!("{base}/api/v1/echo"))
                && message.contains("422"))
        })
        .collect();
    assert!(unexpected.is_empty(), "console errors: {unexpected:#?}");

    // Every request stayed on this machine.
    let urls = requested_urls(&client, &session).await;
    eprintln!("requested by the page: {urls:#?}");
    for must in [
        "/docs/swagger-ui-bundle.js",
        "/api-docs/openapi.json",
        "/api/v1/echo",
    ] {
        assert!(
            urls.iter().any(|u| u.contains(must)),
            "the request log misses {must}: {urls:#?}"
        );
    }
    let outside: Vec<_> = urls
        .iter()
        .filter(|u| host_of(u).is_some_and(|h| !["127.0.0.1", "localhost", "[::1]"].contains(&h)))
        .collect();
    assert!(
        outside.is_empty(),
        "requests that left the machine: {outside:#?}"
    );

    // The picture: every operation, and GET /api/v1/info tried out.
    wait_in(&echo, ".opblock-summary-control")
        .await
        .click()
        .await
        .expect("collapse POST /api/v1/echo");
    poll("POST /api/v1/echo collapsed", async || {
        match echo.find_all(Locator::Css(".opblock-body")).await {
            Ok(bodies) if bodies.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Off the buttons it clicked: no hover or focus marks in the picture.
    let away = MouseActions::new("mouse".into()).then(PointerAction::MoveTo {
        duration: None,
        x: 0.0,
        y: 0.0,
    });
    client
        .perform_actions(away)
        .await
        .expect("move the mouse away");
    client
        .execute(
            "document.activeElement.blur(); window.scrollTo(0, 0)",
            vec![],
        )
        .await
        .expect("scroll to the top");
    let png = client.screenshot().await.expect("a screenshot");
    let shot = target_dir().join("swagger-ui.png");
    std::fs::write(&shot, &png).expect("write target/swagger-ui.png");
    eprintln!("screenshot: {}", shot.display());
    if std::env::var("UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/swagger-ui.png");
        std::fs::create_dir_all(docs.parent().unwrap()).expect("create docs/");
        std::fs::write(&docs, &png).expect("write docs/swagger-ui.png");
        eprintln!("screenshot: {}", docs.display());
    }
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver: apt-get install chromium chromium-driver"]
async fn swagger_ui_renders_and_tries_the_api_in_chromium() {
    // The walk-through tries the app's POST example; a service generated
    // without it has no POST to try.
    let started = Instant::now();
    let server = spawn_binary(&[]);
    let base = format!("http://127.0.0.1:{}", server.port());

    let dir = scratch_dir("browser");
    let mut driver = ChromeDriver::start(&dir);
    let mut builder = ClientBuilder::new(HttpConnector::new());
    builder.capabilities(capabilities(&dir.join("profile")));
    let webdriver = format!("http://{}", driver.addr);
    let client = match tokio::time::timeout(DEADLINE, builder.connect(&webdriver)).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => panic!("start Chromium: {e}; {}", read_log(&driver.log)),
        Err(_) => panic!(
            "Chromium did not start within {DEADLINE:?}; {}",
            read_log(&driver.log)
        ),
    };
    let id = client
        .session_id()
        .await
        .expect("the session id")
        .expect("a session");
    driver.session = Some(id.clone());
    let session = Session {
        driver: driver.addr,
        id,
    };

    // On its own task, so that a failed assertion still leaves a screenshot.
    let tasks = tokio::task::LocalSet::new();
    let walk = tasks.spawn_local(walk_through(client.clone(), session, base));
    let outcome = tasks
        .run_until(tokio::time::timeout(WALK_DEADLINE, walk))
        .await;
    if !matches!(outcome, Ok(Ok(()))) {
        // What the page showed when it went wrong.
        let shot = target_dir().join("swagger-ui-failure.png");
        if let Ok(Ok(png)) = tokio::time::timeout(DEADLINE, client.screenshot()).await {
            let _ = std::fs::write(&shot, png);
            eprintln!("the page at the failure: {}", shot.display());
        }
    }
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("the walk through the page failed: {e}"),
        Err(_) => panic!(
            "the walk through the page took over {WALK_DEADLINE:?}; {}",
            read_log(&driver.log)
        ),
    }

    tokio::time::timeout(DEADLINE, client.close())
        .await
        .expect("the session ends in time")
        .expect("end the session");
    driver.session = None;
    eprintln!("browser test took {:?}", started.elapsed());
}
