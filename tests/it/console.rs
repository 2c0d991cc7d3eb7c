//! The operator console in a real browser: headless Chromium from Debian's packages, driven
//! over WebDriver (chromedriver), against the real binary with both simulators. A dead letter
//! is made by an injected OpenText outage; the operator signs in, finds it, opens it, plans,
//! replays it and sees it done, then opens the product's timeline and its workspace link.
//! Screenshots of each page are written to `<target dir>/console-screenshots/`.
//!
//! Skips (with a message) only when chromium or chromedriver is missing and `CI` is unset; in
//! CI a missing browser fails the test.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::ADMIN_TOKEN;
use common::cluster::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::time::Instant;
use xecm_bridge::sim::FaultSettings;

const WORKSPACE_UI: &str = "https://otcs.example.com/otcs/cs.exe";

/// The browser and its driver, when both are installed.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|path| path.is_file())
            })
        })
    };
    Some((
        find(&["chromium", "chromium-browser"])?,
        find(&["chromedriver"])?,
    ))
}

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start(binary: &Path) -> Driver {
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let ready = http.get(format!("{}/status", driver.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(driver: &Driver, chromium: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session in headless Chromium")
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

/// The text of the page's `<main>`.
async fn main_text(browser: &Client) -> String {
    browser
        .find(Locator::Css("main"))
        .await
        .expect("a main element")
        .text()
        .await
        .expect("its text")
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click `{css}`: {e}"));
}

async fn sign_in(browser: &Client, base: &str, token: &str) {
    browser
        .goto(&format!("{base}/ui/"))
        .await
        .expect("open the console");
    let field = browser
        .find(Locator::Css("input#token"))
        .await
        .expect("the sign-in form (an unsigned visit is sent there)");
    field.send_keys(token).await.expect("type the token");
    click(browser, "main form button[type=submit]").await;
}

/// A dead letter made by an OpenText outage: the retry age is 3 s, so the launch run of one
/// product gives up while OpenText answers 503.
async fn dead_letter(bridge: &BridgeProcess, sims: &Sims) {
    sims.ot.set_faults(FaultSettings {
        error_rate: 1.0,
        ..FaultSettings::default()
    });
    bridge.webhook("console-dead-1", &sims.products[0]).await;
    let deadline = Instant::now() + DEADLINE;
    while bridge.status().await["dead_letters"] != 1 {
        if Instant::now() > deadline {
            bridge.fail("no dead letter from the OpenText outage");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sims.ot.set_faults(FaultSettings::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_repairs_a_dead_letter_in_a_real_browser() {
    let Some((chromium, chromedriver)) = browser() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test: install chromium and chromium-driver"
        );
        eprintln!(
            "SKIPPED console browser test: chromium or chromedriver is not installed \
             (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let sims = Sims::start(1, 0).await;
    let setup = SqliteBridge::configure(
        &sims,
        &["launch"],
        &format!("{FAST_WORKER}\nmax_retry_age_secs = 3"),
    );
    append(
        &setup.config,
        &format!(
            "\n[console]\nenabled = true\ncookie_secure = false\n\
             opentext_ui_url = \"{WORKSPACE_UI}\"\n\
             allportal_ui_url = \"https://pim.example.com/#/{{module}}/{{id}}\"\n"
        ),
    );
    let bridge = setup.start().await;
    dead_letter(&bridge, &sims).await;

    let driver = Driver::start(&chromedriver).await;
    let browser = connect(&driver, &chromium).await;
    let base = bridge.base.clone();

    // A wrong token is refused with the sign-in form again.
    sign_in(&browser, &base, "not-the-admin-token-at-all").await;
    let text = main_text(&browser).await;
    assert!(
        text.contains("That token is not the admin token."),
        "{text}"
    );
    screenshot(&browser, "01-sign-in-refused").await;

    sign_in(&browser, &base, ADMIN_TOKEN).await;
    browser
        .wait()
        .for_element(Locator::Css("h1"))
        .await
        .unwrap();
    let text = main_text(&browser).await;
    assert!(
        text.contains("Overview") && text.contains("Dead letters"),
        "{text}"
    );
    assert!(text.contains("launch"), "the flow is listed: {text}");
    screenshot(&browser, "02-overview").await;

    // The dead letter, its detail, the plan.
    browser
        .goto(&format!("{base}/ui/dead-letters"))
        .await
        .unwrap();
    let text = main_text(&browser).await;
    assert!(text.contains(&sims.products[0]), "{text}");
    screenshot(&browser, "03-dead-letters").await;
    click(&browser, "table.events tbody td a").await;
    let text = main_text(&browser).await;
    assert!(text.contains("dead") && text.contains("gave up"), "{text}");
    let event_url = browser.current_url().await.unwrap().to_string();
    screenshot(&browser, "04-event-dead").await;

    click(&browser, "a.button[href^='/ui/plan']").await;
    let plan = browser
        .find(Locator::Css("table.plan"))
        .await
        .expect("the plan table");
    let text = plan.text().await.unwrap();
    assert!(
        text.contains("OpenText"),
        "the plan names OpenText writes: {text}"
    );
    screenshot(&browser, "05-plan").await;

    // Replay from the plan page; the event is done once the worker ran it.
    click(&browser, "form[action$='/replay'] button").await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        browser.goto(&event_url).await.unwrap();
        if browser
            .find(Locator::Css("dl.facts .state-done"))
            .await
            .is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            bridge.fail(&format!(
                "the replayed event is not done: {}",
                main_text(&browser).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = main_text(&browser).await;
    assert!(
        text.contains("replayed in the console"),
        "the replay is noted: {text}"
    );
    screenshot(&browser, "06-event-done").await;

    // The product's timeline: its events, runs and OpenText operations, and the workspace link.
    let product = &sims.products[0];
    browser
        .goto(&format!("{base}/ui/objects/product/{product}"))
        .await
        .unwrap();
    let link = browser
        .find(Locator::Css("a.workspace"))
        .await
        .expect("the workspace link");
    let href = link.attr("href").await.unwrap().unwrap_or_default();
    assert!(
        href.starts_with(&format!("{WORKSPACE_UI}/app/nodes/")),
        "{href}"
    );
    let operations = browser
        .find_all(Locator::Css("tr.entry-operation"))
        .await
        .unwrap();
    assert!(
        !operations.is_empty(),
        "the timeline lists the OpenText operations"
    );
    let text = main_text(&browser).await;
    assert!(
        text.contains("OpenText") && text.contains("event"),
        "{text}"
    );
    screenshot(&browser, "07-timeline").await;

    browser.goto(&format!("{base}/ui/events")).await.unwrap();
    screenshot(&browser, "08-events").await;
    browser.goto(&format!("{base}/ui/flows")).await.unwrap();
    let text = main_text(&browser).await;
    assert!(text.contains("Mapping as configured"), "{text}");
    screenshot(&browser, "09-flows").await;

    // An action without the CSRF token is refused, even with a valid session cookie.
    let cookie = browser
        .get_named_cookie("xecm_console")
        .await
        .expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let replay = event_url.replace(base.as_str(), "") + "/replay";
    let cookie_header = format!("xecm_console={}", cookie.value());
    for body in ["", "csrf=0000"] {
        let response = http
            .post(format!("{base}{replay}"))
            .header("cookie", &cookie_header)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "body {body:?}");
    }
    // Without a session the action is not reached at all.
    let response = http
        .post(format!("{base}{replay}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=0000")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_redirection());
    assert_eq!(response.headers()["location"], "/ui/sign-in");
    // A wrong token over plain HTTP: 401, no cookie.
    let response = http
        .post(format!("{base}/ui/sign-in"))
        .form(&[("token", "wrong-token-0123456789")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("set-cookie").is_none());

    browser.close().await.unwrap();
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}
