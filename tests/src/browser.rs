//! A real browser for the web-page tests: headless Chromium from Debian's
//! packages (`chromium`, `chromium-driver`) driven over the W3C WebDriver
//! protocol that `chromedriver` speaks (plain HTTP + JSON, through reqwest).
//! The `browser_*` tier's gate is `GOLEM_TEST_BROWSER=1` (scripts/test.sh
//! sets it when both binaries are installed); the tier's tests are
//! `#[ignore]`d and fail when run without what they need.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use serde_json::{json, Value};

/// Set to `1` to run the tests that need Chromium and chromedriver.
pub const ENV_TEST_BROWSER: &str = "GOLEM_TEST_BROWSER";
/// The Chromium binary (default: `chromium` on PATH).
pub const ENV_CHROMIUM: &str = "GOLEM_CHROMIUM";
/// The chromedriver binary (default: `chromedriver` on PATH).
pub const ENV_CHROMEDRIVER: &str = "GOLEM_CHROMEDRIVER";

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn binary_of(variable: &str, name: &str) -> anyhow::Result<PathBuf> {
    match std::env::var_os(variable) {
        Some(path) => Ok(PathBuf::from(path)),
        None => on_path(name).ok_or_else(|| {
            anyhow!("no {name} on PATH: apt-get install -y chromium chromium-driver (or set {variable})")
        }),
    }
}

/// The browser tier's gate: `Ok(())` when `GOLEM_TEST_BROWSER=1` and both
/// binaries are there, an error naming what is missing otherwise.
pub fn enabled(test: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        std::env::var(ENV_TEST_BROWSER).ok().as_deref() == Some("1"),
        "{test} needs Chromium: apt-get install -y chromium chromium-driver, then set {ENV_TEST_BROWSER}=1, or run scripts/test.sh, which runs this tier only when they are installed"
    );
    binary_of(ENV_CHROMIUM, "chromium")?;
    binary_of(ENV_CHROMEDRIVER, "chromedriver")?;
    Ok(())
}

/// A chromedriver process and one headless Chromium session; both end on drop.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session_url: String,
    _profile: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Browser {
    /// Start chromedriver on a free loopback port and open a headless
    /// Chromium of `width`×`height` CSS pixels.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Browser> {
        let chromium = binary_of(ENV_CHROMIUM, "chromium")?;
        let chromedriver = binary_of(ENV_CHROMEDRIVER, "chromedriver")?;
        let port = free_port()?;
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let profile = tempfile::Builder::new()
            .prefix("golem-chromium-")
            .tempdir()?;
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            driver,
            http,
            session_url: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser
                .http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .filter(|response| response.status().is_success());
            if ready.is_some() {
                break;
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not answer on port {port} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            },
        }}});
        let created = browser
            .call(
                reqwest::Method::POST,
                &format!("{base}/session"),
                Some(capabilities),
            )
            .await
            .context("opening a Chromium session")?;
        let session_id = created["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId in {created}"))?;
        browser.session_url = format!("{base}/session/{session_id}");
        Ok(browser)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("WebDriver {url}: {status}: {}", body["value"]);
        }
        Ok(body["value"].clone())
    }

    async fn session(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.call(method, &format!("{}{path}", self.session_url), body)
            .await
    }

    /// Navigate and wait for the page's load event.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.session(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .map(drop)
    }

    /// Run `script` (a function body; `arguments[i]` are `args`) in the page.
    pub async fn execute(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.session(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Poll `script` until it returns a truthy value; returns that value.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.execute(script, json!([])).await?;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0);
            if truthy {
                return Ok(value);
            }
            if Instant::now() > deadline {
                bail!("{what}: not within {timeout:?} (last value {value})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn set_window_size(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.session(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await
        .map(drop)
    }

    /// Save a PNG of the viewport at `path` (directories created).
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let data = self
            .session(reqwest::Method::GET, "/screenshot", None)
            .await?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .context("decoding the screenshot")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, bytes)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Deleting the session ends Chromium (killing chromedriver alone
        // would leave it running): a blocking DELETE, since drop is not async.
        if let Some((host, path)) = self
            .session_url
            .strip_prefix("http://")
            .and_then(|rest| rest.split_once('/'))
        {
            use std::io::{Read, Write};
            if let Ok(mut stream) = std::net::TcpStream::connect(host) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    stream,
                    "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                );
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
